//! Close status codes (RFC 6455 §7.4) and the Close frame body (§5.5.1).

use super::error::ProtocolError;
use super::utf8::Utf8Validator;

/// Status codes this crate sends (§7.4.1).
pub mod code {
    /// "normal closure".
    pub const NORMAL: u16 = 1000;
    /// "going away", such as a server going down (our drain).
    pub const GOING_AWAY: u16 = 1001;
    /// "terminating the connection due to a protocol error".
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// "received data within a message that was not consistent with the type of the
    /// message (e.g., non-UTF-8 data within a text message)".
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// "received a message that violates its policy" (our slow-consumer cut).
    pub const POLICY_VIOLATION: u16 = 1008;
    /// "received a message that is too big for it to process".
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// "encountered an unexpected condition that prevented it from fulfilling the request".
    pub const INTERNAL_ERROR: u16 = 1011;
    /// "Try Again Later" (IANA registry): a temporary server condition, such as
    /// the inbound memory budget spent.
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// Whether a peer may send `code` in a Close frame.
///
/// - 0-999: "not used"; 1004: reserved; 1005, 1006, 1015: "MUST NOT be set as a
///   status code in a Close control frame by an endpoint".
/// - 1000-1003 and 1007-1011 are defined by §7.4.1. 1012 (Service Restart),
///   1013 (Try Again Later) and 1014 (Bad Gateway) were registered with IANA later;
///   Autobahn 7.9.x no longer lists them as invalid (its invalid set is
///   0, 999, 1004, 1005, 1006, 1016, 1100, 2000, 2999), and browsers and proxies
///   send them, so they are accepted. Everything else up to 2999 is reserved for
///   future IANA registrations and rejected.
/// - 3000-3999 (libraries, frameworks) and 4000-4999 (private use) are valid;
///   5000 and up are not defined.
pub const fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Splits and checks a Close frame body: `Ok(None)` for an empty body, else the
/// code and the reason (valid UTF-8).
pub fn parse_close_body(body: &[u8]) -> Result<Option<(u16, &[u8])>, ProtocolError> {
    match body {
        [] => Ok(None),
        // §5.5.1: "If there is a body, the first two bytes of the body MUST be a
        // 2-byte unsigned integer ... representing a status code".
        [_] => Err(ProtocolError::CloseFrameOneByte),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            // §7.4: endpoints MUST NOT send reserved or "not used" codes.
            if !is_valid_close_code(code) {
                return Err(ProtocolError::InvalidCloseCode);
            }
            // §5.5.1: "the data MUST be UTF-8-encoded" (Autobahn 7.5.1 expects 1007).
            let mut utf8 = Utf8Validator::default();
            if utf8.feed(reason).and_then(|()| utf8.finish()).is_err() {
                return Err(ProtocolError::InvalidUtf8InCloseReason);
            }
            Ok(Some((code, reason)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_follow_rfc_iana_and_autobahn_7_7_and_7_9() {
        let valid = [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014,
        ];
        let valid_ranges = [3000, 3999, 4000, 4999];
        let invalid = [
            0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ];
        for c in valid.iter().chain(&valid_ranges) {
            assert!(is_valid_close_code(*c), "{c} should be valid");
        }
        for c in invalid {
            assert!(!is_valid_close_code(c), "{c} should be invalid");
        }
    }

    #[test]
    fn close_body_rules_map_to_their_errors() {
        assert_eq!(parse_close_body(b""), Ok(None));
        assert_eq!(
            parse_close_body(b"\x03"),
            Err(ProtocolError::CloseFrameOneByte)
        );
        assert_eq!(
            parse_close_body(b"\x03\xe8ok"),
            Ok(Some((1000, &b"ok"[..])))
        );
        assert_eq!(
            parse_close_body(b"\x03\xed"),
            Err(ProtocolError::InvalidCloseCode)
        );
        assert_eq!(
            parse_close_body(b"\x03\xe8\xce"),
            Err(ProtocolError::InvalidUtf8InCloseReason)
        );
    }
}
