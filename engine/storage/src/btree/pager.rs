//! The data file: page reads through a cache under a memory budget, page
//! allocation, and writing a checkpoint's new pages.
//!
//! Allocation is a bitmap of used pages plus runs waiting to be reused.
//! A page the live tree stopped using may still be read by recovery from
//! either superblock slot, so it is reused only after two more checkpoints
//! have committed (see [`Pager::retire`]). The bitmap and the waiting runs
//! are written with every checkpoint, in its metadata run.

use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::rc::Rc;

use bytes::Bytes;

use super::node::{
    self, decode_node, decode_run, encode_run_into, run_pages, Node, PageId, PageKind, Value,
    PAGE_BYTES,
};
use super::tree::Resident;
use crate::error::{Result, StorageError};
use crate::io::DirectFile;

pub struct Pager<F: DirectFile> {
    file: F,
    path: PathBuf,
    cache: RefCell<Cache>,
    allocation: RefCell<Allocation>,
    /// Checkpoints committed since open; a change tells readers that pages
    /// may have been reused while they waited.
    commits: Cell<u64>,
    /// Runs retired since open; a change tells a load that the page it
    /// read may have been retired meanwhile.
    retirements: Cell<u64>,
    cache_hits: Cell<u64>,
    cache_misses: Cell<u64>,
}

/// Clean nodes read from pages, evicted by the CLOCK algorithm (an
/// approximation of least-recently-used that costs a flag store per hit)
/// once over budget. A node some task still holds (`Rc` count above one)
/// stays.
struct Cache {
    budget: usize,
    bytes: usize,
    nodes: hashbrown::HashMap<PageId, CacheEntry, PageHash>,
    /// Every cached page, in the order the clock hand visits them.
    ring: Vec<PageId>,
    hand: usize,
}

/// Hashes a page number so that each aligned group of 64 pages shares one
/// stretch of 64 buckets, in page order, and the groups are scattered.
///
/// A scan asks for pages mostly in the order checkpoints allocated them.
/// With a random hash every leaf's lookup missed the processor's cache: the
/// lookup was a third of a filtered count's time. Scattering the groups
/// keeps pages in any stride (leaves between overflow runs, say) spread
/// over all buckets.
#[derive(Clone, Copy, Default)]
struct PageHash;

struct PageHasher(u64);

impl std::hash::BuildHasher for PageHash {
    type Hasher = PageHasher;

    fn build_hasher(&self) -> PageHasher {
        PageHasher(0)
    }
}

impl std::hash::Hasher for PageHasher {
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is reached for a `PageId`; any other key folds
        // its bytes in, so the hasher stays correct for it too.
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u64(&mut self, page: u64) {
        self.0 = page;
    }

    fn finish(&self) -> u64 {
        // splitmix64's finalizer scatters the group; the low six bits
        // place the page within it.
        let mut group = self.0 >> 6;
        group ^= group >> 30;
        group = group.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        group ^= group >> 27;
        group = group.wrapping_mul(0x94D0_49BB_1331_11EB);
        group ^= group >> 31;
        (group << 6) | (self.0 & 63)
    }
}

struct CacheEntry {
    node: Rc<Node>,
    size: usize,
    referenced: Cell<bool>,
    /// Position in `ring`.
    slot: usize,
}

impl Cache {
    fn get(&self, page: PageId) -> Option<Rc<Node>> {
        let entry = self.nodes.get(&page)?;
        entry.referenced.set(true);
        Some(entry.node.clone())
    }

    fn insert(&mut self, page: PageId, node: Rc<Node>) {
        self.remove(page);
        let size = node.stored_bytes(usize::MAX) + 128;
        self.nodes.insert(
            page,
            CacheEntry {
                node,
                size,
                referenced: Cell::new(true),
                slot: self.ring.len(),
            },
        );
        self.ring.push(page);
        self.bytes += size;
        self.evict();
    }

