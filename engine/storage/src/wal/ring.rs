//! Appending to the ring, and group commit.
//!
//! Appends are synchronous: they frame the record into the pending buffer.
//! Making records durable is asynchronous: the first caller that finds no
//! flush in flight becomes the leader, takes the whole pending buffer, writes
//! it (padded to a block boundary) and issues an fdatasync after the write
//! has returned; everyone who appended meanwhile waits and rides the next
//! flush. One flush is in flight at a time, so a flush on disk implies every
//! earlier flush completed — which is what lets replay tell a torn tail from
//! corruption.
//!
//! A failed write or sync poisons the log for good: the caller is told, and
//! every later append or wait fails. Nothing is retried.

use std::cell::{Cell, RefCell};
use std::path::PathBuf;

use super::record::{block_ceil, Header, HEADER_BYTES, KIND_BATCH, KIND_PADDING};
use crate::error::{Result, StorageError};
use crate::io::{DirectFile, BLOCK_BYTES};
use crate::stats::{FixedHistogram, GROUP_COMMIT_BOUNDS, SYNC_SECONDS_BOUNDS};
use crate::waiters::Waiters;

pub struct Wal<F: DirectFile> {
    file: F,
    path: PathBuf,
    partition: u32,
    ring_bytes: u64,
    state: RefCell<State>,
    flushing: Cell<bool>,
    waiters: Waiters,
}

struct State {
    /// Logical position where the pending buffer starts (block aligned).
    buffer_start: u64,
    buffer: Vec<u8>,
    /// The buffer a finished flush wrote, kept to be the next `buffer`:
    /// a fresh one would grow by copying and fault in new pages for every
    /// large batch.
    spare: Vec<u8>,
    /// Logical end of everything appended.
    appended: u64,
    /// Everything before this is durable.
    durable: u64,
    /// Positions before this may be overwritten (the older checkpoint's LSN).
    reclaim: u64,
    epoch: u32,
    poisoned: Option<String>,
    bytes_written: u64,
    flushes: u64,
    /// Records appended since the last flush began.
    records_pending: u64,
    sync_seconds: FixedHistogram<14>,
    group_commit_records: FixedHistogram<11>,
}

/// Counters for metrics and benchmarks.
#[derive(Clone, Copy, Debug, Default)]
pub struct WalStats {
    pub bytes_written: u64,
    pub flushes: u64,
    pub appended_lsn: u64,
    pub durable_lsn: u64,
}

/// How long flushes' fdatasyncs took, and how many records each made
/// durable.
#[derive(Clone, Debug)]
pub struct WalHistograms {
    pub sync_seconds: FixedHistogram<14>,
    pub group_commit_records: FixedHistogram<11>,
}

impl<F: DirectFile> Wal<F> {
    /// A writer continuing at `tail` (block aligned) in a new `epoch`.
    pub fn new(
        file: F,
        path: PathBuf,
        partition: u32,
        ring_bytes: u64,
        tail: u64,
        epoch: u32,
        reclaim: u64,
    ) -> Self {
        debug_assert_eq!(tail % BLOCK_BYTES as u64, 0);
        Wal {
            file,
            path,
            partition,
            ring_bytes,
            state: RefCell::new(State {
                buffer_start: tail,
                buffer: Vec::new(),
                spare: Vec::new(),
                appended: tail,
                durable: tail,
                reclaim,
                epoch,
                poisoned: None,
                bytes_written: 0,
                flushes: 0,
                records_pending: 0,
                sync_seconds: FixedHistogram::new(SYNC_SECONDS_BOUNDS),
                group_commit_records: FixedHistogram::new(GROUP_COMMIT_BOUNDS),
            }),
            flushing: Cell::new(false),
            waiters: Waiters::default(),
        }
    }

    /// The largest payload one record may carry.
    pub fn max_payload_bytes(&self) -> usize {
        (self.ring_bytes / 8) as usize - HEADER_BYTES
    }

    pub fn epoch(&self) -> u32 {
        self.state.borrow().epoch
    }

    pub fn appended_lsn(&self) -> u64 {
        self.state.borrow().appended
    }

    pub fn histograms(&self) -> WalHistograms {
        let state = self.state.borrow();
        WalHistograms {
            sync_seconds: state.sync_seconds.clone(),
            group_commit_records: state.group_commit_records.clone(),
        }
    }

    pub fn stats(&self) -> WalStats {
        let state = self.state.borrow();
        WalStats {
            bytes_written: state.bytes_written,
            flushes: state.flushes,
            appended_lsn: state.appended,
            durable_lsn: state.durable,
        }
    }

    /// Bytes of the ring in use: from the reclaim point to the end of what
    /// is appended.
    pub fn used_bytes(&self) -> u64 {
        let state = self.state.borrow();
        state.appended - state.reclaim
    }

    pub fn ring_bytes(&self) -> u64 {
        self.ring_bytes
    }

    /// Lets positions before `lsn` be overwritten.
    pub fn set_reclaim(&self, lsn: u64) {
        let mut state = self.state.borrow_mut();
        debug_assert!(lsn >= state.reclaim && lsn <= state.appended);
        state.reclaim = lsn;
    }

    pub fn poisoned(&self) -> Option<StorageError> {
        let state = self.state.borrow();
        state
            .poisoned
            .as_ref()
            .map(|reason| StorageError::Poisoned {
                partition: self.partition,
                reason: reason.clone(),
            })
    }

    /// Poisons the log from outside (a failed checkpoint write).
    pub fn poison(&self, reason: String) {
        self.state.borrow_mut().poisoned.get_or_insert(reason);
        self.wake_all();
    }

