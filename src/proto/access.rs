//! Access control decisions (sans-IO): who may subscribe to which topics, who may
//! publish, and which browser origins may connect. The runtime gathers what a
//! request presents ([`Presented`]) and maps a [`Refusal`] to 401/403.
//!
//! With `--auth-secret` set, subscribers present an HS256 JWT (`Authorization:
//! Bearer`, `?token=`, or the `--auth-cookie` cookie, in that order); its `topics`
//! claim says what they may subscribe to and its `pub` claim what they may publish.
//! `POST /publish` needs a token with `pub` for the topic or the static
//! `--publish-key`. Without `--auth-secret` everything is open, as before.
//!
//! Origins: a request without `Origin` is not a browser and is judged by its token
//! alone. A browser's `Origin` must be listed in `--allowed-origins` (`*` = any);
//! without that flag any origin passes while auth is off, and only the server's
//! own origin (`Origin` naming the `Host` it asked) while auth is on.

use thiserror::Error;

use super::token::{self, Grants, TokenError, TokenKey};

/// What a request presents for access control.
#[derive(Debug, Default, Clone, Copy)]
pub struct Presented<'a> {
    /// The token of `Authorization: Bearer`.
    pub bearer: Option<&'a [u8]>,
    /// The `token` query parameter.
    pub query_token: Option<&'a [u8]>,
    /// The value of the auth cookie.
    pub cookie: Option<&'a [u8]>,
    pub origin: Option<&'a [u8]>,
    pub host: Option<&'a [u8]>,
}

impl<'a> Presented<'a> {
    fn token(&self) -> Option<&'a [u8]> {
        self.bearer.or(self.query_token).or(self.cookie)
    }
}

/// Why access was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Refusal {
    /// No valid credential: 401 with `WWW-Authenticate: Bearer error="invalid_token"`.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// A valid credential that does not grant this: 403.
    #[error("{0}")]
    Forbidden(String),
}

impl Refusal {
    pub fn status(&self) -> u16 {
        match self {
            Refusal::Unauthorized(_) => 401,
            Refusal::Forbidden(_) => 403,
        }
    }
}

/// Which browser origins may connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origins {
    Any,
    /// Only the origin of the server itself (`Origin` authority equals `Host`).
    SameOrigin,
    /// These origins (compared case-insensitively, e.g. `https://app.example`),
    /// and the server's own.
    List(Vec<String>),
}

/// The access rules in force.
#[derive(Debug, Clone)]
pub struct AccessPolicy {
    key: Option<TokenKey>,
    publish_key: Option<Vec<u8>>,
    origins: Origins,
}

impl AccessPolicy {
    /// `secret`: the HS256 secret (auth on when given); `allowed_origins`: the
    /// `--allowed-origins` list, if given.
    pub fn new(
        secret: Option<&[u8]>,
        publish_key: Option<&[u8]>,
        allowed_origins: Option<&[String]>,
    ) -> Self {
        let origins = match allowed_origins {
            Some(list) if list.iter().any(|o| o.trim() == "*") => Origins::Any,
            Some(list) => Origins::List(
                list.iter()
                    .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
                    .filter(|o| !o.is_empty())
                    .collect(),
            ),
            None if secret.is_some() => Origins::SameOrigin,
            None => Origins::Any,
        };
        Self {
            key: secret.map(TokenKey::new),
            publish_key: publish_key.map(<[u8]>::to_vec),
            origins,
        }
    }

    /// Access control is on (`--auth-secret`).
    pub fn enabled(&self) -> bool {
        self.key.is_some()
    }

    /// Whether a browser from `origin` may use this server (requests without an
    /// `Origin` always may).
    pub fn origin_allowed(&self, origin: Option<&[u8]>, host: Option<&[u8]>) -> bool {
        let Some(origin) = origin else { return true };
        let origin = String::from_utf8_lossy(origin)
            .trim_end_matches('/')
            .to_ascii_lowercase();
        let same = || {
            let authority = origin.split_once("://").map_or("", |(_, a)| a);
            host.is_some_and(|h| authority.eq_ignore_ascii_case(&String::from_utf8_lossy(h)))
        };
        match &self.origins {
            Origins::Any => true,
            Origins::SameOrigin => same(),
            Origins::List(list) => same() || list.contains(&origin),
        }
    }

    /// Checks a subscriber: its origin, its token, and every topic it asks for.
    /// Returns its grants (`None` while auth is off: everything allowed).
    pub fn subscriber(
        &self,
        p: &Presented<'_>,
        topics: &[String],
        now: u64,
    ) -> Result<Option<Grants>, Refusal> {
        if !self.origin_allowed(p.origin, p.host) {
            return Err(Refusal::Forbidden(
                "origin not allowed (--allowed-origins)".into(),
            ));
        }
        let Some(key) = &self.key else {
            return Ok(None);
        };
        let token = p.token().ok_or(Refusal::Unauthorized("missing token"))?;
        let grants = token::verify(key, token, now)
            .map_err(|e: TokenError| Refusal::Unauthorized(e.reason()))?;
        if let Some(topic) = topics.iter().find(|t| !grants.may_subscribe(t)) {
            return Err(Refusal::Forbidden(format!("topic not granted: {topic}")));
        }
        Ok(Some(grants))
    }

