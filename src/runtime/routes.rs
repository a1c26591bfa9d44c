//! Routing: what each request gets, decided from its head alone and without
//! waiting ([`route`]), and the plain answers (`/metrics`, `/healthz`, the demo
//! page at `/`, CORS preflights, 404 and 405). `POST /publish` is checked here
//! before its body is read, and published here once it is ([`publish_body`]).
//! Streams are admitted by their sessions; the HTTP driver hands them over.

use std::borrow::Cow;
use std::os::fd::RawFd;
use std::rc::Rc;

use super::request::{Request, Route};
use super::respond::Reply;
use super::sse_session::{self, AdmittedSse};
use super::timer::unix_now;
use super::worker::Worker;
use super::ws_session::{self, AdmittedWs, UpgradeRefused};
use crate::core::state::PublishStart;
use crate::metrics::{self, ProcessInfo};
use crate::proto::http::Method;
use crate::proto::publish::{self, PublishError};
use crate::proto::topic::{validate_event, validate_topic};

use super::session::StreamRefused;

/// The demo page served at `/`: subscribes with EventSource and WebSocket.
const DEMO_PAGE: &str = include_str!("demo.html");

/// What the driver does with a request.
pub enum Action {
    /// Answer it.
    Reply(Reply),
    /// `POST /publish`, checked: read the body, then [`publish_body`].
    Publish(PublishTarget),
    /// `/sse`: hand the connection to its event stream, or refuse it.
    Sse(Result<AdmittedSse, StreamRefused>),
    /// `/sse` while draining: a `retry:` hint and a `ringcast.shutdown` event.
    SseDraining,
    /// `/ws`, `/echo`: hand the connection to its WebSocket, or refuse it.
    Ws(Result<AdmittedWs, UpgradeRefused>),
}

