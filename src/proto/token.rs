//! Access tokens: HS256 JSON Web Tokens (RFC 7519) in JWS compact form (RFC 7515),
//! verified sans-IO. The caller passes `now` in unix seconds; nothing here reads a
//! clock.
//!
//! [`verify`] checks, in this order, and stops at the first failure:
//!
//! 1. size: more than [`MAX_TOKEN_LEN`] bytes is refused before any other work;
//! 2. shape: exactly three `.`-separated segments;
//! 3. base64url without padding (RFC 7515 §2), canonical trailing bits, in all three;
//! 4. header: a JSON object with `"alg":"HS256"` and no `crit`;
//! 5. signature: HMAC-SHA256 over `header.payload`, compared in constant time,
//!    BEFORE the claims are parsed, so unauthenticated claims JSON is never parsed;
//! 6. claims: a JSON object; `exp` required, `nbf`, `sub`, `topics`, `pub` optional.
//!
//! Choices where the RFCs leave room:
//! - The algorithm is fixed by the key, never chosen by the token: `none`, `RS256`,
//!   `HS512` and anything else are refused even when a valid HS256 signature follows.
//! - `typ` is ignored: RFC 7519 §5.1 "This parameter is ignored by JWT
//!   implementations"; issuers write `JWT`, `jwt` or `at+jwt` and all are fine.
//! - `crit` is refused whatever it lists: RFC 7515 §4.1.11 "If any of the listed
//!   extension Header Parameters are not understood and supported by the recipient,
//!   then the JWS is invalid", and ringcast understands none.
//! - A header or claim name ringcast reads (`alg`, `crit`; `exp`, `nbf`, `sub`,
//!   `topics`, `pub`) may appear only once: RFC 7515 §5.2 and RFC 7519 §4 let a
//!   parser reject duplicates, which removes any doubt about which copy counts.
//!   Other names are ignored.
//! - `exp` and `nbf` are JSON numbers (RFC 7519 §2 NumericDate, fractions allowed,
//!   rounded up so `now < exp` and `now >= nbf` keep their meaning for whole `now`);
//!   no leeway. A present claim of the wrong type (including `null`) is
//!   [`TokenError::BadClaim`], never "absent".
//! - Patterns in `topics` / `pub`: see [`Grants`].

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use simd_json::prelude::*;
use simd_json::BorrowedValue;
use thiserror::Error;

use super::json::{decode_string, object_fields, JsonScratch};
use super::topic::validate_topic;

/// Longest token accepted, in bytes (8 KiB, the default header limit): anything
/// longer is refused before it is split, decoded or hashed.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Shortest secret RFC 7518 §3.2 allows for HS256: "A key of the same size as the
/// hash output (for instance, 256 bits for "HS256") or larger MUST be used with this
/// algorithm." [`TokenKey::new`] accepts any length; configuration should refuse
/// shorter secrets with this constant.
pub const MIN_SECRET_LEN: usize = 32;

/// The header [`sign`] writes.
const SIGN_HEADER: &[u8] = br#"{"alg":"HS256","typ":"JWT"}"#;

/// Which claim was present with the wrong type or value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    Exp,
    Nbf,
    Sub,
    Topics,
    Pub,
}

/// Why a token was refused. The bearer is at fault in every case: answer 401 with
/// [`reason`](Self::reason) in the body. Nothing here is retryable with the same token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum TokenError {
    /// Longer than [`MAX_TOKEN_LEN`]; refused before any other work.
    #[error("{}", self.reason())]
    TooLarge,
    /// RFC 7515 §7.1: compact form is `header.payload.signature`, three segments.
    #[error("{}", self.reason())]
    Malformed,
    /// RFC 7515 §2: "Base64url Encoding ... with all trailing '=' characters omitted";
    /// `+`, `/`, `=`, other bytes and non-canonical trailing bits are refused.
    #[error("{}", self.reason())]
    BadBase64,
    /// The header is not a JSON object, or repeats `alg` / `crit`.
    #[error("{}", self.reason())]
    BadHeaderJson,
    /// `alg` is missing, not a string, or anything but `HS256` (`none`, `RS256`,
    /// `HS512`...): the key decides the algorithm, never the token.
    #[error("{}", self.reason())]
    UnsupportedAlgorithm,
    /// RFC 7515 §4.1.11: a `crit` header lists extensions; ringcast understands none.
    #[error("{}", self.reason())]
    UnsupportedCritical,
    /// The HMAC-SHA256 tag does not match (other secret, altered token, wrong length).
    #[error("{}", self.reason())]
    BadSignature,
    /// The claims are not a JSON object, or repeat a claim ringcast reads.
    #[error("{}", self.reason())]
    BadClaimsJson,
    /// RFC 7519 §4.1.4 `exp` is optional there; ringcast requires it.
    #[error("{}", self.reason())]
    MissingExp,
    /// RFC 7519 §4.1.4: "the current date/time MUST be before the expiration
    /// date/time listed in the "exp" claim": `now >= exp`. No leeway.
    #[error("{}", self.reason())]
    Expired,
    /// RFC 7519 §4.1.5: "the current date/time MUST be after or equal to the
    /// not-before date/time listed in the "nbf" claim": `now < nbf`.
    #[error("{}", self.reason())]
    NotYetValid,
    /// A claim ringcast reads is present with the wrong type, or a pattern is invalid.
    #[error("{}", self.reason())]
    BadClaim(Claim),
}