    fn remove(&mut self, page: PageId) {
        let Some(entry) = self.nodes.remove(&page) else {
            return;
        };
        self.bytes -= entry.size;
        self.ring.swap_remove(entry.slot);
        if let Some(moved) = self.ring.get(entry.slot) {
            self.nodes.get_mut(moved).expect("ring and map agree").slot = entry.slot;
        }
    }

    fn evict(&mut self) {
        // Two sweeps clear every reference flag; anything still here after
        // that is pinned.
        let mut steps = 2 * self.ring.len();
        while self.bytes > self.budget && steps > 0 && !self.ring.is_empty() {
            steps -= 1;
            if self.hand >= self.ring.len() {
                self.hand = 0;
            }
            let page = self.ring[self.hand];
            let entry = &self.nodes[&page];
            if entry.referenced.replace(false) || Rc::strong_count(&entry.node) > 1 {
                self.hand += 1;
                continue;
            }
            self.remove(page);
        }
    }
}

#[derive(Default)]
struct Allocation {
    /// One flag per page below the high-water mark; page 0 is reserved.
    used: Vec<bool>,
    /// Runs the live tree no longer uses, free once checkpoint `.2` has
    /// committed.
    waiting: Vec<(PageId, u64, u64)>,
    /// Where the search for a free single page resumes.
    cursor: usize,
    /// Pages below the high-water mark not in use: with none (or too few
    /// for a run), the search is skipped and the file grows. Without this,
    /// a checkpoint of a growing file scanned every flag for every page it
    /// placed, quadratic in the file's size.
    free: usize,
}

impl Allocation {
    fn allocate(&mut self, pages: usize) -> PageId {
        if pages == 1 && self.free > 0 {
            if let Some(found) = (self.cursor..self.used.len())
                .chain(1..self.cursor.min(self.used.len()))
                .find(|&page| !self.used[page])
            {
                self.used[found] = true;
                self.free -= 1;
                self.cursor = found + 1;
                return found as PageId;
            }
        } else if pages > 1 && self.free >= pages {
            let mut run = 0;
            for page in 1..self.used.len() {
                run = if self.used[page] { 0 } else { run + 1 };
                if run == pages {
                    let first = page + 1 - pages;
                    self.used[first..=page].fill(true);
                    self.free -= pages;
                    return first as PageId;
                }
            }
        }
        // Grow the file; page 0 is never handed out.
        let first = self.used.len().max(1);
        self.used.resize(first + pages, true);
        first as PageId
    }

    fn release(&mut self, committed: u64) {
        let mut released = Vec::new();
        self.waiting.retain(|&(first, pages, free_after)| {
            if free_after > committed {
                return true;
            }
            released.push((first, pages));
            false
        });
        for (first, pages) in released {
            self.free_run(first, pages);
        }
    }

    fn free_run(&mut self, first: PageId, pages: u64) {
        for page in first..first + pages {
            let used = &mut self.used[page as usize];
            if *used {
                *used = false;
                self.free += 1;
            }
        }
    }
}

/// What a checkpoint wrote: the root's page and its metadata run.
pub struct Written {
    pub root: PageId,
    pub metadata_page: PageId,
    pub metadata_pages: u64,
    /// Each in-memory node written, with its page and its clean form (the
    /// same node with page children), for swapping into the live tree.
    pub nodes: Vec<(Rc<Node>, PageId, Rc<Node>)>,
}

impl<F: DirectFile> Resident for Pager<F> {
    fn resident(&self, page: PageId) -> Option<Rc<Node>> {
        let found = self.cache.borrow().get(page);
        let counter = if found.is_some() {
            &self.cache_hits
        } else {
            &self.cache_misses
        };
        counter.set(counter.get() + 1);
        found
    }
}

impl<F: DirectFile> Pager<F> {
    pub fn new(file: F, path: PathBuf, cache_budget: usize) -> Self {
        Pager {
            file,
            path,
            cache: RefCell::new(Cache {
                budget: cache_budget,
                bytes: 0,
                nodes: hashbrown::HashMap::with_hasher(PageHash),
                ring: Vec::new(),
                hand: 0,
            }),
            allocation: RefCell::new(Allocation {
                used: vec![true],
                waiting: Vec::new(),
                cursor: 1,
                free: 0,
            }),
            commits: Cell::new(0),
            retirements: Cell::new(0),
            cache_hits: Cell::new(0),
            cache_misses: Cell::new(0),
        }
    }

