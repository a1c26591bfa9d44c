//! Streaming UTF-8 validation that fails at the first invalid byte.
//!
//! Autobahn 6.4.x sends a text message whose invalid byte arrives in the middle of
//! a frame (or of a fragment) and expects the close before the rest is sent, so a
//! message cannot be validated at its end: every chunk is checked as it arrives and
//! only a truncated, still-possibly-valid sequence is carried to the next chunk.
//! The heavy lifting is `std::str::from_utf8`, whose `Utf8Error::error_len()` tells
//! "invalid" (`Some`) from "ends in the middle of a sequence" (`None`).

/// The input is not UTF-8; reported at the first byte that proves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Invalid;

/// Validator state: the bytes of an incomplete sequence at the end of the last chunk.
///
/// INVARIANT: `pending[..len]` is a strict prefix of some valid UTF-8 sequence
/// (`len` is 0..=3), so `pending[0]` is a lead byte when `len > 0`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Utf8Validator {
    pending: [u8; 4],
    len: u8,
}

/// Sequence length announced by a lead byte that `from_utf8` accepted as a prefix.
fn sequence_len(lead: u8) -> usize {
    match lead {
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => unreachable!("{lead:#04x} is not a lead byte of an incomplete sequence"),
    }
}

impl Utf8Validator {
    /// Validates the next chunk of the message.
    pub fn feed(&mut self, mut input: &[u8]) -> Result<(), Invalid> {
        if self.len > 0 {
            let have = usize::from(self.len);
            let take = (sequence_len(self.pending[0]) - have).min(input.len());
            self.pending[have..have + take].copy_from_slice(&input[..take]);
            self.len += take as u8;
            input = &input[take..];
            match std::str::from_utf8(&self.pending[..usize::from(self.len)]) {
                Ok(_) => self.len = 0,
                Err(e) if e.error_len().is_some() => return Err(Invalid),
                // Still a valid prefix: the chunk ended inside the sequence.
                Err(_) => {
                    debug_assert!(input.is_empty(), "pending {:02x?}", self.pending);
                    return Ok(());
                }
            }
        }
        match std::str::from_utf8(input) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_some() => Err(Invalid),
            Err(e) => {
                let rest = &input[e.valid_up_to()..];
                self.pending[..rest.len()].copy_from_slice(rest);
                self.len = rest.len() as u8;
                Ok(())
            }
        }
    }

    /// The message ended: a sequence left incomplete is invalid. Resets the validator.
    pub fn finish(&mut self) -> Result<(), Invalid> {
        let complete = self.len == 0;
        *self = Self::default();
        if complete {
            Ok(())
        } else {
            Err(Invalid)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fed_in_pieces(bytes: &[u8], cuts: &[usize]) -> Result<(), Invalid> {
        let mut v = Utf8Validator::default();
        let mut at = 0;
        for &cut in cuts.iter().chain(std::iter::once(&bytes.len())) {
            v.feed(&bytes[at..cut])?;
            at = cut;
        }
        v.finish()
    }

    #[test]
    fn every_two_way_split_agrees_with_std() {
        let samples: &[&[u8]] = &[
            "κόσμε".as_bytes(),
            "Hello-µ@ßöäüàá-UTF-8!!".as_bytes(),
            b"\xf0\x90\x80\x80",
            b"\xf4\x8f\xbf\xbf",
            b"\xf4\x90\x80\x80",
            b"\xed\xa0\x80",
            b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69\x74\x65\x64",
            b"\xe0\x80\xaf",
            b"\xc0\xaf",
            b"\xce",
            b"\xce\xba\xe1",
            b"\xff",
        ];
        for s in samples {
            let want = std::str::from_utf8(s).is_ok();
            for a in 0..=s.len() {
                for b in a..=s.len() {
                    assert_eq!(
                        fed_in_pieces(s, &[a, b]).is_ok(),
                        want,
                        "{s:02x?} cut at {a},{b}"
                    );
                }
            }
        }
    }

    #[test]
    fn invalid_byte_fails_as_soon_as_it_arrives_not_at_the_end() {
        let mut v = Utf8Validator::default();
        v.feed("κόσμε".as_bytes()).unwrap();
        v.feed(b"\xed").unwrap();
        // 0xED 0xA0 starts a surrogate: known invalid without the third byte.
        assert_eq!(v.feed(b"\xa0"), Err(Invalid));
    }

    #[test]
    fn truncated_sequence_is_fine_until_the_message_ends() {
        let mut v = Utf8Validator::default();
        v.feed(b"ab\xf0\x90").unwrap();
        assert_eq!(v.finish(), Err(Invalid));
        // finish resets for the next message
        assert_eq!(v.finish(), Ok(()));
    }
}
