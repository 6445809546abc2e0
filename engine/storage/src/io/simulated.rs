//! A file system in memory that models crashes and failing disks.
//!
//! Each file keeps the bytes that are durable and the writes issued since the
//! last sync. [`SimulatedFileSystem::crash`] returns the image a machine would
//! find after power loss: only durable bytes, optionally with the last
//! un-synced write torn at a sector boundary. Faults can be armed to fail the
//! next sync or write, and bits can be flipped in durable bytes.
//!
//! Every operation yields to the executor once, so concurrent tasks really
//! interleave around I/O as they do on io_uring (group commit depends on it).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use super::{DirectFile, FileSystem};

const SECTOR_BYTES: usize = 512;

#[derive(Clone, Default)]
struct FileState {
    /// What survives a crash.
    durable: Vec<u8>,
    /// What reads see now.
    current: Vec<u8>,
    /// Writes since the last sync, oldest first.
    unsynced: Vec<(u64, Vec<u8>)>,
    /// Whether the directory entry survives a crash.
    entry_durable: bool,
}

#[derive(Default)]
struct State {
    files: BTreeMap<PathBuf, FileState>,
    directories: Vec<PathBuf>,
    fail_next_sync: bool,
    fail_writes: bool,
    stall_syncs: bool,
    syncs: u64,
    writes: u64,
}

/// How [`SimulatedFileSystem::crash`] treats writes that were not synced.
#[derive(Clone, Copy, Debug)]
pub enum CrashMode {
    /// Every un-synced write is lost.
    DropUnsynced,
    /// Un-synced writes are lost, except the first sectors of the last one:
    /// a torn write.
    TearLastWrite { sectors_kept: usize },
    /// Every write issued reached the disk (a process kill, not power loss).
    KeepEverything,
}

/// The simulated file system. Clones share the same files.
#[derive(Clone, Default)]
pub struct SimulatedFileSystem {
    state: Rc<RefCell<State>>,
}

impl SimulatedFileSystem {
    pub fn new() -> Self {
        Self::default()
    }

    /// The disk image after a crash, as a new file system.
    pub fn crash(&self, mode: CrashMode) -> SimulatedFileSystem {
        let state = self.state.borrow();
        let mut files = BTreeMap::new();
        for (path, file) in &state.files {
            let keep_entry = file.entry_durable || matches!(mode, CrashMode::KeepEverything);
            if !keep_entry {
                continue;
            }
            let mut bytes = file.durable.clone();
            match mode {
                CrashMode::DropUnsynced => {}
                CrashMode::KeepEverything => bytes = file.current.clone(),
                CrashMode::TearLastWrite { sectors_kept } => {
                    if let Some((offset, data)) = file.unsynced.last() {
                        let kept = (sectors_kept * SECTOR_BYTES).min(data.len());
                        apply_write(&mut bytes, *offset, &data[..kept]);
                    }
                }
            }
            files.insert(
                path.clone(),
                FileState {
                    durable: bytes.clone(),
                    current: bytes,
                    unsynced: Vec::new(),
                    entry_durable: true,
                },
            );
        }
        let directories = state.directories.clone();
        SimulatedFileSystem {
            state: Rc::new(RefCell::new(State {
                files,
                directories,
                ..State::default()
            })),
        }
    }

    /// The next `sync_data` fails with an I/O error.
    pub fn fail_next_sync(&self) {
        self.state.borrow_mut().fail_next_sync = true;
    }

    /// Every write from now on fails with an I/O error.
    pub fn fail_writes(&self, fail: bool) {
        self.state.borrow_mut().fail_writes = fail;
    }

    /// While set, `sync_data` never completes: a crash taken then finds
    /// writes that were issued but never acknowledged.
    pub fn stall_syncs(&self, stall: bool) {
        self.state.borrow_mut().stall_syncs = stall;
    }

    /// Flips one bit of a file's durable (and current) bytes.
    pub fn flip_bit(&self, path: &Path, offset: u64, bit: u8) {
        let mut state = self.state.borrow_mut();
        let file = state
            .files
            .get_mut(path)
            .expect("flip_bit on a missing file");
        file.durable[offset as usize] ^= 1 << bit;
        file.current[offset as usize] ^= 1 << bit;
    }

    /// Paths of every file, sorted.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.state.borrow().files.keys().cloned().collect()
    }

    /// Number of completed syncs so far.
    pub fn sync_count(&self) -> u64 {
        self.state.borrow().syncs
    }

    /// Number of completed writes so far.
    pub fn write_count(&self) -> u64 {
        self.state.borrow().writes
    }

    /// Bytes of a file as reads would see them.
    pub fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        self.state
            .borrow()
            .files
            .get(path)
            .map(|file| file.current.clone())
    }
}

