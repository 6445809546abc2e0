//! A partition's rows: one B+Tree over every table (keys are the table id
//! followed by the row key), row counts per table, and the pager.
//!
//! Reads and the preparation of a write are asynchronous (pages may have
//! to be read); applying a prepared write is synchronous, so that the
//! durable backend can apply a batch and log it without another task of
//! the core seeing half of it.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::ops::{Bound, ControlFlow};
use std::path::PathBuf;
use std::rc::Rc;

use bytes::{BufMut, Bytes, BytesMut};

use super::node::{Child, Node, PageId, Value};
use super::pager::{Pager, Written};
use super::tree::{narrow, resume_at, Missing, Shape, Suspended, Tree, Visitor};
use crate::backend::{Direction, RowVisitor, ScanRange};
use crate::batch::{decide_indexed, Mutation, WalOperation, WriteOutcome};
use crate::error::{Result, StorageError};
use crate::index::IndexRegistry;
use crate::io::DirectFile;
use crate::tables::TableId;

/// The longest row key the tree takes (RethinkDB's primary keys encode to
/// at most 130 bytes; secondary index keys will be cut to fit as well).
pub const MAX_KEY_BYTES: usize = 512;

/// Most pages a write's preparation reads at once.
const LOAD_TOGETHER: usize = 32;

const METADATA_MAGIC: u32 = u32::from_le_bytes(*b"PMTA");

#[derive(Clone, Copy, Debug)]
pub struct StoreOptions {
    pub shape: Shape,
    /// Memory for clean pages, in bytes.
    pub cache_bytes: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            shape: Shape {
                node_bytes: super::node::PAGE_PAYLOAD,
                inline_limit: 2048,
            },
            cache_bytes: 64 << 20,
        }
    }
}

pub struct Store<F: DirectFile> {
    pager: Pager<F>,
    tree: RefCell<Tree>,
    counts: RefCell<BTreeMap<TableId, u64>>,
    /// The newest checkpoint that may refer to pages the live tree uses: a
    /// page the tree stops using is reused after checkpoint `in_view + 2`.
    in_view: Cell<u64>,
    /// The metadata run of the newest committed checkpoint.
    metadata_run: Cell<(PageId, u64)>,
}

/// What a write needs in memory: the pages of its paths (held so the cache
/// keeps them) and the old values kept in overflow runs.
pub struct Prepared {
    _pins: Vec<Rc<Node>>,
    overflow: HashMap<PageId, Bytes>,
    /// A bound on the WAL bytes of the index entries the batch changes.
    index_payload_bytes: usize,
}

impl Prepared {
    pub fn index_payload_bytes(&self) -> usize {
        self.index_payload_bytes
    }
}

/// A checkpoint in the making: the tree and counts as they were frozen.
pub struct Frozen {
    sequence: u64,
    root: Child,
    counts: BTreeMap<TableId, u64>,
}

/// What the superblock of a written checkpoint records.
pub struct CheckpointWritten {
    pub metadata_page: PageId,
    pub metadata_pages: u64,
    pub metadata_bytes: u64,
    written: Written,
}

fn composite_key(table: TableId, key: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(16 + key.len());
    out.put_slice(&table.0.to_be_bytes());
    out.put_slice(key);
    out.freeze()
}

fn table_prefix(table: TableId) -> Bytes {
    Bytes::copy_from_slice(&table.0.to_be_bytes())
}

/// Tree bounds for a scan of one table.
fn table_bounds(table: TableId, range: &ScanRange) -> (Bound<Bytes>, Bound<Bytes>) {
    let start = match &range.start {
        Bound::Included(key) => Bound::Included(composite_key(table, key)),
        Bound::Excluded(key) => Bound::Excluded(composite_key(table, key)),
        Bound::Unbounded => Bound::Included(table_prefix(table)),
    };
    let end = match &range.end {
        Bound::Included(key) => Bound::Included(composite_key(table, key)),
        Bound::Excluded(key) => Bound::Excluded(composite_key(table, key)),
        Bound::Unbounded => match table.0.checked_add(1) {
            Some(next) => Bound::Excluded(table_prefix(TableId(next))),
            None => Bound::Unbounded,
        },
    };
    (start, end)
}

