//! RFC 8489 §9.2 password algorithms, on the virtual clock: the nonce cookie,
//! PASSWORD-ALGORITHMS in challenges, SHA-256 keys with
//! MESSAGE-INTEGRITY-SHA256, the bid-down checks, and classic MD5 clients
//! left exactly as they were.

mod common;

use std::time::Duration;

use common::*;
use switchboard_stun::attr::{ChannelNumber, Nonce, PasswordAlgorithms, XorRelayedAddress};
use switchboard_stun::{
    AttrType, Class, LongTermKey, Message, MessageBuilder, MessageType, Method, PasswordAlgorithm,
    long_term_key,
};
use switchboard_turn::auth::mint_rest_credential;

const SHA256: PasswordAlgorithm = PasswordAlgorithm::Sha256;
const MD5: PasswordAlgorithm = PasswordAlgorithm::Md5;

/// Which integrity attribute(s) a test request carries.
#[derive(Clone, Copy)]
enum Integrity {
    Sha1,
    Sha256,
    Both,
}

/// How a test request speaks about password algorithms.
#[derive(Clone)]
struct Speech {
    /// PASSWORD-ALGORITHM, when sent.
    chosen: Option<PasswordAlgorithm>,
    /// PASSWORD-ALGORITHMS value bytes, when sent.
    offered: Option<Vec<u8>>,
    /// The algorithm of the key the request is signed with.
    key: PasswordAlgorithm,
    integrity: Integrity,
}

impl Speech {
    /// What an RFC 8489 client that picked SHA-256 sends: the list echoed.
    fn sha256(offered: &[u8]) -> Self {
        Self {
            chosen: Some(SHA256),
            offered: Some(offered.to_vec()),
            key: SHA256,
            integrity: Integrity::Sha256,
        }
    }
}

fn key(c: &Client, algorithm: PasswordAlgorithm) -> LongTermKey {
    long_term_key(algorithm, &c.username, &c.realm, &c.password).expect("known algorithm")
}

