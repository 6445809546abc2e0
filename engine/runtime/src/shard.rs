//! One shard: a glommio executor pinned to a core, owning some partitions.

use std::cell::Cell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use glommio::channels::channel_mesh::{Full, MeshBuilder, Senders};
use glommio::{LocalExecutorBuilder, Placement};
use photondb_storage::{Backend, DurableBackend, DurableOptions, MemoryBackend, StoreOptions};

use crate::bus::{Job, Message};
use crate::data_directory::partition_directory;
use crate::error::EngineError;
use crate::file::DirectFileSystem;
use crate::partition::AnyBackend;

/// How often soft writes are flushed and checkpoint need is checked while
/// writes are coming in, and while the shard is idle (so an idle server
/// costs next to nothing). A soft write reaches the disk within the idle
/// interval plus one flush at worst.
const MAINTENANCE_INTERVAL_BUSY: Duration = Duration::from_millis(5);
const MAINTENANCE_INTERVAL_IDLE: Duration = Duration::from_millis(50);

/// What a running shard owns. Lives on the shard's thread only.
pub struct ShardState {
    pub id: usize,
    pub partitions: HashMap<u32, Rc<AnyBackend>>,
    /// Accept loops of this shard; dropped (closing their sockets) first
    /// thing at shutdown, so no new connection arrives while it checkpoints.
    pub listeners: std::cell::RefCell<Vec<glommio::task::JoinHandle<()>>>,
    /// Changefeed subscribers; the change listener of every partition here.
    pub feeds: Rc<crate::feeds::FeedHub>,
}

impl ShardState {
    pub fn partition(&self, partition: u32) -> &Rc<AnyBackend> {
        self.partitions
            .get(&partition)
            .expect("the engine routes each partition to the shard that owns it")
    }
}

pub struct ShardPlan {
    pub id: usize,
    pub core: Option<usize>,
    pub partitions: Vec<u32>,
    pub storage: PartitionStorage,
    /// The shard-to-shard channels, joined by every shard once started.
    pub mesh: MeshBuilder<Job, Full>,
    pub mesh_queued: MeshQueued,
    /// Told once this shard has joined the mesh (or given up on it).
    pub mesh_joined: flume::Sender<()>,
}

/// Jobs sent to each shard over the mesh and not yet taken off it: the
/// sender counts up, the receiving shard down (`Engine::mesh_depths`).
pub type MeshQueued = std::sync::Arc<[std::sync::atomic::AtomicUsize]>;

/// Jobs in flight from one shard to another, per pair of shards; a sender
/// past this waits (backpressure) instead of growing a queue.
pub const MESH_CHANNEL_JOBS: usize = 1024;

/// The mesh every shard of one engine joins.
pub fn new_mesh(shards: usize) -> MeshBuilder<Job, Full> {
    MeshBuilder::full(shards, MESH_CHANNEL_JOBS)
}

/// This thread's shard, once it serves: its state and its mesh senders.
struct Local {
    state: Rc<ShardState>,
    senders: Option<Rc<Senders<Job>>>,
    mesh_queued: MeshQueued,
}

thread_local! {
    static LOCAL: std::cell::RefCell<Option<Local>> = const { std::cell::RefCell::new(None) };
}

/// The state of shard `target` if the caller runs on it.
pub(crate) fn current(target: usize) -> Option<Rc<ShardState>> {
    LOCAL.with(|local| {
        local
            .borrow()
            .as_ref()
            .filter(|local| local.state.id == target)
            .map(|local| local.state.clone())
    })
}

/// Sends a job to shard `target` over the mesh; gives it back when the
/// caller is not on a shard whose mesh is up.
pub(crate) async fn send_over_mesh(target: usize, job: Job) -> Result<(), Job> {
    let mesh = LOCAL.with(|local| {
        local.borrow().as_ref().and_then(|local| {
            local
                .senders
                .clone()
                .map(|senders| (senders, local.mesh_queued.clone()))
        })
    });
    let Some((senders, queued)) = mesh else {
        return Err(job);
    };
    queued[target].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // A shard that stopped takes no more jobs: they fail like a closed inbox.
    match senders.send_to(target, job).await {
        Ok(()) => Ok(()),
        Err(error) => {
            queued[target].fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            tracing::debug!(target, %error, "shard-to-shard send failed");
            Ok(())
        }
    }
}

