//! The JSON the server writes: the message envelope (the same on SSE and
//! WebSocket), its ids, and a plain parse for everything else.

use super::Block;

/// `text` as JSON; panics, quoting it, when it is not.
pub fn json(text: &str) -> simd_json::OwnedValue {
    let mut b = text.as_bytes().to_vec();
    simd_json::to_owned_value(&mut b).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"))
}

/// The message envelope of a data block: (topic, id, event, data).
pub struct Envelope {
    pub topic: String,
    pub id: String,
    pub event: Option<String>,
    pub data: simd_json::OwnedValue,
}

pub fn envelope(b: &Block) -> Envelope {
    use simd_json::prelude::*;
    let v = b.json();
    Envelope {
        topic: v
            .get("topic")
            .and_then(|t| t.as_str())
            .unwrap_or_else(|| panic!("envelope without topic: {:?}", b.data))
            .to_owned(),
        id: v
            .get("id")
            .and_then(|t| t.as_str())
            .unwrap_or_else(|| panic!("envelope without id: {:?}", b.data))
            .to_owned(),
        event: v.get("event").and_then(|t| t.as_str()).map(str::to_owned),
        data: v.get("data").cloned().expect("envelope without data"),
    }
}

/// The `n` of a payload `{"n":N}`.
pub fn payload_n(e: &Envelope) -> u64 {
    use simd_json::prelude::*;
    e.data
        .get("n")
        .and_then(|n| n.as_u64())
        .unwrap_or_else(|| panic!("payload without n: {:?}", e.data))
}

/// Splits `<epoch>-<seq>` into its parts.
pub fn split_id(id: &str) -> (String, u64) {
    let (epoch, seq) = id
        .split_once('-')
        .unwrap_or_else(|| panic!("id {id:?} is not <epoch>-<seq>"));
    (
        epoch.to_owned(),
        seq.parse()
            .unwrap_or_else(|_| panic!("id {id:?}: seq is not a number")),
    )
}
