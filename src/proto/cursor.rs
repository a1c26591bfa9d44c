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

/// How positions become ids: this run's own (`<epoch>-<seq>`), or the broker's
/// stream ids (`<ms>-<n>`, Redis Streams) when nodes share topics through it.
///
/// Positions are `u64` keys ordered like the ids. A stream id `ms-n` packs into
/// `ms << STREAM_SEQ_BITS | n`; cursors of several topics join the ids with `_`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdScheme {
    Local(Epoch),
    Stream,
}

/// Bits of a packed stream id given to the per-millisecond sequence: a broker
/// stream takes at most 2^20 entries in one millisecond.
pub const STREAM_SEQ_BITS: u32 = 20;

impl IdScheme {
    /// Appends the id of position `key`.
    pub fn write_id(self, out: &mut Vec<u8>, key: u64) {
        match self {
            IdScheme::Local(epoch) => write_id(out, epoch, key),
            IdScheme::Stream => {
                let _ = write!(
                    out,
                    "{}-{}",
                    key >> STREAM_SEQ_BITS,
                    key & ((1 << STREAM_SEQ_BITS) - 1)
                );
            }
        }
    }

    /// The id of position `key` as a string.
    pub fn format_id(self, key: u64) -> String {
        let mut out = Vec::with_capacity(24);
        self.write_id(&mut out, key);
        String::from_utf8(out).unwrap_or_default()
    }

    /// Appends a cursor over several topic positions.
    pub fn write_cursor(self, out: &mut Vec<u8>, keys: impl IntoIterator<Item = u64>) {
        match self {
            IdScheme::Local(epoch) => write_cursor(out, epoch, keys),
            IdScheme::Stream => {
                for (i, key) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(b'_');
                    }
                    self.write_id(out, key);
                }
            }
        }
    }

    /// The positions an id or cursor names, or why it names none of this server's.
    pub fn parse(self, text: &[u8]) -> Result<Vec<u64>, &'static str> {
        match self {
            IdScheme::Local(epoch) => match parse_cursor(text) {
                None => Err("not an id of this server"),
                Some(c) if c.epoch != epoch => Err("id from another server run"),
                Some(c) => Ok(c.seqs),
            },
            IdScheme::Stream => text
                .split(|&b| b == b'_')
                .map(parse_stream_id)
                .collect::<Option<Vec<u64>>>()
                .ok_or("not a stream id of this server"),
        }
    }
}

/// Parses a stream id `ms-n` into its packed key.
pub fn parse_stream_id(text: &[u8]) -> Option<u64> {
    let dash = text.iter().position(|&b| b == b'-')?;
    let number = |part: &[u8]| -> Option<u64> {
        if part.is_empty() || part.len() > 20 || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    let ms = number(&text[..dash])?;
    let n = number(&text[dash + 1..])?;
    if n >= 1 << STREAM_SEQ_BITS || ms >= 1 << (64 - STREAM_SEQ_BITS) {
        return None;
    }
    Some(ms << STREAM_SEQ_BITS | n)
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
    fn stream_ids_pack_in_order_and_round_trip() {
        let a = parse_stream_id(b"1700000000000-0").unwrap();
        let b = parse_stream_id(b"1700000000000-7").unwrap();
        let c = parse_stream_id(b"1700000000001-0").unwrap();
        assert!(a < b && b < c);
        assert_eq!(IdScheme::Stream.format_id(b), "1700000000000-7");
        let mut cur = Vec::new();
        IdScheme::Stream.write_cursor(&mut cur, [a, c]);
        assert_eq!(cur, b"1700000000000-0_1700000000001-0");
        assert_eq!(IdScheme::Stream.parse(&cur), Ok(vec![a, c]));
        assert!(IdScheme::Stream.parse(b"0abcdef01234-5.6").is_err());
        assert_eq!(parse_stream_id(b"1-1048576"), None);
    }

    #[test]
    fn local_ids_of_another_run_are_told_apart() {
        let ours = IdScheme::Local(Epoch::new(1));
        let theirs = IdScheme::Local(Epoch::new(2));
        let id = theirs.format_id(5);
        assert_eq!(ours.parse(id.as_bytes()), Err("id from another server run"));
        assert_eq!(theirs.parse(id.as_bytes()), Ok(vec![5]));
        assert_eq!(
            ours.parse(b"1700000000000-0"),
            Err("not an id of this server")
        );
    }

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
