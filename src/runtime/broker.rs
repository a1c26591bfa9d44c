//! The broker bridge: one thread per node that shares topics with other nodes
//! through Redis Streams (one stream per topic, `ringcast:<topic>`).
//!
//! It is one more endpoint of the cross-core bus (index `cores`): cores send it
//! publishes, `Watch`/`Unwatch` for the topics this node listens to, and `Range`
//! for resumes older than a home's history; it answers over the same rings.
//!
//! - Publishing: every publish the bus hands over in one batch becomes one
//!   pipelined `XADD ... MAXLEN ~ <history>`; each publisher gets the stream id
//!   only once Redis accepted the entry. While Redis is unreachable a publish
//!   fails at once with `broker unavailable`, never buffered. The same pipeline
//!   sets each written stream to expire `--history-ttl` later (`PEXPIRE`), so a
//!   stream nobody publishes to for that long is deleted by Redis; a resume from
//!   it then gets `ringcast.gap` (see [`Bridge::range`]).
//! - Reading: a second connection runs `XREAD BLOCK` over the watched streams from
//!   the last id delivered per stream, and hands each entry to its topic's home
//!   core, which fans it out like a local publish. A watch starts at the stream's
//!   current last id; the home answers resumes from further back with `XRANGE`,
//!   and checks with `XRANGE` that a resume from past what it has read names an
//!   entry of the stream (one seen on another node first) before trusting it.
//! - Faults: on any error both connections are dropped and re-made with capped
//!   backoff; reading resumes from the last ids delivered, so nothing is skipped
//!   and nothing repeats.
//!
//! The bridge runs its own current-thread tokio runtime (the Redis client's);
//! no lock is taken on the cores' side.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, Value};

use super::bus::Bus;
use super::settings::BrokerSettings;
use crate::core::bus_msg::{CoreMsg, StreamEntry};
use crate::core::topics::home_of;
use crate::proto::cursor::{parse_stream_id, IdScheme, STREAM_SEQ_BITS};
use crate::proto::publish::PublishError;
use crate::{info, warn};

/// Prefix of the stream keys, so ringcast's streams are easy to find and to scope
/// with Redis ACLs.
pub const KEY_PREFIX: &str = "ringcast:";

/// How long `XREAD` blocks before re-issuing (also bounds how late a newly
/// watched stream may start being read, should the unblock race the read).
const READ_BLOCK_MS: u64 = 1000;
/// Longest wait for any command other than the blocking read.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// Most entries one `XRANGE` answer carries into a resume.
const RANGE_LIMIT: usize = 10_000;
/// Entries taken per stream per read.
const READ_COUNT: usize = 1000;

/// Broker health, shared with the workers (metrics, `/healthz`).
#[derive(Default)]
pub struct BrokerStatus {
    pub up: AtomicBool,
    pub errors: AtomicU64,
    pub reconnects: AtomicU64,
    /// Delay of the last delivered entry behind its stream id's time.
    pub lag_ms: AtomicU64,
    pub published: AtomicU64,
}

impl BrokerStatus {
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }
}

/// Appends the broker series to a metrics exposition.
pub fn render_metrics(s: &BrokerStatus, out: &mut String) {
    use std::fmt::Write as _;
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let _ = write!(
        out,
        "# HELP ringcast_broker_up 1 while the broker is reachable.\n# TYPE ringcast_broker_up gauge\nringcast_broker_up {}\n\
         # HELP ringcast_broker_errors_total Broker connection and command failures.\n# TYPE ringcast_broker_errors_total counter\nringcast_broker_errors_total {}\n\
         # HELP ringcast_broker_reconnects_total Reconnections to the broker.\n# TYPE ringcast_broker_reconnects_total counter\nringcast_broker_reconnects_total {}\n\
         # HELP ringcast_broker_lag_ms Delay of the last entry read behind its stream id's time.\n# TYPE ringcast_broker_lag_ms gauge\nringcast_broker_lag_ms {}\n\
         # HELP ringcast_broker_published_total Entries this node added to the broker.\n# TYPE ringcast_broker_published_total counter\nringcast_broker_published_total {}\n",
        u8::from(s.is_up()),
        get(&s.errors),
        get(&s.reconnects),
        get(&s.lag_ms),
        get(&s.published),
    );
}

