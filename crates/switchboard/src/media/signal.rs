//! A `media` request's `data` to the SFU's [`MediaSignal`] and back
//! (PROTOCOL.md §1's shapes: `{"kind":"offer"|"answer","sdp":..}`,
//! `{"kind":"candidate","candidate":{"candidate","sdpMid","sdpMLineIndex"}}`).

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use switchboard_sfu::MediaSignal;

/// `data` as the client sends it. Fields beyond these (a candidate's
/// `usernameFragment`) are ignored.
#[derive(Debug, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum Data {
    Offer { sdp: String },
    Answer { sdp: String },
    Candidate { candidate: CandidateInit },
}

/// `RTCIceCandidateInit`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct CandidateInit {
    candidate: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sdp_mid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sdp_m_line_index: Option<u16>,
}

/// Why a client's `data` is no signal for the SFU.
#[derive(Debug, thiserror::Error)]
#[error("media data must be an offer, an answer or a candidate: {0}")]
pub(crate) struct BadMediaData(serde_json::Error);

/// The client's `data`; `Ok(None)` for the end-of-candidates marker (an
/// empty `candidate`), which an ICE-lite server has no use for.
pub(crate) fn from_client(data: &RawValue) -> Result<Option<MediaSignal>, BadMediaData> {
    let data: Data = serde_json::from_str(data.get()).map_err(BadMediaData)?;
    Ok(match data {
        Data::Offer { sdp } => Some(MediaSignal::Offer { sdp }),
        Data::Answer { sdp } => Some(MediaSignal::Answer { sdp }),
        Data::Candidate { candidate } if candidate.candidate.trim().is_empty() => None,
        Data::Candidate {
            candidate:
                CandidateInit {
                    candidate,
                    sdp_mid,
                    sdp_m_line_index,
                },
        } => Some(MediaSignal::Candidate {
            candidate,
            sdp_mid,
            sdp_m_line_index,
        }),
    })
}

/// The SFU's signal as the `data` of a `media` frame; `None` for a kind
/// this shell does not know (the core's enum may grow).
pub(crate) fn to_client(signal: MediaSignal) -> Option<Box<RawValue>> {
    let data = match signal {
        MediaSignal::Offer { sdp } => Data::Offer { sdp },
        MediaSignal::Answer { sdp } => Data::Answer { sdp },
        MediaSignal::Candidate {
            candidate,
            sdp_mid,
            sdp_m_line_index,
        } => Data::Candidate {
            candidate: CandidateInit {
                candidate,
                sdp_mid,
                sdp_m_line_index,
            },
        },
        #[allow(unreachable_patterns)] // `MediaSignal` is non-exhaustive
        _ => return None,
    };
    // Strings and numbers only: serializing cannot fail.
    serde_json::value::to_raw_value(&data).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).expect("json")
    }

    #[test]
    fn client_shapes_convert_both_ways() {
        let offer = from_client(&raw(r#"{"kind":"offer","sdp":"v=0\r\n"}"#)).expect("offer");
        assert!(matches!(offer, Some(MediaSignal::Offer { ref sdp }) if sdp == "v=0\r\n"));
        let cand = from_client(&raw(
            r#"{"kind":"candidate","candidate":{"candidate":"candidate:1 1 udp 1 127.0.0.1 9 typ host","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"u"}}"#,
        ))
        .expect("candidate");
        let Some(MediaSignal::Candidate {
            candidate,
            sdp_mid,
            sdp_m_line_index,
        }) = cand
        else {
            panic!("not a candidate");
        };
        assert!(candidate.starts_with("candidate:1"));
        assert_eq!(sdp_mid.as_deref(), Some("0"));
        assert_eq!(sdp_m_line_index, Some(0));
        let end = from_client(&raw(r#"{"kind":"candidate","candidate":{"candidate":""}}"#));
        assert!(matches!(end, Ok(None)));

        let out = to_client(MediaSignal::Answer { sdp: "v=0".into() }).expect("json");
        let v: serde_json::Value = serde_json::from_str(out.get()).expect("json");
        assert_eq!(v, serde_json::json!({"kind":"answer","sdp":"v=0"}));
        let out = to_client(MediaSignal::Candidate {
            candidate: "candidate:x".into(),
            sdp_mid: Some("1".into()),
            sdp_m_line_index: None,
        })
        .expect("json");
        let v: serde_json::Value = serde_json::from_str(out.get()).expect("json");
        assert_eq!(
            v,
            serde_json::json!({"kind":"candidate","candidate":{"candidate":"candidate:x","sdpMid":"1"}})
        );
    }

    #[test]
    fn bad_shapes_are_refused() {
        for bad in [
            r#"{"kind":"offer"}"#,
            r#"{"kind":"rollback","sdp":"x"}"#,
            r#"{"sdp":"x"}"#,
            r#"{"kind":"candidate","candidate":null}"#,
            r#"{"kind":"candidate","candidate":{"sdpMid":"0"}}"#,
            r#"{"kind":"answer","sdp":7}"#,
            r#"[1,2]"#,
            r#""offer""#,
        ] {
            assert!(from_client(&raw(bad)).is_err(), "{bad}");
        }
    }
}
