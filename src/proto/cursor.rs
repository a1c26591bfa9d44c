//! Message ids and stream cursors, as clients see them.
//!
//! A message id is `<epoch>-<seq>`: `epoch` is 12 lowercase hex digits drawn at
//! server start (so ids of another run are told apart), `seq` the message's decimal
//! position in its topic, from 1. A stream over several topics carries in its SSE
//! `id:` line a cursor `<epoch>-<s1>.<s2>...`: one position per topic of the stream,
//! in the order the request listed them (0 = nothing seen yet). A one-topic cursor
//! is therefore exactly the id of the last message seen.

use std::io::Write as _;

/// Server-run identifier carried in every id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Epoch(u64);

impl Epoch {
    /// Epochs use 48 bits: 12 hex digits.
    pub const MASK: u64 = (1 << 48) - 1;

    pub fn new(raw: u64) -> Self {
        Epoch(raw & Self::MASK)
    }

    pub fn get(self) -> u64 {
        self.0
    }
}

/// Appends `<epoch>-<seq>`.
pub fn write_id(out: &mut Vec<u8>, epoch: Epoch, seq: u64) {
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{:012x}-{}", epoch.0, seq);
}

/// `<epoch>-<seq>` as a string.
pub fn format_id(epoch: Epoch, seq: u64) -> String {
    format!("{:012x}-{}", epoch.0, seq)
}

/// Appends a cursor over several topic positions.
pub fn write_cursor(out: &mut Vec<u8>, epoch: Epoch, seqs: impl IntoIterator<Item = u64>) {
    let _ = write!(out, "{:012x}-", epoch.0);
    for (i, seq) in seqs.into_iter().enumerate() {
        if i > 0 {
            out.push(b'.');
        }
        let _ = write!(out, "{seq}");
    }
}

/// A cursor or id as parsed, before it is checked against this run and stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub epoch: Epoch,
    pub seqs: Vec<u64>,
}

/// Parses an id or a cursor; `None` when it is not of this server's shape.
pub fn parse_cursor(text: &[u8]) -> Option<Cursor> {
    let dash = text.iter().position(|&b| b == b'-')?;
    let (hex, rest) = (&text[..dash], &text[dash + 1..]);
    if hex.len() != 12 || !hex.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let epoch = u64::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
    let seqs = rest
        .split(|&b| b == b'.')
        .map(|part| {
            if part.is_empty() || part.len() > 20 || !part.iter().all(u8::is_ascii_digit) {
                return None;
            }
            std::str::from_utf8(part).ok()?.parse::<u64>().ok()
        })
        .collect::<Option<Vec<u64>>>()?;
    Some(Cursor {
        epoch: Epoch::new(epoch),
        seqs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_cursors_round_trip() {
        let epoch = Epoch::new(0xabc_def0_1234);
        let id = format_id(epoch, 42);
        assert_eq!(id, "0abcdef01234-42");
        assert_eq!(
            parse_cursor(id.as_bytes()),
            Some(Cursor {
                epoch,
                seqs: vec![42]
            })
        );
        let mut c = Vec::new();
        write_cursor(&mut c, epoch, [3, 0, 17]);
        assert_eq!(
            parse_cursor(&c),
            Some(Cursor {
                epoch,
                seqs: vec![3, 0, 17]
            })
        );
    }

    #[test]
    fn foreign_shapes_are_not_cursors() {
        for bad in [
            &b""[..],
            b"42",
            b"0abcdef01234",
            b"0abcdef01234-",
            b"0abcdef01234-1..2",
            b"0ABCDEF01234-1",
            b"0abcdef0123-1",
            b"0abcdef01234-+1",
            b"0abcdef01234-99999999999999999999999",
        ] {
            assert_eq!(
                parse_cursor(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
