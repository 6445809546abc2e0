//! Cooperative scheduling inside long evaluations.
//!
//! Shards run many queries as tasks on one thread; a task that computes for
//! a long time without awaiting I/O would hold up every other query of the
//! core. Loops over rows call [`Budget::tick`], which yields to the
//! executor every `ROWS_PER_SLICE` rows.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

const ROWS_PER_SLICE: u32 = 256;

#[derive(Clone, Debug, Default)]
pub struct Budget {
    rows: u32,
}

impl Budget {
    pub async fn tick(&mut self) {
        self.rows += 1;
        if self.rows >= ROWS_PER_SLICE {
            self.rows = 0;
            YieldNow(false).await;
        }
    }
}

/// Lets the other tasks of the core run before this one goes on.
pub async fn yield_now() {
    YieldNow(false).await
}

/// Pending once (after asking to be polled again), then ready: the task
/// goes to the back of the run queue.
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
