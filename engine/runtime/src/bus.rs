//! Messages to shards.
//!
//! Every shard has one inbox (a `flume` channel, usable from any thread and
//! from any async runtime). A [`Job`] is an owned closure that the shard runs
//! as a task of its own, so a job waiting on a WAL sync never holds up the
//! next one. Replies travel back on a one-shot channel the job owns.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use crate::error::EngineError;
use crate::shard::ShardState;

pub type LocalFuture = Pin<Box<dyn Future<Output = ()>>>;
pub type Job = Box<dyn FnOnce(Rc<ShardState>) -> LocalFuture + Send>;

pub enum Message {
    Run(Job),
    /// Make everything durable, checkpoint, stop the shard, then reply.
    Shutdown(flume::Sender<Result<(), EngineError>>),
}

/// Runs `work` on the shard behind `inbox` and returns its result.
pub async fn call<R, W, F>(inbox: &flume::Sender<Message>, work: W) -> Result<R, EngineError>
where
    R: Send + 'static,
    W: FnOnce(Rc<ShardState>) -> F + Send + 'static,
    F: Future<Output = R> + 'static,
{
    let (reply, answer) = flume::bounded(1);
    let job: Job = Box::new(move |shard| {
        Box::pin(async move {
            let result = work(shard).await;
            // The caller may have gone away (a dropped future); nothing to do.
            let _ = reply.send(result);
        })
    });
    inbox.send_async(Message::Run(job)).await.map_err(|_| EngineError::Stopped("shard inbox closed".into()))?;
    answer.recv_async().await.map_err(|_| EngineError::Stopped("shard dropped the request".into()))
}
