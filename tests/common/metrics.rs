//! `/metrics`: reading the server's Prometheus text and picking series out of it.

use super::{try_request, Server};

impl Server {
    /// The `/metrics` text.
    pub fn metrics(&self) -> String {
        let r = try_request(
            self.addr,
            b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
        .unwrap_or_else(|e| panic!("GET /metrics failed: {e}\n{}", self.stderr_tail()));
        assert_eq!(r.status, 200, "GET /metrics: {}", r.text());
        r.text()
    }

    /// The value of one series, written exactly as exposed, e.g.
    /// `ringcast_connections{transport="sse",core="0"}`.
    pub fn metric(&self, series: &str) -> f64 {
        let text = self.metrics();
        find_series(&text, series)
            .unwrap_or_else(|| panic!("no series {series} in /metrics:\n{text}"))
    }

    /// The sum of every series of a family whose labels include the given pairs,
    /// e.g. `ringcast_connections{transport="sse"}` or `ringcast_subscriptions`.
    pub fn metric_sum(&self, selector: &str) -> f64 {
        sum_series(&self.metrics(), selector)
    }

    /// The id epoch of this run, from `ringcast_info`.
    pub fn epoch(&self) -> String {
        let text = self.metrics();
        let line = text
            .lines()
            .find(|l| l.starts_with("ringcast_info{"))
            .expect("ringcast_info");
        label_value(line, "epoch").expect("epoch label")
    }
}

fn label_value(line: &str, label: &str) -> Option<String> {
    let key = format!("{label}=\"");
    let at = line.find(&key)? + key.len();
    let end = line[at..].find('"')? + at;
    Some(line[at..end].to_owned())
}

/// A metric line: name, labels, value.
type Series<'a> = (&'a str, Vec<(String, String)>, f64);

/// Splits `name{a="x",b="y"} 3` into (name, [(a,x),(b,y)], value).
fn parse_series(line: &str) -> Option<Series<'_>> {
    let (key, value) = line.rsplit_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let (name, labels) = match key.find('{') {
        Some(i) => (&key[..i], key[i + 1..].trim_end_matches('}')),
        None => (key, ""),
    };
    Some((name, parse_labels(labels), value))
}

fn parse_labels(labels: &str) -> Vec<(String, String)> {
    labels
        .split(',')
        .filter(|p| !p.is_empty())
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            Some((k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
        })
        .collect()
}

pub fn find_series(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

pub fn sum_series(text: &str, selector: &str) -> f64 {
    let (name, want) = match selector.find('{') {
        Some(i) => (
            &selector[..i],
            parse_labels(selector[i + 1..].trim_end_matches('}')),
        ),
        None => (selector, Vec::new()),
    };
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(parse_series)
        .filter(|(n, labels, _)| *n == name && want.iter().all(|w| labels.contains(w)))
        .map(|(_, _, v)| v)
        .sum()
}
