//! The chunked transfer coding (RFC 9112 §7.1), decoded incrementally.

use super::HttpError;

/// Chunk extension bytes (and whitespace after a chunk size) accepted in one body. They
/// carry nothing ringcast uses, so they are only a way to make a small body cost a lot of
/// wire: hyper settled on 16 KiB for the same reason.
const MAX_EXTENSION_BYTES: usize = 16 * 1024;

/// Trailer section bytes accepted (skipped, never stored); the same order as a head.
const MAX_TRAILER_BYTES: usize = 8 * 1024;

/// Hex digits in one chunk size: enough for any `u64`. Without it a size could be padded
/// with leading zeros forever.
const MAX_SIZE_DIGITS: u8 = 16;

/// Decodes a chunked body, byte by byte or in any split, into the caller's `Vec`.
///
/// ```text
/// chunked-body = *chunk last-chunk trailer-section CRLF
/// chunk        = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
/// last-chunk   = 1*("0") [ chunk-ext ] CRLF
/// ```
///
/// Call [`decode`](Self::decode) with each new run of body bytes. It appends the chunk
/// data to `out`, returns how many input bytes it consumed and whether the body is done.
/// Bytes after the end of the body (a pipelined request) are not consumed. After an
/// error the decoder keeps returning that error; close the connection.
///
/// Line endings must be CRLF: a bare LF is refused rather than guessed at, since
/// parsers that disagree about framing are how requests get smuggled.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    /// `max_body_bytes`: the sum of all chunk sizes may not exceed it.
    max_body: u64,
    /// Chunk data bytes announced by the chunk sizes read so far, the current one
    /// included. INVARIANT: `announced <= max_body`.
    announced: u64,
    /// Extension and size-line whitespace bytes seen, against [`MAX_EXTENSION_BYTES`].
    extension_bytes: usize,
    /// Trailer section bytes seen, against [`MAX_TRAILER_BYTES`].
    trailer_bytes: usize,
}

/// Where the decoder is in the grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the hex digits of a chunk size; `digits` read so far (0 at line start).
    Size { size: u64, digits: u8 },
    /// Whitespace after the size digits, before `;` or CR.
    SizeWhitespace { size: u64 },
    /// Inside a chunk extension, up to CR.
    Extension { size: u64 },
    /// The size line's CR was read; LF must follow.
    SizeLf { size: u64 },
    /// Copying chunk data; `remaining` bytes of this chunk to go.
    Data { remaining: u64 },
    /// The chunk data is complete; CR must follow.
    DataCr,
    /// The CR after the chunk data was read; LF must follow.
    DataLf,
    /// At the start of a trailer field line, or of the final empty line.
    TrailerStart,
    /// Inside a trailer field line (skipped).
    TrailerLine,
    /// A trailer line's CR was read; LF must follow.
    TrailerLf,
    /// The final empty line's CR was read; LF must follow.
    EndLf,
    /// The body is complete.
    Done,
    /// A rule was broken; every later call returns the same error.
    Failed(HttpError),
}

impl ChunkedDecoder {
    /// A decoder for one body of at most `max_body_bytes` decoded bytes.
    pub fn new(max_body_bytes: u64) -> Self {
        Self {
            state: State::Size { size: 0, digits: 0 },
            max_body: max_body_bytes,
            announced: 0,
            extension_bytes: 0,
            trailer_bytes: 0,
        }
    }

