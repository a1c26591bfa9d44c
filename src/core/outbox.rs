//! A client's outbox: the bytes queued to it, bounded, written in coalesced
//! vectored writes straight from the shared encoded frames (no per-subscriber copy).
//!
//! Streams over several topics put a cursor in each SSE `id:` line; those lines
//! are queued as [`Item::Cursor`] markers and rendered at write time into a
//! per-core scratch buffer, so the message path allocates nothing per subscriber.

use std::cell::Cell;
use std::collections::VecDeque;
use std::io::{self, IoSlice};

use super::frame::Frame;
use crate::proto::cursor::IdScheme;

thread_local! {
    /// Bytes queued in every outbox of this thread, that is of this core.
    static QUEUED: Cell<usize> = const { Cell::new(0) };
    /// The largest single outbox seen since [`take_largest`] last ran.
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

/// Bytes queued to all clients of the calling core.
pub fn queued_on_this_core() -> usize {
    QUEUED.with(Cell::get)
}

/// The largest outbox of the calling core since the last call, and resets it.
pub fn take_largest() -> usize {
    LARGEST.with(|l| l.replace(0))
}

/// Most iovecs handed to one write. A burst to a backlogged client goes out in
/// writes of up to this many messages; 64 measured 5.6 M deliveries/s (WS fan-out,
/// 10,000 subscribers, `--cores 2`, median of 3), 256 measured 7.5 M/s, with
/// 0.22 → 0.15 µs of server CPU per delivery (fewer sends, fewer receiver wake-ups).
pub const MAX_IOV: usize = 256;

/// The iovec array of writes of a few items.
const SMALL_IOV: usize = 8;

/// What a cursor marker counts against the outbox bound.
const CURSOR_COST: usize = 32;

/// One queued piece of output: 24 bytes, so a backlog of many messages per
/// client stays small (criterion: ten messages to 10,000 WS outboxes took 25–44 %
/// longer with a 40-byte item).
#[derive(Debug, Clone)]
pub enum Item {
    /// Bytes written as they are: a message's encoding shared by every
    /// subscriber of the core, or bytes of this client alone.
    Frame(Frame),
    /// An SSE `id: <cursor>\n` line, after advancing topic `topic` of the stream's
    /// cursor to `seq`.
    Cursor { topic: u16, seq: u64 },
}

/// The cursor of a multi-topic SSE stream as written to the socket so far.
#[derive(Debug, Clone)]
pub struct StreamCursor {
    pub ids: IdScheme,
    /// Position per topic of the stream, in the order of the request (a
    /// boxed slice: its length never changes).
    pub written: Box<[u64]>,
}

/// Per-core scratch space for rendering cursors during a flush.
#[derive(Default)]
pub struct FlushScratch {
    text: Vec<u8>,
    ranges: Vec<(usize, usize)>,
    seqs: Vec<u64>,
}

/// How a flush ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// Everything queued was written.
    Drained,
    /// The socket is full; wait for it to become writable and flush again.
    Blocked,
    /// The peer is gone (reset, broken pipe): the client must be removed.
    Failed,
}

#[derive(Default)]
pub struct Outbox {
    items: VecDeque<Item>,
    bytes: usize,
    /// The front item must not be dropped: it is partly on the wire (dropping
    /// it would cut a frame), or it is the response head (`200`, `101`), which
    /// goes out whatever follows it (a close included).
    front_kept: bool,
}

impl Drop for Outbox {
    fn drop(&mut self) {
        self.shrink(self.bytes);
    }
}

impl Outbox {
    /// Every change of `bytes` goes through `grow` and `shrink`, which keep the
    /// core's totals (metrics) in step.
    fn grow(&mut self, n: usize) {
        self.bytes += n;
        QUEUED.with(|q| q.set(q.get() + n));
        let bytes = self.bytes;
        LARGEST.with(|l| {
            if bytes > l.get() {
                l.set(bytes);
            }
        });
    }

