#![no_main]
use ringcast::proto::ws::Decoder;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // First byte picks a split point; the rest is fed in two pieces until consumed.
    let Some((&cut, data)) = data.split_first() else {
        return;
    };
    let mut dec = Decoder::new(4096);
    let (a, b) = data.split_at(usize::from(cut).min(data.len()));
    for mut piece in [a, b] {
        while let (n, Ok(Some(_))) = dec.handle_bytes(piece) {
            assert!(n <= piece.len());
            piece = &piece[n..];
        }
    }
});
