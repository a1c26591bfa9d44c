//! The bench payload: `{"seq":N,"t":NS}`, padded with `,"pad":"xx…"` to a size.
//!
//! `seq` is the message's number within its topic (0, 1, 2, … per topic) and `t` the
//! publisher's `CLOCK_MONOTONIC` time in nanoseconds when it wrote the message.
//! Subscribers find both with a scan for the two keys instead of a JSON parse: the
//! per-message cost of the bench has to stay far below the server's.

use std::io::Write as _;

use crate::config::PayloadMode;

/// Like [`encode`], padded with `json`: rows of typical JSON (quotes whose
/// symbols, prices, volumes and times vary with `seq`), so that compression
/// sees what real feeds look like rather than a run of `x`s.
pub fn encode_with(out: &mut Vec<u8>, seq: u64, t_ns: u64, size: usize, json: bool) {
    if !json {
        return encode(out, seq, t_ns, size);
    }
    let start = out.len();
    let _ = write!(out, "{{\"seq\":{seq},\"t\":{t_ns},\"quotes\":[");
    let mut k = 0u64;
    // Bounded: each row adds about 110 bytes.
    while out.len() - start + 2 < size && k < 1 << 20 {
        k += 1;
        let x = seq
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(k.wrapping_mul(1_442_695_040_888_963_407));
        if k > 1 {
            out.push(b',');
        }
        let _ = write!(
            out,
            "{{\"sym\":\"S{:03}\",\"bid\":{}.{:02},\"ask\":{}.{:02},\"vol\":{},\"ts\":17{:08},\"venue\":\"XETR\",\"ok\":true}}",
            x % 500,
            (x >> 8) % 900,
            (x >> 16) % 100,
            (x >> 24) % 900,
            (x >> 32) % 100,
            (x >> 40) % 100_000,
            (x >> 20) % 100_000_000
        );
    }
    out.extend_from_slice(b"]}");
}

/// Appends the payload for (`seq`, `t_ns`) to `out`, padded to at least `size` bytes.
pub fn encode(out: &mut Vec<u8>, seq: u64, t_ns: u64, size: usize) {
    let start = out.len();
    let _ = write!(out, "{{\"seq\":{seq},\"t\":{t_ns}");
    // `,"pad":""}` is 10 bytes; pad only when that still fits under `size`.
    let so_far = out.len() - start;
    if size > so_far + 1 {
        let fill = size.saturating_sub(so_far + 10);
        out.extend_from_slice(b",\"pad\":\"");
        out.resize(out.len() + fill, b'x');
        out.push(b'"');
    }
    out.push(b'}');
}

/// The (sequence, send time) a message carries, or `None` when it carries none
/// (a server event, a heartbeat, a foreign message).
///
/// In [`PayloadMode::Envelope`] the scan starts after the envelope's `"data":` key,
/// so nothing in the topic or id can be mistaken for the payload. The keys are also
/// found when the payload arrives as an escaped JSON string (`"{\"seq\":1,…}"`), as
/// some servers deliver a body they did not parse.
pub fn parse(msg: &[u8], mode: PayloadMode) -> Option<(u64, u64)> {
    let body = match mode {
        PayloadMode::Raw => msg,
        PayloadMode::Envelope => &msg[find(msg, b"\"data\":")? + 7..],
    };
    // Our own payload as we wrote it: read it in place. Parsing is the bench's
    // main cost per message after the kernel's, and it shares the cores with the
    // server it measures.
    if let Some(rest) = body.strip_prefix(b"{\"seq\":") {
        if let Some((seq, used)) = number_after_key(rest) {
            if let Some(rest) = rest[used..].strip_prefix(b",\"t\":") {
                if let Some((t, _)) = number_after_key(rest) {
                    return Some((seq, t));
                }
            }
        }
    }
    let at = find(body, b"seq")? + 3;
    let (seq, used) = number_after_key(&body[at..])?;
    let rest = &body[at + used..];
    let at = find(rest, b"t")? + 1;
    let (t, _) = number_after_key(&rest[at..])?;
    Some((seq, t))
}

