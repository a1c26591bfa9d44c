//! An SSE stream: registers the client, subscribes it, then waits for one of
//! three things: the peer closing (readability, then a read into the core's
//! scratch buffer: no buffer is parked per idle client), the socket filling up
//! (wait for writability, then flush), or the core asking it to close.
//!
//! Messages never pass through this task: the core's flush writes them to the
//! socket directly. The [`Session`] removes the client when the task ends,
//! however it ends, so no client outlives its connection.

use std::future::Future;
use std::io;
use std::os::fd::RawFd;
use std::pin::pin;
use std::rc::Rc;
use std::task::Poll;

use monoio::net::TcpStream;

use super::conn_io;
use super::request::Request;
use super::respond::finish;
use super::session::{await_writable, linger, Session, StreamRefused, LINGER};
use super::timer::{expiry_tick, unix_now};
use super::worker::{OpenConn, Worker};
use crate::core::bus_msg::Since;
use crate::core::client::{CloseReason, Transport};
use crate::core::registry::ClientId;
use crate::core::state::{Admission, ClientTask};
use crate::proto::sse;
use crate::proto::topic::topics_from_query;

pub use crate::proto::envelope::{BUSY_EVENT, EXPIRED_EVENT, SHUTDOWN_EVENT, SLOW_EVENT};

/// Answers an SSE request the server will not serve now (draining, over
/// capacity): `200`, a `retry:` hint with jitter, one event saying why, end.
/// EventSource reconnects after the hint; a non-200 status would make it stop.
pub async fn refuse(w: &Worker, stream: &TcpStream, fd: RawFd, event: &str, reason: &str) {
    let mut out = Vec::with_capacity(256);
    sse::write_stream_head(&mut out, w.retry_with_jitter(), &[]);
    sse::write_server_event(&mut out, event, &[("reason", reason)]);
    w.metrics().http_response(200);
    finish(w, stream, fd, &out).await;
}

/// What woke the session.
enum Wake {
    Readable(io::Result<()>),
    Task(ClientTask),
}

/// An admitted stream: registered, subscribed, its head queued.
pub struct AdmittedSse {
    id: ClientId,
}

/// Checks an SSE request (topics, access) and registers its client. Runs before
/// the stream's task is spawned, so the request itself never lives in that task.
pub fn admit(w: &Rc<Worker>, fd: RawFd, req: &Request<'_>) -> Result<AdmittedSse, StreamRefused> {
    let topics = topics_from_query(req.head.query, w.cfg.limits.max_topics_per_client)
        .map_err(|e| StreamRefused::BadRequest(e.to_string()))?;
    let query_token = req.param("token").map(|v| v.into_owned());
    let grants = w
        .access
        .subscriber(&req.presented(query_token.as_deref()), &topics, unix_now())
        .map_err(StreamRefused::Access)?;
    let query_id = match req.head.last_event_id {
        Some(_) => None,
        None => req.param("lastEventId"),
    };
    let last_id = req.head.last_event_id.or(query_id.as_deref());
    let sinces = Since::from_cursor(last_id, w.state.borrow().ids(), topics.len());
    let cors = req.cors(w);
    let mut head = w.head_scratch.borrow_mut();
    head.clear();
    let headers: Vec<(&str, &str)> = cors.iter().map(|(k, v)| (*k, v.as_str())).collect();
    sse::write_stream_head(&mut head, w.cfg.sse_retry_ms, &headers);
    let mut st = w.state.borrow_mut();
    st.set_now(w.now_tick());
    let id = st.admit(Admission {
        transport: Transport::Sse,
        fd,
        head: &head,
        expires_at: grants.as_ref().map(|g| expiry_tick(w, g.exp)),
        topics: &topics,
        sinces,
        ws_deflate: 0,
    });
    w.metrics().http_response(200);
    Ok(AdmittedSse { id })
}

