//! Cooperative scheduling: a shard runs many tasks on one thread, and a
//! task that computes for long without awaiting I/O holds up all the
//! others. Long loops (a checkpoint placing its pages, a query's scan of
//! many rows) yield with [`yield_now`] every so often.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Lets the other tasks of the thread run before this one goes on.
pub async fn yield_now() {
    YieldNow(false).await
}

/// Pending once (after asking to be polled again), then ready: the task
/// goes to the back of the run queue. Works on any executor.
struct YieldNow(bool);

impl Future for YieldNow {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        context.waker().wake_by_ref();
        Poll::Pending
    }
}
