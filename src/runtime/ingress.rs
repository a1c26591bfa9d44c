//! The publish socket: newline-delimited JSON commands over a Unix socket, one
//! answer line per command, in order. Commands read together are published
//! together, then answered together, so a pipelining publisher is limited by the
//! cores, not by round trips.
//!
//! Bounds: a connection past `--max-connections` gets one error line and is
//! closed; one that sends nothing for `--publish-idle-timeout` while nothing of
//! its own is in flight gets one error line and is closed. Both deadlines are
//! entries in the core's timer wheel.

use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Duration;

use monoio::net::{UnixListener, UnixStream};

use super::publish_wait::publish_result;
use super::timer::{self, Elapsed};
use super::worker::{OpenConn, Worker};
use crate::netio;
use crate::proto::publish::{self, Line, LineReader, PublishError};
use crate::{debug, warn};

/// Bytes read from a publisher at a time.
const READ_CHUNK: usize = 64 * 1024;

/// How long a connection the server ends may take to read its last line.
const GOODBYE_LIMIT: Duration = Duration::from_secs(2);

/// Why the server ends a publisher's connection on its own; `Display` is the
/// text of the error line it gets last.
#[derive(Debug, Clone, Copy, thiserror::Error)]
enum Goodbye {
    /// Past `--max-connections` at accept: the publisher should retry later.
    #[error("over capacity (--max-connections): retry later")]
    OverCapacity,
    /// Nothing arrived for `--publish-idle-timeout` while every command read
    /// was answered; a command begun without its newline is dropped.
    #[error("idle timeout (--publish-idle-timeout)")]
    IdleTimeout,
}

