//! The publish socket: newline-delimited JSON commands over a Unix socket, one
//! answer line per command, in order. Commands read together are published
//! together, then answered together, so a pipelining publisher is limited by the
//! cores, not by round trips.

use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::rc::Rc;

use monoio::net::{UnixListener, UnixStream};

use super::netio;
use super::worker::Worker;
use crate::proto::publish::{self, Line, LineReader, PublishError};
use crate::{debug, warn};

/// Bytes read from a publisher at a time.
const READ_CHUNK: usize = 64 * 1024;

pub async fn serve(w: Rc<Worker>, listener: UnixListener) {
    let mut accept = std::pin::pin!(listener.accept());
    loop {
        let Some(accepted) = w.drain.unless_draining(accept.as_mut()).await else {
            return;
        };
        accept.set(listener.accept());
        match accepted {
            Ok((stream, _)) => {
                let open = super::worker::OpenConn::new(&w);
                monoio::spawn(serve_publisher(w.clone(), stream, open));
            }
            Err(e) => {
                warn!(
                    "core={} msg=\"publish socket accept failed\" error=\"{e}\"",
                    w.core
                );
                super::timer::sleep(&w, std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// One parsed line waiting for its answer.
enum Answer {
    Ready(Result<u64, PublishError>),
    Command {
        topic: String,
        event: Option<String>,
        data: Vec<u8>,
    },
}

async fn serve_publisher(w: Rc<Worker>, stream: UnixStream, _open: super::worker::OpenConn) {
    let fd = stream.as_raw_fd();
    // A line holds a command whose data may be up to --max-message-bytes, plus
    // the topic, the event and the JSON around them.
    let mut lines = LineReader::new(w.cfg.max_message_bytes + 4096);
    let mut answers: VecDeque<Answer> = VecDeque::new();
    let mut out = Vec::new();
    loop {
        // Backpressure: while a ring to another core is full, read nothing more.
        while w.bus.borrow().congested() {
            super::timer::sleep(&w, std::time::Duration::from_millis(1)).await;
        }
        let n = loop {
            let buf = lines.buffer(READ_CHUNK);
            match netio::recv(fd, buf) {
                Ok(n) => {
                    lines.filled(READ_CHUNK, n);
                    break Some(n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    lines.filled(READ_CHUNK, 0);
                    // Idle: wait for input, or stop when the server drains (the
                    // commands already read were all answered).
                    let readable = std::pin::pin!(stream.readable(false));
                    let ready = w.drain.unless_draining(readable).await;
                    if !matches!(ready, Some(Ok(()))) {
                        break None;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                    lines.filled(READ_CHUNK, 0)
                }
                Err(_) => {
                    lines.filled(READ_CHUNK, 0);
                    break None;
                }
            }
        };
        let eof = matches!(n, None | Some(0));
        if eof && lines.pending() > 0 {
            // A last command without its newline still gets an answer.
            debug!("msg=\"publisher closed mid-line\"");
            lines.buffer(1)[0] = b'\n';
        }
        {
            let mut json = w.json.borrow_mut();
            while let Some(line) = lines.next_line() {
                let answer = match line {
                    Line::TooLong => Answer::Ready(Err(PublishError::LineTooLong)),
                    Line::Complete(l) if l.iter().all(u8::is_ascii_whitespace) => continue,
                    Line::Complete(l) => {
                        match publish::parse_command(&mut json, l, w.cfg.max_message_bytes) {
                            Ok(cmd) => Answer::Command {
                                topic: cmd.topic.into_owned(),
                                event: cmd.event.map(|e| e.into_owned()),
                                data: cmd.data,
                            },
                            Err(e) => Answer::Ready(Err(e)),
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
                Answer::Ready(r) => waits.push(Wait::Ready(r)),
                Answer::Command { topic, event, data } => {
                    let start = w.state.borrow_mut().publish(&topic, event.as_deref(), data);
                    waits.push(Wait::Started(start));
                }
            }
        }
        w.settle();
        let ids = w.state.borrow().ids();
        for wait in waits {
            let result = match wait {
                Wait::Ready(r) => r,
                Wait::Started(start) => super::conn::publish_result(&w, start).await,
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