    fn shrink(&mut self, n: usize) {
        self.bytes -= n;
        QUEUED.with(|q| q.set(q.get() - n));
    }

    /// Queues bytes of this client alone (a copy of them).
    pub fn push(&mut self, bytes: &[u8]) {
        self.push_frame(&Frame::new(bytes));
    }

    /// Queues the response head: the first bytes of the stream, which a cut
    /// never drops ([`Outbox::drop_unsent`]). `room`: the items the queue makes
    /// room for, the head and what is known to follow it at once (an SSE
    /// stream's first `id:` line): an idle stream keeps that room until its
    /// timer, and a first push would make room for four (96 bytes).
    pub fn push_head(&mut self, bytes: &[u8], room: usize) {
        debug_assert!(self.items.is_empty(), "the head goes first");
        self.items.reserve_exact(room);
        self.push(bytes);
        self.front_kept = !self.items.is_empty();
    }

    /// Queues a shared frame (a clone of it: a non-atomic count increment).
    pub fn push_frame(&mut self, frame: &Frame) {
        self.push_owned(frame.clone());
    }

    /// Queues a frame that is likely to be all the queue holds (a heartbeat
    /// to a quiet client): an empty queue without room makes room for exactly
    /// one item, not four, and keeps it until the client's timer.
    pub fn push_frame_alone(&mut self, frame: &Frame) {
        if self.items.capacity() == 0 {
            self.items.reserve_exact(1);
        }
        self.push_frame(frame);
    }

    /// Queues a shared frame the caller cloned already.
    #[inline]
    pub fn push_owned(&mut self, frame: Frame) {
        if frame.is_empty() {
            return;
        }
        self.grow(frame.len());
        self.items.push_back(Item::Frame(frame));
    }

    pub fn push_cursor(&mut self, topic: u16, seq: u64) {
        self.grow(CURSOR_COST);
        self.items.push_back(Item::Cursor { topic, seq });
    }

    /// Gives back the queue's room once it is empty (what a burst made it grow
    /// to, or the few items of a quiet stream), so an idle client holds no
    /// more than its heartbeat needs. Called from the client's timer, not the
    /// write path, which reuses the room at full speed (testing a flag there
    /// cost 1 % more instructions per delivery).
    pub fn release_room(&mut self) {
        if self.items.is_empty() {
            self.items = VecDeque::new();
        }
    }

    /// Bytes queued (cursor lines counted at a fixed estimate).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Items queued (messages dropped if the client goes now).
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// The frames queued, in order (for tests that check sharing).
    #[cfg(test)]
    pub fn frames(&self) -> impl Iterator<Item = &Frame> {
        self.items.iter().filter_map(|i| match i {
            Item::Frame(f) => Some(f),
            Item::Cursor { .. } => None,
        })
    }