    /// Checks a publisher over HTTP: the static publisher key, or a token whose
    /// `pub` claim grants the topic.
    pub fn publisher(&self, bearer: Option<&[u8]>, topic: &str, now: u64) -> Result<(), Refusal> {
        let Some(key) = &self.key else { return Ok(()) };
        let token = bearer.ok_or(Refusal::Unauthorized("missing token or publisher key"))?;
        if let Some(publish_key) = &self.publish_key {
            if constant_time_eq(token, publish_key) {
                return Ok(());
            }
        }
        let grants =
            token::verify(key, token, now).map_err(|e| Refusal::Unauthorized(e.reason()))?;
        if !grants.may_publish(topic) {
            return Err(Refusal::Forbidden(format!(
                "publishing not granted: {topic}"
            )));
        }
        Ok(())
    }
}

/// Compares secrets without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn token(claims: &str) -> String {
        token::sign(&TokenKey::new(SECRET), claims.as_bytes())
    }

    fn presented(tok: &str) -> Presented<'_> {
        Presented {
            bearer: Some(tok.as_bytes()),
            ..Presented::default()
        }
    }

    #[test]
    fn without_a_secret_everything_is_open() {
        let p = AccessPolicy::new(None, None, None);
        assert!(!p.enabled());
        assert_eq!(
            p.subscriber(&Presented::default(), &["a".into()], 0),
            Ok(None)
        );
        assert_eq!(p.publisher(None, "a", 0), Ok(()));
        assert!(p.origin_allowed(Some(b"https://evil.example"), Some(b"x")));
    }

    #[test]
    fn a_token_grants_exactly_its_topics() {
        let p = AccessPolicy::new(Some(SECRET), None, None);
        let t = token(r#"{"exp":100,"topics":["chat.*","news"],"pub":["chat.x"]}"#);
        assert!(p
            .subscriber(&presented(&t), &["news".into(), "chat.a.b".into()], 10)
            .is_ok());
        assert_eq!(
            p.subscriber(&presented(&t), &["chat".into()], 10),
            Err(Refusal::Forbidden("topic not granted: chat".into()))
        );
        assert_eq!(p.publisher(Some(t.as_bytes()), "chat.x", 10), Ok(()));
        assert_eq!(
            p.publisher(Some(t.as_bytes()), "news", 10)
                .map_err(|e| e.status()),
            Err(403)
        );
        assert_eq!(
            p.subscriber(&presented(&t), &["news".into()], 100)
                .map_err(|e| e.status()),
            Err(401)
        );
    }

    #[test]
    fn the_token_comes_from_the_header_then_the_query_then_the_cookie() {
        let p = AccessPolicy::new(Some(SECRET), None, None);
        let good = token(r#"{"exp":100,"topics":["a"]}"#);
        let from_cookie = Presented {
            cookie: Some(good.as_bytes()),
            ..Presented::default()
        };
        assert!(p.subscriber(&from_cookie, &["a".into()], 1).is_ok());
        let bad_header_wins = Presented {
            bearer: Some(b"garbage"),
            query_token: Some(good.as_bytes()),
            ..Presented::default()
        };
        assert_eq!(
            p.subscriber(&bad_header_wins, &["a".into()], 1)
                .map_err(|e| e.status()),
            Err(401)
        );
        assert_eq!(
            p.subscriber(&Presented::default(), &["a".into()], 1),
            Err(Refusal::Unauthorized("missing token"))
        );
    }

    #[test]
    fn the_publisher_key_works_instead_of_a_token() {
        let p = AccessPolicy::new(Some(SECRET), Some(b"pk-1"), None);
        assert_eq!(p.publisher(Some(b"pk-1"), "any", 0), Ok(()));
        assert_eq!(
            p.publisher(Some(b"pk-2"), "any", 0).map_err(|e| e.status()),
            Err(401)
        );
        assert_eq!(
            p.publisher(None, "any", 0).map_err(|e| e.status()),
            Err(401)
        );
    }

    #[test]
    fn origins_are_same_origin_only_with_auth_unless_listed() {
        let p = AccessPolicy::new(Some(SECRET), None, None);
        assert!(p.origin_allowed(None, Some(b"h:8080")));
        assert!(p.origin_allowed(Some(b"http://h:8080"), Some(b"h:8080")));
        assert!(!p.origin_allowed(Some(b"http://evil:8080"), Some(b"h:8080")));
        let listed = AccessPolicy::new(Some(SECRET), None, Some(&["https://App.example/".into()]));
        assert!(listed.origin_allowed(Some(b"https://app.example"), Some(b"h")));
        assert!(!listed.origin_allowed(Some(b"https://other.example"), Some(b"h")));
        let any = AccessPolicy::new(Some(SECRET), None, Some(&["*".into()]));
        assert!(any.origin_allowed(Some(b"https://other.example"), Some(b"h")));
        let t = token(r#"{"exp":100,"topics":["a"]}"#);
        let hijack = Presented {
            bearer: Some(t.as_bytes()),
            origin: Some(b"http://evil"),
            host: Some(b"h"),
            ..Presented::default()
        };
        assert_eq!(
            p.subscriber(&hijack, &["a".into()], 1)
                .map_err(|e| e.status()),
            Err(403)
        );
    }
}