/// A signed request built with the stun crate's builder.
fn request(
    c: &mut Client,
    method: Method,
    speech: &Speech,
    fill: impl FnOnce(&mut MessageBuilder<'_>),
) -> Vec<u8> {
    let key = key(c, speech.key);
    let nonce = c.nonce.clone().unwrap_or_default();
    let tid = c.tid();
    let mut buf = Vec::new();
    let mut b = MessageBuilder::new(&mut buf, MessageType::new(method, Class::Request), tid);
    fill(&mut b);
    b.add_username(&c.username)
        .add_realm(&c.realm)
        .add_nonce(&nonce);
    if let Some(chosen) = speech.chosen {
        b.add(&chosen);
    }
    if let Some(offered) = &speech.offered {
        b.add_raw(AttrType::PASSWORD_ALGORITHMS, offered);
    }
    match speech.integrity {
        Integrity::Sha1 => b.add_message_integrity(key.as_bytes()),
        Integrity::Sha256 => b.add_message_integrity_sha256(key.as_bytes()),
        Integrity::Both => b
            .add_message_integrity(key.as_bytes())
            .add_message_integrity_sha256(key.as_bytes()),
    };
    b.add_fingerprint();
    b.finish().expect("encode").to_vec()
}

fn ask(
    h: &mut Harness,
    c: &mut Client,
    method: Method,
    speech: &Speech,
    fill: impl FnOnce(&mut MessageBuilder<'_>),
) -> Vec<u8> {
    let req = request(c, method, speech, fill);
    let out = h.client_sends(c.ft, &req);
    assert_eq!(out.len(), 1, "one answer expected: {out:?}");
    out[0].bytes.clone()
}

/// The raw PASSWORD-ALGORITHMS of a challenge, checked to be ours.
fn offered(answer: &[u8]) -> Vec<u8> {
    let msg = Message::parse(answer).expect("parse");
    let list = msg
        .get::<PasswordAlgorithms>()
        .expect("attr")
        .expect("PASSWORD-ALGORITHMS in the challenge");
    assert_eq!(list.iter().collect::<Vec<_>>(), vec![SHA256, MD5]);
    msg.get_raw(AttrType::PASSWORD_ALGORITHMS)
        .expect("raw")
        .to_vec()
}

/// The first 401: learns REALM and NONCE, returns PASSWORD-ALGORITHMS.
fn challenge(h: &mut Harness, c: &mut Client) -> Vec<u8> {
    let out = h.client_sends(c.ft, &c.plain(Method::ALLOCATE, udp_transport));
    assert_eq!(error_code(&out[0].bytes), Some(401));
    c.learn(&out[0].bytes);
    offered(&out[0].bytes)
}

/// Success sealed with MESSAGE-INTEGRITY-SHA256 under `key`, and nothing weaker.
fn assert_sealed_sha256(answer: &[u8], key: &LongTermKey) {
    let msg = Message::parse(answer).expect("parse");
    assert_eq!(
        msg.class(),
        Class::SuccessResponse,
        "{:?}",
        error_code(answer)
    );
    assert!(!msg.has_message_integrity(), "no MESSAGE-INTEGRITY");
    msg.verify_message_integrity_sha256(key.as_bytes())
        .expect("MESSAGE-INTEGRITY-SHA256 under the SHA-256 key");
    msg.verify_fingerprint().expect("fingerprint");
}

fn sha256_allocate(h: &mut Harness, c: &mut Client) -> Speech {
    let speech = Speech::sha256(&challenge(h, c));
    let answer = ask(h, c, Method::ALLOCATE, &speech, udp_transport);
    assert_sealed_sha256(&answer, &key(c, SHA256));
    let msg = Message::parse(&answer).expect("parse");
    assert!(msg.get::<XorRelayedAddress>().expect("attr").is_some());
    speech
}

#[test]
fn challenge_has_nonce_cookie_and_password_algorithms() {
    let mut h = Harness::new(config());
    let mut c = Client::udp("198.51.100.7:4000", "alice", "alice-pw");
    challenge(&mut h, &mut c);
    let nonce = c.nonce.clone().expect("nonce");
    // "gAAA" is 0x800000: only the "Password algorithms" feature bit.
    assert!(nonce.starts_with(b"obMatJos2gAAA"), "{nonce:?}");
}

#[test]
fn sha256_allocate_end_to_end_for_static_and_rest_users() {
    let mut h = Harness::new(config());
    let mut c = Client::udp("198.51.100.7:4000", "alice", "alice-pw");
    let speech = sha256_allocate(&mut h, &mut c);
    let k = key(&c, SHA256);
    let peer = addr("93.184.216.20:7000");
    let answer = ask(&mut h, &mut c, Method::CREATE_PERMISSION, &speech, |b| {
        b.add_xor_peer_address(peer);
    });
    assert_sealed_sha256(&answer, &k);
    let answer = ask(&mut h, &mut c, Method::CHANNEL_BIND, &speech, |b| {
        b.add(&ChannelNumber(0x4000)).add_xor_peer_address(peer);
    });
    assert_sealed_sha256(&answer, &k);
    let answer = ask(&mut h, &mut c, Method::REFRESH, &speech, |_| {});
    assert_sealed_sha256(&answer, &k);

    let (user, password) = mint_rest_credential(b"rest-secret", UNIX_NOW + 3600, "peer");
    let mut r = Client::udp("198.51.100.8:4000", &user, &password);
    sha256_allocate(&mut h, &mut r);
    assert_eq!(h.server.allocation_count(), 2);
}

#[test]
fn sha256_with_wrong_password_gets_401_with_a_fresh_challenge() {
    let mut h = Harness::new(config());
    let mut c = Client::udp("198.51.100.7:4000", "alice", "wrong");
    let speech = Speech::sha256(&challenge(&mut h, &mut c));
    let answer = ask(&mut h, &mut c, Method::ALLOCATE, &speech, udp_transport);
    assert_eq!(error_code(&answer), Some(401));
    offered(&answer);
    assert_eq!(h.server.allocation_count(), 0);
    // The MD5 key of the right password does not pass for SHA-256 either.
    let mut c = Client::udp("198.51.100.7:4001", "alice", "alice-pw");
    let list = challenge(&mut h, &mut c);
    let speech = Speech {
        key: MD5,
        ..Speech::sha256(&list)
    };
    let answer = ask(&mut h, &mut c, Method::ALLOCATE, &speech, udp_transport);
    assert_eq!(error_code(&answer), Some(401));
}

#[test]
fn bid_down_attempts_get_400() {
    let mut h = Harness::new(config());
    let mut c = Client::udp("198.51.100.7:4000", "alice", "alice-pw");
    let list = challenge(&mut h, &mut c);
    let good = Speech::sha256(&list);
    let md5_only = [0, 1, 0, 0];
    let reordered = [0, 1, 0, 0, 0, 2, 0, 0];
    let cases = [
        (
            "the list trimmed to MD5",
            Speech {
                chosen: Some(MD5),
                offered: Some(md5_only.to_vec()),
                key: MD5,
                integrity: Integrity::Sha1,
            },
        ),
        (
            "the list reordered",
            Speech {
                offered: Some(reordered.to_vec()),
                ..good.clone()
            },
        ),
        (
            "the list missing",
            Speech {
                offered: None,
                ..good.clone()
            },
        ),
        (
            "MD5 chosen with the list missing",
            Speech {
                chosen: Some(MD5),
                offered: None,
                key: MD5,
                integrity: Integrity::Sha1,
            },
        ),
        (
            "the choice missing",
            Speech {
                chosen: None,
                ..good.clone()
            },
        ),
        (
            "an algorithm we did not offer",
            Speech {
                chosen: Some(PasswordAlgorithm::Unknown(3)),
                ..good.clone()
            },
        ),
        (
            "SHA-256 with only MESSAGE-INTEGRITY",
            Speech {
                integrity: Integrity::Sha1,
                ..good.clone()
            },
        ),
    ];
    for (what, speech) in cases {
        let answer = ask(&mut h, &mut c, Method::ALLOCATE, &speech, udp_transport);
        assert_eq!(error_code(&answer), Some(400), "{what}");
    }
    assert_eq!(h.server.allocation_count(), 0);
    assert_eq!(h.server.metrics().auth_failures, 7);
    // The honest request still works afterwards.
    let answer = ask(&mut h, &mut c, Method::ALLOCATE, &good, udp_transport);
    assert_sealed_sha256(&answer, &key(&c, SHA256));
}

#[test]
fn md5_chosen_explicitly_works_with_either_integrity() {
    let mut h = Harness::new(config());
    for (port, integrity) in [(4000, Integrity::Sha1), (4001, Integrity::Sha256)] {
        let mut c = Client::udp(&format!("198.51.100.7:{port}"), "bob", "bob-pw");
        let speech = Speech {
            chosen: Some(MD5),
            key: MD5,
            integrity,
            ..Speech::sha256(&challenge(&mut h, &mut c))
        };
        let answer = ask(&mut h, &mut c, Method::ALLOCATE, &speech, udp_transport);
        let msg = Message::parse(&answer).expect("parse");
        assert_eq!(msg.class(), Class::SuccessResponse);
        let k = key(&c, MD5);
        match integrity {
            Integrity::Sha256 => {
                assert!(!msg.has_message_integrity());
                msg.verify_message_integrity_sha256(k.as_bytes())
            }
            _ => {
                assert!(!msg.has_message_integrity_sha256());
                msg.verify_message_integrity(k.as_bytes())
            }
        }
        .expect("response sealed like the request");
    }
}

#[test]
fn classic_md5_client_is_unchanged() {
    let mut h = Harness::new(config());
    let mut c = Client::udp("198.51.100.7:4000", "alice", "alice-pw");
    // Common's client sends neither PASSWORD-ALGORITHM nor -ALGORITHMS and
    // checks MESSAGE-INTEGRITY under the MD5 key.
    c.allocate(&mut h);
    let answer = c.ask(&mut h, Method::REFRESH, |_| {});
    let msg = Message::parse(&answer).expect("parse");
    assert_eq!(msg.class(), Class::SuccessResponse);
    assert!(!msg.has_message_integrity_sha256());
    msg.verify_message_integrity(&c.key()).expect("MD5 key");
    // A client carrying both integrity attributes gets both checked the
    // RFC 8489 way: the SHA-256 one counts and comes back.
    let mut both = Client::udp("198.51.100.7:4001", "bob", "bob-pw");
    challenge(&mut h, &mut both);
    let speech = Speech {
        chosen: None,
        offered: None,
        key: MD5,
        integrity: Integrity::Both,
    };
    let answer = ask(&mut h, &mut both, Method::ALLOCATE, &speech, udp_transport);
    let msg = Message::parse(&answer).expect("parse");
    assert_eq!(msg.class(), Class::SuccessResponse);
    msg.verify_message_integrity_sha256(key(&both, MD5).as_bytes())
        .expect("sealed with MESSAGE-INTEGRITY-SHA256");
}

#[test]
fn allocation_keeps_its_password_algorithm() {
    let mut h = Harness::new(config());
    let mut c = Client::udp("198.51.100.7:4000", "alice", "alice-pw");
    let sha = sha256_allocate(&mut h, &mut c);
    // The same user, now classic MD5: another credential for this allocation.
    assert_eq!(
        error_code(&c.ask(&mut h, Method::REFRESH, |_| {})),
        Some(441)
    );
    // SHA-256 with a wrong key is a plain 401.
    let mut wrong = Client::udp("198.51.100.7:4000", "alice", "other-pw");
    wrong.nonce = c.nonce.clone();
    let answer = ask(&mut h, &mut wrong, Method::REFRESH, &sha, |_| {});
    assert_eq!(error_code(&answer), Some(401));
    assert!(is_success(&ask(
        &mut h,
        &mut c,
        Method::REFRESH,
        &sha,
        |_| {}
    )));

    // And an MD5 allocation refuses SHA-256.
    let mut m = Client::udp("198.51.100.8:4000", "bob", "bob-pw");
    m.allocate(&mut h);
    let answer = ask(&mut h, &mut m, Method::REFRESH, &sha, |_| {});
    assert_eq!(error_code(&answer), Some(441));
    assert!(is_success(&m.ask(&mut h, Method::REFRESH, |_| {})));
}

#[test]
fn stale_nonce_gets_438_with_password_algorithms_and_sha256_goes_on() {
    let mut h = Harness::new(config());
    let mut c = Client::udp("198.51.100.7:4000", "alice", "alice-pw");
    let speech = sha256_allocate(&mut h, &mut c);
    h.advance(Duration::from_secs(300));
    let answer = ask(&mut h, &mut c, Method::REFRESH, &speech, |_| {});
    assert_sealed_sha256(&answer, &key(&c, SHA256));
    h.advance(Duration::from_secs(300));
    let answer = ask(&mut h, &mut c, Method::REFRESH, &speech, |_| {});
    assert_eq!(error_code(&answer), Some(438));
    let list = offered(&answer);
    assert_eq!(Some(list.as_slice()), speech.offered.as_deref());
    let old = c.nonce.clone();
    c.learn(&answer);
    assert_ne!(old, c.nonce);
    let msg = Message::parse(&answer).expect("parse");
    let Ok(Some(Nonce(fresh))) = msg.get::<Nonce>() else {
        panic!("438 without NONCE");
    };
    assert!(fresh.starts_with(b"obMatJos2gAAA"));
    let answer = ask(&mut h, &mut c, Method::REFRESH, &speech, |_| {});
    assert_sealed_sha256(&answer, &key(&c, SHA256));
}