impl TokenError {
    /// A short reason for the 401 body.
    pub const fn reason(self) -> &'static str {
        match self {
            Self::TooLarge => "token is longer than 8 KiB",
            Self::Malformed => "token must be header.payload.signature",
            Self::BadBase64 => "token segments must be base64url without padding",
            Self::BadHeaderJson => "token header must be a JSON object",
            Self::UnsupportedAlgorithm => "token alg must be HS256",
            Self::UnsupportedCritical => "token header lists crit extensions; none are supported",
            Self::BadSignature => "token signature does not match",
            Self::BadClaimsJson => "token claims must be a JSON object",
            Self::MissingExp => "token has no exp claim",
            Self::Expired => "token has expired",
            Self::NotYetValid => "token is not valid yet (nbf)",
            Self::BadClaim(Claim::Exp) => "token claim exp must be a number",
            Self::BadClaim(Claim::Nbf) => "token claim nbf must be a number",
            Self::BadClaim(Claim::Sub) => "token claim sub must be a string",
            Self::BadClaim(Claim::Topics) => {
                "token claim topics must be a list of topic names or prefix.* patterns"
            }
            Self::BadClaim(Claim::Pub) => {
                "token claim pub must be a list of topic names or prefix.* patterns"
            }
        }
    }
}

/// An HS256 key. The HMAC inner and outer pads are hashed once here; each
/// [`verify`] clones that state instead of rehashing the secret.
#[derive(Clone)]
pub struct TokenKey {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.write_str("TokenKey(..)")
    }
}

impl TokenKey {
    /// A key from the raw secret bytes (as given, not base64-decoded). See
    /// [`MIN_SECRET_LEN`] for the length configuration should insist on.
    pub fn new(secret: &[u8]) -> Self {
        let mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        Self { mac }
    }

    /// The MAC state for one message, already keyed.
    fn mac(&self) -> Hmac<Sha256> {
        self.mac.clone()
    }
}

/// One entry of `topics` or `pub`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    /// `*`: every topic.
    Any,
    /// A topic name, matched byte for byte.
    Exact(Box<str>),
    /// `prefix.*`, stored as `prefix.` (dot kept): matches names that start with it
    /// and have at least one more byte.
    Prefix(Box<str>),
}

impl Pattern {
    /// `*`, a topic name, or a topic name followed by `.*`; `None` for anything else
    /// (`a*b`, `*.x`, `.*`, `chat.**`, a name outside the topic charset).
    fn parse(s: &str) -> Option<Self> {
        if s == "*" {
            return Some(Self::Any);
        }
        if let Some(prefix) = s.strip_suffix(".*") {
            validate_topic(prefix.as_bytes()).ok()?;
            // Keep the dot: `chat.` must not match `chatroom`.
            return Some(Self::Prefix(s[..s.len() - 1].into()));
        }
        validate_topic(s.as_bytes()).ok()?;
        Some(Self::Exact(s.into()))
    }

    fn matches(&self, topic: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(name) => **name == *topic,
            // Strictly longer: `chat.*` does not match `chat.` itself.
            Self::Prefix(prefix) => topic.len() > prefix.len() && topic.starts_with(&**prefix),
        }
    }
}

/// What a verified token allows.
///
/// Patterns (each entry of `topics` and `pub`):
/// - a topic name (the topic charset, 1–128 bytes) matches that topic only;
/// - `prefix.*` matches every topic that starts with `prefix.` and has at least one
///   byte more: `chat.*` matches `chat.x` and `chat.x.y`, not `chat`, `chat.` nor
///   `chatroom`. `prefix` itself must be a valid topic name;
/// - a lone `*` matches every topic;
/// - anything else (`a*b`, `*.x`, `.*`, `chat.**`, an empty string) makes the whole
///   token invalid ([`TokenError::BadClaim`]), so a typo never silently grants less
///   (or more) than the issuer meant.
///
/// A missing `topics` / `pub` claim grants nothing. Matching allocates nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grants {
    /// Expiry in unix seconds (rounded up): the caller may cut a long-lived
    /// connection once `now >= exp`.
    pub exp: u64,
    /// The `sub` claim, if any.
    pub sub: Option<String>,
    subscribe: Vec<Pattern>,
    publish: Vec<Pattern>,
}

impl Grants {
    /// True when the `topics` claim lets the holder subscribe to `topic`.
    pub fn may_subscribe(&self, topic: &str) -> bool {
        self.subscribe.iter().any(|p| p.matches(topic))
    }

    /// True when the `pub` claim lets the holder publish to `topic`.
    pub fn may_publish(&self, topic: &str) -> bool {
        self.publish.iter().any(|p| p.matches(topic))
    }

    /// True when the `pub` claim lets the holder publish to some topic.
    pub fn may_publish_any(&self) -> bool {
        !self.publish.is_empty()
    }
}

/// Signs `claims_json` (taken as is, not checked) with header
/// `{"alg":"HS256","typ":"JWT"}`. For tests and tools.
pub fn sign(key: &TokenKey, claims_json: &[u8]) -> String {
    sign_raw(key, SIGN_HEADER, claims_json)
}