fn apply_write(bytes: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let end = offset as usize + data.len();
    if bytes.len() < end {
        bytes.resize(end, 0);
    }
    bytes[offset as usize..end].copy_from_slice(data);
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} not found", path.display()),
    )
}

/// Returns `Pending` once, then `Ready`: a point where other tasks run.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            context.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

pub struct SimulatedFile {
    path: PathBuf,
    state: Rc<RefCell<State>>,
}

impl DirectFile for SimulatedFile {
    async fn read_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        YieldOnce(false).await;
        let state = self.state.borrow();
        let file = state
            .files
            .get(&self.path)
            .ok_or_else(|| not_found(&self.path))?;
        let start = (offset as usize).min(file.current.len());
        let end = (offset as usize + len).min(file.current.len());
        Ok(file.current[start..end].to_vec())
    }

    async fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        YieldOnce(false).await;
        let mut state = self.state.borrow_mut();
        if state.fail_writes {
            return Err(io::Error::other("simulated write failure"));
        }
        state.writes += 1;
        let file = state
            .files
            .get_mut(&self.path)
            .ok_or_else(|| not_found(&self.path))?;
        apply_write(&mut file.current, offset, data);
        file.unsynced.push((offset, data.to_vec()));
        Ok(())
    }

    async fn sync_data(&self) -> io::Result<()> {
        // The writes covered are those completed before the call.
        let covered = self
            .state
            .borrow()
            .files
            .get(&self.path)
            .map_or(0, |file| file.unsynced.len());
        YieldOnce(false).await;
        if self.state.borrow().stall_syncs {
            std::future::pending::<()>().await;
        }
        let mut state = self.state.borrow_mut();
        if std::mem::take(&mut state.fail_next_sync) {
            // Like Linux after a failed writeback: the dirty data is gone.
            let file = state
                .files
                .get_mut(&self.path)
                .ok_or_else(|| not_found(&self.path))?;
            file.unsynced.clear();
            return Err(io::Error::other("simulated fdatasync failure"));
        }
        state.syncs += 1;
        let file = state
            .files
            .get_mut(&self.path)
            .ok_or_else(|| not_found(&self.path))?;
        let synced: Vec<_> = file
            .unsynced
            .drain(..covered.min(file.unsynced.len()))
            .collect();
        for (offset, data) in synced {
            apply_write(&mut file.durable, offset, &data);
        }
        Ok(())
    }

    async fn size(&self) -> io::Result<u64> {
        let state = self.state.borrow();
        let file = state
            .files
            .get(&self.path)
            .ok_or_else(|| not_found(&self.path))?;
        Ok(file.current.len() as u64)
    }

    async fn close(self) -> io::Result<()> {
        Ok(())
    }
}

impl FileSystem for SimulatedFileSystem {
    type File = SimulatedFile;

    async fn open(&self, path: &Path) -> io::Result<SimulatedFile> {
        YieldOnce(false).await;
        if !self.state.borrow().files.contains_key(path) {
            return Err(not_found(path));
        }
        Ok(SimulatedFile {
            path: path.to_owned(),
            state: self.state.clone(),
        })
    }

    async fn create(&self, path: &Path) -> io::Result<SimulatedFile> {
        YieldOnce(false).await;
        let mut state = self.state.borrow_mut();
        if state.files.contains_key(path) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists", path.display()),
            ));
        }
        state.files.insert(path.to_owned(), FileState::default());
        Ok(SimulatedFile {
            path: path.to_owned(),
            state: self.state.clone(),
        })
    }

    async fn create_directory(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state.borrow_mut();
        if !state.directories.iter().any(|directory| directory == path) {
            state.directories.push(path.to_owned());
        }
        Ok(())
    }

    async fn sync_directory(&self, path: &Path) -> io::Result<()> {
        YieldOnce(false).await;
        let mut state = self.state.borrow_mut();
        for (file_path, file) in state.files.iter_mut() {
            if file_path.parent() == Some(path) {
                file.entry_durable = true;
            }
        }
        Ok(())
    }

    async fn remove(&self, path: &Path) -> io::Result<()> {
        self.state
            .borrow_mut()
            .files
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| not_found(path))
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.state.borrow_mut();
        let mut file = state.files.remove(from).ok_or_else(|| not_found(from))?;
        // Rename is durable only after the directory is synced.
        file.entry_durable = false;
        state.files.insert(to.to_owned(), file);
        Ok(())
    }

    async fn exists(&self, path: &Path) -> io::Result<bool> {
        let state = self.state.borrow();
        Ok(state.files.contains_key(path)
            || state.directories.iter().any(|directory| directory == path))
    }

    async fn list(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        let state = self.state.borrow();
        let mut names: Vec<PathBuf> = state
            .files
            .keys()
            .chain(state.directories.iter())
            .filter(|entry| entry.parent() == Some(path))
            .filter_map(|entry| entry.file_name().map(PathBuf::from))
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }
}