    /// Whether the whole body, trailers included, has been decoded.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes as much of `input` as possible, appending chunk data to `out`.
    ///
    /// # Return
    /// `(consumed, done)`: `input[..consumed]` has been used; when `done`, the body is
    /// complete and `input[consumed..]` belongs to whatever follows it. `consumed` is
    /// `input.len()` whenever `done` is false.
    ///
    /// # Errors
    /// [`HttpError::BodyTooLarge`] at the chunk-size digit that takes the total over the
    /// limit (before its data arrives), [`HttpError::BadChunkSize`],
    /// [`HttpError::BadChunkFraming`], [`HttpError::ChunkExtensionsTooLong`],
    /// [`HttpError::TrailersTooLarge`]. Data decoded before the offending byte stays in
    /// `out`; nothing after it is looked at.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(usize, bool), HttpError> {
        let mut at = 0;
        while at < input.len() {
            match self.state {
                State::Done => break,
                State::Failed(err) => return Err(err),
                State::Data { remaining } => {
                    let available = input.len() - at;
                    let take = usize::try_from(remaining).map_or(available, |r| r.min(available));
                    out.extend_from_slice(&input[at..at + take]);
                    at += take;
                    let remaining = remaining - take as u64;
                    self.state = if remaining == 0 {
                        State::DataCr
                    } else {
                        State::Data { remaining }
                    };
                }
                state => {
                    let byte = input[at];
                    at += 1;
                    self.state = match self.step(state, byte) {
                        Ok(next) => next,
                        Err(err) => State::Failed(err),
                    };
                }
            }
        }
        match self.state {
            State::Failed(err) => Err(err),
            state => Ok((at, state == State::Done)),
        }
    }

    /// One framing byte. `Data` and the terminal states never get here.
    fn step(&mut self, state: State, byte: u8) -> Result<State, HttpError> {
        use State::*;
        Ok(match state {
            Size { size, digits } => match (hex_digit(byte), byte) {
                (Some(digit), _) => {
                    if digits == MAX_SIZE_DIGITS {
                        return Err(HttpError::BadChunkSize);
                    }
                    // 16 digits of 4 bits cannot overflow a u64.
                    let size = (size << 4) | u64::from(digit);
                    // Enforce the body limit at the digit that reveals it, before a
                    // single byte of the chunk is buffered.
                    if size > self.max_body - self.announced {
                        return Err(HttpError::BodyTooLarge);
                    }
                    Size {
                        size,
                        digits: digits + 1,
                    }
                }
                // chunk-size = 1*HEXDIG
                _ if digits == 0 => return Err(HttpError::BadChunkSize),
                (None, b'\r') => SizeLf { size },
                (None, b';') => self.extension(Extension { size })?,
                (None, b' ' | b'\t') => self.extension(SizeWhitespace { size })?,
                (None, b'\n') => return Err(HttpError::BadChunkFraming),
                (None, _) => return Err(HttpError::BadChunkSize),
            },
            // chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
            SizeWhitespace { size } => match byte {
                b' ' | b'\t' => self.extension(state)?,
                b';' => self.extension(Extension { size })?,
                b'\r' => SizeLf { size },
                b'\n' => return Err(HttpError::BadChunkFraming),
                _ => return Err(HttpError::BadChunkSize),
            },
            // Extensions are ignored; only their line ending matters.
            Extension { size } => match byte {
                b'\r' => SizeLf { size },
                b'\n' => return Err(HttpError::BadChunkFraming),
                _ => self.extension(state)?,
            },
            SizeLf { size } => match byte {
                b'\n' if size == 0 => TrailerStart,
                b'\n' => {
                    self.announced += size;
                    debug_assert!(
                        self.announced <= self.max_body,
                        "announced {:#x} > max_body {:#x}",
                        self.announced,
                        self.max_body
                    );
                    Data { remaining: size }
                }
                _ => return Err(HttpError::BadChunkFraming),
            },
            // "chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF": data not followed
            // by CRLF means the size was a lie.
            DataCr if byte == b'\r' => DataLf,
            DataLf if byte == b'\n' => Size { size: 0, digits: 0 },
            DataCr | DataLf => return Err(HttpError::BadChunkFraming),
            // trailer-section = *( field-line CRLF ); skipped, bounded.
            TrailerStart | TrailerLine | TrailerLf | EndLf => {
                self.trailer_bytes += 1;
                if self.trailer_bytes > MAX_TRAILER_BYTES {
                    return Err(HttpError::TrailersTooLarge);
                }
                match (state, byte) {
                    (TrailerStart, b'\r') => EndLf,
                    (TrailerStart | TrailerLine, b'\n') => return Err(HttpError::BadChunkFraming),
                    (TrailerLine, b'\r') => TrailerLf,
                    (TrailerStart | TrailerLine, _) => TrailerLine,
                    (TrailerLf, b'\n') => TrailerStart,
                    (EndLf, b'\n') => Done,
                    _ => return Err(HttpError::BadChunkFraming),
                }
            }
            Data { .. } | Done | Failed(_) => {
                unreachable!("ChunkedDecoder::step called in state {state:?}")
            }
        })
    }

    /// Counts one extension byte and stays in `state`.
    fn extension(&mut self, state: State) -> Result<State, HttpError> {
        self.extension_bytes += 1;
        if self.extension_bytes > MAX_EXTENSION_BYTES {
            return Err(HttpError::ChunkExtensionsTooLong);
        }
        Ok(state)
    }
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = b"5\r\nhello\r\n1;name=value\r\n \r\n\
        10 ; a ; b=\"c\"\r\n0123456789abcdef\r\n\
        0\r\nX-Trailer: 1\r\nY: 2\r\n\r\nNEXT";
    const DECODED: &[u8] = b"hello 0123456789abcdef";
    /// Where the body ends inside `BODY`.
    const END: usize = BODY.len() - 4;

    /// Feeds `pieces` in order, as a reader would, keeping unconsumed bytes for the next.
    fn feed(decoder: &mut ChunkedDecoder, pieces: &[&[u8]]) -> Result<(Vec<u8>, usize), HttpError> {
        let mut out = Vec::new();
        let mut total = 0;
        for piece in pieces {
            let (consumed, done) = decoder.decode(piece, &mut out)?;
            total += consumed;
            if done {
                return Ok((out, total));
            }
            assert_eq!(
                consumed,
                piece.len(),
                "a decoder that is not done consumes everything"
            );
        }
        panic!(
            "body not done after {total} bytes; decoded {:?}",
            String::from_utf8_lossy(&out)
        );
    }

    #[test]
    fn a_multi_chunk_body_decodes_identically_at_every_split_point() {
        for split in 0..=BODY.len() {
            let mut decoder = ChunkedDecoder::new(1024);
            let (out, consumed) = feed(&mut decoder, &[&BODY[..split], &BODY[split..]]).unwrap();
            assert_eq!((&out[..], consumed), (DECODED, END), "split at {split}");
            assert!(decoder.is_done());
        }
    }

    #[test]
    fn a_body_fed_one_byte_at_a_time_decodes_identically() {
        let bytes: Vec<&[u8]> = BODY.chunks(1).collect();
        let (out, consumed) = feed(&mut ChunkedDecoder::new(1024), &bytes).unwrap();
        assert_eq!((&out[..], consumed), (DECODED, END));
    }

    #[test]
    fn a_done_decoder_consumes_nothing_more() {
        let mut decoder = ChunkedDecoder::new(1024);
        let mut out = Vec::new();
        assert_eq!(decoder.decode(b"0\r\n\r\nGET", &mut out), Ok((5, true)));
        assert_eq!(decoder.decode(b"GET", &mut out), Ok((0, true)));
        assert!(out.is_empty());
    }

    #[test]
    fn a_body_of_exactly_the_limit_passes() {
        let mut decoder = ChunkedDecoder::new(DECODED.len() as u64);
        assert_eq!(feed(&mut decoder, &[BODY]).unwrap().0, DECODED);
    }

    #[test]
    fn a_body_over_the_limit_fails_at_the_size_digit_that_reveals_it() {
        // 22 bytes in all; with a limit of 21 the last chunk's size "10" fails at its
        // "0" digit, before the line ends or any of its data arrives.
        let at = BODY.windows(2).position(|w| w == b"10").unwrap();
        let mut decoder = ChunkedDecoder::new(DECODED.len() as u64 - 1);
        let mut out = Vec::new();
        assert_eq!(
            decoder.decode(&BODY[..at + 1], &mut out),
            Ok((at + 1, false))
        );
        assert_eq!(
            decoder.decode(&BODY[at + 1..at + 2], &mut out),
            Err(HttpError::BodyTooLarge)
        );
        assert_eq!(
            decoder.decode(b"", &mut out),
            Err(HttpError::BodyTooLarge),
            "errors stick"
        );
        // A single huge chunk fails without buffering anything.
        let mut decoder = ChunkedDecoder::new(1 << 20);
        let mut out = Vec::new();
        assert_eq!(decoder.decode(b"100000", &mut out), Ok((6, false)));
        assert_eq!(decoder.decode(b"1", &mut out), Err(HttpError::BodyTooLarge));
        assert!(out.is_empty());
    }

    #[test]
    fn malformed_framing_is_refused_naming_the_rule() {
        let cases: &[(&[u8], HttpError)] = &[
            (b"\r\n", HttpError::BadChunkSize),
            (b";ext\r\n", HttpError::BadChunkSize),
            (b"g\r\n", HttpError::BadChunkSize),
            (b"1 2\r\n", HttpError::BadChunkSize),
            (b"-1\r\n", HttpError::BadChunkSize),
            (b"0x1\r\n", HttpError::BadChunkSize),
            (b"10000000000000000\r\n", HttpError::BadChunkSize),
            (b"00000000000000001\r\n", HttpError::BadChunkSize),
            (b"1\nx\r\n", HttpError::BadChunkFraming),
            (b"1;a\nx\r\n", HttpError::BadChunkFraming),
            (b"1\rx", HttpError::BadChunkFraming),
            (b"1\r\nxy", HttpError::BadChunkFraming),
            (b"1\r\nx\n", HttpError::BadChunkFraming),
            (b"1\r\nx\rx", HttpError::BadChunkFraming),
            (b"0\r\n\n", HttpError::BadChunkFraming),
            (b"0\r\nA: b\n", HttpError::BadChunkFraming),
            (b"0\r\n\rx", HttpError::BadChunkFraming),
            (b"0\r\nA\rx", HttpError::BadChunkFraming),
        ];
        for &(input, err) in cases {
            let mut decoder = ChunkedDecoder::new(u64::MAX);
            let got = decoder.decode(input, &mut Vec::new());
            assert_eq!(got, Err(err), "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn sixteen_hex_digits_fit_and_leading_zeros_are_fine() {
        let mut decoder = ChunkedDecoder::new(u64::MAX);
        assert_eq!(
            decoder.decode(b"ffffffffffffffff\r\n", &mut Vec::new()),
            Ok((18, false))
        );
        let mut decoder = ChunkedDecoder::new(1);
        let (out, _) = feed(&mut decoder, &[b"0001\r\nx\r\n000\r\n\r\n"]).unwrap();
        assert_eq!(out, b"x");
    }

    #[test]
    fn extensions_and_trailers_are_bounded() {
        let mut long_extension = b"1;".to_vec();
        long_extension.resize(2 + MAX_EXTENSION_BYTES, b'a');
        let mut decoder = ChunkedDecoder::new(10);
        assert_eq!(
            decoder
                .decode(&long_extension[..long_extension.len() - 1], &mut Vec::new())
                .map(|r| r.1),
            Ok(false)
        );
        assert_eq!(
            decoder.decode(b"a", &mut Vec::new()),
            Err(HttpError::ChunkExtensionsTooLong)
        );

        let mut long_trailer = b"0\r\nX: ".to_vec();
        long_trailer.resize(3 + MAX_TRAILER_BYTES, b'a');
        let mut decoder = ChunkedDecoder::new(10);
        assert_eq!(
            decoder.decode(&long_trailer, &mut Vec::new()),
            Ok((long_trailer.len(), false))
        );
        assert_eq!(
            decoder.decode(b"\r", &mut Vec::new()),
            Err(HttpError::TrailersTooLarge)
        );
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic_the_chunked_decoder(
            input in proptest::collection::vec(proptest::num::u8::ANY, 0..256),
            split in 0usize..256,
            max in 0u64..64,
        ) {
            let split = split.min(input.len());
            let mut decoder = ChunkedDecoder::new(max);
            let mut out = Vec::new();
            if let Ok((_, false)) = decoder.decode(&input[..split], &mut out) {
                let _ = decoder.decode(&input[split..], &mut out);
            }
            proptest::prop_assert!(out.len() as u64 <= max);
        }

        #[test]
        fn random_chunked_bodies_decode_to_their_data_under_any_split(
            chunks in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 1..20), 0..6),
            split in 0usize..200,
        ) {
            let mut wire = Vec::new();
            for chunk in &chunks {
                wire.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                wire.extend_from_slice(chunk);
                wire.extend_from_slice(b"\r\n");
            }
            wire.extend_from_slice(b"0\r\n\r\n");
            let split = split.min(wire.len());
            let (out, consumed) = feed(&mut ChunkedDecoder::new(1 << 20), &[&wire[..split], &wire[split..]]).unwrap();
            proptest::prop_assert_eq!(out, chunks.concat());
            proptest::prop_assert_eq!(consumed, wire.len());
        }
    }
}
