//! JSON plumbing shared by the publish paths: validation with simd-json, a
//! whitespace minifier that keeps every value byte for byte (numbers are never
//! re-formatted), a scanner that finds the raw span of a top-level field, and
//! string escaping for the envelopes the server writes.
//!
//! simd-json is the validator and the decoder of short strings; the raw spans come
//! from a scanner that only ever runs on input simd-json has already accepted, so it
//! can skip values without re-checking them.

use std::borrow::Cow;

use simd_json::prelude::*;
use simd_json::Buffers;
use thiserror::Error;

/// Why a JSON input was refused. The peer is at fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum JsonError {
    #[error("not valid JSON")]
    Invalid,
    #[error("a publish command must be a JSON object")]
    NotAnObject,
}

/// Reusable simd-json state, one per core: parsing allocates nothing once warm.
pub struct JsonScratch {
    buffers: Buffers,
    copy: Vec<u8>,
}

impl Default for JsonScratch {
    fn default() -> Self {
        Self::new()
    }
}

impl JsonScratch {
    pub fn new() -> Self {
        Self {
            buffers: Buffers::new(256),
            copy: Vec::new(),
        }
    }

    /// True when `input` is one complete JSON value (surrounding whitespace allowed).
    pub fn is_valid(&mut self, input: &[u8]) -> bool {
        self.copy.clear();
        self.copy.extend_from_slice(input);
        simd_json::to_tape_with_buffers(&mut self.copy, &mut self.buffers).is_ok()
    }

    /// Parses `input` (left untouched) and hands the decoded value to `f`.
    pub fn with_value<R>(
        &mut self,
        input: &[u8],
        f: impl FnOnce(&simd_json::BorrowedValue<'_>) -> R,
    ) -> Result<R, JsonError> {
        self.copy.clear();
        self.copy.extend_from_slice(input);
        let value = simd_json::borrowed::to_value_with_buffers(&mut self.copy, &mut self.buffers)
            .map_err(|_| JsonError::Invalid)?;
        Ok(f(&value))
    }
}

/// JSON insignificant whitespace (RFC 8259 §2).
fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && is_ws(s[i]) {
        i += 1;
    }
    i
}

