//! Row changes for changefeeds, released in commit order once as durable
//! as their writes asked.
//!
//! A partition records the changes of each batch it applies (only of
//! tables someone listens to), with the WAL position that must be durable
//! before they may be seen: the batch's end for a hard write, nothing for a
//! soft one. Changes are released strictly in apply order, so a soft write
//! queued behind a hard write that is not durable yet waits for it: a
//! subscriber never sees a row's changes out of order, nor a hard write
//! that a crash could still take back.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use bytes::Bytes;

use crate::tables::TableId;

/// One row's change.
#[derive(Clone, Debug)]
pub struct RowChange {
    pub table: TableId,
    pub key: Bytes,
    pub old: Option<Bytes>,
    pub new: Option<Bytes>,
}

/// Where released changes go (the runtime's feed hub).
pub trait ChangeListener {
    /// Whether changes to `table` are wanted at all (none are recorded
    /// otherwise).
    fn wants(&self, table: TableId) -> bool;
    fn publish(&self, changes: Vec<RowChange>);
}

/// Changes applied and not yet released.
#[derive(Default)]
pub struct ChangeQueue {
    listener: RefCell<Option<Rc<dyn ChangeListener>>>,
    /// (WAL position that must be durable, changes), in apply order.
    waiting: RefCell<VecDeque<(u64, Vec<RowChange>)>>,
}

impl ChangeQueue {
    pub fn set_listener(&self, listener: Rc<dyn ChangeListener>) {
        *self.listener.borrow_mut() = Some(listener);
    }

    pub fn wants(&self, table: TableId) -> bool {
        self.listener
            .borrow()
            .as_ref()
            .is_some_and(|listener| listener.wants(table))
    }

    /// Records a batch's changes; they may be seen once `durable_at` is
    /// durable (0: at once).
    pub fn record(&self, durable_at: u64, changes: Vec<RowChange>) {
        if !changes.is_empty() {
            self.waiting.borrow_mut().push_back((durable_at, changes));
        }
    }

    /// Whether changes are waiting for the WAL to become durable.
    pub fn is_waiting(&self) -> bool {
        !self.waiting.borrow().is_empty()
    }

    /// Releases, in order, every change whose position is durable now.
    pub fn release(&self, durable_lsn: u64) {
        let listener = self.listener.borrow().clone();
        let Some(listener) = listener else {
            self.waiting.borrow_mut().clear();
            return;
        };
        loop {
            let ready = {
                let mut waiting = self.waiting.borrow_mut();
                match waiting.front() {
                    Some((durable_at, _)) if *durable_at <= durable_lsn => {
                        waiting.pop_front().map(|(_, changes)| changes)
                    }
                    _ => None,
                }
            };
            match ready {
                // Published outside the borrow: a listener may write again.
                Some(changes) => listener.publish(changes),
                None => return,
            }
        }
    }
}