/// Where a checked `POST /publish` goes once its body is in.
pub struct PublishTarget {
    pub topic: String,
    pub event: Option<String>,
    /// CORS headers of its answer.
    pub cors: Vec<(&'static str, String)>,
}

/// Decides what `req` gets. Streams are admitted here (registered with the
/// core), so the driver answers the requests before this one first.
pub fn route(w: &Rc<Worker>, fd: RawFd, req: &Request<'_>) -> Action {
    let method = req.head.method;
    let allowed = match (req.route, method) {
        (Route::NotFound, _) => true,
        (Route::Sse | Route::Publish, Method::Options) => true,
        (Route::Publish, Method::Post) => true,
        (Route::Publish, _) => false,
        (_, Method::Get) => true,
        _ => false,
    };
    if !allowed {
        let reason = format!("method not allowed; use {}", req.route.allow());
        return Action::Reply(
            Reply::text(405, reason)
                .with("Allow", req.route.allow())
                .closing(),
        );
    }
    if method == Method::Options {
        return Action::Reply(preflight(w, req));
    }
    let reply = match req.route {
        Route::Sse if w.draining() => return Action::SseDraining,
        Route::Sse => return Action::Sse(sse_session::admit(w, fd, req)),
        Route::Ws | Route::Echo if w.draining() => {
            Reply::error(503, "draining: reconnect elsewhere")
        }
        Route::Ws | Route::Echo => return Action::Ws(ws_session::admit(w, fd, req)),
        Route::Publish => match check_publish(w, req) {
            Ok(target) => return Action::Publish(target),
            Err(refusal) => refusal,
        },
        Route::Metrics => {
            let mut text = metrics::render(
                &w.all_metrics,
                &ProcessInfo {
                    driver: w.driver,
                    epoch: &w.epoch_text,
                    tls: w.tls.as_ref().map(|t| {
                        let (reloads_ok, reloads_failed) = t.shared.reloads();
                        metrics::TlsInfo {
                            not_after: t.shared.not_after(),
                            reloads_ok,
                            reloads_failed,
                        }
                    }),
                },
            );
            if let Some(b) = &w.broker {
                super::broker::render_metrics(b, &mut text);
            }
            Reply::typed(
                200,
                "text/plain; version=0.0.4",
                Cow::Owned(text.into_bytes()),
            )
        }
        Route::Healthz if w.draining() => Reply::text(503, "draining")
            .with("Retry-After", "1")
            .closing(),
        Route::Healthz if w.broker.as_ref().is_some_and(|b| !b.is_up()) => {
            Reply::text(503, "broker unavailable").with("Retry-After", "1")
        }
        Route::Healthz => Reply::text(200, "ok"),
        Route::Index => Reply::typed(
            200,
            "text/html; charset=utf-8",
            Cow::Borrowed(DEMO_PAGE.as_bytes()),
        ),
        Route::NotFound => Reply::text(
            404,
            "not found: try /sse, /ws, /publish, /metrics or /healthz",
        ),
    };
    Action::Reply(reply)
}

/// Answers a CORS preflight for `/sse` and `/publish`.
fn preflight(w: &Worker, req: &Request<'_>) -> Reply {
    if !w.access.origin_allowed(req.head.origin, req.head.host) {
        return Reply::error(403, "origin not allowed (--allowed-origins)");
    }
    Reply::typed(204, "text/plain", Cow::Borrowed(b""))
        .with_all(req.cors(w))
        .with("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
        .with(
            "Access-Control-Allow-Headers",
            "Authorization, Content-Type, Last-Event-ID",
        )
        .with("Access-Control-Max-Age", "600")
}

/// `POST /publish?topic=T[&event=E]`: what can be checked before the body is
/// read (topic, event name, the publisher's credential).
fn check_publish(w: &Worker, req: &Request<'_>) -> Result<PublishTarget, Reply> {
    let topic = match req.param("topic") {
        None => return Err(Reply::error(400, "missing ?topic=NAME")),
        Some(t) => match validate_topic(&t) {
            Ok(t) => t.to_owned(),
            Err(e) => return Err(Reply::error(400, &e.to_string())),
        },
    };
    w.access
        .publisher(req.head.bearer(), &topic, unix_now())
        .map_err(|refusal| Reply::access(&refusal))?;
    let event = match req.param("event") {
        None => None,
        Some(e) => match validate_event(&e) {
            Ok(e) => Some(e.to_owned()),
            Err(e) => return Err(Reply::error(400, &e.to_string())),
        },
    };
    Ok(PublishTarget {
        topic,
        event,
        cors: req.cors(w),
    })
}

/// Publishes a body read for `target` (as JSON when it parses as JSON, else as
/// a JSON string); its answer waits for [`publish_answer`].
pub fn publish_body(
    w: &Rc<Worker>,
    target: &PublishTarget,
    body: &[u8],
) -> Result<PublishStart, Reply> {
    let data = {
        let mut json = w.json.borrow_mut();
        publish::payload_to_json(&mut json, body, w.cfg.max_message_bytes)
    };
    let data = match data {
        Ok(d) => d,
        Err(e @ PublishError::TooLarge) => return Err(Reply::error(413, &e.to_string())),
        Err(e) => return Err(Reply::error(400, &e.to_string())),
    };
    let start = w
        .state
        .borrow_mut()
        .publish(&target.topic, target.event.as_deref(), data);
    Ok(start)
}

/// The answer to a publish: `202` with its id as JSON, or `503` when it failed
/// (the broker is down).
pub fn publish_answer(
    w: &Worker,
    result: Result<u64, PublishError>,
    cors: Vec<(&'static str, String)>,
) -> Reply {
    match result {
        Ok(seq) => {
            let id = w.state.borrow().ids().format_id(seq);
            let mut body = Vec::with_capacity(40);
            body.extend_from_slice(b"{\"id\":");
            crate::proto::json::write_string(&mut body, &id);
            body.extend_from_slice(b"}\n");
            Reply::typed(202, "application/json", Cow::Owned(body)).with_all(cors)
        }
        Err(e) => {
            w.metrics().publish_errors.inc();
            Reply::text(503, e.to_string())
                .with_all(cors)
                .with("Retry-After", "1")
        }
    }
}