/// Skips what may separate a key's last letter from its number (`"`, `\`, `:`,
/// spaces), then reads decimal digits. Returns the number and bytes used.
fn number_after_key(s: &[u8]) -> Option<(u64, usize)> {
    let skip = s
        .iter()
        .take(8)
        .position(|&b| !matches!(b, b'"' | b'\\' | b':' | b' '))?;
    let digits = s[skip..].iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 19 {
        return None;
    }
    let n = s[skip..skip + digits]
        .iter()
        .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
    Some((n, skip + digits))
}

/// First index of `needle` in `hay`. Messages are short and the keys sit near the
/// start, so a plain scan on the first byte is enough.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let first = *needle.first()?;
    let last_start = hay.len().checked_sub(needle.len())?;
    (0..=last_start).find(|&i| hay[i] == first && &hay[i..i + needle.len()] == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(seq: u64, t: u64, size: usize) -> Vec<u8> {
        let mut out = Vec::new();
        encode(&mut out, seq, t, size);
        out
    }

    #[test]
    fn payloads_round_trip_raw_and_inside_the_envelope() {
        let p = payload(42, 123_456_789, 0);
        assert_eq!(p, br#"{"seq":42,"t":123456789}"#);
        assert_eq!(parse(&p, PayloadMode::Raw), Some((42, 123_456_789)));
        let mut env = Vec::new();
        crate::proto::envelope::write_envelope(&mut env, "seq-t", b"t-7", None, &p);
        assert_eq!(parse(&env, PayloadMode::Envelope), Some((42, 123_456_789)));
    }

    #[test]
    fn padding_reaches_the_requested_size_and_stays_valid_json() {
        let mut scratch = crate::proto::json::JsonScratch::new();
        for size in [0, 10, 24, 25, 30, 35, 36, 100, 4096] {
            let p = payload(7, 99, size);
            assert!(p.len() >= size, "size {size}: got {}", p.len());
            assert!(size < 36 || p.len() == size, "size {size}: got {}", p.len());
            assert!(
                scratch.is_valid(&p),
                "size {size}: {:?}",
                String::from_utf8_lossy(&p)
            );
            assert_eq!(parse(&p, PayloadMode::Raw), Some((7, 99)));
        }
    }

    #[test]
    fn a_json_padded_payload_is_valid_json_of_the_size_and_still_read() {
        for size in [0, 100, 1024, 4096] {
            let mut p = Vec::new();
            encode_with(&mut p, 7, 99, size, true);
            assert!(
                p.len() >= size && p.len() < size + 128,
                "{size}: {}",
                p.len()
            );
            let mut copy = p.clone();
            assert!(
                simd_json::to_owned_value(&mut copy).is_ok(),
                "{}",
                String::from_utf8_lossy(&p)
            );
            assert_eq!(parse(&p, PayloadMode::Raw), Some((7, 99)));
        }
    }

    #[test]
    fn an_escaped_payload_string_is_still_read() {
        let msg = br#"{"topic":"a","data":"{\"seq\":3,\"t\":5}"}"#;
        assert_eq!(parse(msg, PayloadMode::Envelope), Some((3, 5)));
    }

    #[test]
    fn messages_without_a_stamp_are_none_not_a_panic() {
        for msg in [
            &b""[..],
            b"{}",
            b"seq",
            b"{\"seq\":}",
            b"{\"seq\":1}",
            b"{\"seq\":99999999999999999999,\"t\":1}",
            br#"{"topic":"a","id":"1","event":"ringcast.slow","data":{"topic":"a"}}"#,
        ] {
            assert_eq!(
                parse(msg, PayloadMode::Raw),
                None,
                "{:?}",
                String::from_utf8_lossy(msg)
            );
            assert_eq!(parse(msg, PayloadMode::Envelope), None);
        }
    }
}