    /// Page lookups the cache answered, and those that had to read the
    /// file.
    pub fn cache_counts(&self) -> (u64, u64) {
        (self.cache_hits.get(), self.cache_misses.get())
    }

    pub fn path(&self) -> &PathBuf {
        &self.path
    }

    pub fn commits(&self) -> u64 {
        self.commits.get()
    }

    pub fn cached_bytes(&self) -> usize {
        self.cache.borrow().bytes
    }

    fn corruption(&self, page: PageId, detail: String) -> StorageError {
        StorageError::Corruption {
            path: self.path.clone(),
            offset: page * PAGE_BYTES as u64,
            detail,
        }
    }

    async fn read_pages(&self, first: PageId, pages: usize) -> Result<Vec<u8>> {
        let bytes = self
            .file
            .read_at(first * PAGE_BYTES as u64, pages * PAGE_BYTES)
            .await
            .map_err(|error| StorageError::io(&self.path, error))?;
        if bytes.len() != pages * PAGE_BYTES {
            return Err(self.corruption(
                first,
                format!(
                    "page run is cut short ({} of {} bytes)",
                    bytes.len(),
                    pages * PAGE_BYTES
                ),
            ));
        }
        Ok(bytes)
    }

    /// The node of `page`, from the cache or the file.
    pub async fn load(&self, page: PageId) -> Result<Option<Rc<Node>>> {
        if let Some(node) = self.cache.borrow().get(page) {
            return Ok(Some(node));
        }
        let (commits, retirements) = (self.commits.get(), self.retirements.get());
        let bytes = self.read_pages(page, 1).await;
        // Two checkpoints committed during the read: the page may have been
        // retired and reused, so what was read may be another node (or not
        // a node at all). Caching it would serve that stale node for this
        // page from now on; the caller looks the page up again instead.
        if self.commits.get() >= commits + 2 {
            return Ok(None);
        }
        let node =
            Rc::new(decode_node(&bytes?, page).map_err(|detail| self.corruption(page, detail))?);
        // A page retired during the read is no longer in the live tree. Its
        // node must not be cached: once the page is reused, the cached copy
        // would be served for the new node wherever a checkpoint did not
        // cache that one.
        if self.retirements.get() != retirements && self.is_retired(page) {
            return Ok(Some(node));
        }
        // Another task may have loaded it meanwhile; either copy is right.
        self.cache.borrow_mut().insert(page, node.clone());
        Ok(Some(node))
    }

    /// A value's bytes: inline, or read from its overflow run.
    pub async fn read_value(&self, value: &Value) -> Result<Bytes> {
        match value {
            Value::Inline(bytes) => Ok(bytes.clone()),
            Value::Overflow {
                first,
                pages,
                length,
            } => {
                let bytes = self.read_pages(*first, *pages as usize).await?;
                let value = decode_run(PageKind::Overflow, *first, &bytes, *length as usize)
                    .map_err(|(index, detail)| self.corruption(first + index as u64, detail))?;
                Ok(Bytes::from(value))
            }
        }
    }

    /// Marks a run the live tree stopped using; it is reused once
    /// checkpoint `free_after` has committed.
    fn is_retired(&self, page: PageId) -> bool {
        let allocation = self.allocation.borrow();
        !allocation.used.get(page as usize).copied().unwrap_or(false)
            || allocation
                .waiting
                .iter()
                .any(|&(first, pages, _)| (first..first + pages).contains(&page))
    }

    pub fn retire(&self, first: PageId, pages: u64, free_after: u64) {
        self.retirements.set(self.retirements.get() + 1);
        self.allocation
            .borrow_mut()
            .waiting
            .push((first, pages, free_after));
        for page in first..first + pages {
            self.cache.borrow_mut().remove(page);
        }
    }

