//! Small writes to many sockets as one io_uring submission: the heartbeats of a
//! timer pass.
//!
//! A core's heartbeats all fall due in the same 10 ms tick, each to a socket
//! that has been silent for the whole interval. One `send` system call per
//! socket costs the kernel's entry and exit each time; a batch of `SEND` ops
//! submitted at once costs it once. `benches/heartbeat_floor.rs` measured the
//! batch at 0.86–0.96 of the system calls per heartbeat on this machine
//! (the rest is the kernel's TCP send and, on loopback, the receiver's input).
//!
//! The ring is the core's own, apart from monoio's, and is used only inside
//! [`SendBatch::send`]: every op carries `MSG_DONTWAIT`, so it completes
//! inside the submit (a full socket answers `-EAGAIN` instead of parking the op
//! in the kernel), and `send` reaps every completion before it returns. So no
//! op outlives the call: the descriptors cannot be closed and reused under an
//! op in flight, and the buffers are `'static` anyway. Without io_uring (the
//! epoll driver, or a kernel that refuses the ring) each write is one system
//! call, as before.

use std::io::{self, IoSlice};
use std::os::fd::RawFd;

use io_uring::{opcode, types, IoUring};

use crate::netio;

/// Ops per submission (the ring's submission queue).
const ENTRIES: u32 = 256;
/// As `netio::writev`: never wait, never raise SIGPIPE.
const SEND_FLAGS: i32 = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;

/// Batches of small non-blocking writes (see the module doc).
pub struct SendBatch {
    ring: Option<IoUring>,
}

impl SendBatch {
    /// A batch writer with a ring of its own when `uring` and the kernel
    /// gives one; else one system call per write.
    pub fn new(uring: bool) -> SendBatch {
        let ring = uring.then(|| IoUring::new(ENTRIES).ok()).flatten();
        SendBatch { ring }
    }

    /// Whether writes go through a ring.
    pub fn batched(&self) -> bool {
        self.ring.is_some()
    }

    /// Writes each `(socket, bytes)` of `sends` without waiting, and sets the
    /// matching `results` entry to the bytes written or `-errno`.
    pub fn send(&mut self, sends: &[(RawFd, &'static [u8])], results: &mut [i32]) {
        debug_assert_eq!(sends.len(), results.len());
        let mut done = 0;
        if let Some(ring) = self.ring.as_mut() {
            for chunk in sends.chunks(ENTRIES as usize) {
                let results = &mut results[done..done + chunk.len()];
                done += chunk.len();
                if let Err(e) = submit_all(ring, chunk, results) {
                    // Whatever the kernel did with this chunk stays unknown:
                    // those count as written (at worst a heartbeat is missed,
                    // which the next one makes up for; writing them again
                    // could split a frame). The ring is dropped with any op it
                    // did not take, and the rest goes one call each.
                    crate::warn!("msg=\"heartbeat ring failed, using system calls\" error=\"{e}\"");
                    self.ring = None;
                    break;
                }
            }
        }
        for (&(fd, bytes), result) in sends[done..].iter().zip(&mut results[done..]) {
            *result = match netio::writev(fd, &[IoSlice::new(bytes)]) {
                Ok(n) => n as i32,
                Err(e) => -e.raw_os_error().unwrap_or(libc::EIO),
            };
        }
    }
}

/// Submits one `SEND` per entry of `chunk` (at most the ring's size) and reaps
/// every completion into `results`. On an error, the entries not reaped keep
/// the whole length.
fn submit_all(
    ring: &mut IoUring,
    chunk: &[(RawFd, &'static [u8])],
    results: &mut [i32],
) -> io::Result<()> {
    {
        let mut sq = ring.submission();
        for (i, (&(fd, bytes), result)) in chunk.iter().zip(results.iter_mut()).enumerate() {
            *result = bytes.len() as i32;
            let op = opcode::Send::new(types::Fd(fd), bytes.as_ptr(), bytes.len() as u32)
                .flags(SEND_FLAGS)
                .build()
                .user_data(i as u64);
            // SAFETY: the op reads `bytes`, which is 'static, and the socket,
            // which stays open while `send` runs: every op is reaped below
            // before `send` returns (MSG_DONTWAIT completes it inside the
            // submit), or the ring is dropped with it.
            unsafe { sq.push(&op) }.map_err(|_| io::Error::other("submission queue full"))?;
        }
    }
    let mut reaped = 0;
    while reaped < chunk.len() {
        match ring.submit_and_wait(chunk.len() - reaped) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) => return Err(e),
        }
        for cqe in ring.completion() {
            if let Some(r) = results.get_mut(cqe.user_data() as usize) {
                *r = cqe.result();
                reaped += 1;
            }
        }
    }
    Ok(())
}