fn as_slice(bound: &Bound<Bytes>) -> Bound<&[u8]> {
    match bound {
        Bound::Included(key) => Bound::Included(key.as_ref()),
        Bound::Excluded(key) => Bound::Excluded(key.as_ref()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

impl<F: DirectFile> Store<F> {
    /// An empty store over a new data file.
    pub fn create(file: F, path: PathBuf, options: StoreOptions, sequence: u64) -> Self {
        Store {
            pager: Pager::new(file, path, options.cache_bytes),
            tree: RefCell::new(Tree::new(
                Child::Memory(Rc::new(Node::empty_leaf())),
                options.shape,
            )),
            counts: RefCell::new(BTreeMap::new()),
            in_view: Cell::new(sequence),
            metadata_run: Cell::new((0, 0)),
        }
    }

    /// Opens the checkpoint whose superblock says where its metadata is.
    /// `older_metadata` is the other slot's run, retired once it cannot be
    /// needed any more.
    pub async fn open(
        file: F,
        path: PathBuf,
        options: StoreOptions,
        sequence: u64,
        metadata: (PageId, u64, u64),
        older_metadata: Option<(PageId, u64)>,
    ) -> Result<Self> {
        let store = Self::create(file, path, options, sequence);
        let (page, pages, bytes) = metadata;
        if page == 0 {
            return Ok(store);
        }
        let encoded = store
            .pager
            .read_metadata(page, pages, bytes as usize)
            .await?;
        let corrupt = |detail: &str| StorageError::Corruption {
            path: store.pager.path().clone(),
            offset: page * super::node::PAGE_BYTES as u64,
            detail: format!("checkpoint metadata: {detail}"),
        };
        let decoded = decode_metadata(&encoded).ok_or_else(|| corrupt("does not decode"))?;
        if decoded.root != 0 {
            store.tree.borrow_mut().root = Child::Page(decoded.root);
        }
        *store.counts.borrow_mut() = decoded.counts;
        store
            .pager
            .restore_allocation(&decoded.bitmap, decoded.page_count, decoded.waiting);
        store.pager.verify().await?;
        store.metadata_run.set((page, pages));
        if let Some((older_page, older_pages)) =
            older_metadata.filter(|(older_page, _)| *older_page != 0 && *older_page != page)
        {
            store.pager.retire(older_page, older_pages, sequence + 1);
        }
        Ok(store)
    }

    pub fn count(&self, table: TableId) -> u64 {
        self.counts.borrow().get(&table).copied().unwrap_or(0)
    }

    pub fn table_ids(&self) -> Vec<TableId> {
        self.counts.borrow().keys().copied().collect()
    }

    pub fn cached_bytes(&self) -> usize {
        self.pager.cached_bytes()
    }

    pub fn cache_counts(&self) -> (u64, u64) {
        self.pager.cache_counts()
    }

    /// Pages in the data file and how many are in use.
    pub fn page_counts(&self) -> (u64, u64) {
        self.pager.page_counts()
    }

    pub async fn get(&self, table: TableId, key: &[u8]) -> Result<Option<Bytes>> {
        // On the stack for the usual key lengths: gets are the hot path.
        let mut buffer = [0u8; 16 + 240];
        let heap;
        let key: &[u8] = if key.len() <= 240 {
            buffer[..16].copy_from_slice(&table.0.to_be_bytes());
            buffer[16..16 + key.len()].copy_from_slice(key);
            &buffer[..16 + key.len()]
        } else {
            heap = composite_key(table, key);
            &heap
        };
        loop {
            let commits = self.pager.commits();
            let found = self.tree.borrow().get(&self.pager, key);
            match found {
                Ok(None) => return Ok(None),
                Ok(Some(Value::Inline(bytes))) => return Ok(Some(bytes)),
                Ok(Some(value)) => {
                    let bytes = self.pager.read_value(&value).await;
                    // A run read after two checkpoints committed may have
                    // been reused meanwhile (what was read may not even be a
                    // run): read again.
                    if self.pager.commits() < commits + 2 {
                        return bytes.map(Some);
                    }
                }
                Err(Missing(page)) => {
                    self.pager.load(page).await?;
                }
            }
        }
    }

    pub async fn scan(&self, table: TableId, range: &ScanRange) -> Result<Vec<(Bytes, Bytes)>> {
        if range.is_empty() {
            return Ok(Vec::new());
        }
        let (start, end) = table_bounds(table, range);
        let descending = range.direction == Direction::Descending;
        let limit = range.limit.unwrap_or(usize::MAX);
        'scan: loop {
            let commits = self.pager.commits();
            let mut entries: Vec<(Bytes, Value)> = Vec::new();
            let mut pins = Vec::new();
            loop {
                // Resume past what was already collected.
                let resume = entries.last().map(|(key, _)| Bound::Excluded(key.clone()));
                let (from, to) = match (&resume, descending) {
                    (Some(after), false) => (after.clone(), end.clone()),
                    (Some(after), true) => (start.clone(), after.clone()),
                    (None, _) => (start.clone(), end.clone()),
                };
                let scanned = self.tree.borrow().scan(
                    &self.pager,
                    as_slice(&from),
                    as_slice(&to),
                    descending,
                    limit,
                    &mut entries,
                );
                match scanned {
                    Ok(()) => break,
                    Err(Missing(page)) => pins.extend(self.pager.load(page).await?),
                }
            }
            let mut rows = Vec::with_capacity(entries.len());
            for (key, value) in entries {
                let bytes = self.pager.read_value(&value).await;
                // Runs may have been reused since the keys were collected
                // (a failed read included): start over.
                if self.pager.commits() >= commits + 2 {
                    continue 'scan;
                }
                rows.push((key.slice(16..), bytes?));
            }
            return Ok(rows);
        }
    }

    /// Calls `visitor` with the key and value of every row in `range`, in
    /// its direction, until the visitor breaks; `range.limit` is ignored.
    /// Rows are lent, not copied: a visitor keeps what it needs.
    pub async fn visit(
        &self,
        table: TableId,
        range: &ScanRange,
        visitor: &mut dyn RowVisitor,
    ) -> Result<()> {
        if range.is_empty() {
            return Ok(());
        }
        let (mut start, mut end) = table_bounds(table, range);
        let descending = range.direction == Direction::Descending;
        // The pages loaded last, held until the visit has moved past them.
        let mut _pinned = Vec::new();
        loop {
            let commits = self.pager.commits();
            let mut overflow: Option<(Bytes, Value)> = None;
            let visited = self.tree.borrow().visit(
                &self.pager,
                (as_slice(&start), as_slice(&end)),
                descending,
                &mut Lend {
                    visitor: &mut *visitor,
                    overflow: &mut overflow,
                },
            );
            match visited {
                Ok(ControlFlow::Continue(())) => return Ok(()),
                Ok(ControlFlow::Break(())) => {
                    let Some((key, value)) = overflow else {
                        return Ok(());
                    };
                    let bytes = self.pager.read_value(&value).await;
                    // A run read after two checkpoints committed may have
                    // been reused meanwhile: visit again from this row.
                    if self.pager.commits() >= commits + 2 {
                        narrow(&mut start, &mut end, descending, Bound::Included(key));
                        continue;
                    }
                    if visitor.row(&key[16..], &bytes?).is_break() {
                        return Ok(());
                    }
                    narrow(&mut start, &mut end, descending, Bound::Excluded(key));
                }
                Err(Suspended {
                    page,
                    resume,
                    ahead,
                }) => {
                    let loads = std::iter::once(page)
                        .chain(ahead)
                        .map(|page| self.pager.load(page));
                    _pinned = crate::join_all(loads)
                        .await
                        .into_iter()
                        .collect::<Result<Vec<_>>>()?;
                    resume_at(&mut start, &mut end, descending, resume);
                }
            }
        }
    }

    /// Loads everything applying `mutations` needs, index entries
    /// included. Apply them right after, without awaiting in between.
    pub async fn prepare(
        &self,
        mutations: &[Mutation],
        indexes: &IndexRegistry,
    ) -> Result<Prepared> {
        let rows: Vec<Bytes> = mutations
            .iter()
            .filter_map(Mutation::row)
            .map(|(table, key)| composite_key(table, key))
            .collect();
        let mut prepared = self.prepare_keys(&rows).await?;
        if !indexes.any() {
            return Ok(prepared);
        }
        // Which entries change depends on the rows as they are when the
        // batch applies: work them out, load their paths, and check again
        // (another task may have changed a row while we waited).
        loop {
            let entries = self.plan_entries(&prepared, mutations, indexes);
            let resident = {
                let tree = self.tree.borrow();
                rows.iter()
                    .chain(&entries)
                    .all(|key| tree.missing(&self.pager, key).is_none())
            };
            if resident && self.overflow_read(&prepared, &rows) {
                // Each entry is logged as a put or delete of its key (the
                // table id less, the value a primary key, never longer).
                prepared.index_payload_bytes = entries.iter().map(|key| 25 + 2 * key.len()).sum();
                return Ok(prepared);
            }
            let keys: Vec<Bytes> = rows.iter().chain(&entries).cloned().collect();
            let mut again = self.prepare_keys(&keys).await?;
            again._pins.append(&mut prepared._pins);
            prepared = again;
        }
    }

    /// The index entry keys (composite) that applying `mutations` now would
    /// write or remove.
    fn plan_entries(
        &self,
        prepared: &Prepared,
        mutations: &[Mutation],
        indexes: &IndexRegistry,
    ) -> Vec<Bytes> {
        let mut rows_now: HashMap<Bytes, Option<Bytes>> = HashMap::new();
        let mut entries = Vec::new();
        for mutation in mutations {
            let Some((table, key)) = mutation.row() else {
                continue;
            };
            let Some(table_indexes) = indexes.of(table) else {
                continue;
            };
            let composite = composite_key(table, key);
            let old = match rows_now.get(&composite) {
                Some(row) => row.clone(),
                None => match self.current(prepared, &composite) {
                    Some(row) => row,
                    // Not loaded: the caller loads the rows again first.
                    None => continue,
                },
            };
            let (outcome, operations) = decide_indexed(mutation.clone(), old, Some(&table_indexes));
            for operation in &operations {
                if let WalOperation::Put {
                    table: entry_table,
                    key,
                    ..
                }
                | WalOperation::Delete {
                    table: entry_table,
                    key,
                } = operation
                {
                    if *entry_table != table {
                        entries.push(composite_key(*entry_table, key));
                    }
                }
            }
            rows_now.insert(composite, outcome.new);
        }
        entries
    }

    /// A row as stored now, if its path and value are in memory.
    fn current(&self, prepared: &Prepared, composite: &[u8]) -> Option<Option<Bytes>> {
        match self.tree.borrow().get(&self.pager, composite) {
            Ok(None) => Some(None),
            Ok(Some(Value::Inline(bytes))) => Some(Some(bytes)),
            Ok(Some(Value::Overflow { first, .. })) => prepared
                .overflow
                .get(&first)
                .map(|bytes| Some(bytes.clone())),
            Err(Missing(_)) => None,
        }
    }

    /// Whether every row's path is loaded and its overflow value read.
    fn overflow_read(&self, prepared: &Prepared, rows: &[Bytes]) -> bool {
        rows.iter().all(|row| self.current(prepared, row).is_some())
    }

    async fn prepare_keys(&self, keys: &[Bytes]) -> Result<Prepared> {
        let mut prepared = Prepared {
            _pins: Vec::new(),
            overflow: HashMap::new(),
            index_payload_bytes: 0,
        };
        let mut commits = self.pager.commits();
        loop {
            // One walk per key finds the pages not in memory and the
            // overflow values not read. The missing pages (one level of
            // the paths per round) are loaded together.
            let (missing, unread) = {
                let tree = self.tree.borrow();
                let mut missing: Vec<PageId> = Vec::new();
                let mut unread = None;
                for key in keys {
                    match tree.get(&self.pager, key) {
                        Err(Missing(page)) => {
                            if !missing.contains(&page) {
                                missing.push(page);
                                if missing.len() == LOAD_TOGETHER {
                                    break;
                                }
                            }
                        }
                        Ok(Some(value @ Value::Overflow { first, .. }))
                            if unread.is_none() && !prepared.overflow.contains_key(&first) =>
                        {
                            unread = Some(value);
                        }
                        _ => {}
                    }
                }
                (missing, unread)
            };
            if !missing.is_empty() {
                let loads = missing.into_iter().map(|page| self.pager.load(page));
                for node in crate::join_all(loads).await {
                    prepared._pins.extend(node?);
                }
                continue;
            }
            let Some(value) = unread else {
                return Ok(prepared);
            };
            let Value::Overflow { first, .. } = value else {
                unreachable!("selected overflow values")
            };
            let bytes = self.pager.read_value(&value).await;
            if self.pager.commits() >= commits + 2 {
                // Runs read before may have been reused: start over.
                prepared.overflow.clear();
                commits = self.pager.commits();
                continue;
            }
            let bytes = bytes?;
            prepared.overflow.insert(first, bytes);
        }
    }

    /// The stored length of a mutation's row (0 when absent). Call it once
    /// prepared: the path is then in memory.
    pub fn stored_length(&self, mutation: &Mutation) -> usize {
        let Some((table, key)) = mutation.row() else {
            return 0;
        };
        match self
            .tree
            .borrow()
            .get(&self.pager, &composite_key(table, key))
        {
            Ok(Some(Value::Inline(bytes))) => bytes.len(),
            Ok(Some(Value::Overflow { length, .. })) => length as usize,
            _ => 0,
        }
    }

    /// Applies one row mutation to a prepared store, keeping the table's
    /// indexes in step; returns the outcome and the operations to log.
    pub fn apply(
        &self,
        prepared: &Prepared,
        mutation: Mutation,
        indexes: &IndexRegistry,
    ) -> (WriteOutcome, Vec<WalOperation>) {
        let (table, key) = mutation.row().expect("a row mutation");
        let old = self
            .current(prepared, &composite_key(table, key))
            .expect("prepared before applying");
        let table_indexes = indexes.of(table);
        let (outcome, operations) = decide_indexed(mutation, old, table_indexes.as_deref());
        for operation in &operations {
            self.apply_operation(operation);
        }
        (outcome, operations)
    }

    /// Applies a logged row operation (the path must be prepared).
    fn apply_operation(&self, operation: &WalOperation) {
        let mut retired = Vec::new();
        let mut tree = self.tree.borrow_mut();
        let old = match operation {
            WalOperation::Put { table, key, value } => {
                let old = tree.insert(
                    &self.pager,
                    composite_key(*table, key),
                    Value::Inline(value.clone()),
                    &mut retired,
                );
                if old.is_none() {
                    *self.counts.borrow_mut().entry(*table).or_default() += 1;
                }
                old
            }
            WalOperation::Delete { table, key } => {
                let old = tree.remove(&self.pager, &composite_key(*table, key), &mut retired);
                if old.is_some() {
                    let mut counts = self.counts.borrow_mut();
                    let count = counts.entry(*table).or_default();
                    *count = count.saturating_sub(1);
                    if *count == 0 {
                        counts.remove(table);
                    }
                }
                old
            }
            WalOperation::DropTable { .. } => unreachable!("tables are dropped row by row"),
        };
        let free_after = self.in_view.get() + 2;
        if let Some(Value::Overflow { first, pages, .. }) = old {
            self.pager.retire(first, u64::from(pages), free_after);
        }
        for page in retired {
            self.pager.retire(page, 1, free_after);
        }
    }

    /// Replays a logged operation at open.
    pub async fn replay(&self, operation: WalOperation) -> Result<()> {
        match &operation {
            WalOperation::Put { table, key, .. } | WalOperation::Delete { table, key } => {
                let _prepared = self.prepare_keys(&[composite_key(*table, key)]).await?;
                self.apply_operation(&operation);
                Ok(())
            }
            WalOperation::DropTable { table } => {
                // Written by builds that logged drops whole; remove the rows.
                loop {
                    let keys = self.first_keys(*table, 256).await?;
                    if keys.is_empty() {
                        return Ok(());
                    }
                    let composite: Vec<Bytes> =
                        keys.iter().map(|key| composite_key(*table, key)).collect();
                    let _prepared = self.prepare_keys(&composite).await?;
                    for key in keys {
                        self.apply_operation(&WalOperation::Delete { table: *table, key });
                    }
                }
            }
        }
    }

    /// Up to `limit` keys of a table, from its start.
    pub async fn first_keys(&self, table: TableId, limit: usize) -> Result<Vec<Bytes>> {
        let range = ScanRange {
            start: Bound::Unbounded,
            end: Bound::Unbounded,
            direction: Direction::Ascending,
            limit: Some(limit),
        };
        let (start, end) = table_bounds(table, &range);
        let mut entries = Vec::new();
        let mut pins = Vec::new();
        loop {
            let from = entries
                .last()
                .map_or(start.clone(), |(key, _): &(Bytes, Value)| {
                    Bound::Excluded(key.clone())
                });
            let scanned = self.tree.borrow().scan(
                &self.pager,
                as_slice(&from),
                as_slice(&end),
                false,
                limit,
                &mut entries,
            );
            match scanned {
                Ok(()) => {
                    return Ok(entries
                        .into_iter()
                        .map(|(key, _)| key.slice(16..))
                        .collect())
                }
                Err(Missing(page)) => pins.extend(self.pager.load(page).await?),
            }
        }
    }

    /// Freezes the tree for checkpoint `sequence`: from now on, pages the
    /// live tree stops using may be in that checkpoint.
    pub fn freeze(&self, sequence: u64) -> Frozen {
        self.in_view.set(sequence);
        Frozen {
            sequence,
            root: self.tree.borrow().root.clone(),
            counts: self.counts.borrow().clone(),
        }
    }

    /// Writes the frozen tree's new pages and its metadata; syncs the file.
    pub async fn write(&self, frozen: &Frozen) -> Result<CheckpointWritten> {
        let inline_limit = self.tree.borrow().shape.inline_limit;
        let metadata_bytes = Cell::new(0u64);
        let written = self
            .pager
            .write_checkpoint(&frozen.root, inline_limit, |root, bitmap, waiting| {
                let encoded = encode_metadata(root, &frozen.counts, bitmap, waiting);
                metadata_bytes.set(encoded.len() as u64);
                encoded
            })
            .await?;
        Ok(CheckpointWritten {
            metadata_page: written.metadata_page,
            metadata_pages: written.metadata_pages,
            metadata_bytes: metadata_bytes.get(),
            written,
        })
    }

    /// The superblock of `frozen` is durable: nodes the live tree still
    /// shares with it become clean pages (their memory is released to the
    /// cache), written nodes it no longer shares are retired, and runs
    /// waiting for this checkpoint are freed.
    pub fn committed(&self, frozen: Frozen, checkpoint: CheckpointWritten) {
        let sequence = frozen.sequence;
        drop(frozen.root);
        let written = checkpoint.written;
        let by_pointer: HashMap<*const Node, usize> = written
            .nodes
            .iter()
            .enumerate()
            .map(|(index, (memory, _, _))| (Rc::as_ptr(memory), index))
            .collect();
        let by_page: HashMap<PageId, usize> = written
            .nodes
            .iter()
            .enumerate()
            .map(|(index, (_, page, _))| (*page, index))
            .collect();
        let mut kept = vec![false; written.nodes.len()];
        {
            let mut tree = self.tree.borrow_mut();
            swap_in(
                &mut tree.root,
                &by_pointer,
                &by_page,
                &written.nodes,
                &mut kept,
                &self.pager,
            );
        }
        for (index, (memory, page, clean)) in written.nodes.iter().enumerate() {
            if kept[index] {
                continue;
            }
            // Written for the checkpoint only: free once it leaves both slots.
            self.pager.retire(*page, 1, sequence + 2);
            if let (Node::Leaf(before), Node::Leaf(after)) = (&**memory, &**clean) {
                for ((_, was), (_, now)) in before.iter().zip(after) {
                    if let (Value::Inline(_), Value::Overflow { first, pages, .. }) = (was, now) {
                        self.pager.retire(*first, u64::from(*pages), sequence + 2);
                    }
                }
            }
        }
        let (old_page, old_pages) = self
            .metadata_run
            .replace((checkpoint.metadata_page, checkpoint.metadata_pages));
        if old_page != 0 {
            // The previous checkpoint stays the older slot until the next one.
            self.pager.retire(old_page, old_pages, sequence + 1);
        }
        self.pager.committed(sequence);
        // The written nodes were pinned while swapped in; back to budget.
        drop(written);
        self.pager.trim_cache();
    }

    pub async fn close(self) -> Result<()> {
        self.pager.close().await
    }
}

/// Replaces in-memory nodes the checkpoint wrote (the very same `Rc`) by
/// their pages, marking them and their written descendants as kept.
fn swap_in<F: DirectFile>(
    child: &mut Child,
    by_pointer: &HashMap<*const Node, usize>,
    by_page: &HashMap<PageId, usize>,
    nodes: &[(Rc<Node>, PageId, Rc<Node>)],
    kept: &mut [bool],
    pager: &Pager<F>,
) {
    let Child::Memory(memory) = child else { return };
    if let Some(&index) = by_pointer.get(&Rc::as_ptr(memory)) {
        mark_kept(index, by_page, nodes, kept, pager);
        *child = Child::Page(nodes[index].1);
        return;
    }
    if let Node::Branch { children, .. } = Rc::make_mut(memory) {
        for child in children {
            swap_in(child, by_pointer, by_page, nodes, kept, pager);
        }
    }
}

fn mark_kept<F: DirectFile>(
    index: usize,
    by_page: &HashMap<PageId, usize>,
    nodes: &[(Rc<Node>, PageId, Rc<Node>)],
    kept: &mut [bool],
    pager: &Pager<F>,
) {
    kept[index] = true;
    // The live tree now refers to this page: its node goes to the cache,
    // over whatever a load of an earlier use of the page left there.
    let (_, page, clean) = &nodes[index];
    pager.cache_clean(*page, clean.clone());
    if let Node::Branch { children, .. } = &**clean {
        for child in children {
            if let Child::Page(page) = child {
                if let Some(&below) = by_page.get(page) {
                    mark_kept(below, by_page, nodes, kept, pager);
                }
            }
        }
    }
}

struct Metadata {
    root: PageId,
    page_count: u64,
    counts: BTreeMap<TableId, u64>,
    waiting: Vec<(PageId, u64, u64)>,
    bitmap: Vec<u8>,
}

fn encode_metadata(
    root: PageId,
    counts: &BTreeMap<TableId, u64>,
    bitmap: &[u8],
    waiting: &[(PageId, u64, u64)],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + counts.len() * 24 + waiting.len() * 24 + bitmap.len());
    out.extend_from_slice(&METADATA_MAGIC.to_le_bytes());
    out.extend_from_slice(&root.to_le_bytes());
    out.extend_from_slice(&((bitmap.len() * 8) as u64).to_le_bytes());
    out.extend_from_slice(&(counts.len() as u32).to_le_bytes());
    for (table, count) in counts {
        out.extend_from_slice(&table.0.to_le_bytes());
        out.extend_from_slice(&count.to_le_bytes());
    }
    out.extend_from_slice(&(waiting.len() as u32).to_le_bytes());
    for (first, pages, free_after) in waiting {
        out.extend_from_slice(&first.to_le_bytes());
        out.extend_from_slice(&pages.to_le_bytes());
        out.extend_from_slice(&free_after.to_le_bytes());
    }
    out.extend_from_slice(&(bitmap.len() as u32).to_le_bytes());
    out.extend_from_slice(bitmap);
    out
}

fn decode_metadata(bytes: &[u8]) -> Option<Metadata> {
    let mut at = 0usize;
    let mut take = |count: usize| -> Option<&[u8]> {
        let slice = bytes.get(at..at.checked_add(count)?)?;
        at += count;
        Some(slice)
    };
    let u32_of = |slice: &[u8]| u32::from_le_bytes(slice.try_into().expect("4 bytes"));
    let u64_of = |slice: &[u8]| u64::from_le_bytes(slice.try_into().expect("8 bytes"));
    if u32_of(take(4)?) != METADATA_MAGIC {
        return None;
    }
    let root = u64_of(take(8)?);
    let bitmap_pages = u64_of(take(8)?);
    let mut counts = BTreeMap::new();
    for _ in 0..u32_of(take(4)?) {
        let table = TableId(u128::from_le_bytes(take(16)?.try_into().ok()?));
        counts.insert(table, u64_of(take(8)?));
    }
    let mut waiting = Vec::new();
    for _ in 0..u32_of(take(4)?) {
        waiting.push((u64_of(take(8)?), u64_of(take(8)?), u64_of(take(8)?)));
    }
    let bitmap_length = u32_of(take(4)?) as usize;
    let bitmap = take(bitmap_length)?.to_vec();
    if bitmap_pages != (bitmap.len() * 8) as u64 {
        return None;
    }
    Some(Metadata {
        root,
        page_count: bitmap_pages,
        counts,
        waiting,
        bitmap,
    })
}

/// A visit of the tree on behalf of a [`RowVisitor`]: rows without their
/// table prefix, inline values lent as they are, and the visit stopped at
/// an overflow value, which `visit` reads and hands over itself.
struct Lend<'a> {
    visitor: &'a mut dyn RowVisitor,
    overflow: &'a mut Option<(Bytes, Value)>,
}

impl Visitor for Lend<'_> {
    fn row(&mut self, key: &Bytes, value: &Value) -> ControlFlow<()> {
        match value {
            Value::Inline(bytes) => self.visitor.row(&key[16..], bytes),
            Value::Overflow { .. } => {
                *self.overflow = Some((key.clone(), value.clone()));
                ControlFlow::Break(())
            }
        }
    }

    fn upcoming(&mut self, value: &Value) {
        if let Value::Inline(bytes) = value {
            self.visitor.upcoming(bytes);
        }
    }
}