    /// Takes every queued byte out, in order (cursor markers, which only exist
    /// before a close began, are skipped).
    pub fn take_bytes(&mut self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.bytes);
        for item in std::mem::take(&mut self.items) {
            if let Item::Frame(f) = item {
                out.extend_from_slice(&f);
            }
        }
        self.shrink(self.bytes);
        self.front_kept = false;
        out
    }

    /// Drops everything not yet started on the wire, keeping the rest of a
    /// partly written item so the stream stays well-formed for a last frame,
    /// and the response head while it is not written. Returns how many items
    /// were dropped.
    pub fn drop_unsent(&mut self) -> usize {
        let keep = usize::from(self.front_kept && !self.items.is_empty());
        let mut dropped = 0;
        while self.items.len() > keep {
            if let Some(item) = self.items.pop_back() {
                let cost = match &item {
                    Item::Frame(f) => f.len(),
                    Item::Cursor { .. } => CURSOR_COST,
                };
                self.shrink(cost);
                dropped += 1;
            }
        }
        dropped
    }

    /// Writes as much as the socket takes through `write` (a vectored, non-blocking
    /// write). `cursor` must be given when cursor markers are queued.
    pub fn flush(
        &mut self,
        mut cursor: Option<&mut StreamCursor>,
        scratch: &mut FlushScratch,
        mut write: impl FnMut(&[IoSlice<'_>]) -> io::Result<usize>,
    ) -> Flush {
        loop {
            if self.items.is_empty() {
                return Flush::Drained;
            }
            let n = self.items.len().min(MAX_IOV);
            self.render_cursors(n, cursor.as_deref(), scratch);
            // A few items (the common case below full speed) use a small array:
            // the iovec array is initialised whole on every write.
            let result = if n <= SMALL_IOV {
                self.write_first::<SMALL_IOV>(n, scratch, &mut write)
            } else {
                self.write_first::<MAX_IOV>(n, scratch, &mut write)
            };
            match result {
                Ok(0) => return Flush::Failed,
                Ok(written) => self.consume(written, cursor.as_deref_mut(), scratch),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Flush::Blocked,
                Err(_) => return Flush::Failed,
            }
        }
    }

    /// Hands the first `n` (≤ `N`) items to `write` as one vectored write.
    fn write_first<const N: usize>(
        &self,
        n: usize,
        scratch: &FlushScratch,
        write: &mut impl FnMut(&[IoSlice<'_>]) -> io::Result<usize>,
    ) -> io::Result<usize> {
        let empty = IoSlice::new(&[]);
        let mut iov = [empty; N];
        let mut ranges = scratch.ranges.iter();
        for (slot, item) in iov.iter_mut().zip(self.items.iter().take(n)) {
            *slot = match item {
                Item::Frame(f) => IoSlice::new(f),
                Item::Cursor { .. } => {
                    let &(start, end) = ranges.next().unwrap_or(&(0, 0));
                    IoSlice::new(&scratch.text[start..end])
                }
            };
        }
        write(&iov[..n.min(N)])
    }

    /// Renders the `id:` lines of the cursor markers among the first `n` items.
    fn render_cursors(&self, n: usize, cursor: Option<&StreamCursor>, scratch: &mut FlushScratch) {
        scratch.text.clear();
        scratch.ranges.clear();
        let Some(cursor) = cursor else { return };
        scratch.seqs.clear();
        scratch.seqs.extend_from_slice(&cursor.written);
        for item in self.items.iter().take(n) {
            if let Item::Cursor { topic, seq } = *item {
                if let Some(pos) = scratch.seqs.get_mut(usize::from(topic)) {
                    *pos = seq;
                }
                let start = scratch.text.len();
                scratch.text.extend_from_slice(b"id: ");
                cursor
                    .ids
                    .write_cursor(&mut scratch.text, scratch.seqs.iter().copied());
                scratch.text.push(b'\n');
                scratch.ranges.push((start, scratch.text.len()));
            }
        }
    }

    /// Drops `written` bytes from the front, committing cursor advances that
    /// reached the socket.
    #[inline(always)]
    fn consume(
        &mut self,
        mut written: usize,
        mut cursor: Option<&mut StreamCursor>,
        scratch: &FlushScratch,
    ) {
        let mut ranges = scratch.ranges.iter();
        while written > 0 {
            let Some(front) = self.items.front_mut() else {
                debug_assert!(false, "wrote {written:#x} bytes more than queued");
                return;
            };
            match front {
                Item::Frame(f) => {
                    let len = f.len();
                    if written < len {
                        f.advance(written);
                        self.shrink(written);
                        self.front_kept = true;
                        return;
                    }
                    written -= len;
                    self.shrink(len);
                    self.items.pop_front();
                    self.front_kept = false;
                }
                Item::Cursor { topic, seq } => {
                    let (topic, seq) = (*topic, *seq);
                    if let Some(pos) = cursor
                        .as_deref_mut()
                        .and_then(|c| c.written.get_mut(usize::from(topic)))
                    {
                        *pos = seq;
                    }
                    let &(start, end) = ranges.next().unwrap_or(&(0, 0));
                    let len = end - start;
                    if written < len {
                        // Part of the line is on the wire: keep the rest as bytes.
                        let rest = Frame::new(&scratch.text[start + written..end]);
                        let rest_len = rest.len();
                        *front = Item::Frame(rest);
                        self.shrink(CURSOR_COST);
                        self.grow(rest_len);
                        self.front_kept = true;
                        return;
                    }
                    written -= len;
                    self.shrink(CURSOR_COST);
                    self.items.pop_front();
                    self.front_kept = false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket that takes at most `room` bytes, then blocks.
    struct FakeSocket {
        out: Vec<u8>,
        room: usize,
    }

    impl FakeSocket {
        fn write(&mut self, iov: &[IoSlice<'_>]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut n = 0;
            for s in iov {
                let take = s.len().min(self.room);
                self.out.extend_from_slice(&s[..take]);
                self.room -= take;
                n += take;
                if self.room == 0 {
                    break;
                }
            }
            Ok(n)
        }
    }

    fn cursor() -> StreamCursor {
        StreamCursor {
            ids: IdScheme::Local(crate::proto::cursor::Epoch::new(0xab)),
            written: Box::new([0, 0]),
        }
    }

    fn fill(outbox: &mut Outbox) {
        outbox.push_cursor(0, 5);
        outbox.push(b"data: a\n\n");
        outbox.push_cursor(1, 9);
        outbox.push(b"data: b\n\n");
    }

    const WANT: &[u8] = b"id: 0000000000ab-5.0\ndata: a\n\nid: 0000000000ab-5.9\ndata: b\n\n";

    #[test]
    fn a_queued_item_takes_24_bytes() {
        // A backlog costs this per message per client (see `Item`).
        assert_eq!(std::mem::size_of::<Item>(), 24);
    }

    #[test]
    fn a_flush_writes_everything_in_order_with_rendered_cursors() {
        let mut outbox = Outbox::default();
        fill(&mut outbox);
        let mut c = cursor();
        let mut sock = FakeSocket {
            out: Vec::new(),
            room: 1 << 20,
        };
        let r = outbox.flush(Some(&mut c), &mut FlushScratch::default(), |iov| {
            sock.write(iov)
        });
        assert_eq!(r, Flush::Drained);
        assert_eq!(sock.out, WANT);
        assert_eq!(*c.written, [5, 9]);
        assert_eq!(outbox.bytes(), 0);
    }

    #[test]
    fn a_socket_that_takes_any_few_bytes_at_a_time_gets_the_same_stream() {
        for room in 1..WANT.len() {
            let mut outbox = Outbox::default();
            fill(&mut outbox);
            let mut c = cursor();
            let mut scratch = FlushScratch::default();
            let mut sock = FakeSocket {
                out: Vec::new(),
                room,
            };
            let mut rounds = 0;
            while outbox.flush(Some(&mut c), &mut scratch, |iov| sock.write(iov)) == Flush::Blocked
            {
                sock.room = room;
                rounds += 1;
                assert!(rounds < 1000, "no progress at room {room}");
            }
            assert_eq!(sock.out, WANT, "room {room}");
            assert_eq!(*c.written, [5, 9]);
            assert_eq!(outbox.bytes(), 0, "room {room}");
        }
    }

    #[test]
    fn dropping_the_unsent_keeps_the_rest_of_a_partly_written_frame() {
        let mut outbox = Outbox::default();
        outbox.push(b"frame-one");
        outbox.push(b"frame-two");
        let mut sock = FakeSocket {
            out: Vec::new(),
            room: 4,
        };
        let r = outbox.flush(None, &mut FlushScratch::default(), |iov| sock.write(iov));
        assert_eq!(r, Flush::Blocked);
        assert_eq!(outbox.drop_unsent(), 1);
        sock.room = 100;
        outbox.push(b"+bye");
        outbox.flush(None, &mut FlushScratch::default(), |iov| sock.write(iov));
        assert_eq!(sock.out, b"frame-one+bye");
        assert_eq!(outbox.bytes(), 0);
        let mut idle = Outbox::default();
        idle.push(b"x");
        assert_eq!(idle.drop_unsent(), 1);
        assert!(idle.is_empty());
    }

    #[test]
    fn a_cut_never_drops_the_response_head_before_it_is_written() {
        let mut outbox = Outbox::default();
        outbox.push_head(b"HTTP/1.1 200 OK\r\n\r\n", 1);
        outbox.push(b"message");
        assert_eq!(outbox.drop_unsent(), 1);
        outbox.push(b"goodbye");
        assert_eq!(outbox.take_bytes(), b"HTTP/1.1 200 OK\r\n\r\ngoodbye");
        // Once written, the head is like any other item.
        let mut written = Outbox::default();
        written.push_head(b"head", 1);
        written.push(b"message");
        let mut sock = FakeSocket {
            out: Vec::new(),
            room: 4,
        };
        written.flush(None, &mut FlushScratch::default(), |iov| sock.write(iov));
        assert_eq!(written.drop_unsent(), 1);
        assert!(written.is_empty());
    }

    #[test]
    fn an_emptied_queue_gives_back_the_room_a_burst_took() {
        let mut outbox = Outbox::default();
        for _ in 0..1000 {
            outbox.push(b"m");
        }
        outbox.release_room();
        assert!(outbox.items.capacity() >= 1000, "not empty: kept");
        let mut sock = FakeSocket {
            out: Vec::new(),
            room: usize::MAX,
        };
        outbox.flush(None, &mut FlushScratch::default(), |iov| sock.write(iov));
        assert!(outbox.items.capacity() >= 1000, "the write path keeps it");
        outbox.release_room();
        assert_eq!(outbox.items.capacity(), 0);
    }

    #[test]
    fn an_idle_stream_keeps_room_for_its_head_or_its_heartbeat_only() {
        let mut sock = FakeSocket {
            out: Vec::new(),
            room: usize::MAX,
        };
        let mut outbox = Outbox::default();
        outbox.push_head(b"HTTP/1.1 200 OK\r\n\r\n", 2);
        outbox.push(b"id: 1\n\n");
        outbox.flush(None, &mut FlushScratch::default(), |iov| sock.write(iov));
        assert_eq!(outbox.items.capacity(), 2);
        outbox.release_room();
        let beat = Frame::new(b":\n");
        outbox.push_frame_alone(&beat);
        outbox.flush(None, &mut FlushScratch::default(), |iov| sock.write(iov));
        assert_eq!(outbox.items.capacity(), 1);
        assert_eq!(sock.out, b"HTTP/1.1 200 OK\r\n\r\nid: 1\n\n:\n");
    }

    #[test]
    fn a_broken_socket_fails_the_flush() {
        let mut outbox = Outbox::default();
        outbox.push(b"x");
        let r = outbox.flush(None, &mut FlushScratch::default(), |_| {
            Err(io::ErrorKind::BrokenPipe.into())
        });
        assert_eq!(r, Flush::Failed);
        assert_eq!(outbox.len(), 1);
    }

    #[test]
    fn more_items_than_one_writev_takes_are_written_in_rounds() {
        let mut outbox = Outbox::default();
        for i in 0..(3 * MAX_IOV as u8) {
            outbox.push(&[i]);
        }
        let mut sock = FakeSocket {
            out: Vec::new(),
            room: 1 << 20,
        };
        let r = outbox.flush(None, &mut FlushScratch::default(), |iov| sock.write(iov));
        assert_eq!(r, Flush::Drained);
        assert_eq!(sock.out, (0..(3 * MAX_IOV as u8)).collect::<Vec<_>>());
    }
}
