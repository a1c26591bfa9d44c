#![no_main]
//! The https read path: a real handshake over a socket pair, then records
//! from the fuzzer (sealed by a rustls client, or raw bytes in their place)
//! opened by the server's `TlsConns::recv` and fed to the HTTP machine.
//!
//! Steps of (control byte, up to 63 bytes): bit 0x40 set, the bytes go raw
//! onto the wire (garbage, a forged record header, a truncated record);
//! clear, the client seals them as application data (bit 0x80: and sends a
//! close_notify after). Whatever arrives, the server must not panic, and a
//! connection that failed must stay failed: `recv` answers an error (never
//! `WouldBlock`, on which a reader would wait forever) and `has_input` says
//! there is something to read.
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, OnceLock};

use ringcast::bench::tls::client_config;
use ringcast::proto::http::{Config, Connection};
use ringcast::runtime::tls::conns::{Handshake, TlsConns};
use ringcast::runtime::tls::{Tls, TlsSettings};
use ringcast::time::Tick;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

const CERT: &str = r"-----BEGIN CERTIFICATE-----
MIIBfjCCASWgAwIBAgIURZOtq1k2wxXX5LFNoQ5WqNVSH58wCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTI2MTIwNTAzNDczMloYDzIxMjYxMTEx
MDM0NzMyWjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAAQ+7GOyTiXbp0OVjczzu9JJHJ72x7/PmDbohJMjvZ9vufVQkVPOLhNu
J0F67HL3fIBHWDujdfbqXBwtDY1UJrvAo1MwUTAdBgNVHQ4EFgQUrpVyitW6fdrb
hJqEOqTG1lYQ8i4wHwYDVR0jBBgwFoAUrpVyitW6fdrbhJqEOqTG1lYQ8i4wDwYD
VR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNHADBEAiAQSpPC+P5W1JCZzeVarQGO
bE3/pNgK7e62cVazsxtVlQIgS9gpEDeMhH2NaUJuZwCfaSRkCroXjCIOZSM+crlS
hKE=
-----END CERTIFICATE-----
";
const KEY: &str = r"-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg0QtbPNq1JVFqzHn7
LtdK91QGFa2fK05boBLlSnNCiGmhRANCAAQ+7GOyTiXbp0OVjczzu9JJHJ72x7/P
mDbohJMjvZ9vufVQkVPOLhNuJ0F67HL3fIBHWDujdfbqXBwtDY1UJrvA
-----END PRIVATE KEY-----
";

struct Fixture {
    server: Arc<Tls>,
    client: Arc<ClientConfig>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("ringcast-fuzz-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, CERT).unwrap();
        std::fs::write(&key, KEY).unwrap();
        let server = Tls::load(&TlsSettings { cert, key }).unwrap();
        // The bench's client, trusting any certificate: it talks to the
        // fuzzed server only.
        let client = client_config(None, true).unwrap();
        Fixture { server, client }
    })
}

/// Moves what the client sealed onto the wire.
fn client_out(client: &mut ClientConnection, wire: &mut UnixStream) {
    while client.wants_write() {
        if client.write_tls(wire).is_err() {
            return;
        }
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let (mut wire, server_end) = UnixStream::pair().unwrap();
    wire.set_nonblocking(true).unwrap();
    server_end.set_nonblocking(true).unwrap();
    let fd = server_end.as_raw_fd();
    let conns = TlsConns::new(f.server.clone());
    conns.begin(fd).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut client = ClientConnection::new(f.client.clone(), name).unwrap();
    // The handshake, both sides in turn (bounded).
    for _ in 0..32 {
        client_out(&mut client, &mut wire);
        let step = conns.handshake(fd).unwrap();
        let _ = client.read_tls(&mut wire);
        client.process_new_packets().unwrap();
        if step == Handshake::Done && !client.is_handshaking() {
            break;
        }
    }
    assert!(!client.is_handshaking(), "the handshake completes");

    let cfg = Config {
        max_header_bytes: 256,
        max_body_bytes: 128,
        header_timeout: Tick::new(10),
        body_timeout: Tick::new(5),
    };
    let mut http = Connection::new(cfg, Tick::ZERO);
    let mut failed = false;
    let mut buf = [0u8; 512];
    let mut rest = data;
    while let Some((&ctl, tail)) = rest.split_first() {
        let n = usize::from(ctl & 0x3f).min(tail.len());
        let (chunk, after) = tail.split_at(n);
        rest = after;
        if ctl & 0x40 != 0 {
            let _ = wire.write_all(chunk);
        } else {
            let _ = client.writer().write_all(chunk);
            if ctl & 0x80 != 0 {
                client.send_close_notify();
            }
            client_out(&mut client, &mut wire);
        }
        // Everything that arrived, as the connection's read path takes it.
        loop {
            match conns.recv(fd, &mut buf) {
                Ok(0) => break,
                Ok(k) => {
                    assert!(!failed, "plaintext after a failure");
                    if http.read_room() > 0 {
                        http.feed(&buf[..k]);
                    }
                    while http.poll_event(Tick::ZERO).is_some() {}
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(!failed, "a failed connection said WouldBlock");
                    break;
                }
                Err(_) => {
                    failed = true;
                    assert!(conns.has_input(fd), "a failed connection must be read, not waited on");
                    break;
                }
            }
        }
        // The client reads what the server sent (alerts, a key update).
        let mut sink = [0u8; 1024];
        while matches!(wire.read(&mut sink), Ok(k) if k > 0) {}
    }
    conns.end(fd);
});