/// Runs an admitted stream until it ends, then removes its client.
///
/// A plain function returning an `async move` block rather than an `async fn`,
/// with the [`Session`] built before it and the session loop written inside:
/// an `async fn` keeps its arguments twice in its future (as arguments and as
/// the locals they are moved into), a nested one a reference and a state of
/// its own, and this future is what every idle stream costs.
pub fn serve(stream: TcpStream, admitted: AdmittedSse, open: OpenConn) -> impl Future<Output = ()> {
    let s = Session::new(open, stream, admitted.id);
    async move {
        let reason = 'session: {
            let mut readable = pin!(s.stream.readable(false));
            loop {
                // The wake is taken apart in a block of its own, so that it is
                // not kept in the task across the wait for writability below.
                let writable = {
                    let wake = std::future::poll_fn(|cx| {
                        if conn_io::has_input(s.w(), s.fd()) {
                            return Poll::Ready(Wake::Readable(Ok(())));
                        }
                        if let Poll::Ready(r) = readable.as_mut().poll(cx) {
                            return Poll::Ready(Wake::Readable(r));
                        }
                        s.w()
                            .state
                            .borrow_mut()
                            .poll_client(s.id, cx)
                            .map(Wake::Task)
                    })
                    .await;
                    match wake {
                        Wake::Readable(Err(_)) => break 'session CloseReason::PeerGone,
                        Wake::Readable(Ok(())) => false,
                        Wake::Task(ClientTask::AwaitWritable) => true,
                        Wake::Task(ClientTask::Close(reason)) => break 'session reason,
                    }
                };
                if !writable {
                    if peer_gone(s.w(), s.fd()) {
                        break 'session CloseReason::PeerGone;
                    }
                    readable.set(s.stream.readable(false));
                } else if let Some(reason) = Box::pin(await_writable(s.w(), &s.stream, s.id)).await
                {
                    break 'session reason;
                }
            }
        };
        s.reason.set(reason);
        if matches!(
            reason,
            CloseReason::Shutdown | CloseReason::SlowConsumer | CloseReason::TokenExpired
        ) {
            // Boxed: a cold path that would otherwise size every idle stream's task.
            Box::pin(last_words(&s, reason)).await;
        }
        drop(s);
    }
}

/// Ends a stream the server chose to end: drops what was queued, sends a
/// `retry:` hint and the event saying why, and writes it (for a slow consumer only
/// if the socket takes it at once: it is full, which is why it is cut).
async fn last_words(s: &Session, reason: CloseReason) {
    let (w, id) = (s.w(), s.id);
    let topics = {
        let mut st = w.state.borrow_mut();
        if st.begin_close(id).is_none() {
            return;
        }
        st.topic_names(id)
    };
    let (event, why, limit) = match reason {
        CloseReason::SlowConsumer => (
            SLOW_EVENT,
            "slow consumer: outbox over --max-outbox-bytes",
            LINGER,
        ),
        CloseReason::TokenExpired => (EXPIRED_EVENT, "token expired", LINGER),
        _ => (
            SHUTDOWN_EVENT,
            "draining: reconnect after retry",
            std::time::Duration::from_secs(1),
        ),
    };
    let mut out = Vec::with_capacity(128);
    sse::write_retry(&mut out, w.retry_with_jitter());
    let mut data = Vec::with_capacity(96);
    data.extend_from_slice(b"{\"topics\":[");
    for (i, t) in topics.iter().enumerate() {
        if i > 0 {
            data.push(b',');
        }
        crate::proto::json::write_string(&mut data, t);
    }
    data.extend_from_slice(b"],\"reason\":");
    crate::proto::json::write_string(&mut data, why);
    data.push(b'}');
    sse::write_event_body(&mut out, Some(event), &data);
    let mut rest = s.retire(reason);
    rest.extend_from_slice(&out);
    linger(w, &s.stream, s.fd(), &rest, limit).await;
}

/// Reads what an SSE peer sent (nothing is expected) into the core's scratch
/// buffer; true when the peer closed or the connection broke.
fn peer_gone(w: &Worker, fd: RawFd) -> bool {
    let mut scratch = w.scratch.borrow_mut();
    // Bounded, so a peer that streams junk cannot hold the core.
    for _ in 0..16 {
        match conn_io::recv(w, fd, &mut scratch) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::session::{returned_size, TASK_OVERHEAD};

    #[test]
    fn an_idle_sse_task_fits_a_320_byte_allocation() {
        // See the WebSocket one (classes 256, 320, 384, 448): it took 448 when
        // the task kept the worker, the client id and the descriptor twice
        // each, 384 with the loop in a future of its own.
        let future = returned_size(|(stream, admitted), open| serve(stream, admitted, open));
        assert!(
            future + TASK_OVERHEAD <= 320,
            "the session future takes {future} bytes"
        );
    }
}
