//! The server side of the opening handshake (RFC 6455 §4.2.1, §4.2.2).
//!
//! Independent of the HTTP parser: the caller extracts the header values and
//! folds the token lists into booleans (`Connection` is a token list: Firefox sends
//! `keep-alive, Upgrade`). The one extension, permessage-deflate, is negotiated by
//! [`super::deflate::negotiate`]; no subprotocol is.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha1::{Digest, Sha1};

use super::deflate::{self, Agreed};

/// §1.3: the GUID appended to the key before hashing.
const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The handshake-relevant parts of an upgrade request, as extracted by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeRequest<'a> {
    /// The method is `GET`.
    pub method_is_get: bool,
    /// The version is HTTP/1.1 or later.
    pub http11_or_later: bool,
    /// `Upgrade` contains the token `websocket` (case-insensitive).
    pub upgrade_websocket: bool,
    /// `Connection` contains the token `Upgrade` (case-insensitive).
    pub connection_upgrade: bool,
    /// The `Sec-WebSocket-Key` value, trimmed of surrounding whitespace.
    pub key: Option<&'a [u8]>,
    /// The `Sec-WebSocket-Version` value, trimmed of surrounding whitespace.
    pub version: Option<&'a [u8]>,
}

/// `Sec-WebSocket-Accept` value: 28 bytes of base64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcceptKey(pub [u8; 28]);

impl AcceptKey {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Why an upgrade request is refused; the peer's fault: answer [`status`](Self::status)
/// with [`reason`](Self::reason) in the body (plus [`extra_header`](Self::extra_header))
/// and close.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// §4.2.1 (1): "An HTTP/1.1 or higher GET request".
    #[error("websocket upgrade needs a GET request")]
    NotGet,
    /// §4.2.1 (1): "An HTTP/1.1 or higher GET request".
    #[error("websocket upgrade needs HTTP/1.1 or later")]
    NotHttp11,
    /// §4.2.1 (3): "An |Upgrade| header field containing the value "websocket"".
    #[error("missing Upgrade: websocket")]
    MissingUpgradeWebsocket,
    /// §4.2.1 (4): "A |Connection| header field that includes the token "Upgrade"".
    #[error("missing Connection: Upgrade")]
    MissingConnectionUpgrade,
    /// §4.2.1 (5): "A |Sec-WebSocket-Key| header field with a base64-encoded value
    /// that, when decoded, is 16 bytes in length".
    #[error("missing or malformed Sec-WebSocket-Key")]
    BadKey,
    /// §4.2.1 (6): "A |Sec-WebSocket-Version| header field, with a value of 13".
    /// §4.2.2: otherwise answer 426 with `Sec-WebSocket-Version: 13`.
    #[error("unsupported Sec-WebSocket-Version")]
    UnsupportedVersion,
}

impl HandshakeError {
    /// The HTTP status to answer with.
    pub const fn status(self) -> u16 {
        match self {
            Self::UnsupportedVersion => 426,
            _ => 400,
        }
    }

    /// A short reason for the response body.
    pub const fn reason(self) -> &'static str {
        match self {
            Self::NotGet => "websocket upgrade needs a GET request",
            Self::NotHttp11 => "websocket upgrade needs HTTP/1.1 or later",
            Self::MissingUpgradeWebsocket => "missing Upgrade: websocket",
            Self::MissingConnectionUpgrade => "missing Connection: Upgrade",
            Self::BadKey => "Sec-WebSocket-Key must be base64 of 16 bytes",
            Self::UnsupportedVersion => "Sec-WebSocket-Version must be 13",
        }
    }

    /// A header line (with CRLF) the refusal must carry, if any.
    pub const fn extra_header(self) -> Option<&'static str> {
        match self {
            // §4.2.2: "the server MUST ... send back ... a |Sec-WebSocket-Version|
            // header field indicating the version(s) the server is capable of".
            Self::UnsupportedVersion => Some("Sec-WebSocket-Version: 13\r\n"),
            _ => None,
        }
    }
}

/// Checks an upgrade request and returns the accept key for the `101` response.
pub fn check_handshake(req: &HandshakeRequest<'_>) -> Result<AcceptKey, HandshakeError> {
    if !req.method_is_get {
        return Err(HandshakeError::NotGet);
    }
    if !req.http11_or_later {
        return Err(HandshakeError::NotHttp11);
    }
    if !req.upgrade_websocket {
        return Err(HandshakeError::MissingUpgradeWebsocket);
    }
    if !req.connection_upgrade {
        return Err(HandshakeError::MissingConnectionUpgrade);
    }
    let key = req.key.ok_or(HandshakeError::BadKey)?;
    // The nonce must decode to exactly 16 bytes; a longer value overflows `nonce`.
    let mut nonce = [0u8; 16];
    match STANDARD.decode_slice(key, &mut nonce) {
        Ok(16) => {}
        _ => return Err(HandshakeError::BadKey),
    }
    if req.version != Some(b"13") {
        return Err(HandshakeError::UnsupportedVersion);
    }
    Ok(AcceptKey(accept_key(key)))
}

