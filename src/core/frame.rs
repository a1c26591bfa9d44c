//! Core-local frames: one encoding of a message, shared by every outbox on the
//! core that queues it.
//!
//! A frame never leaves its core, so its reference count is a plain `Rc`
//! counter. A `Bytes` clone per subscriber would pay an atomic increment and an
//! atomic decrement for every delivery (perf of the WS fan-out had
//! `bytes::promotable_even_clone` at 8.7 % of the server's samples).

use std::ops::Deref;
use std::rc::Rc;

/// An encoded frame (or what of it is still to be written), shared on one core.
#[derive(Clone, Debug)]
pub struct Frame {
    buf: Rc<[u8]>,
    /// Where the part still to be written starts.
    start: usize,
}

impl Frame {
    /// Copies `bytes` into a new frame.
    pub fn new(bytes: &[u8]) -> Frame {
        Frame {
            buf: Rc::from(bytes),
            start: 0,
        }
    }

    /// The frame from byte `at` on (an empty frame past its end).
    pub fn from_offset(&self, at: usize) -> Frame {
        Frame {
            buf: self.buf.clone(),
            start: (self.start + at).min(self.buf.len()),
        }
    }

    /// Drops the first `n` bytes (they reached the socket).
    pub fn advance(&mut self, n: usize) {
        self.start = (self.start + n).min(self.buf.len());
    }
}

impl Deref for Frame {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_one_buffer_and_advance_on_their_own() {
        let a = Frame::new(b"data: x\n\n");
        let mut b = a.clone();
        b.advance(6);
        assert_eq!(&*b, b"x\n\n");
        assert_eq!(&*a, b"data: x\n\n");
        assert_eq!(&*a.from_offset(6), b"x\n\n");
        assert!(Rc::ptr_eq(&a.buf, &b.buf));
        b.advance(100);
        assert!(b.is_empty());
        assert!(a.from_offset(100).is_empty());
    }
}