/// `base64url(header).base64url(claims).base64url(HMAC-SHA256 of the first two)`.
fn sign_raw(key: &TokenKey, header_json: &[u8], claims_json: &[u8]) -> String {
    let mut out = String::new();
    URL_SAFE_NO_PAD.encode_string(header_json, &mut out);
    out.push('.');
    URL_SAFE_NO_PAD.encode_string(claims_json, &mut out);
    let mut mac = key.mac();
    mac.update(out.as_bytes());
    let tag = mac.finalize().into_bytes();
    out.push('.');
    URL_SAFE_NO_PAD.encode_string(tag.as_slice(), &mut out);
    out
}

/// Verifies an HS256 token at time `now` (unix seconds) and returns what it grants.
/// The order of the checks is in the module doc.
pub fn verify(key: &TokenKey, token: &[u8], now: u64) -> Result<Grants, TokenError> {
    // Earliest byte that reveals it: the length, before splitting or decoding.
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::TooLarge);
    }
    let (header_b64, payload_b64, sig_b64) = split3(token).ok_or(TokenError::Malformed)?;

    // One buffer for the three decoded segments (at most 3/4 of MAX_TOKEN_LEN).
    let mut buf = Vec::with_capacity(token.len());
    let header_end = decode_into(header_b64, &mut buf)?;
    let payload_end = decode_into(payload_b64, &mut buf)?;
    decode_into(sig_b64, &mut buf)?;
    let header = &buf[..header_end];
    let claims = &buf[header_end..payload_end];
    let sig = &buf[payload_end..];

    let mut scratch = JsonScratch::new();
    check_header(&mut scratch, header)?;

    // RFC 7515 §5.2 step 8; the signing input is the ASCII `header.payload`.
    // `verify_slice` refuses a tag of the wrong length and compares in constant time.
    let mut mac = key.mac();
    mac.update(&token[..header_b64.len() + 1 + payload_b64.len()]);
    mac.verify_slice(sig)
        .map_err(|_| TokenError::BadSignature)?;

    let (grants, nbf) = read_claims(&mut scratch, claims)?;
    // RFC 7519 §4.1.4: valid while now < exp; no leeway (DESIGN.md, Access control).
    // Checked before nbf, so a token that is both says "expired".
    if now >= grants.exp {
        return Err(TokenError::Expired);
    }
    // RFC 7519 §4.1.5: valid when now >= nbf.
    if nbf.is_some_and(|nbf| now < nbf) {
        return Err(TokenError::NotYetValid);
    }
    Ok(grants)
}

/// The three segments of `a.b.c`; `None` unless there are exactly two dots.
fn split3(token: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let first = token.iter().position(|&b| b == b'.')?;
    let rest = &token[first + 1..];
    let second = rest.iter().position(|&b| b == b'.')?;
    let sig = &rest[second + 1..];
    if sig.contains(&b'.') {
        return None;
    }
    Some((&token[..first], &rest[..second], sig))
}

/// Appends the base64url decoding of `seg` to `buf` and returns the new length.
fn decode_into(seg: &[u8], buf: &mut Vec<u8>) -> Result<usize, TokenError> {
    // The NO_PAD engine refuses `=`, `+`, `/` and non-canonical trailing bits.
    URL_SAFE_NO_PAD
        .decode_vec(seg, buf)
        .map_err(|_| TokenError::BadBase64)?;
    Ok(buf.len())
}

/// Decoded key names of the top-level members of `obj` (already validated) that are
/// in `names`; true when one of them occurs twice.
fn repeats_any(scratch: &mut JsonScratch, obj: &[u8], names: &[&str]) -> bool {
    let Ok(fields) = object_fields(obj) else {
        return true;
    };
    let mut seen = 0u32;
    for (raw_key, _) in fields {
        let Some(key) = decode_string(scratch, raw_key) else {
            continue;
        };
        if let Some(i) = names.iter().position(|n| *n == key) {
            if seen & (1 << i) != 0 {
                return true;
            }
            seen |= 1 << i;
        }
    }
    false
}

fn check_header(scratch: &mut JsonScratch, header: &[u8]) -> Result<(), TokenError> {
    let verdict = scratch
        .with_value(header, |v| {
            let BorrowedValue::Object(obj) = v else {
                return Err(TokenError::BadHeaderJson);
            };
            if obj.get("crit").is_some() {
                return Err(TokenError::UnsupportedCritical);
            }
            match obj.get("alg").and_then(|a| a.as_str()) {
                Some("HS256") => Ok(()),
                _ => Err(TokenError::UnsupportedAlgorithm),
            }
        })
        .map_err(|_| TokenError::BadHeaderJson)?;
    if repeats_any(scratch, header, &["alg", "crit"]) {
        return Err(TokenError::BadHeaderJson);
    }
    verdict
}

