//! Round trips, and garbage that must be an error, never a panic.

use super::*;

fn rec() -> SessionRecord {
    SessionRecord {
        session: "s1".into(),
        token: "tok".into(),
        peer: "p1".into(),
        user: Some("ü".into()),
        face: Face::Native,
        seq: 7,
        frames: vec![
            (6, Bytes::from_static(b"{\"a\":1}")),
            (7, Bytes::from_static(b"\0\xff:-")),
        ],
        rooms: vec!["r1".into(), "".into()],
        epoch: u32::MAX,
        base: Some(5),
    }
}

fn samples() -> Vec<Push> {
    vec![
        Push::JoinAnswer {
            req: 1,
            outcome: SeatOutcome::Seated {
                peers: vec![("a".into(), None), ("b".into(), Some("{}".into()))],
                media: MediaKind::Mesh,
                media_node: None,
            },
        },
        Push::JoinAnswer {
            req: 2,
            outcome: SeatOutcome::Seated {
                peers: Vec::new(),
                media: MediaKind::Sfu,
                media_node: Some(NodeId::new("node-a")),
            },
        },
        Push::JoinAnswer {
            req: 3,
            outcome: SeatOutcome::NoRelay,
        },
        Push::JoinAnswer {
            req: u64::MAX,
            outcome: SeatOutcome::Full,
        },
        Push::JoinAnswer {
            req: 0,
            outcome: SeatOutcome::Forbidden,
        },
        Push::Published {
            req: 3,
            counted: 2,
            nodes: vec![NodeId::new("b"), NodeId::new("c")],
        },
        Push::Deliver {
            from: NodeId::new("a"),
            req: None,
            room: "r".into(),
            event: RoomEvent::Message {
                from: "x".into(),
                data: "\"12:3\"".into(),
            },
            sessions: vec!["s1".into(), "s2".into()],
        },
        Push::Deliver {
            from: NodeId::new("a"),
            req: Some(4),
            room: "r".into(),
            event: RoomEvent::OtherJoined {
                peer: "x".into(),
                meta: None,
            },
            sessions: vec![],
        },
        Push::Counted {
            req: 5,
            from: NodeId::new("b"),
            count: 9,
        },
        Push::Took {
            req: 6,
            outcome: TakeOutcome::Taken(rec()),
        },
        Push::Took {
            req: 6,
            outcome: TakeOutcome::Gap(rec()),
        },
        Push::Took {
            req: 6,
            outcome: TakeOutcome::Unknown,
        },
        Push::Taken {
            session: "s".into(),
        },
        Push::Adopted {
            req: 8,
            sessions: vec![
                rec(),
                SessionRecord {
                    base: None,
                    epoch: 0,
                    ..rec()
                },
            ],
        },
        Push::NodeDied {
            node: NodeId::new("z"),
        },
        Push::Ring {
            from: NodeId::new("a"),
            req: 2,
            call: "c".into(),
            user: "u".into(),
            except: "s".into(),
            body: Bytes::from_static(b"{}"),
        },
        Push::Told {
            from: NodeId::new("a"),
            msg: NodeMsg::Ended {
                call: "c".into(),
                reason: CallEndReason::NoAnswer,
                except: None,
            },
        },
        Push::Told {
            from: NodeId::new("b"),
            msg: NodeMsg::Media {
                room: "r".into(),
                peer: "p".into(),
                what: MediaMsg::Joined,
            },
        },
        Push::Told {
            from: NodeId::new("b"),
            msg: NodeMsg::Media {
                room: "r".into(),
                peer: "p".into(),
                what: MediaMsg::Left,
            },
        },
        Push::Told {
            from: NodeId::new("b"),
            msg: NodeMsg::Media {
                room: "r".into(),
                peer: "p".into(),
                what: MediaMsg::Signal(r#"{"kind":"offer","sdp":"v=0\r\n"}"#.into()),
            },
        },
        Push::Told {
            from: NodeId::new("a"),
            msg: NodeMsg::Media {
                room: "r".into(),
                peer: "p".into(),
                what: MediaMsg::Reply(r#"{"kind":"answer","sdp":"v=0"}"#.into()),
            },
        },
        Push::Told {
            from: NodeId::new("a"),
            msg: NodeMsg::Media {
                room: "r".into(),
                peer: "p".into(),
                what: MediaMsg::Error {
                    code: ErrorCode::Unavailable,
                    message: "media node lost".into(),
                },
            },
        },
        Push::MediaNode {
            room: "r".into(),
            node: Some(NodeId::new("b")),
        },
        Push::MediaNode {
            room: "r".into(),
            node: None,
        },
        Push::RoomMedia {
            room: "r".into(),
            node: Some(NodeId::new("c")),
        },
        Push::Resynced {
            lost: vec!["s".into()],
            generation: u64::MAX,
        },
        Push::Dead,
        Push::Rooms {
            req: 1,
            rooms: vec![RoomInfo {
                room: "r:1".into(),
                peers: 3,
                age_ms: 12_345,
                media: MediaKind::Sfu,
            }],
        },
        Push::Rooms {
            req: 2,
            rooms: Vec::new(),
        },
        Push::Room {
            req: 3,
            room: Some(RoomMembers {
                age_ms: 9,
                media: MediaKind::Mesh,
                members: vec![
                    MemberInfo {
                        peer: "p".into(),
                        user: Some("u".into()),
                        meta: Some("{\"a\":1}".into()),
                        node: NodeId::new("n"),
                        age_ms: 0,
                    },
                    MemberInfo {
                        peer: "q".into(),
                        user: None,
                        meta: None,
                        node: NodeId::new("m"),
                        age_ms: u64::MAX,
                    },
                ],
            }),
        },
        Push::Room { req: 4, room: None },
        Push::Kicked {
            req: 5,
            kicked: Some(2),
        },
        Push::Kicked {
            req: 6,
            kicked: None,
        },
        Push::Kick {
            room: "r".into(),
            sessions: vec!["s1".into(), "s2".into()],
        },
        Push::Route {
            room: "r".into(),
            nodes: vec![
                (
                    NodeId::new("b"),
                    vec![("s1".into(), "p1".into()), ("s2".into(), "p2".into())],
                ),
                (NodeId::new("c"), vec![("s3".into(), "p3".into())]),
            ],
        },
        Push::Route {
            room: "empty".into(),
            nodes: vec![],
        },
        Push::Rerouted { room: "r".into() },
    ]
}

#[test]
fn every_push_round_trips() {
    for p in samples() {
        let bytes = encode_push(&p).expect("encodable");
        assert_eq!(decode_push(Bytes::from(bytes)), Ok(p));
    }
}

#[test]
fn an_epoch_beyond_u32_is_refused() {
    let p = Push::Took {
        req: 1,
        outcome: TakeOutcome::Taken(rec()),
    };
    let bytes = encode_push(&p).expect("encodable");
    let text = String::from_utf8_lossy(&bytes).into_owned();
    assert!(text.contains("10:4294967295"));
    let forged = text.replace("10:4294967295", "10:4294967296");
    assert_eq!(
        decode_push(Bytes::from(forged.into_bytes())),
        Err(DecodeError::BadNumber)
    );
}

#[test]
fn every_prefix_and_garbage_is_an_error_not_a_panic() {
    for p in samples() {
        let bytes = encode_push(&p).expect("encodable");
        for cut in 0..bytes.len() {
            assert!(decode_push(Bytes::copy_from_slice(&bytes[..cut])).is_err());
        }
        let mut more = bytes.clone();
        more.push(b'-');
        assert_eq!(decode_push(Bytes::from(more)), Err(DecodeError::Trailing));
        // Flip each byte: an error or some other push, never a panic.
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x5a;
            let _ = decode_push(Bytes::from(b));
        }
    }
    for junk in [
        &b"99999999999999999999999:x"[..],
        b"1:A1:12:999999999999",
        b"1:Y20:99999999999999999999",
        b"1:Y1:3",
        b":",
        b"-",
        b"",
        b"\xff\xfe",
    ] {
        assert!(decode_push(Bytes::from_static(junk)).is_err(), "{junk:?}");
    }
}
