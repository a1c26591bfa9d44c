//! Waiting for a publish: a publish is stamped by its topic's home core, at once
//! when that is this core, else one round trip through the bus later. The HTTP
//! driver, the WebSocket session and the publish socket all wait the same way.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use super::worker::Worker;
use crate::core::state::PublishStart;
use crate::proto::publish::PublishError;

/// Publishes through this core (stamped here or at the topic's home) and waits
/// for the position.
pub async fn publish_and_wait(
    w: &Rc<Worker>,
    topic: &str,
    event: Option<&str>,
    data: Vec<u8>,
) -> Result<u64, PublishError> {
    let start = w.state.borrow_mut().publish(topic, event, data);
    publish_result(w, start).await
}

/// The position a started publish got: at once when this core stamped it, else
/// when the topic's home answers (the wait is forgotten if dropped early). The
/// answer never waits for the fan-out of its message; it waits only while this
/// core's fan-out is behind its publishes (backpressure: a publisher faster
/// than the fan-out is slowed, instead of growing memory).
pub async fn publish_result(w: &Rc<Worker>, start: PublishStart) -> Result<u64, PublishError> {
    let result = stamped(w, start).await;
    w.fan_out_caught_up().await;
    result
}

async fn stamped(w: &Rc<Worker>, start: PublishStart) -> Result<u64, PublishError> {
    match start {
        PublishStart::Done(seq) => Ok(seq),
        PublishStart::Pending(slot) => {
            PublishWait {
                w,
                slot,
                done: false,
            }
            .await
        }
    }
}

/// Waits for a publish answered by another core; forgets it if dropped early.
struct PublishWait<'a> {
    w: &'a Rc<Worker>,
    slot: u32,
    done: bool,
}

impl Future for PublishWait<'_> {
    type Output = Result<u64, PublishError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let r = self.w.state.borrow_mut().poll_publish(self.slot, cx);
        if r.is_ready() {
            self.done = true;
        }
        r
    }
}

impl Drop for PublishWait<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.w.state.borrow_mut().cancel_publish(self.slot);
        }
    }
}