/// Claims of an authenticated token and its `nbf`, before the time checks.
fn read_claims(
    scratch: &mut JsonScratch,
    claims: &[u8],
) -> Result<(Grants, Option<u64>), TokenError> {
    let grants = scratch
        .with_value(claims, |v| {
            let BorrowedValue::Object(obj) = v else {
                return Err(TokenError::BadClaimsJson);
            };
            let exp = match obj.get("exp") {
                None => return Err(TokenError::MissingExp),
                Some(v) => numeric_date(v).ok_or(TokenError::BadClaim(Claim::Exp))?,
            };
            let nbf = match obj.get("nbf") {
                None => None,
                Some(v) => Some(numeric_date(v).ok_or(TokenError::BadClaim(Claim::Nbf))?),
            };
            let sub = match obj.get("sub") {
                None => None,
                Some(v) => Some(
                    v.as_str()
                        .ok_or(TokenError::BadClaim(Claim::Sub))?
                        .to_owned(),
                ),
            };
            let subscribe = patterns(obj.get("topics"), Claim::Topics)?;
            let publish = patterns(obj.get("pub"), Claim::Pub)?;
            Ok((
                Grants {
                    exp,
                    sub,
                    subscribe,
                    publish,
                },
                nbf,
            ))
        })
        .map_err(|_| TokenError::BadClaimsJson)?;
    if repeats_any(scratch, claims, &["exp", "nbf", "sub", "topics", "pub"]) {
        return Err(TokenError::BadClaimsJson);
    }
    grants
}

/// RFC 7519 §2 NumericDate: a JSON number of seconds, possibly fractional, rounded
/// up to whole seconds (negative becomes 0, huge saturates). `None` for non-numbers.
fn numeric_date(v: &BorrowedValue<'_>) -> Option<u64> {
    if let Some(n) = v.as_u64() {
        return Some(n);
    }
    if v.as_i64().is_some() {
        // Negative integer: long past.
        return Some(0);
    }
    // `as` from f64 saturates (and JSON has no NaN).
    v.as_f64().map(|f| f.ceil() as u64)
}

