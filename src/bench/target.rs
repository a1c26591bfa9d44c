//! URL templates: `ws://host:port/path?topic={topic}` (WebSocket),
//! `http://host:port/path?topic={topic}` (SSE, or POST for publishing) and
//! `unix:/path` (ringcast's NDJSON publish socket).

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

/// How a subscriber talks to the server: the server's own notion of it.
pub use crate::core::client::Transport;

/// A parsed `http://` or `ws://` URL template, resolved once.
#[derive(Debug, Clone)]
pub struct HttpTarget {
    pub transport: Transport,
    pub addr: SocketAddr,
    /// The `Host` header value: the URL's authority as written.
    pub host: String,
    /// Path and query, with `{topic}` still in it.
    pub path_template: String,
    /// `https://` or `wss://`: TLS on the connection.
    pub tls: bool,
}

impl HttpTarget {
    /// Parses `ws://…`, `http://…`, `wss://…` or `https://…`.
    pub fn parse(url: &str) -> Result<Self, String> {
        let (transport, tls, rest) = if let Some(r) = url.strip_prefix("ws://") {
            (Transport::Ws, false, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (Transport::Sse, false, r)
        } else if let Some(r) = url.strip_prefix("wss://") {
            (Transport::Ws, true, r)
        } else if let Some(r) = url.strip_prefix("https://") {
            (Transport::Sse, true, r)
        } else {
            return Err(format!(
                "`{url}`: expected ws[s]://HOST:PORT/PATH or http[s]://HOST:PORT/PATH"
            ));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() {
            return Err(format!("`{url}`: no host"));
        }
        let with_port = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            authority.to_string()
        } else {
            format!("{authority}:{}", if tls { 443 } else { 80 })
        };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|e| format!("`{url}`: cannot resolve {authority}: {e}"))?
            .find(SocketAddr::is_ipv4)
            .ok_or_else(|| format!("`{url}`: {authority} has no IPv4 address"))?;
        Ok(Self {
            transport,
            addr,
            host: authority.to_string(),
            path_template: path.to_string(),
            tls,
        })
    }

    /// The request target for `topic`.
    pub fn path(&self, topic: &str) -> String {
        self.path_template.replace("{topic}", topic)
    }
}

/// Where the fan-out run publishes.
#[derive(Debug, Clone)]
pub enum PublishTarget {
    /// ringcast's Unix socket: one NDJSON command per line, one answer line each.
    Unix(PathBuf),
    /// `POST` with the payload as body on a keep-alive connection.
    Http(HttpTarget),
    /// A WebSocket client sends one text frame per message.
    Ws(HttpTarget),
}

impl PublishTarget {
    pub fn parse(spec: &str) -> Result<Self, String> {
        if let Some(path) = spec.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("--publish unix: needs a path (unix:/path/ringcast.sock)".into());
            }
            return Ok(PublishTarget::Unix(PathBuf::from(path)));
        }
        let t = HttpTarget::parse(spec)?;
        if t.tls {
            return Err(format!(
                "--publish {spec}: the publisher speaks plain TCP or the unix socket; subscribers may use https/wss"
            ));
        }
        Ok(match t.transport {
            Transport::Sse => PublishTarget::Http(t),
            Transport::Ws => PublishTarget::Ws(t),
        })
    }

    pub fn label(&self) -> &'static str {
        match self {
            PublishTarget::Unix(_) => "unix",
            PublishTarget::Http(_) => "http",
            PublishTarget::Ws(_) => "ws",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse_into_transport_address_and_path() {
        let t = HttpTarget::parse("ws://127.0.0.1:8080/ws?topic={topic}").unwrap();
        assert_eq!(t.transport, Transport::Ws);
        assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(t.host, "127.0.0.1:8080");
        assert_eq!(t.path("topic-3"), "/ws?topic=topic-3");
        let t = HttpTarget::parse("http://127.0.0.1").unwrap();
        assert_eq!(
            (t.transport, t.addr.port(), t.path("x").as_str()),
            (Transport::Sse, 80, "/")
        );
    }

    #[test]
    fn unsupported_urls_are_refused_with_the_reason() {
        let t = HttpTarget::parse("wss://127.0.0.1/ws").unwrap();
        assert_eq!(
            (t.transport, t.tls, t.addr.port()),
            (Transport::Ws, true, 443)
        );
        let t = HttpTarget::parse("https://127.0.0.1:8443/sse").unwrap();
        assert_eq!(
            (t.transport, t.tls, t.addr.port()),
            (Transport::Sse, true, 8443)
        );
        assert!(PublishTarget::parse("https://127.0.0.1/publish")
            .unwrap_err()
            .contains("plain"));
        assert!(HttpTarget::parse("ftp://x")
            .unwrap_err()
            .contains("expected"));
        assert!(PublishTarget::parse("unix:").is_err());
        assert!(matches!(
            PublishTarget::parse("unix:/tmp/a.sock"),
            Ok(PublishTarget::Unix(_))
        ));
        assert!(matches!(
            PublishTarget::parse("http://127.0.0.1:1/publish?topic={topic}"),
            Ok(PublishTarget::Http(_))
        ));
    }
}
