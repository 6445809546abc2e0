//! Tasks on one core waiting for something another task on that core will
//! finish (a WAL flush, a checkpoint). Single-threaded by design.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

#[derive(Default)]
pub struct Waiters {
    wakers: RefCell<Vec<Waker>>,
}

impl Waiters {
    /// Resolves after the next [`Waiters::wake_all`]. Callers re-check their
    /// condition afterwards: a wake says "something changed", not what.
    pub fn wait(&self) -> impl Future<Output = ()> + '_ {
        Wait {
            waiters: self,
            registered: false,
        }
    }

    pub fn wake_all(&self) {
        for waker in self.wakers.borrow_mut().drain(..) {
            waker.wake();
        }
    }
}

struct Wait<'a> {
    waiters: &'a Waiters,
    registered: bool,
}

impl Future for Wait<'_> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<()> {
        if self.registered {
            return Poll::Ready(());
        }
        self.registered = true;
        self.waiters
            .wakers
            .borrow_mut()
            .push(context.waker().clone());
        Poll::Pending
    }
}
