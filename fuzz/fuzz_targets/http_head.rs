#![no_main]
use ringcast::proto::http::{parse_request, ChunkedDecoder, HeadLimits, HeadScanner};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // First byte picks a split point and a small header limit; the rest is the input.
    let Some((&cut, data)) = data.split_first() else {
        return;
    };
    let limits = HeadLimits {
        max_header_bytes: if cut & 1 == 0 {
            8 * 1024
        } else {
            64 + usize::from(cut)
        },
    };
    let whole = parse_request(data, &limits);
    if let Ok(Some(head)) = &whole {
        assert!(head.head_len <= data.len().min(limits.max_header_bytes));
    }

    // The scanner, fed the same bytes in two reads, agrees once the head has ended.
    let split = usize::from(cut).min(data.len());
    let mut scanner = HeadScanner::new();
    let first = scanner.parse(&data[..split], &limits);
    match (first, &whole) {
        (Ok(Some(early)), Ok(Some(head))) => assert_eq!(&early, head),
        (Ok(Some(early)), _) => panic!("scanner found a head the parser did not: {early:?}"),
        (Ok(None), Ok(Some(head))) => {
            assert_eq!(
                scanner.parse(data, &limits).as_ref(),
                Ok(&Some(head.clone()))
            )
        }
        _ => {}
    }

    // The chunked decoder, in two splits, decodes the same as in one piece.
    let mut one = Vec::new();
    let mut dec = ChunkedDecoder::new(1 << 16);
    let whole_body = dec.decode(data, &mut one);
    if let Ok((n, _)) = whole_body {
        assert!(n <= data.len());
    }
    let mut two = Vec::new();
    let mut dec = ChunkedDecoder::new(1 << 16);
    let split_body = match dec.decode(&data[..split], &mut two) {
        Ok((n, true)) => Ok((n, true)),
        Ok((n, false)) => {
            assert_eq!(n, split);
            dec.decode(&data[split..], &mut two)
                .map(|(m, done)| (n + m, done))
        }
        Err(e) => Err(e),
    };
    assert_eq!(whole_body, split_body);
    if whole_body.is_ok() {
        assert_eq!(one, two);
    }
});
