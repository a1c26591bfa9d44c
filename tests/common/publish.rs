//! Publishing: the NDJSON publish socket (`Publisher`), its answers, and the
//! `Server` shortcuts the tests publish through.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use super::{HttpConn, Server, READ_TIMEOUT};

/// One connection to the publish socket.
pub struct Publisher {
    pub stream: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Publisher {
    pub fn connect(path: &Path) -> Publisher {
        let stream = UnixStream::connect(path).expect("connect publish socket");
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Publisher { stream, reader }
    }

    pub fn send(&mut self, line: &[u8]) {
        self.stream.write_all(line).expect("write publish line");
    }

    /// One answer line, without its newline.
    pub fn read_answer(&mut self) -> String {
        self.try_read_answer()
            .unwrap_or_else(|e| panic!("publish socket: no answer: {e}"))
    }

    pub fn try_read_answer(&mut self) -> std::io::Result<String> {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line)?;
        if n == 0 {
            return Err(std::io::Error::new(
                ErrorKind::UnexpectedEof,
                "publish socket closed instead of answering",
            ));
        }
        assert!(line.ends_with('\n'), "answer without newline: {line:?}");
        line.pop();
        Ok(line)
    }

    /// Sends one line (newline added) and returns its answer.
    pub fn call(&mut self, line: &str) -> String {
        self.send(format!("{line}\n").as_bytes());
        self.read_answer()
    }
}

/// The `id` of an `{"ok":true,"id":"..."}` answer; panics on anything else.
pub fn answer_id(answer: &str) -> String {
    answer_field(answer, true, "id")
}

/// The `error` of an `{"ok":false,"error":"..."}` answer; panics on anything else.
pub fn answer_error(answer: &str) -> String {
    answer_field(answer, false, "error")
}

/// The string `field` of an answer line whose `ok` is `ok`; panics on anything else.
fn answer_field(answer: &str, ok: bool, field: &str) -> String {
    use simd_json::prelude::*;
    let mut bytes = answer.as_bytes().to_vec();
    let v = simd_json::to_owned_value(&mut bytes)
        .unwrap_or_else(|e| panic!("answer is not JSON ({e}): {answer:?}"));
    assert_eq!(
        v.get("ok").and_then(|o| o.as_bool()),
        Some(ok),
        "expected ok={ok}: {answer}"
    );
    v.get(field)
        .and_then(|i| i.as_str())
        .unwrap_or_else(|| panic!("answer without {field}: {answer}"))
        .to_owned()
}

/// A publish-socket command line for `{"topic":T,"data":{"n":N}}`.
pub fn line_n(topic: &str, n: u64) -> String {
    format!("{{\"topic\":\"{topic}\",\"data\":{{\"n\":{n}}}}}")
}

impl Server {
    /// Sends `lines` (without newlines) over one publish-socket connection, all
    /// written before any answer is read, and returns the answer lines in order.
    pub fn publish_socket(&self, lines: &[String]) -> Vec<String> {
        let mut p = Publisher::connect(&self.socket);
        let mut payload = Vec::new();
        for l in lines {
            payload.extend_from_slice(l.as_bytes());
            payload.push(b'\n');
        }
        // Write from another thread so a large batch cannot deadlock against
        // answers the server is waiting to write.
        let mut writer = p.stream.try_clone().expect("clone unix stream");
        let t = std::thread::spawn(move || writer.write_all(&payload));
        let answers = (0..lines.len())
            .map(|i| {
                p.try_read_answer().unwrap_or_else(|e| {
                    panic!(
                        "publish socket: no answer {i} of {}: {e}\n{}",
                        lines.len(),
                        self.stderr_tail()
                    )
                })
            })
            .collect();
        t.join()
            .expect("writer thread")
            .expect("write publish lines");
        answers
    }

    /// Publishes `lines` as [`Server::publish_socket`] does; every answer must be
    /// `{"ok":true,...}`. Returns the ids, in order.
    pub fn publish_ids(&self, lines: &[String]) -> Vec<String> {
        self.publish_socket(lines)
            .iter()
            .map(|a| answer_id(a))
            .collect()
    }

    /// Publishes `{"n":n}` for each `n` to `topic` through the socket; returns the ids.
    pub fn publish_ns(&self, topic: &str, ns: impl IntoIterator<Item = u64>) -> Vec<String> {
        let lines: Vec<String> = ns.into_iter().map(|n| line_n(topic, n)).collect();
        self.publish_ids(&lines)
    }

    /// `POST /publish?topic=T` with `body` on a fresh connection: (status, body).
    pub fn http_publish(&self, topic: &str, body: &str) -> (u16, String) {
        let mut c = HttpConn::connect(self.addr);
        let r = c.publish(topic, body);
        (r.status, r.text())
    }
}