/// Index just past the string that starts at `s[i] == b'"'`.
fn skip_string(s: &[u8], mut i: usize) -> usize {
    i += 1;
    while i < s.len() {
        match s[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    s.len()
}

/// Index just past the value that starts at `s[i]` (input already validated).
fn skip_value(s: &[u8], i: usize) -> usize {
    match s.get(i) {
        Some(b'"') => skip_string(s, i),
        Some(b'{') | Some(b'[') => {
            let mut depth = 0usize;
            let mut j = i;
            while j < s.len() {
                match s[j] {
                    b'"' => {
                        j = skip_string(s, j);
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return j + 1;
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            s.len()
        }
        Some(_) => {
            let mut j = i;
            while j < s.len() && !matches!(s[j], b',' | b'}' | b']') && !is_ws(s[j]) {
                j += 1;
            }
            j
        }
        None => i,
    }
}

/// A raw `(key, value)` pair of an object: the key with its quotes, the value as written.
pub type Field<'a> = (&'a [u8], &'a [u8]);

/// The raw `(key, value)` spans of a top-level JSON object, in input order.
///
/// `obj` must already be valid JSON (checked with [`JsonScratch`]); keys are
/// returned with their quotes, values exactly as written.
pub fn object_fields(obj: &[u8]) -> Result<Vec<Field<'_>>, JsonError> {
    let mut fields = Vec::new();
    let mut i = skip_ws(obj, 0);
    if obj.get(i) != Some(&b'{') {
        return Err(JsonError::NotAnObject);
    }
    i = skip_ws(obj, i + 1);
    if obj.get(i) == Some(&b'}') {
        return Ok(fields);
    }
    while i < obj.len() {
        let key_end = skip_string(obj, i);
        let key = &obj[i..key_end];
        i = skip_ws(obj, key_end);
        // ':' (validated input)
        i = skip_ws(obj, i + 1);
        let value_end = skip_value(obj, i);
        fields.push((key, &obj[i..value_end]));
        i = skip_ws(obj, value_end);
        match obj.get(i) {
            Some(b',') => i = skip_ws(obj, i + 1),
            _ => break,
        }
    }
    Ok(fields)
}

/// Decodes a raw JSON string token (with quotes) of validated input.
///
/// Borrows when the string has no escapes; returns `None` for a token that is
/// not a string (a number, an object...).
pub fn decode_string<'a>(scratch: &mut JsonScratch, raw: &'a [u8]) -> Option<Cow<'a, str>> {
    if raw.len() < 2 || raw[0] != b'"' || raw[raw.len() - 1] != b'"' {
        return None;
    }
    let inner = &raw[1..raw.len() - 1];
    if !inner.contains(&b'\\') {
        return std::str::from_utf8(inner).ok().map(Cow::Borrowed);
    }
    scratch
        .with_value(raw, |v| v.as_str().map(|s| Cow::Owned(s.to_owned())))
        .ok()
        .flatten()
}

/// Appends `value` (validated JSON) to `out` without insignificant whitespace.
/// Strings and numbers are copied byte for byte.
pub fn minify_into(value: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < value.len() {
        let b = value[i];
        if b == b'"' {
            let end = skip_string(value, i);
            out.extend_from_slice(&value[i..end]);
            i = end;
        } else {
            if !is_ws(b) {
                out.push(b);
            }
            i += 1;
        }
    }
}

/// Appends `s` to `out` as a JSON string literal, quotes included.
pub fn write_string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(s.len() + 2);
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 0xf) as usize]);
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minify_keeps_strings_and_numbers_byte_for_byte() {
        let mut out = Vec::new();
        minify_into(
            b" { \"a b\" : [ 1.10 , 1e2 ,\n 123456789012345678901234567890 ] , \"s\":\"x \\\" y\" } ",
            &mut out,
        );
        assert_eq!(
            out,
            br#"{"a b":[1.10,1e2,123456789012345678901234567890],"s":"x \" y"}"#
        );
    }

    #[test]
    fn object_fields_finds_raw_spans_in_order() {
        let line = br#" {"topic" : "a", "data": {"x":[1,"}"]} , "event":"e"} "#;
        let fields = object_fields(line).expect("object");
        let keys: Vec<&[u8]> = fields.iter().map(|f| f.0).collect();
        assert_eq!(keys, vec![&b"\"topic\""[..], b"\"data\"", b"\"event\""]);
        assert_eq!(fields[1].1, br#"{"x":[1,"}"]}"#);
        assert_eq!(fields[0].1, br#""a""#);
        assert_eq!(object_fields(b"[1]"), Err(JsonError::NotAnObject));
        assert_eq!(object_fields(b"{}").map(|f| f.len()), Ok(0));
    }

    #[test]
    fn decode_string_unescapes_only_when_needed() {
        let mut scratch = JsonScratch::new();
        assert_eq!(
            decode_string(&mut scratch, br#""plain""#),
            Some(Cow::Borrowed("plain"))
        );
        assert_eq!(
            decode_string(&mut scratch, br#""\u0061b""#).as_deref(),
            Some("ab")
        );
        assert_eq!(decode_string(&mut scratch, b"42"), None);
    }

    #[test]
    fn write_string_escapes_quotes_backslashes_and_controls() {
        let mut out = Vec::new();
        write_string(&mut out, "a\"b\\c\nd\u{1}é");
        assert_eq!(out, "\"a\\\"b\\\\c\\nd\\u0001é\"".as_bytes());
    }

    #[test]
    fn validation_accepts_values_and_refuses_garbage() {
        let mut scratch = JsonScratch::new();
        assert!(scratch.is_valid(b" {\"x\":1} "));
        assert!(scratch.is_valid(b"42"));
        assert!(scratch.is_valid(b"\"s\""));
        assert!(!scratch.is_valid(b"hello"));
        assert!(!scratch.is_valid(b"{\"x\":"));
        assert!(!scratch.is_valid(b""));
    }
}
