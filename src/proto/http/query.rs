//! Query strings: `application/x-www-form-urlencoded` pairs, decoded lazily.

use std::borrow::Cow;

use super::HttpError;

/// The `key=value` pairs of a query string, in order, as the WHATWG URL standard's
/// urlencoded parser reads them: split on `&`, empty pieces skipped, key and value split
/// at the first `=` (no `=`: the value is empty), `+` decoded to a space and `%XX` to the
/// byte `0xXX`.
///
/// Choices, so that no input can panic or be silently altered:
/// - keys and values are bytes (`Cow<[u8]>`), because `%FF` decodes to a byte that is
///   not UTF-8; [`query_text`] turns one into text or into [`HttpError::QueryNotUtf8`], which
///   lets the caller answer 400 naming the rule;
/// - a `%` not followed by two hex digits (`%zz`, a trailing `%`) is kept literally, as
///   browsers do;
/// - a piece without `%` or `+` is borrowed; only decoding allocates.
///
/// ```
/// # use ringcast::proto::http::query_pairs;
/// let pairs: Vec<_> = query_pairs("topic=a%2Fb&x=1+2&flag").collect();
/// assert_eq!(pairs[0], (b"topic"[..].into(), b"a/b"[..].into()));
/// assert_eq!(pairs[1], (b"x"[..].into(), b"1 2"[..].into()));
/// assert_eq!(pairs[2], (b"flag"[..].into(), b""[..].into()));
/// ```
pub fn query_pairs(query: &str) -> QueryPairs<'_> {
    QueryPairs {
        rest: query.as_bytes(),
    }
}

/// Iterator returned by [`query_pairs`].
#[derive(Debug, Clone)]
pub struct QueryPairs<'q> {
    /// The pairs not yet yielded.
    rest: &'q [u8],
}

impl<'q> Iterator for QueryPairs<'q> {
    type Item = (Cow<'q, [u8]>, Cow<'q, [u8]>);

    fn next(&mut self) -> Option<Self::Item> {
        while !self.rest.is_empty() {
            let (piece, rest) = match self.rest.iter().position(|&b| b == b'&') {
                Some(amp) => (&self.rest[..amp], &self.rest[amp + 1..]),
                None => (self.rest, &[][..]),
            };
            self.rest = rest;
            if piece.is_empty() {
                continue;
            }
            let (key, value) = match piece.iter().position(|&b| b == b'=') {
                Some(eq) => (&piece[..eq], &piece[eq + 1..]),
                None => (piece, &[][..]),
            };
            return Some((percent_decode(key), percent_decode(value)));
        }
        None
    }
}

/// A decoded key or value as text, or [`HttpError::QueryNotUtf8`].
pub fn query_text(bytes: Cow<'_, [u8]>) -> Result<Cow<'_, str>, HttpError> {
    match bytes {
        Cow::Borrowed(b) => std::str::from_utf8(b)
            .map(Cow::Borrowed)
            .map_err(|_| HttpError::QueryNotUtf8),
        Cow::Owned(v) => String::from_utf8(v)
            .map(Cow::Owned)
            .map_err(|_| HttpError::QueryNotUtf8),
    }
}

/// `+` → space, `%XX` → byte, anything else as is (including a `%` that does not start
/// a valid escape). Borrows when there is nothing to decode.
fn percent_decode(s: &[u8]) -> Cow<'_, [u8]> {
    if !s.iter().any(|&b| b == b'%' || b == b'+') {
        return Cow::Borrowed(s);
    }
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let byte = match s[i] {
            b'+' => b' ',
            b'%' => match (s.get(i + 1).and_then(hex), s.get(i + 2).and_then(hex)) {
                (Some(hi), Some(lo)) => {
                    i += 2;
                    (hi << 4) | lo
                }
                _ => b'%',
            },
            b => b,
        };
        out.push(byte);
        i += 1;
    }
    Cow::Owned(out)
}

fn hex(b: &u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(query: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
        query_pairs(query)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    fn p(k: &[u8], v: &[u8]) -> (Vec<u8>, Vec<u8>) {
        (k.to_vec(), v.to_vec())
    }

    #[test]
    fn pairs_split_on_ampersand_and_the_first_equals_sign() {
        assert_eq!(pairs(""), vec![]);
        assert_eq!(pairs("&&"), vec![]);
        assert_eq!(
            pairs("topic=a&topic=b&&topics=c,d&"),
            vec![p(b"topic", b"a"), p(b"topic", b"b"), p(b"topics", b"c,d")]
        );
        assert_eq!(pairs("a=b=c"), vec![p(b"a", b"b=c")]);
        assert_eq!(pairs("flag&=v"), vec![p(b"flag", b""), p(b"", b"v")]);
    }

    #[test]
    fn escapes_and_plus_are_decoded_in_keys_and_values() {
        assert_eq!(pairs("topic=chat%2Froom"), vec![p(b"topic", b"chat/room")]);
        assert_eq!(pairs("a+b=c+d%20e"), vec![p(b"a b", b"c d e")]);
        assert_eq!(pairs("x=%2b%2B"), vec![p(b"x", b"++")]);
        assert_eq!(pairs("%74opic=a%26b"), vec![p(b"topic", b"a&b")]);
        assert_eq!(pairs("e=%C3%A9"), vec![p(b"e", "é".as_bytes())]);
    }

    #[test]
    fn bad_escapes_are_kept_literally() {
        assert_eq!(pairs("a=%"), vec![p(b"a", b"%")]);
        assert_eq!(pairs("a=%4"), vec![p(b"a", b"%4")]);
        assert_eq!(pairs("a=%zz"), vec![p(b"a", b"%zz")]);
        assert_eq!(pairs("a=%%41"), vec![p(b"a", b"%A")]);
        assert_eq!(pairs("a=%4g1"), vec![p(b"a", b"%4g1")]);
    }

    #[test]
    fn non_utf8_after_decoding_is_reported_by_query_text() {
        let (key, value) = query_pairs("topic=%FF%FE").next().unwrap();
        assert_eq!(query_text(key).as_deref(), Ok("topic"));
        assert_eq!(&*value, b"\xff\xfe");
        assert_eq!(query_text(value), Err(HttpError::QueryNotUtf8));
        let (_, cut) = query_pairs("t=%C3").next().unwrap();
        assert_eq!(query_text(cut), Err(HttpError::QueryNotUtf8));
        let (_, ok) = query_pairs("t=%C3%A9").next().unwrap();
        assert_eq!(query_text(ok).as_deref(), Ok("é"));
    }

    #[test]
    fn pieces_without_escapes_are_borrowed() {
        let (key, value) = query_pairs("topic=a.b").next().unwrap();
        assert!(matches!((key, value), (Cow::Borrowed(_), Cow::Borrowed(_))));
        let (key, value) = query_pairs("topic=a+b").next().unwrap();
        assert!(matches!((key, value), (Cow::Borrowed(_), Cow::Owned(_))));
    }

    proptest::proptest! {
        #[test]
        fn random_queries_never_panic_and_decode_no_longer(query in "[a-zA-Z0-9%+&=\u{e9}\u{0}-\u{7f}]{0,64}") {
            for (key, value) in query_pairs(&query) {
                proptest::prop_assert!(key.len() + value.len() <= query.len());
                let _ = (query_text(key), query_text(value));
            }
        }
    }
}