    /// Checkpoint `sequence` has committed: runs waiting for it are free.
    pub fn committed(&self, sequence: u64) {
        self.allocation.borrow_mut().release(sequence);
        self.commits.set(self.commits.get() + 1);
    }

    /// Writes every in-memory node under `root` (children first, large
    /// values to overflow runs), then the metadata run made by `metadata`
    /// from the allocation state, then syncs the file.
    pub async fn write_checkpoint(
        &self,
        root: &node::Child,
        inline_limit: usize,
        metadata: impl Fn(PageId, &[u8], &[(PageId, u64, u64)]) -> Vec<u8>,
    ) -> Result<Written> {
        let mut pages: Vec<(PageId, Image)> = Vec::new();
        let mut nodes = Vec::new();
        let root_page = self
            .place_tree(root, inline_limit, &mut pages, &mut nodes)
            .await;
        // The metadata run describes the allocation including itself: size
        // it, allocate it, and encode it until its size is stable.
        let (metadata_page, metadata_pages) = {
            let mut allocation = self.allocation.borrow_mut();
            let mut reserved = 1usize;
            loop {
                let first = allocation.allocate(reserved);
                let bitmap = bitmap_of(&allocation.used);
                let encoded = metadata(root_page, &bitmap, &allocation.waiting);
                let needed = run_pages(encoded.len());
                if needed <= reserved {
                    let run = Image::Run(PageKind::Metadata, Bytes::from(encoded));
                    pages.push((first, run));
                    break (first, reserved as u64);
                }
                allocation.free_run(first, reserved as u64);
                reserved = needed;
            }
        };
        pages.sort_by_key(|(page, _)| *page);
        // Consecutive pages are encoded into one buffer and go out as one
        // write; the buffer is reused, so a checkpoint holds no more than
        // one write's pages as bytes (a bulk load's checkpoints otherwise
        // allocated, zeroed and copied every page image).
        let mut run = Vec::with_capacity(WRITE_BYTES + PAGE_BYTES);
        let mut index = 0;
        while index < pages.len() {
            let first = pages[index].0;
            run.clear();
            while index < pages.len()
                && pages[index].0 == first + (run.len() / PAGE_BYTES) as u64
                && run.len() < WRITE_BYTES
            {
                let (page, image) = &pages[index];
                match image {
                    Image::Node(node) => {
                        node::encode_node_into(node, *page, inline_limit, &mut run)
                    }
                    Image::Run(kind, bytes) => encode_run_into(*kind, *page, bytes, &mut run),
                }
                index += 1;
            }
            self.file
                .write_at(first * PAGE_BYTES as u64, &run)
                .await
                .map_err(|error| StorageError::io(&self.path, error))?;
        }
        self.file
            .sync_data()
            .await
            .map_err(|error| StorageError::io(&self.path, error))?;
        Ok(Written {
            root: root_page,
            metadata_page,
            metadata_pages,
            nodes,
        })
    }

    /// Reads a checkpoint's metadata run.
    pub async fn read_metadata(&self, first: PageId, pages: u64, length: usize) -> Result<Vec<u8>> {
        let bytes = self.read_pages(first, pages as usize).await?;
        decode_run(PageKind::Metadata, first, &bytes, length)
            .map_err(|(index, detail)| self.corruption(first + index as u64, detail))
    }

    /// Restores the allocation state a checkpoint recorded.
    pub fn restore_allocation(&self, bitmap: &[u8], pages: u64, waiting: Vec<(PageId, u64, u64)>) {
        let mut allocation = self.allocation.borrow_mut();
        allocation.used = (0..pages as usize)
            .map(|page| page == 0 || bitmap[page / 8] & (1 << (page % 8)) != 0)
            .collect();
        allocation.free = allocation.used.iter().filter(|&&used| !used).count();
        allocation.waiting = waiting;
        allocation.cursor = 1;
    }