pub async fn serve(w: Rc<Worker>, listener: UnixListener) {
    let mut accept = std::pin::pin!(listener.accept());
    loop {
        let Some(accepted) = w.drain.unless_draining(accept.as_mut()).await else {
            return;
        };
        accept.set(listener.accept());
        match accepted {
            Ok((stream, _)) => {
                if w.cfg.max_connections.is_some_and(|l| w.life.open() >= l) {
                    refuse_over_capacity(&w, stream);
                    continue;
                }
                let open = OpenConn::new(&w);
                monoio::spawn(serve_publisher(w.clone(), stream, open));
            }
            Err(e) => {
                warn!(
                    "core={} msg=\"publish socket accept failed\" error=\"{e}\"",
                    w.core
                );
                timer::sleep(&w, std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// Answers a connection past `--max-connections` with one error line, then
/// closes it, in a task of its own. At most as many refusals as the cap (and at
/// least 16) are under way at once; past that a connection is closed unanswered.
fn refuse_over_capacity(w: &Rc<Worker>, stream: UnixStream) {
    let Some(limit) = w.cfg.max_connections else {
        return;
    };
    if w.refusing.get() >= limit.max(16) {
        return;
    }
    w.refusing.set(w.refusing.get() + 1);
    let w = w.clone();
    monoio::spawn(async move {
        say_goodbye(&w, &stream, Goodbye::OverCapacity).await;
        w.refusing.set(w.refusing.get() - 1);
    });
}

/// Ends a connection with one error line: the line, then end of stream, then
/// what the peer still sends is read and dropped until it closes, all within
/// [`GOODBYE_LIMIT`]. Closing with unread input would make the peer's read fail
/// with `ECONNRESET` after the line instead of ending cleanly.
async fn say_goodbye(w: &Worker, stream: &UnixStream, why: Goodbye) {
    let fd = stream.as_raw_fd();
    let mut line = Vec::new();
    publish::write_error_line(&mut line, &why.to_string());
    let goodbye = async {
        netio::write_all(stream, fd, &line).await?;
        netio::shutdown_write(fd)?;
        let mut sink = Vec::new();
        while netio::read_some(stream, fd, &mut sink, READ_CHUNK).await? > 0 {
            sink.clear();
        }
        std::io::Result::Ok(())
    };
    let _ = timer::timeout(w, GOODBYE_LIMIT, goodbye).await;
}

/// Waits until the publisher sends more: `Ok(true)` when it did, `Ok(false)`
/// when the server drains (or the wait failed), `Err(Elapsed)` when nothing
/// came for `--publish-idle-timeout` (`0` = no limit).
async fn wait_input(w: &Worker, stream: &UnixStream) -> Result<bool, Elapsed> {
    let readable = std::pin::pin!(stream.readable(false));
    let wait = w.drain.unless_draining(readable);
    let ready = match w.cfg.publish_idle_timeout {
        idle if idle.is_zero() => wait.await,
        idle => timer::timeout(w, idle, wait).await?,
    };
    Ok(matches!(ready, Some(Ok(()))))
}

/// What a read from the publisher brought.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Input {
    /// Bytes, now in the line reader.
    Bytes,
    /// End of stream, a failed read, or the drain: answer what was read, then stop.
    End,
    /// Nothing for `--publish-idle-timeout`.
    Idle,
}

/// One parsed line waiting for its answer.
enum ParsedLine {
    Ready(Result<u64, PublishError>),
    Command {
        topic: String,
        event: Option<String>,
        data: Vec<u8>,
    },
}

async fn serve_publisher(w: Rc<Worker>, stream: UnixStream, _open: OpenConn) {
    let fd = stream.as_raw_fd();
    // A line holds a command whose data may be up to --max-message-bytes, plus
    // the topic, the event and the JSON around them.
    let mut lines = LineReader::new(w.cfg.max_message_bytes + 4096);
    let mut answers: VecDeque<ParsedLine> = VecDeque::new();
    let mut out = Vec::new();
    loop {
        // Backpressure: while a ring to another core is full, read nothing more;
        // nor while this core's fan-out is behind.
        while w.bus.borrow().congested() {
            timer::sleep(&w, std::time::Duration::from_millis(1)).await;
        }
        w.fan_out_caught_up().await;
        let input = loop {
            let buf = lines.buffer(READ_CHUNK);
            match netio::recv(fd, buf) {
                Ok(n) => {
                    lines.filled(READ_CHUNK, n);
                    break if n == 0 { Input::End } else { Input::Bytes };
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    lines.filled(READ_CHUNK, 0);
                    // Idle: every command read so far was answered. Wait for
                    // input; stop when the server drains or the publisher
                    // stays silent too long.
                    match wait_input(&w, &stream).await {
                        Ok(true) => {}
                        Ok(false) => break Input::End,
                        Err(Elapsed) => break Input::Idle,
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                    lines.filled(READ_CHUNK, 0)
                }
                Err(_) => {
                    lines.filled(READ_CHUNK, 0);
                    break Input::End;
                }
            }
        };
        if input == Input::Idle {
            debug!("core={} msg=\"publisher idle, closing\"", w.core);
            say_goodbye(&w, &stream, Goodbye::IdleTimeout).await;
            return;
        }
        let eof = input == Input::End;
        {
            let mut json = w.json.borrow_mut();
            while let Some(line) = lines.next_line() {
                let answer = match line {
                    Line::TooLong => ParsedLine::Ready(Err(PublishError::LineTooLong)),
                    Line::Complete(l) if l.iter().all(u8::is_ascii_whitespace) => continue,
                    Line::Complete(l) => {
                        match publish::parse_command(&mut json, l, w.cfg.max_message_bytes) {
                            Ok(cmd) => ParsedLine::Command {
                                topic: cmd.topic.into_owned(),
                                event: cmd.event.map(|e| e.into_owned()),
                                data: cmd.data,
                            },
                            Err(e) => ParsedLine::Ready(Err(e)),
                        }
                    }
                };
                answers.push_back(answer);
            }
        }
        // Start every publish of the batch, then answer in order.
        let mut waits = Vec::with_capacity(answers.len());
        for answer in answers.drain(..) {
            match answer {
                ParsedLine::Ready(r) => waits.push(Wait::Ready(r)),
                ParsedLine::Command { topic, event, data } => {
                    let start = w.state.borrow_mut().publish(&topic, event.as_deref(), data);
                    waits.push(Wait::Started(start));
                }
            }
        }
        let ids = w.state.borrow().ids();
        for wait in waits {
            let result = match wait {
                Wait::Ready(r) => r,
                Wait::Started(start) => publish_result(&w, start).await,
            };
            match result {
                Ok(seq) => publish::write_ok_line(&mut out, &ids.format_id(seq)),
                Err(e) => {
                    w.metrics().publish_errors.inc();
                    publish::write_error_line(&mut out, &e.to_string());
                }
            }
        }
        if !out.is_empty() {
            if netio::write_all(&stream, fd, &out).await.is_err() {
                return;
            }
            out.clear();
        }
        if eof {
            return;
        }
    }
}

enum Wait {
    Ready(Result<u64, PublishError>),
    Started(crate::core::state::PublishStart),
}