/// A `topics` / `pub` claim: absent grants nothing; otherwise a list of patterns.
fn patterns(v: Option<&BorrowedValue<'_>>, claim: Claim) -> Result<Vec<Pattern>, TokenError> {
    let Some(v) = v else {
        return Ok(Vec::new());
    };
    let bad = TokenError::BadClaim(claim);
    let BorrowedValue::Array(items) = v else {
        return Err(bad);
    };
    items
        .iter()
        .map(|item| item.as_str().and_then(Pattern::parse).ok_or(bad))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    /// An `exp` far enough ahead for every test that is not about time.
    const NOW: u64 = 1_700_000_000;

    fn key() -> TokenKey {
        TokenKey::new(SECRET)
    }

    fn claims(extra: &str) -> String {
        if extra.is_empty() {
            format!(r#"{{"exp":{}}}"#, NOW + 60)
        } else {
            format!(r#"{{"exp":{},{extra}}}"#, NOW + 60)
        }
    }

    fn verify_claims(extra: &str) -> Result<Grants, TokenError> {
        verify(
            &key(),
            sign(&key(), claims(extra).as_bytes()).as_bytes(),
            NOW,
        )
    }

    /// A token with `header` instead of the standard one, signed with the HS secret.
    fn with_header(header: &str, claims: &str) -> String {
        sign_raw(&key(), header.as_bytes(), claims.as_bytes())
    }

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    #[test]
    fn a_good_token_grants_its_topics_its_publish_rights_and_its_subject() {
        let g = verify_claims(r#""sub":"alice","topics":["news","chat.*"],"pub":["chat.alice"]"#)
            .expect("valid token");
        assert_eq!(g.exp, NOW + 60);
        assert_eq!(g.sub.as_deref(), Some("alice"));
        assert!(g.may_subscribe("news"));
        assert!(g.may_subscribe("chat.bob"));
        assert!(!g.may_subscribe("sport"));
        assert!(g.may_publish("chat.alice"));
        assert!(!g.may_publish("chat.bob"));
        assert!(!g.may_publish("news"));
    }

    #[test]
    fn a_token_without_topics_or_pub_grants_nothing() {
        let g = verify_claims("").expect("valid token");
        assert_eq!(g.sub, None);
        assert!(!g.may_subscribe("news"));
        assert!(!g.may_publish("news"));
    }

    #[test]
    fn the_rfc_7515_appendix_a1_token_verifies_until_its_exp() {
        // RFC 7515 A.1: HS256, header with CRLF inside, `typ` before `alg`.
        let token = b"eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let k = URL_SAFE_NO_PAD
            .decode("AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow")
            .expect("key");
        let key = TokenKey::new(&k);
        assert_eq!(
            verify(&key, token, 1_300_819_379).map(|g| g.exp),
            Ok(1_300_819_380)
        );
        assert_eq!(verify(&key, token, 1_300_819_380), Err(TokenError::Expired));
    }

    #[test]
    fn the_jwt_io_sample_token_passes_the_signature_and_then_lacks_exp() {
        let token = b"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
        let key = TokenKey::new(b"your-256-bit-secret");
        assert_eq!(verify(&key, token, NOW), Err(TokenError::MissingExp));
    }

    #[test]
    fn sign_writes_the_standard_header_and_a_token_verify_accepts() {
        let token = sign(&key(), br#"{"exp":10}"#);
        assert!(
            token.starts_with("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."),
            "{token}"
        );
        assert_eq!(token.split('.').count(), 3);
        assert!(verify(&key(), token.as_bytes(), 9).is_ok());
    }

    #[test]
    fn a_token_is_expired_at_exp_and_valid_one_second_before() {
        let token = sign(&key(), br#"{"exp":1000}"#);
        assert!(verify(&key(), token.as_bytes(), 999).is_ok());
        assert_eq!(
            verify(&key(), token.as_bytes(), 1000),
            Err(TokenError::Expired)
        );
        assert_eq!(
            verify(&key(), token.as_bytes(), 1001),
            Err(TokenError::Expired)
        );
        assert_eq!(
            verify(&key(), token.as_bytes(), u64::MAX),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn a_fractional_exp_rounds_up_and_a_negative_exp_is_long_past() {
        let token = sign(&key(), br#"{"exp":1000.5}"#);
        assert_eq!(
            verify(&key(), token.as_bytes(), 1000).map(|g| g.exp),
            Ok(1001)
        );
        assert_eq!(
            verify(&key(), token.as_bytes(), 1001),
            Err(TokenError::Expired)
        );
        let token = sign(&key(), br#"{"exp":-5}"#);
        assert_eq!(
            verify(&key(), token.as_bytes(), 0),
            Err(TokenError::Expired)
        );
        let token = sign(&key(), br#"{"exp":1e300}"#);
        assert_eq!(
            verify(&key(), token.as_bytes(), NOW).map(|g| g.exp),
            Ok(u64::MAX)
        );
    }

    #[test]
    fn a_token_is_not_yet_valid_before_nbf_and_valid_from_nbf_on() {
        let token = sign(&key(), br#"{"exp":2000,"nbf":1000}"#);
        assert_eq!(
            verify(&key(), token.as_bytes(), 999),
            Err(TokenError::NotYetValid)
        );
        assert!(verify(&key(), token.as_bytes(), 1000).is_ok());
        assert!(verify(&key(), token.as_bytes(), 1999).is_ok());
        assert_eq!(
            verify(&key(), token.as_bytes(), 2000),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn a_token_signed_with_another_secret_is_refused() {
        let token = sign(
            &TokenKey::new(b"another secret, just as long!!!!"),
            claims("").as_bytes(),
        );
        assert_eq!(
            verify(&key(), token.as_bytes(), NOW),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn a_flipped_signature_bit_is_a_bad_signature() {
        let token = sign(&key(), claims("").as_bytes());
        let (signed, sig) = token.rsplit_once('.').expect("three parts");
        let mut tag = URL_SAFE_NO_PAD.decode(sig).expect("tag");
        for i in 0..tag.len() {
            tag[i] ^= 1;
            let forged = format!("{signed}.{}", b64(&tag));
            assert_eq!(
                verify(&key(), forged.as_bytes(), NOW),
                Err(TokenError::BadSignature),
                "byte {i}"
            );
            tag[i] ^= 1;
        }
    }

    #[test]
    fn a_signature_of_the_wrong_length_is_a_bad_signature() {
        let token = sign(&key(), claims("").as_bytes());
        let (signed, sig) = token.rsplit_once('.').expect("three parts");
        let tag = URL_SAFE_NO_PAD.decode(sig).expect("tag");
        for forged in [
            format!("{signed}."),
            format!("{signed}.{}", b64(&tag[..16])),
            format!("{signed}.{}", b64(&[tag.as_slice(), b"x"].concat())),
        ] {
            assert_eq!(
                verify(&key(), forged.as_bytes(), NOW),
                Err(TokenError::BadSignature)
            );
        }
    }

    #[test]
    fn changing_any_byte_of_a_good_token_never_yields_a_valid_token() {
        let token = sign(&key(), claims(r#""topics":["a"]"#).as_bytes()).into_bytes();
        for i in 0..token.len() {
            for new in [
                b'A', b'z', b'-', b'_', b'.', b'=', b'+', b'/', b'!', b' ', 0x80,
            ] {
                if token[i] == new {
                    continue;
                }
                let mut t = token.clone();
                t[i] = new;
                assert!(
                    verify(&key(), &t, NOW).is_err(),
                    "byte {i} set to {new:#04x}: {}",
                    String::from_utf8_lossy(&t)
                );
            }
        }
    }

    #[test]
    fn alg_none_is_refused_with_or_without_a_signature() {
        let c = claims("");
        let unsigned = format!("{}.{}.", b64(br#"{"alg":"none"}"#), b64(c.as_bytes()));
        assert_eq!(
            verify(&key(), unsigned.as_bytes(), NOW),
            Err(TokenError::UnsupportedAlgorithm)
        );
        let signed = with_header(r#"{"alg":"none","typ":"JWT"}"#, &c);
        assert_eq!(
            verify(&key(), signed.as_bytes(), NOW),
            Err(TokenError::UnsupportedAlgorithm)
        );
    }

    #[test]
    fn an_rs256_header_is_refused_even_when_signed_with_the_hs_secret() {
        // The key-confusion attack: the verifier must not let the token pick the
        // algorithm, even though this HMAC over the RS256 header is valid.
        let token = with_header(r#"{"alg":"RS256","typ":"JWT"}"#, &claims(""));
        assert_eq!(
            verify(&key(), token.as_bytes(), NOW),
            Err(TokenError::UnsupportedAlgorithm)
        );
    }

    #[test]
    fn other_algorithms_and_a_missing_alg_are_refused() {
        for header in [
            r#"{"alg":"HS512"}"#,
            r#"{"alg":"HS384"}"#,
            r#"{"alg":"hs256"}"#,
            r#"{"alg":"HS256 "}"#,
            r#"{"alg":["HS256"]}"#,
            r#"{"alg":null}"#,
            r#"{"typ":"JWT"}"#,
            r#"{}"#,
        ] {
            let token = with_header(header, &claims(""));
            assert_eq!(
                verify(&key(), token.as_bytes(), NOW),
                Err(TokenError::UnsupportedAlgorithm),
                "{header}"
            );
        }
    }

    #[test]
    fn typ_is_ignored_and_unknown_header_fields_too() {
        for header in [
            r#"{"alg":"HS256"}"#,
            r#"{"alg":"HS256","typ":"jwt"}"#,
            r#"{"typ":"at+jwt","alg":"HS256","kid":"k1"}"#,
            " {\"alg\" : \"HS256\"}\n",
        ] {
            let token = with_header(header, &claims(""));
            assert!(verify(&key(), token.as_bytes(), NOW).is_ok(), "{header}");
        }
    }

    #[test]
    fn a_crit_header_is_refused() {
        let token = with_header(r#"{"alg":"HS256","crit":["exp"],"exp":1}"#, &claims(""));
        assert_eq!(
            verify(&key(), token.as_bytes(), NOW),
            Err(TokenError::UnsupportedCritical)
        );
    }

    #[test]
    fn a_repeated_alg_is_refused_whichever_copy_a_parser_would_keep() {
        for header in [
            r#"{"alg":"none","alg":"HS256"}"#,
            r#"{"alg":"HS256","alg":"none"}"#,
            r#"{"alg":"HS256","\u0061lg":"HS256"}"#,
        ] {
            let token = with_header(header, &claims(""));
            assert_eq!(
                verify(&key(), token.as_bytes(), NOW),
                Err(TokenError::BadHeaderJson),
                "{header}"
            );
        }
    }

    #[test]
    fn a_repeated_claim_is_refused() {
        for c in [
            r#"{"exp":1,"exp":9999999999}"#,
            r#"{"exp":9999999999,"topics":["a"],"topics":["*"]}"#,
            r#"{"exp":9999999999,"pub":[],"p\u0075b":["*"]}"#,
        ] {
            let token = sign(&key(), c.as_bytes());
            assert_eq!(
                verify(&key(), token.as_bytes(), NOW),
                Err(TokenError::BadClaimsJson),
                "{c}"
            );
        }
        // Names ringcast does not read may repeat.
        let token = sign(&key(), br#"{"exp":9999999999,"x":1,"x":2}"#);
        assert!(verify(&key(), token.as_bytes(), NOW).is_ok());
    }

    #[test]
    fn url_safe_characters_decode_and_padding_or_the_standard_alphabet_do_not() {
        // `???` encodes to `Pz8_` and `>>>` to `Pj4-`: the url-safe alphabet is in use.
        let token = sign(&key(), br#"{"exp":1,"sub":"???"}"#);
        assert!(
            token.split('.').nth(1).is_some_and(|p| p.contains('_')),
            "{token}"
        );
        assert!(verify(&key(), token.as_bytes(), 0).is_ok());
        let token = sign(&key(), br#"{"exp":1,"sub":">>>"}"#);
        assert!(
            token.split('.').nth(1).is_some_and(|p| p.contains('-')),
            "{token}"
        );
        assert!(verify(&key(), token.as_bytes(), 0).is_ok());

        let good = sign(&key(), br#"{"exp":1,"sub":"a???"}"#);
        let parts: Vec<&str> = good.split('.').collect();
        let [h, p, s] = parts[..] else {
            panic!("three parts")
        };
        let padded = format!("{p}=");
        let standard = p.replace('_', "/");
        assert_ne!(standard, p);
        let plus = format!("{}+{}", &p[..4], &p[5..]);
        let bang = format!("{}!{}", &p[..4], &p[5..]);
        let space = format!("{p} ");
        // 4n+1 characters cannot be base64 at all.
        let impossible_length = format!("{p}AAA");
        assert_eq!(impossible_length.len() % 4, 1);
        for payload in [padded, standard, plus, bang, space, impossible_length] {
            let forged = format!("{h}.{payload}.{s}");
            assert_eq!(
                verify(&key(), forged.as_bytes(), 0),
                Err(TokenError::BadBase64),
                "{forged}"
            );
        }
        // Padding on the header or the signature too.
        let h2 = b64(br#"{"alg":"HS256","x":1}"#);
        assert_eq!(h2.len() % 4, 0, "pick a header that needs no padding: {h2}");
        for forged in [format!("{h}==.{p}.{s}"), format!("{h}.{p}.{s}=")] {
            assert_eq!(
                verify(&key(), forged.as_bytes(), 0),
                Err(TokenError::BadBase64),
                "{forged}"
            );
        }
    }

    #[test]
    fn non_canonical_trailing_bits_are_refused() {
        // 32 bytes are 42 full characters and one carrying 4 bits, so the last
        // character's 2 low bits must be zero; setting one of them gives a second
        // spelling of the same tag, which base64url refuses.
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let good = sign(&key(), claims("").as_bytes());
        let (signed, sig) = good.rsplit_once('.').expect("three parts");
        let last = sig.as_bytes()[sig.len() - 1];
        let index = ALPHABET.iter().position(|&c| c == last).expect("url-safe");
        assert_eq!(index % 4, 0, "sign wrote a non-canonical tag: {sig}");
        let stray = ALPHABET[index + 1] as char;
        let forged = format!("{signed}.{}{stray}", &sig[..sig.len() - 1]);
        assert_eq!(
            verify(&key(), forged.as_bytes(), NOW),
            Err(TokenError::BadBase64)
        );
    }

    #[test]
    fn a_token_without_exactly_three_parts_is_malformed() {
        let good = sign(&key(), claims("").as_bytes());
        let (signed, _) = good.rsplit_once('.').expect("three parts");
        for token in [
            String::new(),
            "abc".to_owned(),
            signed.to_owned(),
            format!("{good}."),
            format!("{good}.x"),
            format!(".{good}"),
        ] {
            assert_eq!(
                verify(&key(), token.as_bytes(), NOW),
                Err(TokenError::Malformed),
                "{token}"
            );
        }
        assert_eq!(verify(&key(), b"..", NOW), Err(TokenError::BadHeaderJson));
    }

    #[test]
    fn a_header_that_is_not_a_json_object_is_refused() {
        for header in [
            &b""[..],
            b"alg",
            br#"{"alg":"HS256""#,
            br#"["HS256"]"#,
            br#""HS256""#,
            b"{\"alg\":\"HS256\",\"x\":\"\xff\"}",
        ] {
            let token = sign_raw(&key(), header, claims("").as_bytes());
            assert_eq!(
                verify(&key(), token.as_bytes(), NOW),
                Err(TokenError::BadHeaderJson),
                "{}",
                String::from_utf8_lossy(header)
            );
        }
    }

    #[test]
    fn claims_that_are_not_a_json_object_are_refused_after_the_signature() {
        for c in ["", "exp", r#"{"exp":1"#, "[1]", "42", r#"{"exp":1,}"#] {
            let token = sign(&key(), c.as_bytes());
            assert_eq!(
                verify(&key(), token.as_bytes(), 0),
                Err(TokenError::BadClaimsJson),
                "{c:?}"
            );
            // The same claims under a bad signature: the signature is judged first.
            let other = sign(&TokenKey::new(b"other"), c.as_bytes());
            assert_eq!(
                verify(&key(), other.as_bytes(), 0),
                Err(TokenError::BadSignature),
                "{c:?}"
            );
        }
    }

    #[test]
    fn exp_is_required_and_must_be_a_number() {
        let token = sign(&key(), br#"{"sub":"a"}"#);
        assert_eq!(
            verify(&key(), token.as_bytes(), 0),
            Err(TokenError::MissingExp)
        );
        for c in [
            r#"{"exp":"9999999999"}"#,
            r#"{"exp":null}"#,
            r#"{"exp":true}"#,
            r#"{"exp":[1]}"#,
        ] {
            let token = sign(&key(), c.as_bytes());
            assert_eq!(
                verify(&key(), token.as_bytes(), 0),
                Err(TokenError::BadClaim(Claim::Exp)),
                "{c}"
            );
        }
    }

    #[test]
    fn nbf_and_sub_of_the_wrong_type_are_bad_claims() {
        let token = sign(&key(), br#"{"exp":10,"nbf":"1"}"#);
        assert_eq!(
            verify(&key(), token.as_bytes(), 0),
            Err(TokenError::BadClaim(Claim::Nbf))
        );
        let token = sign(&key(), br#"{"exp":10,"sub":42}"#);
        assert_eq!(
            verify(&key(), token.as_bytes(), 0),
            Err(TokenError::BadClaim(Claim::Sub))
        );
    }

    #[test]
    fn a_token_longer_than_8_kib_is_refused_before_any_work() {
        // Exactly the limit, padded with an ignored claim, still verifies.
        let mut filler = 0;
        let token = loop {
            let c = format!(r#"{{"exp":{},"pad":"{}"}}"#, NOW + 60, "x".repeat(filler));
            let t = sign(&key(), c.as_bytes());
            if t.len() >= MAX_TOKEN_LEN {
                break t;
            }
            filler += 1;
        };
        // Header 36 + tag 43 + dots 2 leave 8111 = 4k+3 characters of payload, which
        // 3k+2 bytes encode to: the loop lands on the limit exactly.
        assert_eq!(token.len(), MAX_TOKEN_LEN);
        let mut token = token.into_bytes();
        assert!(verify(&key(), &token, NOW).is_ok());
        token.resize(MAX_TOKEN_LEN + 1, b'.');
        assert_eq!(verify(&key(), &token, NOW), Err(TokenError::TooLarge));
        assert_eq!(
            verify(&key(), &vec![b'A'; 1 << 20], NOW),
            Err(TokenError::TooLarge)
        );
    }

    #[test]
    fn prefix_patterns_match_below_the_dot_only() {
        let g = verify_claims(r#""topics":["chat.*"]"#).expect("valid");
        for (topic, allowed) in [
            ("chat.x", true),
            ("chat.x.y", true),
            ("chat.", false),
            ("chat", false),
            ("chatroom", false),
            ("chat-x", false),
            ("news.chat.x", false),
            ("", false),
        ] {
            assert_eq!(g.may_subscribe(topic), allowed, "{topic:?}");
        }
    }

    #[test]
    fn exact_patterns_match_that_name_only() {
        let g = verify_claims(r#""pub":["chat","a.b"]"#).expect("valid");
        for (topic, allowed) in [
            ("chat", true),
            ("a.b", true),
            ("chat.x", false),
            ("chatroom", false),
            ("cha", false),
            ("a.b.c", false),
            ("A.B", false),
        ] {
            assert_eq!(g.may_publish(topic), allowed, "{topic:?}");
        }
        assert!(!g.may_subscribe("chat"), "pub grants no subscription");
    }

    #[test]
    fn a_lone_star_matches_every_topic() {
        let g = verify_claims(r#""topics":["*"],"pub":[]"#).expect("valid");
        for topic in ["a", "chat", "chat.x.y", "user:42/inbox"] {
            assert!(g.may_subscribe(topic), "{topic}");
            assert!(!g.may_publish(topic), "{topic}");
        }
    }

    #[test]
    fn invalid_patterns_make_the_token_invalid() {
        for pattern in [
            "a*b", "*.x", ".*", "*.*", "chat.**", "chat*", "**", "", "a b", "chat.x*", "é",
        ] {
            for claim in ["topics", "pub"] {
                let expected = if claim == "topics" {
                    Claim::Topics
                } else {
                    Claim::Pub
                };
                let got = verify_claims(&format!(r#""{claim}":["ok",{}]"#, json_string(pattern)));
                assert_eq!(
                    got,
                    Err(TokenError::BadClaim(expected)),
                    "{claim}: {pattern:?}"
                );
            }
        }
        let long = "a".repeat(MAX_TOPIC_LEN_FOR_TEST + 1);
        assert_eq!(
            verify_claims(&format!(r#""topics":["{long}"]"#)),
            Err(TokenError::BadClaim(Claim::Topics))
        );
    }

    const MAX_TOPIC_LEN_FOR_TEST: usize = crate::proto::topic::MAX_TOPIC_LEN;

    fn json_string(s: &str) -> String {
        let mut out = Vec::new();
        crate::proto::json::write_string(&mut out, s);
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn topics_and_pub_must_be_lists_of_strings() {
        for (claims, claim) in [
            (r#""topics":["a",1]"#, Claim::Topics),
            (r#""topics":[["a"]]"#, Claim::Topics),
            (r#""topics":[null]"#, Claim::Topics),
            (r#""topics":"a""#, Claim::Topics),
            (r#""topics":null"#, Claim::Topics),
            (r#""topics":{"a":1}"#, Claim::Topics),
            (r#""pub":[true]"#, Claim::Pub),
            (r#""pub":"*""#, Claim::Pub),
        ] {
            assert_eq!(
                verify_claims(claims),
                Err(TokenError::BadClaim(claim)),
                "{claims}"
            );
        }
    }

    #[test]
    fn escaped_pattern_strings_are_decoded_first() {
        let g = verify_claims(r#""topics":["ch\u0061t.*"]"#).expect("valid");
        assert!(g.may_subscribe("chat.x"));
    }

    #[test]
    fn every_error_has_its_own_reason_and_displays_it() {
        let all = [
            TokenError::TooLarge,
            TokenError::Malformed,
            TokenError::BadBase64,
            TokenError::BadHeaderJson,
            TokenError::UnsupportedAlgorithm,
            TokenError::UnsupportedCritical,
            TokenError::BadSignature,
            TokenError::BadClaimsJson,
            TokenError::MissingExp,
            TokenError::Expired,
            TokenError::NotYetValid,
            TokenError::BadClaim(Claim::Exp),
            TokenError::BadClaim(Claim::Nbf),
            TokenError::BadClaim(Claim::Sub),
            TokenError::BadClaim(Claim::Topics),
            TokenError::BadClaim(Claim::Pub),
        ];
        for (i, a) in all.iter().enumerate() {
            assert_eq!(a.to_string(), a.reason());
            for b in &all[i + 1..] {
                assert_ne!(a.reason(), b.reason(), "{a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn a_key_never_prints_its_secret() {
        assert_eq!(format!("{:?}", key()), "TokenKey(..)");
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(
            input in proptest::collection::vec(proptest::num::u8::ANY, 0..512),
            now in proptest::num::u64::ANY,
        ) {
            let _ = verify(&key(), &input, now);
        }

        #[test]
        fn random_signed_claims_never_panic(
            claims in proptest::collection::vec(proptest::num::u8::ANY, 0..256),
            now in proptest::num::u64::ANY,
        ) {
            // Signed with the right key, so the claims parser sees the bytes.
            let token = sign(&key(), &claims);
            let _ = verify(&key(), token.as_bytes(), now);
        }

        #[test]
        fn json_shaped_claims_never_panic(
            claims in r#"\{("(exp|nbf|sub|topics|pub|x)":(-?[0-9]{1,22}(\.[0-9]+)?(e[+-]?[0-9]{1,3})?|"[a-z.*\\]{0,8}"|\[("[a-z.*]{0,6}",?){0,4}\]|null|true|\{\}),?){0,6}\}"#,
            now in proptest::num::u64::ANY,
        ) {
            let token = sign(&key(), claims.as_bytes());
            let _ = verify(&key(), token.as_bytes(), now);
        }

        #[test]
        fn random_headers_never_panic(
            header in proptest::collection::vec(proptest::num::u8::ANY, 0..128),
        ) {
            let token = sign_raw(&key(), &header, claims("").as_bytes());
            let _ = verify(&key(), token.as_bytes(), NOW);
        }
    }
}