    /// Whether a record with this payload fits without overwriting positions
    /// at or after the reclaim point, allowing for ring-end and block padding.
    pub fn has_room(&self, payload_bytes: usize) -> bool {
        let state = self.state.borrow();
        let record = (HEADER_BYTES + payload_bytes) as u64;
        let worst_end = state.appended + record + record + 2 * BLOCK_BYTES as u64;
        worst_end - state.reclaim <= self.ring_bytes
    }

    /// Frames a batch record into the pending buffer; returns the LSN just
    /// past it. The caller checked [`Wal::has_room`] first.
    pub fn append(&self, payload: &[u8]) -> Result<u64> {
        if let Some(error) = self.poisoned() {
            return Err(error);
        }
        if payload.len() > self.max_payload_bytes() {
            return Err(StorageError::WriteTooLarge {
                bytes: payload.len(),
                limit: self.max_payload_bytes(),
            });
        }
        let mut state = self.state.borrow_mut();
        state.records_pending += 1;
        let record = (HEADER_BYTES + payload.len()) as u64;
        let left_in_block = BLOCK_BYTES as u64 - state.appended % BLOCK_BYTES as u64;
        if left_in_block < HEADER_BYTES as u64 {
            // Readers skip a block tail too short for a header; so must we.
            pad(&mut state, left_in_block);
        }
        let offset_in_ring = state.appended % self.ring_bytes;
        if offset_in_ring + record > self.ring_bytes {
            // Records never straddle the end of the ring: pad to it.
            let to_end = self.ring_bytes - offset_in_ring;
            pad(&mut state, to_end);
        }
        let lsn = state.appended;
        assert!(
            lsn + record - state.reclaim <= self.ring_bytes,
            "append past the reclaim point: has_room was not checked"
        );
        let header = Header {
            kind: KIND_BATCH,
            lsn,
            flush_lsn: state.buffer_start,
            epoch: state.epoch,
            payload_len: payload.len() as u32,
        };
        header.encode(payload, &mut state.buffer);
        state.buffer.extend_from_slice(payload);
        state.appended = lsn + record;
        Ok(state.appended)
    }

    /// Returns once everything before `lsn` is durable (group commit).
    pub async fn wait_durable(&self, lsn: u64) -> Result<()> {
        loop {
            if let Some(error) = self.poisoned() {
                return Err(error);
            }
            if self.state.borrow().durable >= lsn {
                return Ok(());
            }
            if self.flushing.get() {
                self.waiters.wait().await;
                continue;
            }
            self.flushing.set(true);
            let result = self.flush_pending().await;
            self.flushing.set(false);
            self.wake_all();
            if let Err(error) = result {
                self.poison(error.to_string());
                return Err(self.poisoned().unwrap_or(error));
            }
        }
    }

    fn wake_all(&self) {
        self.waiters.wake_all();
    }

    /// Writes the pending buffer, padded to a block, then syncs.
    async fn flush_pending(&self) -> Result<()> {
        let (start, bytes, end) = {
            let mut state = self.state.borrow_mut();
            if state.buffer.is_empty() {
                return Ok(());
            }
            let tail = state.appended % BLOCK_BYTES as u64;
            if tail != 0 {
                pad(&mut state, BLOCK_BYTES as u64 - tail);
            }
            let start = state.buffer_start;
            let spare = std::mem::take(&mut state.spare);
            let bytes = std::mem::replace(&mut state.buffer, spare);
            state.buffer_start = state.appended;
            let records = std::mem::take(&mut state.records_pending);
            state.group_commit_records.observe(records as f64);
            (start, bytes, state.appended)
        };
        debug_assert_eq!(block_ceil(end), end);
        let physical = start % self.ring_bytes;
        let first = ((self.ring_bytes - physical) as usize).min(bytes.len());
        let io_error = |error| StorageError::io(&self.path, error);
        self.file
            .write_at(physical, &bytes[..first])
            .await
            .map_err(io_error)?;
        if first < bytes.len() {
            self.file
                .write_at(0, &bytes[first..])
                .await
                .map_err(io_error)?;
        }
        let syncing = std::time::Instant::now();
        self.file.sync_data().await.map_err(io_error)?;
        let mut state = self.state.borrow_mut();
        state.sync_seconds.observe(syncing.elapsed().as_secs_f64());
        state.durable = end;
        state.bytes_written += bytes.len() as u64;
        state.flushes += 1;
        // Only one flush runs at a time: the spare slot is empty here.
        if bytes.capacity() <= MAX_SPARE_BYTES {
            let mut bytes = bytes;
            bytes.clear();
            state.spare = bytes;
        }
        Ok(())
    }

    pub async fn close(self) -> Result<()> {
        let path = self.path.clone();
        self.file
            .close()
            .await
            .map_err(|error| StorageError::io(&path, error))
    }
}

/// The largest flush buffer kept for reuse; a rare bigger batch's buffer
/// is freed rather than held for good.
const MAX_SPARE_BYTES: usize = 16 << 20;

/// Appends a padding record (or zeros, if no header fits) of `len` bytes.
fn pad(state: &mut State, len: u64) {
    let lsn = state.appended;
    if len as usize >= HEADER_BYTES {
        let header = Header {
            kind: KIND_PADDING,
            lsn,
            flush_lsn: state.buffer_start,
            epoch: state.epoch,
            payload_len: (len as usize - HEADER_BYTES) as u32,
        };
        header.encode(&[], &mut state.buffer);
        let zeros = state.buffer.len() + len as usize - HEADER_BYTES;
        state.buffer.resize(zeros, 0);
    } else {
        let zeros = state.buffer.len() + len as usize;
        state.buffer.resize(zeros, 0);
    }
    state.appended = lsn + len;
}
