//! Changefeed subscriptions across shards.
//!
//! Every shard has a [`FeedHub`], the change listener of all its
//! partitions. A subscription registers one bounded channel with the hub of
//! every shard (a table's rows are on all of them); each partition
//! publishes its changes, released in commit order once durable as their
//! writes asked, into the channels of the table's subscribers. A channel
//! preserves each sender's order, so a subscriber sees every row's changes
//! in commit order, whichever core it runs on.
//!
//! A subscriber that falls behind by more than its queue loses changes
//! rather than growing without bound: the hub counts what it could not
//! deliver, and the subscriber reports it (RethinkDB's "skipped N
//! elements"). Dropping a [`Subscription`] unregisters it everywhere.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use photondb_storage::{ChangeListener, RowChange, TableId};

use crate::bus::Message;
use crate::engine::Engine;
use crate::error::EngineError;

static NEXT_SUBSCRIPTION: AtomicU64 = AtomicU64::new(1);

/// One subscriber's sending end, as a hub keeps it.
struct Subscriber {
    id: u64,
    sender: flume::Sender<RowChange>,
    skipped: Arc<AtomicU64>,
}

/// The subscribers of one shard, by table.
#[derive(Default)]
pub struct FeedHub {
    subscribers: RefCell<HashMap<TableId, Vec<Subscriber>>>,
}

impl FeedHub {
    fn add(&self, table: TableId, subscriber: Subscriber) {
        self.subscribers
            .borrow_mut()
            .entry(table)
            .or_default()
            .push(subscriber);
    }

    fn remove(&self, table: TableId, id: u64) {
        let mut subscribers = self.subscribers.borrow_mut();
        if let Some(list) = subscribers.get_mut(&table) {
            list.retain(|subscriber| subscriber.id != id);
            if list.is_empty() {
                subscribers.remove(&table);
            }
        }
    }

    /// Subscribers on this shard, over all tables.
    pub fn subscriber_count(&self) -> usize {
        self.subscribers.borrow().values().map(Vec::len).sum()
    }
}

impl ChangeListener for FeedHub {
    fn wants(&self, table: TableId) -> bool {
        self.subscribers.borrow().contains_key(&table)
    }

    fn publish(&self, changes: Vec<RowChange>) {
        let mut subscribers = self.subscribers.borrow_mut();
        for change in changes {
            let Some(list) = subscribers.get_mut(&change.table) else {
                continue;
            };
            list.retain(
                |subscriber| match subscriber.sender.try_send(change.clone()) {
                    Ok(()) => true,
                    Err(flume::TrySendError::Full(_)) => {
                        subscriber.skipped.fetch_add(1, Ordering::Relaxed);
                        true
                    }
                    // The subscription is gone (its unregistering is on its way).
                    Err(flume::TrySendError::Disconnected(_)) => false,
                },
            );
            if list.is_empty() {
                subscribers.remove(&change.table);
            }
        }
    }
}

/// What a subscription receives next.
#[derive(Debug)]
pub enum FeedEvent {
    Change(RowChange),
    /// This many changes did not fit in the queue and were dropped.
    Skipped(u64),
}

/// The receiving end of a table's changes. Usable on any thread.
pub struct Subscription {
    id: u64,
    table: TableId,
    receiver: flume::Receiver<RowChange>,
    skipped: Arc<AtomicU64>,
    engine: Engine,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Subscription")
            .field("id", &self.id)
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    pub fn table(&self) -> TableId {
        self.table
    }

    fn take_skipped(&self) -> Option<FeedEvent> {
        let skipped = self.skipped.swap(0, Ordering::Relaxed);
        (skipped > 0).then_some(FeedEvent::Skipped(skipped))
    }

    /// Changes dropped since last asked (the queue was full), now zero.
    pub fn take_overflow(&self) -> u64 {
        self.skipped.swap(0, Ordering::Relaxed)
    }

    /// The next event, waiting for one.
    pub async fn next(&self) -> FeedEvent {
        if let Some(skipped) = self.take_skipped() {
            return skipped;
        }
        match self.receiver.recv_async().await {
            Ok(change) => FeedEvent::Change(change),
            // Hubs never drop a live subscription's sender first; if every
            // shard stopped, the feed just has nothing more.
            Err(_) => std::future::pending().await,
        }
    }

    /// The next event if one is here already.
    pub fn try_next(&self) -> Option<FeedEvent> {
        if let Some(skipped) = self.take_skipped() {
            return Some(skipped);
        }
        self.receiver.try_recv().ok().map(FeedEvent::Change)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // Unregister everywhere without waiting (a drop cannot await);
        // hubs also forget a subscription whose channel is closed.
        let (table, id) = (self.table, self.id);
        for shard in 0..self.engine.shards() {
            let job: crate::bus::Job = Box::new(move |state| {
                state.feeds.remove(table, id);
                Box::pin(async {})
            });
            let _ = self.engine.shard_inbox(shard).send(Message::Run(job));
        }
    }
}

impl Engine {
    /// Subscribes to every change of `table` from now on; at most
    /// `queue_size` changes wait unread before later ones are dropped.
    pub async fn subscribe(
        &self,
        table: TableId,
        queue_size: usize,
    ) -> Result<Subscription, EngineError> {
        let (sender, receiver) = flume::bounded(queue_size.max(1));
        let skipped = Arc::new(AtomicU64::new(0));
        let id = NEXT_SUBSCRIPTION.fetch_add(1, Ordering::Relaxed);
        let registrations = (0..self.shards()).map(|shard| {
            let (sender, skipped) = (sender.clone(), skipped.clone());
            crate::bus::call(shard, self.shard_inbox(shard), move |state| async move {
                state.feeds.add(
                    table,
                    Subscriber {
                        id,
                        sender,
                        skipped,
                    },
                );
            })
        });
        for registered in crate::engine::join_all(registrations).await {
            registered?;
        }
        Ok(Subscription {
            id,
            table,
            receiver,
            skipped,
            engine: self.clone(),
        })
    }

    /// Changefeed subscribers registered on every shard, summed (each
    /// subscription counts once per shard).
    pub async fn feed_registrations(&self) -> Result<usize, EngineError> {
        let counts = (0..self.shards()).map(|shard| {
            crate::bus::call(shard, self.shard_inbox(shard), |state| async move {
                state.feeds.subscriber_count()
            })
        });
        let mut total = 0;
        for count in crate::engine::join_all(counts).await {
            total += count?;
        }
        Ok(total)
    }
}