#[derive(Clone)]
pub enum PartitionStorage {
    Memory,
    Durable {
        root: PathBuf,
        create: bool,
        ring_bytes: u64,
        cache_bytes: usize,
    },
}

/// Stack of a shard thread. Query evaluation recurses once per level of a
/// query's term tree (bounded by the JSON nesting limit of 128), and async
/// frames are large in debug builds; only touched pages cost memory.
const SHARD_STACK_BYTES: usize = 256 << 20;

/// Starts a shard thread; returns once its partitions are open (or failed).
pub fn start(
    plan: ShardPlan,
    inbox: flume::Receiver<Message>,
) -> Result<std::thread::JoinHandle<()>, EngineError> {
    let (ready, started) = flume::bounded(1);
    let placement = match plan.core {
        Some(core) => Placement::Fixed(core),
        None => Placement::Unbound,
    };
    let id = plan.id;
    // The thread is ours (not glommio's spawn) so that its stack size is.
    let thread = std::thread::Builder::new()
        .name(format!("shard-{id}"))
        .stack_size(SHARD_STACK_BYTES)
        .spawn(move || {
            let executor = match LocalExecutorBuilder::new(placement)
                .name(&format!("shard-{id}"))
                .make()
            {
                Ok(executor) => executor,
                Err(error) => {
                    let _ = ready.send(Err(EngineError::Startup(format!("shard {id}: {error}"))));
                    return;
                }
            };
            executor.run(async move {
                let state = match open_partitions(&plan).await {
                    Ok(partitions) => {
                        let feeds = Rc::new(crate::feeds::FeedHub::default());
                        for backend in partitions.values() {
                            backend.set_change_listener(feeds.clone());
                        }
                        Rc::new(ShardState {
                            id: plan.id,
                            partitions,
                            listeners: Default::default(),
                            feeds,
                        })
                    }
                    Err(error) => {
                        let _ = ready.send(Err(error));
                        return;
                    }
                };
                let _ = ready.send(Ok(()));
                LOCAL.with(|local| {
                    *local.borrow_mut() = Some(Local {
                        state: state.clone(),
                        senders: None,
                        mesh_queued: plan.mesh_queued.clone(),
                    })
                });
                let (mesh, queued, joined, joining) = (
                    plan.mesh,
                    plan.mesh_queued.clone(),
                    plan.mesh_joined.clone(),
                    state.clone(),
                );
                glommio::spawn_local(async move {
                    join_mesh(mesh, queued, joining).await;
                    let _ = joined.send(());
                })
                .detach();
                serve(state, inbox).await;
                LOCAL.with(|local| local.borrow_mut().take());
            });
        })
        .map_err(|error| EngineError::Startup(format!("shard {id}: {error}")))?;
    match started.recv() {
        Ok(Ok(())) => Ok(thread),
        Ok(Err(error)) => {
            let _ = thread.join();
            Err(error)
        }
        Err(_) => Err(EngineError::Startup(format!(
            "shard {id} stopped while starting"
        ))),
    }
}

async fn open_partitions(plan: &ShardPlan) -> Result<HashMap<u32, Rc<AnyBackend>>, EngineError> {
    let mut partitions = HashMap::new();
    for &partition in &plan.partitions {
        let backend = match &plan.storage {
            PartitionStorage::Memory => AnyBackend::Memory(MemoryBackend::new()),
            PartitionStorage::Durable {
                root,
                create,
                ring_bytes,
                cache_bytes,
            } => {
                let directory = partition_directory(root, partition);
                let started = std::time::Instant::now();
                let options = DurableOptions {
                    ring_bytes: *ring_bytes,
                    store: StoreOptions {
                        cache_bytes: *cache_bytes,
                        ..StoreOptions::default()
                    },
                };
                let backend = if *create {
                    DurableBackend::create(DirectFileSystem, &directory, partition, options).await?
                } else {
                    DurableBackend::open(DirectFileSystem, &directory, partition, options).await?
                };
                tracing::info!(
                    shard = plan.id,
                    partition,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "partition ready"
                );
                AnyBackend::Durable(backend)
            }
        };
        partitions.insert(partition, Rc::new(backend));
    }
    Ok(partitions)
}