    /// Reads every page in use and checks it, so that a damaged page stops
    /// the start (naming file and offset) instead of failing a query later.
    /// Sequential 1 MiB reads: about a second per GiB on this machine's
    /// drives.
    pub async fn verify(&self) -> Result<()> {
        const CHUNK_PAGES: u64 = 256;
        let used = self.allocation.borrow().used.clone();
        // The bitmap is whole bytes: pages past the last used one may be
        // past the end of the file.
        let end = used
            .iter()
            .rposition(|&is_used| is_used)
            .map_or(0, |last| last as u64 + 1);
        let mut first = 1u64;
        while first < end {
            let count = CHUNK_PAGES.min(end - first);
            if used[first as usize..(first + count) as usize]
                .iter()
                .any(|&is_used| is_used)
            {
                let bytes = self.read_pages(first, count as usize).await?;
                for (index, page) in bytes.chunks(PAGE_BYTES).enumerate() {
                    let number = first + index as u64;
                    if used[number as usize] {
                        node::open_page(page, number)
                            .map_err(|detail| self.corruption(number, detail))?;
                    }
                }
            }
            first += count;
        }
        Ok(())
    }

    /// Puts a node just written by a checkpoint into the cache, clean.
    /// Evicts down to the budget (after pinned nodes were let go).
    pub fn trim_cache(&self) {
        self.cache.borrow_mut().evict();
    }

    pub fn cache_clean(&self, page: PageId, node: Rc<Node>) {
        self.cache.borrow_mut().insert(page, node);
    }

    /// Pages below the high-water mark and how many are in use.
    pub fn page_counts(&self) -> (u64, u64) {
        let allocation = self.allocation.borrow();
        (
            allocation.used.len() as u64,
            allocation.used.iter().filter(|&&used| used).count() as u64,
        )
    }

    pub async fn close(self) -> Result<()> {
        let path = self.path.clone();
        self.file
            .close()
            .await
            .map_err(|error| StorageError::io(&path, error))
    }
}

fn bitmap_of(used: &[bool]) -> Vec<u8> {
    let mut bitmap = vec![0u8; used.len().div_ceil(8)];
    for (page, &is_used) in used.iter().enumerate() {
        if is_used {
            bitmap[page / 8] |= 1 << (page % 8);
        }
    }
    bitmap
}

/// What a checkpoint writes at a page: a node, or a run of pages holding
/// one value. Encoded only when its write goes out.
enum Image {
    Node(Rc<Node>),
    Run(PageKind, Bytes),
}

/// Most bytes of consecutive pages a checkpoint sends in one write.
const WRITE_BYTES: usize = 4 << 20;

/// Nodes a checkpoint places between yields. Placing a leaf copies its
/// rows, which lie cold wherever writes left them: about 3 µs a page here,
/// and a checkpoint places thousands (a median of 14,000 pages, 42 ms, in
/// a 1,000,000-document YCSB run), which in one stretch held up every query
/// of the shard.
const NODES_PER_SLICE: usize = 256;

impl<F: DirectFile> Pager<F> {
    /// Gives every in-memory node under `root` a page, children before
    /// their parents and left to right (large inline values get overflow
    /// runs first); returns the root's page. Yields every
    /// `NODES_PER_SLICE` nodes. Only the frozen tree is read, and the
    /// allocation is borrowed a node at a time, so writes may run between.
    async fn place_tree(
        &self,
        root: &node::Child,
        inline_limit: usize,
        pages: &mut Vec<(PageId, Image)>,
        nodes: &mut Vec<(Rc<Node>, PageId, Rc<Node>)>,
    ) -> PageId {
        let root = match root {
            node::Child::Page(page) => return *page,
            node::Child::Memory(memory) => memory.clone(),
        };
        // Each node being placed, with the pages of its children so far.
        let mut stack: Vec<(Rc<Node>, Vec<node::Child>)> = vec![(root, Vec::new())];
        let mut placed = 0;
        loop {
            // The next child of the node on top still to place, if any.
            let next = {
                let (memory, children_placed) = stack.last_mut().expect("a node to place");
                match &**memory {
                    Node::Branch { children, .. } if children_placed.len() < children.len() => {
                        match &children[children_placed.len()] {
                            node::Child::Page(page) => {
                                children_placed.push(node::Child::Page(*page));
                                continue;
                            }
                            node::Child::Memory(child) => Some(child.clone()),
                        }
                    }
                    _ => None,
                }
            };
            if let Some(child) = next {
                stack.push((child, Vec::new()));
                continue;
            }
            let (memory, children) = stack.pop().expect("a node to place");
            let page = place(
                &memory,
                children,
                inline_limit,
                &mut self.allocation.borrow_mut(),
                pages,
                nodes,
            );
            match stack.last_mut() {
                Some((_, siblings)) => siblings.push(node::Child::Page(page)),
                None => return page,
            }
            placed += 1;
            if placed % NODES_PER_SLICE == 0 {
                crate::yield_now().await;
            }
        }
    }
}

