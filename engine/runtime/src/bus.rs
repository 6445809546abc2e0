//! Messages to shards.
//!
//! A [`Job`] is an owned closure that a shard runs as a task of its own, so
//! a job waiting on a WAL sync never holds up the next one. Replies travel
//! back on a one-shot channel the job owns. How a job gets to its shard
//! depends on where the caller is:
//! - on that very shard: the job runs in the caller's task, no channel;
//! - on another shard: over glommio's channel mesh between the shards
//!   (bounded lock-free rings, one per pair of shards);
//! - on any other thread (client threads, a tokio runtime, tests): through
//!   the shard's `flume` inbox, which works from anywhere.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use crate::error::EngineError;
use crate::shard::{self, ShardState};

pub type LocalFuture = Pin<Box<dyn Future<Output = ()>>>;
pub type Job = Box<dyn FnOnce(Rc<ShardState>) -> LocalFuture + Send>;

pub enum Message {
    Run(Job),
    /// Make everything durable, checkpoint, stop the shard, then reply.
    Shutdown(flume::Sender<Result<(), EngineError>>),
}

/// Runs `work` on shard `target` (whose inbox is `inbox`) and returns its
/// result.
pub async fn call<R, W, F>(
    target: usize,
    inbox: &flume::Sender<Message>,
    work: W,
) -> Result<R, EngineError>
where
    R: Send + 'static,
    W: FnOnce(Rc<ShardState>) -> F + Send + 'static,
    F: Future<Output = R> + 'static,
{
    if let Some(state) = shard::current(target) {
        return Ok(work(state).await);
    }
    let (reply, answer) = flume::bounded(1);
    let job: Job = Box::new(move |shard| {
        Box::pin(async move {
            let result = work(shard).await;
            // The caller may have gone away (a dropped future); nothing to do.
            let _ = reply.send(result);
        })
    });
    match shard::send_over_mesh(target, job).await {
        Ok(()) => {}
        // Not on a shard (or the mesh is not up yet): the inbox.
        Err(job) => inbox
            .send_async(Message::Run(job))
            .await
            .map_err(|_| EngineError::Stopped("shard inbox closed".into()))?,
    }
    answer
        .recv_async()
        .await
        .map_err(|_| EngineError::Stopped("shard dropped the request".into()))
}

/// Runs `work` on a shard through its inbox, from a thread that is not a
/// shard (a tokio runtime, say): the returned future is `Send`, as such
/// callers need, because it holds nothing of the shard's.
pub fn call_from_outside<R, W, F>(
    inbox: flume::Sender<Message>,
    work: W,
) -> impl Future<Output = Result<R, EngineError>> + Send
where
    R: Send + 'static,
    W: FnOnce(Rc<ShardState>) -> F + Send + 'static,
    F: Future<Output = R> + 'static,
{
    async move {
        let (reply, answer) = flume::bounded(1);
        let job: Job = Box::new(move |shard| {
            Box::pin(async move {
                let result = work(shard).await;
                let _ = reply.send(result);
            })
        });
        inbox
            .send_async(Message::Run(job))
            .await
            .map_err(|_| EngineError::Stopped("shard inbox closed".into()))?;
        answer
            .recv_async()
            .await
            .map_err(|_| EngineError::Stopped("shard dropped the request".into()))
    }
}