/// Joins the shard-to-shard mesh (which completes once every shard has
/// started) and runs the jobs other shards send. Until then, and if a
/// shard never starts, jobs go through the inboxes.
async fn join_mesh(mesh: MeshBuilder<Job, Full>, queued: MeshQueued, state: Rc<ShardState>) {
    let Ok((senders, mut receivers)) = mesh.join().await else {
        tracing::warn!(
            shard = state.id,
            "could not join the shard mesh; jobs go through inboxes"
        );
        return;
    };
    for (_, receiver) in receivers.streams() {
        let (state, queued) = (state.clone(), queued.clone());
        glommio::spawn_local(async move {
            while let Some(job) = receiver.recv().await {
                queued[state.id].fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                glommio::spawn_local(job(state.clone())).detach();
            }
        })
        .detach();
    }
    LOCAL.with(|local| {
        if let Some(local) = local.borrow_mut().as_mut() {
            local.senders = Some(Rc::new(senders));
        }
    });
}

async fn serve(state: Rc<ShardState>, inbox: flume::Receiver<Message>) {
    let stopping = Rc::new(Cell::new(false));
    let maintenance = glommio::spawn_local(maintain(state.clone(), stopping.clone()));
    let reply = loop {
        match inbox.recv_async().await {
            Ok(Message::Run(job)) => {
                glommio::spawn_local(job(state.clone())).detach();
            }
            Ok(Message::Shutdown(reply)) => break Some(reply),
            // Every engine handle is gone: stop as if asked to.
            Err(_) => break None,
        }
    };
    for listener in state.listeners.borrow_mut().drain(..) {
        listener.cancel();
    }
    stopping.set(true);
    maintenance.await;
    let mut result = Ok(());
    for (partition, backend) in &state.partitions {
        if let Err(error) = backend.checkpoint().await {
            tracing::error!(shard = state.id, partition, %error, "checkpoint at shutdown failed");
            result = Err(EngineError::from(error));
        }
    }
    if let Some(reply) = reply {
        let _ = reply.send(result);
    }
}

/// Flushes soft writes and starts checkpoints when the WAL fills. A
/// partition whose flush failed is poisoned; it is reported once, then left.
async fn maintain(state: Rc<ShardState>, stopping: Rc<Cell<bool>>) {
    let mut failed: HashMap<u32, ()> = HashMap::new();
    let checkpointing: HashMap<u32, Rc<Cell<bool>>> = state
        .partitions
        .keys()
        .map(|&partition| (partition, Rc::new(Cell::new(false))))
        .collect();
    let mut busy = false;
    while !stopping.get() {
        glommio::timer::sleep(if busy {
            MAINTENANCE_INTERVAL_BUSY
        } else {
            MAINTENANCE_INTERVAL_IDLE
        })
        .await;
        busy = false;
        for (&partition, backend) in &state.partitions {
            if failed.contains_key(&partition)
                || !backend.wants_flush() && !backend.wants_checkpoint()
            {
                continue;
            }
            busy = true;
            if let Err(error) = backend.flush().await {
                tracing::error!(shard = state.id, partition, %error, "WAL flush failed; partition stopped");
                failed.insert(partition, ());
                continue;
            }
            let running = &checkpointing[&partition];
            if backend.wants_checkpoint() && !running.get() {
                running.set(true);
                let (backend, running, shard) = (backend.clone(), running.clone(), state.id);
                glommio::spawn_local(async move {
                    if let Err(error) = backend.checkpoint().await {
                        tracing::error!(shard, partition, %error, "checkpoint failed; partition stopped");
                    }
                    running.set(false);
                })
                .detach();
            }
        }
    }
}
