#![no_main]
use ringcast::proto::http::{Config, Connection, Event, Response};
use ringcast::time::Tick;

// Steps of (control byte, up to 15 input bytes): the control byte says how many bytes
// come, whether time passes, whether bodies are asked for, and whether (and which) a
// request is answered. Whatever the script, the machine must not panic, and must
// stop asking for input once it is closing.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let cfg = Config {
        max_header_bytes: 256,
        max_body_bytes: 128,
        header_timeout: Tick::new(10),
        body_timeout: Tick::new(5),
    };
    let mut conn = Connection::new(cfg, Tick::ZERO);
    let (mut now, mut open, mut rest) = (Tick::ZERO, Vec::new(), data);
    let ok = Response { status: 200, headers: &[], content_type: "text/plain", body: b"ok" };
    while let Some((&ctl, tail)) = rest.split_first() {
        let n = usize::from(ctl & 0x0f).min(tail.len());
        if conn.read_room() > 0 {
            conn.feed(&tail[..n]);
        }
        rest = &tail[n..];
        if ctl & 0x10 != 0 {
            now = now + Tick::new(4);
            if conn.poll_timeout().is_some_and(|t| t <= now) {
                conn.handle_timeout(now);
            }
        }
        while let Some(event) = conn.poll_event(now) {
            if let Event::Head { id, .. } = event {
                open.push(id);
                if ctl & 0x20 != 0 {
                    let _ = conn.read_body(id);
                }
            }
        }
        if ctl & 0x40 != 0 && !open.is_empty() {
            let id = open.remove(usize::from(ctl >> 7) % open.len());
            conn.respond(id, &ok, false);
        }
        let _ = conn.poll_transmit();
        if conn.closing().is_some() {
            assert_eq!(conn.read_room(), 0);
        }
    }
});