/// Starts the bridge thread. Streams keep about `--history` entries and expire
/// `--history-ttl` after their last publish (`0`: no expiry is set).
pub fn spawn(
    cfg: &BrokerSettings,
    bus: Bus,
    cores: usize,
    status: Arc<BrokerStatus>,
) -> Result<std::thread::JoinHandle<()>, String> {
    let maxlen = cfg.history.max(1);
    let ttl = cfg.ttl;
    let client = Client::open(cfg.url.as_str()).map_err(|e| format!("bad --broker URL: {e}"))?;
    std::thread::Builder::new()
        .name("ringcast-broker".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    warn!("msg=\"broker bridge cannot start\" error=\"{e}\"");
                    return;
                }
            };
            let mut bridge = Bridge {
                client,
                bus,
                cores,
                maxlen,
                // At least 1 ms: a TTL under a millisecond must not mean "never".
                expire_ms: (!ttl.is_zero())
                    .then(|| u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)),
                status,
                watched: BTreeMap::new(),
                parked: Vec::new(),
            };
            rt.block_on(bridge.run());
        })
        .map_err(|e| e.to_string())
}

struct Bridge {
    client: Client,
    bus: Bus,
    cores: usize,
    maxlen: usize,
    /// `PEXPIRE` of a stream after each publish to it; `None`: streams never expire.
    expire_ms: Option<u64>,
    status: Arc<BrokerStatus>,
    /// Watched topics and the last stream position delivered for each.
    watched: BTreeMap<Arc<str>, u64>,
    /// Requests that need Redis, kept while it is unreachable.
    parked: Vec<CoreMsg>,
}

/// Why a connected session ended.
struct Down(String);

