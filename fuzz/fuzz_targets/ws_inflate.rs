#![no_main]
//! The inflate path: fuzz bytes as the compressed payload of one or two masked
//! frames (RSV1 on the first), fed in two pieces to a decoder that agreed to
//! permessage-deflate, with a small message limit (bombs must stop at it).
use ringcast::proto::ws::deflate::Agreed;
use ringcast::proto::ws::{Decoder, Event};

fn frame(out: &mut Vec<u8>, b0: u8, payload: &[u8]) {
    out.push(b0);
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    let key = [0x11, 0x22, 0x33, 0x44];
    out.extend_from_slice(&key);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&ctl, data)) = data.split_first() else {
        return;
    };
    let data = &data[..data.len().min(60_000)];
    let mut wire = Vec::new();
    let text = ctl & 1 != 0;
    let opcode = if text { 0x1 } else { 0x2 };
    if ctl & 2 != 0 {
        // Two fragments: RSV1 only on the first.
        let (a, b) = data.split_at(data.len() / 2);
        frame(&mut wire, 0x40 | opcode, a);
        frame(&mut wire, 0x80, b);
    } else {
        frame(&mut wire, 0xC0 | opcode, data);
    }
    let bits = 8 + (ctl >> 4) % 8;
    let mut dec = Decoder::new(4096);
    dec.set_deflate(Agreed::new(15, bits));
    let cut = (usize::from(ctl) * 7).min(wire.len());
    let (a, b) = wire.split_at(cut);
    for mut piece in [a, b] {
        loop {
            let (n, r) = dec.handle_bytes(piece);
            assert!(n <= piece.len());
            piece = &piece[n..];
            match r {
                Ok(Some(Event::Text(t))) => {
                    assert!(t.len() <= 4096);
                    assert!(std::str::from_utf8(&t).is_ok());
                }
                Ok(Some(Event::Binary(b))) => assert!(b.len() <= 4096),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }
    assert!(dec.held_bytes() <= 4096 * 2 + 64 * 1024);
});