/// §4.2.2 (5.4): base64(SHA-1(key + GUID)); the key is used as sent, not decoded.
pub fn accept_key(key: &[u8]) -> [u8; 28] {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(GUID);
    let digest = sha.finalize();
    let mut out = [0u8; 28];
    let n = STANDARD
        .encode_slice(digest, &mut out)
        .expect("20 bytes encode to 28");
    debug_assert_eq!(n, 28);
    out
}

/// Appends the `101 Switching Protocols` response head, with the
/// permessage-deflate answer when `deflate` is on.
pub fn write_101(out: &mut Vec<u8>, accept: &AcceptKey, deflate: Agreed) {
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
    );
    out.extend_from_slice(accept.as_bytes());
    out.extend_from_slice(b"\r\n");
    if deflate.is_on() {
        deflate::write_answer(out, deflate);
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: HandshakeRequest<'static> = HandshakeRequest {
        method_is_get: true,
        http11_or_later: true,
        upgrade_websocket: true,
        connection_upgrade: true,
        key: Some(b"dGhlIHNhbXBsZSBub25jZQ=="),
        version: Some(b"13"),
    };

    #[test]
    fn rfc_sample_key_gives_the_rfc_accept_value() {
        // RFC 6455 §1.3 and §4.2.2 (5.4); cross-checked with Python's hashlib + base64.
        assert_eq!(
            &accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn good_request_gets_a_101_with_the_accept_key() {
        let accept = check_handshake(&GOOD).unwrap();
        let mut out = Vec::new();
        write_101(&mut out, &accept, Agreed::NONE);
        assert_eq!(
            out,
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        );
    }

    #[test]
    fn each_missing_requirement_is_refused_with_its_status() {
        let cases: &[(HandshakeRequest<'_>, HandshakeError, u16)] = &[
            (
                HandshakeRequest {
                    method_is_get: false,
                    ..GOOD
                },
                HandshakeError::NotGet,
                400,
            ),
            (
                HandshakeRequest {
                    http11_or_later: false,
                    ..GOOD
                },
                HandshakeError::NotHttp11,
                400,
            ),
            (
                HandshakeRequest {
                    upgrade_websocket: false,
                    ..GOOD
                },
                HandshakeError::MissingUpgradeWebsocket,
                400,
            ),
            (
                HandshakeRequest {
                    connection_upgrade: false,
                    ..GOOD
                },
                HandshakeError::MissingConnectionUpgrade,
                400,
            ),
            (
                HandshakeRequest { key: None, ..GOOD },
                HandshakeError::BadKey,
                400,
            ),
            (
                HandshakeRequest {
                    version: None,
                    ..GOOD
                },
                HandshakeError::UnsupportedVersion,
                426,
            ),
            (
                HandshakeRequest {
                    version: Some(b"8"),
                    ..GOOD
                },
                HandshakeError::UnsupportedVersion,
                426,
            ),
        ];
        for (req, err, status) in cases {
            assert_eq!(check_handshake(req), Err(*err), "{req:?}");
            assert_eq!(err.status(), *status);
        }
        assert_eq!(
            HandshakeError::UnsupportedVersion.extra_header(),
            Some("Sec-WebSocket-Version: 13\r\n")
        );
    }

    #[test]
    fn key_must_decode_to_exactly_16_bytes() {
        let bad: [&[u8]; 5] = [
            b"",
            b"not base64 at all!!!!!!!",
            b"AAAAAAAAAAAAAAAAAAAAAA", // 16 bytes, but padding missing
            b"AAAAAAAAAAAAAAAAAAAA",   // 15 bytes
            b"AAAAAAAAAAAAAAAAAAAAAAAAAAA=", // 20 bytes
        ];
        for key in bad {
            let req = HandshakeRequest {
                key: Some(key),
                ..GOOD
            };
            assert_eq!(
                check_handshake(&req),
                Err(HandshakeError::BadKey),
                "{:?}",
                String::from_utf8_lossy(key)
            );
        }
        let ok = HandshakeRequest {
            key: Some(b"AAAAAAAAAAAAAAAAAAAAAA=="),
            ..GOOD
        };
        assert!(check_handshake(&ok).is_ok());
    }
}
