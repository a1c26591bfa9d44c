//! A request as routing and the stream sessions see it: the parsed head,
//! borrowed from the HTTP connection's buffer (offsets into it, never copies),
//! the [`Route`] its path names, and what access control and CORS read from it.

use std::borrow::Cow;

use super::worker::Worker;
use crate::proto::access::Presented;
use crate::proto::http::{query_pairs, Method, RequestHead};

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Sse,
    Ws,
    Echo,
    Publish,
    Metrics,
    Healthz,
    Index,
    NotFound,
}

impl Route {
    /// The route of `path`; `/echo` exists only with `--echo`.
    pub fn of(path: &str, echo: bool) -> Route {
        match path {
            "/sse" => Route::Sse,
            "/ws" => Route::Ws,
            "/echo" if echo => Route::Echo,
            "/publish" => Route::Publish,
            "/metrics" => Route::Metrics,
            "/healthz" => Route::Healthz,
            "/" | "/index.html" => Route::Index,
            _ => Route::NotFound,
        }
    }

    /// The methods the route answers (the `Allow` header of a 405).
    pub fn allow(self) -> &'static str {
        match self {
            Route::Publish => "POST, OPTIONS",
            Route::Sse => "GET, OPTIONS",
            _ => "GET",
        }
    }
}

/// One request, borrowed from the buffer it was read into.
#[derive(Debug)]
pub struct Request<'b> {
    pub head: RequestHead<'b>,
    pub route: Route,
    /// The value of the `--auth-cookie` cookie.
    pub cookie_token: Option<&'b [u8]>,
}

impl<'b> Request<'b> {
    pub fn new(w: &Worker, head: RequestHead<'b>) -> Self {
        let cookie_token = w
            .cfg
            .auth
            .cookie
            .as_deref()
            .and_then(|name| head.cookie(name.as_bytes()));
        Request {
            route: Route::of(head.path, w.cfg.echo),
            head,
            cookie_token,
        }
    }

    /// `POST /publish`: the one request whose body is read, and which may be
    /// pipelined behind others of its kind before they are answered.
    pub fn is_publish(&self) -> bool {
        self.route == Route::Publish && self.head.method == Method::Post
    }

    /// What the request presents for access control (the `token` query
    /// parameter is borrowed from `query_token`).
    pub fn presented<'a>(&'a self, query_token: Option<&'a [u8]>) -> Presented<'a> {
        Presented {
            bearer: self.head.bearer(),
            query_token,
            cookie: self.cookie_token,
            origin: self.head.origin,
            host: self.head.host,
        }
    }

    /// CORS headers for a browser whose origin is allowed.
    pub fn cors(&self, w: &Worker) -> Vec<(&'static str, String)> {
        match self.head.origin {
            Some(origin) if w.access.origin_allowed(Some(origin), self.head.host) => vec![
                (
                    "Access-Control-Allow-Origin",
                    String::from_utf8_lossy(origin).into_owned(),
                ),
                ("Access-Control-Allow-Credentials", "true".into()),
                ("Vary", "Origin".into()),
            ],
            _ => Vec::new(),
        }
    }

    /// A query parameter, percent-decoded.
    pub fn param(&self, name: &str) -> Option<Cow<'b, [u8]>> {
        query_pairs(self.head.query)
            .find(|(k, _)| &**k == name.as_bytes())
            .map(|(_, v)| v)
    }
}