impl Bridge {
    async fn run(&mut self) {
        let mut backoff = Duration::from_millis(100);
        let mut first = true;
        loop {
            match self.connect().await {
                Ok((cmd, reader, reader_id)) => {
                    self.status.up.store(true, Ordering::Relaxed);
                    if !first {
                        self.status.reconnects.fetch_add(1, Ordering::Relaxed);
                    }
                    info!("msg=\"broker connected\" reconnect={}", !first);
                    first = false;
                    backoff = Duration::from_millis(100);
                    let Down(why) = self.session(cmd, reader, reader_id).await;
                    self.status.up.store(false, Ordering::Relaxed);
                    self.status.errors.fetch_add(1, Ordering::Relaxed);
                    warn!("msg=\"broker connection lost\" error=\"{why}\"");
                }
                Err(e) => {
                    self.status.errors.fetch_add(1, Ordering::Relaxed);
                    if first {
                        warn!("msg=\"broker unreachable\" error=\"{e}\"");
                        first = false;
                    }
                }
            }
            // Down: answer publishes at once, keep the rest, retry after backoff.
            let wake = tokio::time::sleep(backoff);
            tokio::pin!(wake);
            loop {
                tokio::select! {
                    _ = &mut wake => break,
                    _ = std::future::poll_fn(|cx| self.bus.poll_inbound(cx)) => self.refuse_while_down(),
                }
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    async fn connect(
        &self,
    ) -> redis::RedisResult<(MultiplexedConnection, MultiplexedConnection, i64)> {
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(COMMAND_TIMEOUT)
            .set_response_timeout(COMMAND_TIMEOUT);
        let cmd = self
            .client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await?;
        let read_cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(COMMAND_TIMEOUT)
            .set_response_timeout(Duration::from_millis(READ_BLOCK_MS) + COMMAND_TIMEOUT);
        let mut reader = self
            .client
            .get_multiplexed_async_connection_with_config(&read_cfg)
            .await?;
        let reader_id: i64 = redis::cmd("CLIENT")
            .arg("ID")
            .query_async(&mut reader)
            .await?;
        Ok((cmd, reader, reader_id))
    }

    fn refuse_while_down(&mut self) {
        let mut inbound = Vec::new();
        self.bus.drain(usize::MAX, |msg| inbound.push(msg));
        for msg in inbound {
            match msg {
                CoreMsg::Publish { reply, .. } => {
                    let answer = CoreMsg::Published {
                        slot: reply.slot,
                        result: Err(PublishError::BrokerUnavailable),
                    };
                    self.bus.send(usize::from(reply.core), answer);
                }
                CoreMsg::Unwatch { topic } => {
                    self.watched.remove(&topic);
                    self.parked
                        .retain(|m| !matches!(m, CoreMsg::Watch { topic: t } if *t == topic));
                }
                other => self.parked.push(other),
            }
        }
        self.bus.wake_peers();
    }

    /// Serves while both connections work; returns why they stopped.
    async fn session(
        &mut self,
        mut cmd: MultiplexedConnection,
        reader: MultiplexedConnection,
        reader_id: i64,
    ) -> Down {
        let parked = std::mem::take(&mut self.parked);
        if let Err(e) = self.handle(&mut cmd, parked).await {
            return Down(e);
        }
        self.bus.wake_peers();
        type Read = std::pin::Pin<Box<dyn std::future::Future<Output = redis::RedisResult<Value>>>>;
        let mut read: Option<Read> = None;
        loop {
            if read.is_none() && !self.watched.is_empty() {
                let mut xread = redis::cmd("XREAD");
                xread
                    .arg("COUNT")
                    .arg(READ_COUNT)
                    .arg("BLOCK")
                    .arg(READ_BLOCK_MS)
                    .arg("STREAMS");
                for topic in self.watched.keys() {
                    xread.arg(format!("{KEY_PREFIX}{topic}"));
                }
                for &last in self.watched.values() {
                    xread.arg(IdScheme::Stream.format_id(last));
                }
                let mut conn = reader.clone();
                read = Some(Box::pin(async move { xread.query_async(&mut conn).await }));
            }
            enum Event {
                Read(redis::RedisResult<Value>),
                Inbound,
            }
            let event = std::future::poll_fn(|cx| {
                if let Some(f) = read.as_mut() {
                    if let Poll::Ready(r) = f.as_mut().poll(cx) {
                        return Poll::Ready(Event::Read(r));
                    }
                }
                self.bus.poll_inbound(cx).map(|()| Event::Inbound)
            })
            .await;
            match event {
                Event::Read(result) => {
                    read = None;
                    match result {
                        Ok(value) => self.deliver(value),
                        Err(e) => return Down(e.to_string()),
                    }
                    self.bus.wake_peers();
                }
                Event::Inbound => {
                    let mut batch = Vec::new();
                    self.bus.drain(usize::MAX, |msg| batch.push(msg));
                    let changed = batch
                        .iter()
                        .any(|m| matches!(m, CoreMsg::Watch { .. } | CoreMsg::Unwatch { .. }));
                    if let Err(e) = self.handle(&mut cmd, batch).await {
                        return Down(e);
                    }
                    if changed && read.is_some() {
                        // Wake the blocked read so it re-issues over the new set.
                        let unblock = redis::cmd("CLIENT")
                            .arg("UNBLOCK")
                            .arg(reader_id)
                            .query_async::<i64>(&mut cmd)
                            .await;
                        if let Err(e) = unblock {
                            return Down(e.to_string());
                        }
                    }
                    self.bus.wake_peers();
                }
            }
        }
    }

    /// Carries out a batch of requests from the cores.
    async fn handle(
        &mut self,
        cmd: &mut MultiplexedConnection,
        batch: Vec<CoreMsg>,
    ) -> Result<(), String> {
        let mut publishes = Vec::new();
        let mut pipe = redis::pipe();
        // The streams this batch writes, each to expire once after its XADDs.
        let mut written = BTreeSet::new();
        for msg in batch {
            match msg {
                CoreMsg::Publish {
                    topic,
                    event,
                    data,
                    reply,
                } => {
                    let key = format!("{KEY_PREFIX}{topic}");
                    let x = pipe.cmd("XADD");
                    x.arg(&key)
                        .arg("MAXLEN")
                        .arg("~")
                        .arg(self.maxlen)
                        .arg("*")
                        .arg("d")
                        .arg(data);
                    if let Some(event) = event {
                        x.arg("e").arg(&*event);
                    }
                    if self.expire_ms.is_some() {
                        written.insert(key);
                    }
                    publishes.push(reply);
                }
                CoreMsg::Watch { topic } => {
                    let from = match self.watched.get(&topic) {
                        Some(&last) => last,
                        None => self.last_id(cmd, &topic).await?,
                    };
                    self.watched.insert(topic.clone(), from);
                    let home = home_of(&topic, self.cores);
                    self.bus.send(home, CoreMsg::Watching { topic, from });
                }
                CoreMsg::Unwatch { topic } => {
                    self.watched.remove(&topic);
                }
                CoreMsg::Range {
                    topic,
                    after,
                    upto,
                    client,
                    req,
                } => {
                    let (entries, trimmed) = self.range(cmd, &topic, after, upto).await?;
                    let home = home_of(&topic, self.cores);
                    let msg = CoreMsg::Ranged {
                        topic,
                        after,
                        upto,
                        client,
                        req,
                        entries,
                        trimmed,
                    };
                    self.bus.send(home, msg);
                }
                other => warn!("msg=\"unexpected message at the broker bridge\" msg={other:?}"),
            }
        }
        if publishes.is_empty() {
            return Ok(());
        }
        if let Some(ms) = self.expire_ms {
            // Its answer is not read: the pipeline's answers stay the XADD ids.
            for key in &written {
                pipe.cmd("PEXPIRE").arg(key).arg(ms).ignore();
            }
        }
        let result =
            tokio::time::timeout(COMMAND_TIMEOUT, pipe.query_async::<Vec<String>>(cmd)).await;
        let ids = match result {
            Ok(Ok(ids)) => Some(ids),
            Ok(Err(_)) | Err(_) => None,
        };
        for (i, reply) in publishes.iter().enumerate() {
            let result = ids
                .as_ref()
                .and_then(|ids| ids.get(i))
                .and_then(|id| parse_stream_id(id.as_bytes()))
                .ok_or(PublishError::BrokerUnavailable);
            let answer = CoreMsg::Published {
                slot: reply.slot,
                result,
            };
            self.bus.send(usize::from(reply.core), answer);
        }
        match ids {
            Some(ids) => {
                self.status
                    .published
                    .fetch_add(ids.len() as u64, Ordering::Relaxed);
                Ok(())
            }
            None => Err("XADD failed or timed out".into()),
        }
    }

    /// The last id of a topic's stream (0 when it has none).
    async fn last_id(&self, cmd: &mut MultiplexedConnection, topic: &str) -> Result<u64, String> {
        let reply: Value = tokio::time::timeout(
            COMMAND_TIMEOUT,
            redis::cmd("XREVRANGE")
                .arg(format!("{KEY_PREFIX}{topic}"))
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1)
                .query_async(cmd),
        )
        .await
        .map_err(|_| "XREVRANGE timed out".to_string())?
        .map_err(|e| e.to_string())?;
        let entries = parse_entries(topic, reply);
        Ok(entries.first().map_or(0, |e| e.key))
    }

    /// The entries in `(after, upto]`, and whether the stream lost some of the
    /// entries after `after` to trimming.
    ///
    /// Stream ids are not consecutive, so loss is judged by what survives:
    /// trimming removes the oldest entries first, so if the entry `after` itself
    /// is still there, everything after it is too. If it is gone (or never was),
    /// entries after it may be gone as well, and the resume reports a gap. From
    /// the very start (`after` = 0) a stream lost entries when it holds fewer
    /// than were ever added to it.
    async fn range(
        &self,
        cmd: &mut MultiplexedConnection,
        topic: &Arc<str>,
        after: u64,
        upto: u64,
    ) -> Result<(Vec<StreamEntry>, bool), String> {
        let key = format!("{KEY_PREFIX}{topic}");
        let mut pipe = redis::pipe();
        pipe.cmd("XRANGE")
            .arg(&key)
            .arg(IdScheme::Stream.format_id(after))
            .arg(IdScheme::Stream.format_id(upto))
            .arg("COUNT")
            .arg(RANGE_LIMIT + 1)
            .cmd("XINFO")
            .arg("STREAM")
            .arg(&key);
        let reply: Result<(Value, Value), _> =
            tokio::time::timeout(COMMAND_TIMEOUT, pipe.query_async(cmd))
                .await
                .map_err(|_| "XRANGE timed out".to_string())?;
        let (range, info) = match reply {
            Ok(v) => v,
            // A stream that does not exist has no XINFO: nothing to resume, and
            // any position but the start is gone.
            Err(e) if e.to_string().contains("no such key") => return Ok((Vec::new(), after != 0)),
            Err(e) => return Err(e.to_string()),
        };
        let mut entries = parse_entries(topic, range);
        let still_there = entries.first().is_some_and(|e| e.key == after);
        if still_there {
            entries.remove(0);
        }
        let number = |name: &str| info_field(&info, name).and_then(|v| v.parse::<u64>().ok());
        let lost_from_start = number("entries-added").unwrap_or(0) > number("length").unwrap_or(0);
        let trimmed = if after == 0 {
            lost_from_start
        } else {
            !still_there
        } || entries.len() > RANGE_LIMIT;
        entries.truncate(RANGE_LIMIT);
        Ok((entries, trimmed))
    }

    /// Hands the entries of an `XREAD` answer to their topics' home cores.
    fn deliver(&mut self, value: Value) {
        let Value::Array(streams) = value else { return };
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        for stream in streams {
            let Value::Array(mut pair) = stream else {
                continue;
            };
            if pair.len() != 2 {
                continue;
            }
            let entries = pair.pop().unwrap_or(Value::Nil);
            let key = pair.pop().unwrap_or(Value::Nil);
            let Some(topic) =
                value_text(&key).and_then(|k| k.strip_prefix(KEY_PREFIX).map(str::to_owned))
            else {
                continue;
            };
            let Some((topic, last)) = self
                .watched
                .get_key_value(topic.as_str())
                .map(|(t, &l)| (t.clone(), l))
            else {
                continue;
            };
            let home = home_of(&topic, self.cores);
            let mut newest = last;
            for entry in parse_entries(&topic, entries) {
                if entry.key <= newest {
                    continue;
                }
                newest = entry.key;
                let written_ms = entry.key >> STREAM_SEQ_BITS;
                self.status
                    .lag_ms
                    .store(now_ms.saturating_sub(written_ms), Ordering::Relaxed);
                self.bus.send(home, CoreMsg::Entry(entry));
            }
            self.watched.insert(topic, newest);
        }
    }
}

/// The entries of an `XRANGE`/`XREVRANGE` answer (or one stream of `XREAD`).
fn parse_entries(topic: &str, value: Value) -> Vec<StreamEntry> {
    let Value::Array(items) = value else {
        return Vec::new();
    };
    let topic: Arc<str> = Arc::from(topic);
    let mut json = crate::proto::json::JsonScratch::new();
    items
        .into_iter()
        .filter_map(|item| {
            let Value::Array(mut parts) = item else {
                return None;
            };
            if parts.len() != 2 {
                return None;
            }
            let fields = parts.pop()?;
            let key = parse_stream_id(value_text(&parts.pop()?)?.as_bytes())?;
            let Value::Array(fields) = fields else {
                return None;
            };
            let mut data = None;
            let mut event = None;
            for kv in fields.chunks(2) {
                let [k, v] = kv else { continue };
                match value_text(k).as_deref() {
                    Some("d") => data = value_bytes(v),
                    Some("e") => event = value_text(v).map(String::into_boxed_str),
                    _ => {}
                }
            }
            let mut data = data?;
            // Streams may be written by others: what is not JSON travels as a string.
            if !json.is_valid(&data) {
                let text = String::from_utf8_lossy(&data).into_owned();
                data = Vec::with_capacity(text.len() + 2);
                crate::proto::json::write_string(&mut data, &text);
            }
            let event = event.filter(|e| crate::proto::topic::validate_event(e.as_bytes()).is_ok());
            Some(StreamEntry {
                topic: topic.clone(),
                key,
                event,
                data,
            })
        })
        .collect()
}

fn value_bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.clone().into_bytes()),
        _ => None,
    }
}

fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::Int(n) => Some(n.to_string()),
        _ => value_bytes(v).and_then(|b| String::from_utf8(b).ok()),
    }
}

/// A string field of an `XINFO STREAM` answer (a flat array or a RESP3 map).
fn info_field(info: &Value, name: &str) -> Option<String> {
    match info {
        Value::Array(items) => items
            .chunks(2)
            .find(|kv| value_text(&kv[0]).as_deref() == Some(name))
            .and_then(|kv| kv.get(1))
            .and_then(value_text),
        Value::Map(pairs) => pairs
            .iter()
            .find(|(k, _)| value_text(k).as_deref() == Some(name))
            .and_then(|(_, v)| value_text(v)),
        _ => None,
    }
}