/// Gives the in-memory node `memory` a page, its children (a branch's)
/// being on `children` already; large inline values get overflow runs.
fn place(
    memory: &Rc<Node>,
    children: Vec<node::Child>,
    inline_limit: usize,
    allocation: &mut Allocation,
    pages: &mut Vec<(PageId, Image)>,
    nodes: &mut Vec<(Rc<Node>, PageId, Rc<Node>)>,
) -> PageId {
    let clean = match &**memory {
        Node::Leaf(entries) => Node::Leaf(
            entries
                .iter()
                .map(|(key, value)| {
                    let value = match value {
                        Value::Inline(bytes) if bytes.len() > inline_limit => {
                            let count = run_pages(bytes.len());
                            let first = allocation.allocate(count);
                            pages.push((first, Image::Run(PageKind::Overflow, bytes.clone())));
                            Value::Overflow {
                                first,
                                pages: count as u32,
                                length: bytes.len() as u32,
                            }
                        }
                        // Copied afresh, in key order: the clean node stays
                        // in memory as the page's cached node, and the
                        // copies lie side by side, as rows read from pages
                        // do. Rows as writes left them lie wherever each
                        // write's allocation fell, and a scan then misses
                        // the cache on every row.
                        Value::Inline(bytes) => Value::Inline(Bytes::copy_from_slice(bytes)),
                        other => other.clone(),
                    };
                    (key.clone(), value)
                })
                .collect(),
        ),
        Node::Branch { separators, .. } => Node::Branch {
            separators: separators.clone(),
            children,
        },
    };
    let page = allocation.allocate(1);
    let clean = Rc::new(clean);
    pages.push((page, Image::Node(clean.clone())));
    nodes.push((memory.clone(), page, clean));
    page
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use super::PageHash;

    /// The bucket a table of `buckets` (a power of two) gives `page`.
    fn bucket(page: u64, buckets: u64) -> u64 {
        PageHash.hash_one(page) & (buckets - 1)
    }

    #[test]
    fn neighbouring_pages_get_neighbouring_buckets() {
        let buckets = 1 << 16;
        for group in [0u64, 1, 977, 1 << 20] {
            let first = group * 64;
            for page in first..first + 64 {
                assert_eq!(
                    bucket(page, buckets),
                    bucket(first, buckets) + (page - first),
                    "page {page}"
                );
            }
        }
    }

    #[test]
    fn pages_in_any_stride_spread_over_every_stretch_of_buckets() {
        // 4,096 pages into 256 stretches of 64 buckets: 16 each on
        // average, and consecutive pages fill a stretch, so two or three
        // groups may share one. Page numbers used as the hash would put a
        // stride of the table's size into one stretch, and a quarter of it
        // into four.
        let buckets = 1 << 14;
        for stride in [1u64, 2, 3, 16, 64, 65, 128, 4096, 1 << 14, 1 << 20] {
            let mut per_stretch = vec![0u32; (buckets / 64) as usize];
            for index in 0..4096 {
                per_stretch[(bucket(index * stride, buckets) / 64) as usize] += 1;
            }
            let fullest = *per_stretch.iter().max().unwrap();
            assert!(
                fullest <= 192,
                "stride {stride}: {fullest} pages in one stretch"
            );
        }
    }
}
