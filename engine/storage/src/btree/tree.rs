//! The copy-on-write B+Tree, over nodes that are in memory.
//!
//! Every operation here is synchronous. A node not in memory is named by
//! [`Missing`]; the caller loads it (asynchronously, through the pager) and
//! tries again. Writes are applied only after [`Tree::missing`] found the
//! whole path resident, in the same synchronous stretch, so a write is never
//! half applied.
//!
//! Changing a node copies it (path copying): a node read from a page becomes
//! a new in-memory node and its page is reported as retired; an in-memory
//! node shared with a checkpoint being written is cloned by `Rc::make_mut`.
//! So a checkpoint's frozen root keeps seeing exactly the tree it froze.
//!
//! Nodes split when their page form would exceed `Shape::node_bytes`. After
//! a delete, an empty node is removed from its parent, and a node under a
//! quarter full is merged with a neighbour when that neighbour is in memory
//! and the two fit one page (merging never loads a page).

use std::ops::{Bound, ControlFlow};
use std::rc::Rc;

use bytes::Bytes;

use super::node::{Child, Node, PageId, Value};
use super::separators::Separators;

/// Nodes read from pages, when they are in memory.
pub trait Resident {
    fn resident(&self, page: PageId) -> Option<Rc<Node>>;
}

/// A page an operation needs that is not in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Missing(pub PageId);

/// Node sizing. A leaf entry (the longest key plus a value of
/// `inline_limit` bytes) must fit a node on its own.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// Largest page payload a node may have.
    pub node_bytes: usize,
    /// Values longer than this go to overflow pages when written.
    pub inline_limit: usize,
}

pub struct Tree {
    pub root: Child,
    pub shape: Shape,
}

fn node_of(child: &Child, pages: &impl Resident) -> Result<Rc<Node>, Missing> {
    match child {
        Child::Memory(node) => Ok(node.clone()),
        Child::Page(page) => pages.resident(*page).ok_or(Missing(*page)),
    }
}

/// The node behind `child`, made writable: a page's node is copied into
/// memory (its page retired), a shared in-memory node is cloned.
fn writable<'a>(
    child: &'a mut Child,
    pages: &impl Resident,
    retired: &mut Vec<PageId>,
) -> &'a mut Node {
    if let Child::Page(page) = *child {
        let node = pages
            .resident(page)
            .expect("the path of a write is loaded before the write");
        retired.push(page);
        *child = Child::Memory(Rc::new((*node).clone()));
    }
    match child {
        Child::Memory(node) => Rc::make_mut(node),
        Child::Page(_) => unreachable!("made an in-memory node above"),
    }
}

impl Tree {
    pub fn new(root: Child, shape: Shape) -> Tree {
        Tree { root, shape }
    }

    pub fn get(&self, pages: &impl Resident, key: &[u8]) -> Result<Option<Value>, Missing> {
        let mut node = node_of(&self.root, pages)?;
        loop {
            let next = match &*node {
                Node::Leaf(entries) => {
                    return Ok(entries
                        .binary_search_by(|(entry, _)| entry.as_ref().cmp(key))
                        .ok()
                        .map(|index| entries[index].1.clone()))
                }
                Node::Branch {
                    separators,
                    children,
                } => node_of(&children[separators.child_index(key)], pages)?,
            };
            node = next;
        }
    }

    /// The first page on the path to `key` that is not in memory.
    pub fn missing(&self, pages: &impl Resident, key: &[u8]) -> Option<PageId> {
        self.get(pages, key).err().map(|Missing(page)| page)
    }

    /// Inserts or replaces; returns the value replaced. The path to `key`
    /// must be resident.
    pub fn insert(
        &mut self,
        pages: &impl Resident,
        key: Bytes,
        value: Value,
        retired: &mut Vec<PageId>,
    ) -> Option<Value> {
        let shape = self.shape;
        let (old, split) = insert_into(&mut self.root, pages, key, value, shape, retired);
        if !split.siblings.is_empty() {
            let left = std::mem::replace(&mut self.root, Child::Page(0));
            let (separators, mut children): (Vec<Bytes>, Vec<Child>) =
                split.siblings.into_iter().unzip();
            children.insert(0, left);
            let mut root = Node::Branch {
                separators: separators.into(),
                children,
            };
            // A root with more children than a node holds splits again.
            let above = split_if_full(&mut root, shape, false);
            self.root = Child::Memory(Rc::new(root));
            if !above.is_empty() {
                let left = std::mem::replace(&mut self.root, Child::Page(0));
                let (separators, mut children): (Vec<Bytes>, Vec<Child>) =
                    above.into_iter().unzip();
                children.insert(0, left);
                self.root = Child::Memory(Rc::new(Node::Branch {
                    separators: separators.into(),
                    children,
                }));
            }
        }
        old
    }

    /// Removes `key`; returns its value. The path to `key` must be resident.
    pub fn remove(
        &mut self,
        pages: &impl Resident,
        key: &[u8],
        retired: &mut Vec<PageId>,
    ) -> Option<Value> {
        // Nothing is copied for a key that is not there.
        self.get(pages, key)
            .expect("the path of a write is loaded before the write")?;
        let shape = self.shape;
        let old = remove_from(&mut self.root, pages, key, shape, retired);
        // A root branch left with one child is replaced by that child.
        loop {
            let only_child = match &self.root {
                Child::Memory(node) => match &**node {
                    Node::Branch { children, .. } if children.len() == 1 => children[0].clone(),
                    Node::Branch { children, .. } if children.is_empty() => {
                        Child::Memory(Rc::new(Node::empty_leaf()))
                    }
                    _ => break,
                },
                Child::Page(_) => break,
            };
            self.root = only_child;
        }
        old
    }

    /// Appends to `out` the entries in `[start, end]` (bounds as given), in
    /// key order or reversed, until `out` holds `limit` entries. On
    /// [`Missing`], `out` holds a correct prefix of the answer: resume with
    /// the bound moved past its last key.
    pub fn scan(
        &self,
        pages: &impl Resident,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        descending: bool,
        limit: usize,
        out: &mut Vec<(Bytes, Value)>,
    ) -> Result<(), Missing> {
        if out.len() >= limit {
            return Ok(());
        }
        let root = node_of(&self.root, pages)?;
        scan_node(&root, pages, (start, end), descending, limit, out).map(|_| ())
    }
}

/// Where a visit stopped for a page that is not in memory: load `page`,
/// then visit again from `resume` (a bound on the side the visit moves
/// from; `None`: the visit's own bound). Rows before it were all visited.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Suspended {
    pub page: PageId,
    pub resume: Option<Bytes>,
    /// Pages of the next children the visit will need that are not in
    /// memory either: read together with `page`, a scan of a table larger
    /// than the cache waits once per batch of pages, not once per page.
    pub ahead: Vec<PageId>,
}

impl Tree {
    /// Calls `visitor` on every entry in `[start, end]` (bounds as given),
    /// in key order or reversed, until it breaks, without copying them.
    /// Ascending, `resume` is an inclusive start; descending, an exclusive
    /// end.
    pub fn visit(
        &self,
        pages: &impl Resident,
        range: Range<'_>,
        descending: bool,
        visitor: &mut dyn Visitor,
    ) -> Result<ControlFlow<()>, Suspended> {
        let root = node_of(&self.root, pages).map_err(|Missing(page)| Suspended {
            page,
            resume: None,
            ahead: Vec::new(),
        })?;
        visit_node(&root, pages, range, descending, visitor)
    }
}

/// What a visit lends rows to; a closure is one.
pub trait Visitor {
    fn row(&mut self, key: &Bytes, value: &Value) -> ControlFlow<()>;

    /// A row the visit reaches soon (see [`crate::RowVisitor::upcoming`]).
    fn upcoming(&mut self, _value: &Value) {}
}

impl<F: FnMut(&Bytes, &Value) -> ControlFlow<()>> Visitor for F {
    fn row(&mut self, key: &Bytes, value: &Value) -> ControlFlow<()> {
        self(key, value)
    }
}

/// Narrows a visit's range to what is left: ascending, `to` becomes the
/// start unless the start is already past it; descending, the end.
pub fn narrow(
    start: &mut Bound<Bytes>,
    end: &mut Bound<Bytes>,
    descending: bool,
    to: Bound<Bytes>,
) {
    let (Bound::Included(key) | Bound::Excluded(key)) = &to else {
        return;
    };
    if descending {
        let tighter = match &*end {
            Bound::Unbounded => true,
            Bound::Included(current) => key <= current,
            Bound::Excluded(current) => key < current,
        };
        if tighter {
            *end = to;
        }
    } else {
        let tighter = match &*start {
            Bound::Unbounded => true,
            Bound::Included(current) => {
                key > current || (key == current && matches!(to, Bound::Excluded(_)))
            }
            Bound::Excluded(current) => key > current,
        };
        if tighter {
            *start = to;
        }
    }
}

/// Narrows a visit's range to where a [`Suspended`] visit resumes: its
/// `resume` key is an inclusive start ascending, an exclusive end
/// descending.
pub fn resume_at(
    start: &mut Bound<Bytes>,
    end: &mut Bound<Bytes>,
    descending: bool,
    resume: Option<Bytes>,
) {
    let Some(resume) = resume else {
        return;
    };
    let resume = if descending {
        Bound::Excluded(resume)
    } else {
        Bound::Included(resume)
    };
    narrow(start, end, descending, resume);
}

/// How many entries ahead of the one being visited a leaf prefetches. A
/// scan is bound by memory latency: each row's first lines are a miss
/// unless asked for early.
const PREFETCH_AHEAD: usize = 4;

/// How many entries ahead of the one being visited a leaf hands to
/// [`Visitor::upcoming`]: their first lines were prefetched a few rows ago.
const UPCOMING_AHEAD: usize = 2;

/// How many pages a visit that finds a child missing reads at once (the
/// child and the next ones that are missing too).
const READ_AHEAD: usize = 32;

/// How many children ahead of the one being visited a branch looks up.
/// Each is looked up and its entries prefetched when it comes into view;
/// its first rows are prefetched once it is `ROWS_AHEAD` away, by when its
/// entries have arrived. Reading the entries at once stalled on them.
const LOOK_AHEAD: usize = 4;

/// How many children ahead a visit prefetches the first rows of.
const ROWS_AHEAD: usize = 2;

/// Lines of a leaf's entries prefetched.
const ENTRY_LINES: usize = 8;

/// Lines of a value prefetched: a document's header, offset table and keys.
const PREFETCH_LINES: usize = 4;

fn prefetch(value: &Value) {
    #[cfg(target_arch = "x86_64")]
    if let Value::Inline(bytes) = value {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let lines = bytes.len().div_ceil(64).min(PREFETCH_LINES);
        for line in 0..lines {
            // SAFETY: prefetching is a hint; it never faults, even on an
            // address outside any allocation, and this one is inside.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(bytes.as_ptr().add(64 * line).cast()) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

/// Prefetches a leaf's entries (each key's and value's place).
fn prefetch_entries(node: &Node) {
    #[cfg(target_arch = "x86_64")]
    if let Node::Leaf(entries) = node {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let bytes = std::mem::size_of_val(entries.as_slice());
        let start = entries.as_ptr().cast::<u8>();
        for line in 0..bytes.div_ceil(64).min(ENTRY_LINES) {
            // SAFETY: prefetching is a hint; it never faults, and these
            // addresses are inside the entries' allocation.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(start.add(64 * line).cast()) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = node;
}

/// Prefetches the rows a leaf's visit starts with.
fn prefetch_first(node: &Node, descending: bool) {
    if let Node::Leaf(entries) = node {
        let count = entries.len().min(PREFETCH_AHEAD);
        let first = if descending {
            &entries[entries.len() - count..]
        } else {
            &entries[..count]
        };
        for (_, value) in first {
            prefetch(value);
        }
    }
}

fn visit_node(
    node: &Node,
    pages: &impl Resident,
    range: Range<'_>,
    descending: bool,
    visitor: &mut dyn Visitor,
) -> Result<ControlFlow<()>, Suspended> {
    let (start, end) = range;
    match node {
        Node::Leaf(entries) => {
            // Bounds by binary search: a key is read only where it decides.
            let first = entries.partition_point(|(key, _)| before_start(key, start));
            let last = entries.partition_point(|(key, _)| !after_end(key, end));
            let in_range = &entries[first..last.max(first)];
            for step in 0..in_range.len() {
                let index = if descending {
                    in_range.len() - 1 - step
                } else {
                    step
                };
                let ahead = |distance: usize| {
                    let ahead = if descending {
                        index.checked_sub(distance)
                    } else {
                        Some(index + distance)
                    };
                    ahead.and_then(|ahead| in_range.get(ahead))
                };
                if let Some((_, value)) = ahead(PREFETCH_AHEAD) {
                    prefetch(value);
                }
                if let Some((_, value)) = ahead(UPCOMING_AHEAD) {
                    visitor.upcoming(value);
                }
                let (key, value) = &in_range[index];
                if visitor.row(key, value).is_break() {
                    return Ok(ControlFlow::Break(()));
                }
            }
            Ok(ControlFlow::Continue(()))
        }
        Node::Branch {
            separators,
            children,
        } => {
            let overlapping = overlapping_children(separators, start, end);
            // Where a visit suspended in child i resumes, if the child
            // itself does not know better.
            let resume = |index: usize| {
                if descending {
                    separators.get(index).cloned()
                } else {
                    index
                        .checked_sub(1)
                        .map(|before| separators[before].clone())
                }
            };
            // A bound the whole child lies within is dropped, so its
            // leaves compare no keys.
            let child_range = |index: usize| {
                let start = match index.checked_sub(1) {
                    Some(before) if !before_start(&separators[before], start) => Bound::Unbounded,
                    _ => start,
                };
                let end = match (separators.get(index), end) {
                    (Some(separator), Bound::Included(end) | Bound::Excluded(end))
                        if separator.as_ref() <= end =>
                    {
                        Bound::Unbounded
                    }
                    _ => end,
                };
                (start, end)
            };
            let order = |step: usize| {
                if descending {
                    overlapping.end - 1 - step
                } else {
                    overlapping.start + step
                }
            };
            let mut steps = 0..overlapping.len();
            // The next children are looked up while this one is visited,
            // and their first rows prefetched: the lookups and the rows are
            // misses that then overlap this child's work.
            let mut upcoming = std::collections::VecDeque::with_capacity(LOOK_AHEAD + 1);
            let mut look_up = |upcoming: &mut std::collections::VecDeque<_>| {
                if let Some(step) = steps.next() {
                    let child = node_of(&children[order(step)], pages);
                    if let Ok(node) = &child {
                        prefetch_entries(node);
                    }
                    upcoming.push_back((order(step), child));
                }
            };
            for _ in 0..LOOK_AHEAD {
                look_up(&mut upcoming);
            }
            for (_, child) in upcoming.iter().take(ROWS_AHEAD) {
                if let Ok(node) = child {
                    prefetch_first(node, descending);
                }
            }
            while let Some((index, child)) = upcoming.pop_front() {
                look_up(&mut upcoming);
                if let Some((_, Ok(node))) = upcoming.get(ROWS_AHEAD - 1) {
                    prefetch_first(node, descending);
                }
                // The next child's first rows were prefetched while the
                // one before this was visited: they are (nearly) here.
                if let Some((_, Ok(node))) = upcoming.front() {
                    if let Node::Leaf(entries) = &**node {
                        let count = entries.len().min(UPCOMING_AHEAD);
                        let first = if descending {
                            &entries[entries.len() - count..]
                        } else {
                            &entries[..count]
                        };
                        for (_, value) in first {
                            visitor.upcoming(value);
                        }
                    }
                }
                let child = child.map_err(|Missing(page)| {
                    // The children after this one, in the visit's order.
                    let after: Box<dyn Iterator<Item = usize>> = if descending {
                        Box::new((overlapping.start..index).rev())
                    } else {
                        Box::new(index + 1..overlapping.end)
                    };
                    let ahead = after
                        .filter_map(|later| match &children[later] {
                            Child::Page(page) if pages.resident(*page).is_none() => Some(*page),
                            _ => None,
                        })
                        .take(READ_AHEAD)
                        .collect();
                    Suspended {
                        page,
                        resume: resume(index),
                        ahead,
                    }
                })?;
                match visit_node(&child, pages, child_range(index), descending, visitor) {
                    Ok(ControlFlow::Continue(())) => {}
                    Ok(ControlFlow::Break(())) => return Ok(ControlFlow::Break(())),
                    Err(Suspended {
                        page,
                        resume: None,
                        ahead,
                    }) => {
                        return Err(Suspended {
                            page,
                            resume: resume(index),
                            ahead,
                        })
                    }
                    Err(inner) => return Err(inner),
                }
            }
            Ok(ControlFlow::Continue(()))
        }
    }
}

/// What an insert below a node hands up: new right siblings of the node
/// (each with the separator before it), and whether the insert went to the
/// node's end (an append, for which splits leave the left node full).
struct Split {
    siblings: Vec<(Bytes, Child)>,
    appended: bool,
}

fn insert_into(
    child: &mut Child,
    pages: &impl Resident,
    key: Bytes,
    value: Value,
    shape: Shape,
    retired: &mut Vec<PageId>,
) -> (Option<Value>, Split) {
    let node = writable(child, pages, retired);
    let (old, appended) = match node {
        Node::Leaf(entries) => {
            match entries.binary_search_by(|(entry, _)| entry.as_ref().cmp(key.as_ref())) {
                Ok(index) => (Some(std::mem::replace(&mut entries[index].1, value)), false),
                Err(index) => {
                    let appended = index == entries.len();
                    entries.insert(index, (key, value));
                    (None, appended)
                }
            }
        }
        Node::Branch {
            separators,
            children,
        } => {
            let index = separators.child_index(&key);
            let (old, split) = insert_into(&mut children[index], pages, key, value, shape, retired);
            let appended = split.appended && index + 1 == children.len();
            for (offset, (separator, right)) in split.siblings.into_iter().enumerate() {
                separators.insert(index + offset, separator);
                children.insert(index + offset + 1, right);
            }
            (old, appended)
        }
    };
    (
        old,
        Split {
            siblings: split_if_full(node, shape, appended),
            appended,
        },
    )
}

/// Splits an overfull node; returns the new right siblings with their
/// separators. After an append the left node keeps all it can (sequential
/// loads fill pages); otherwise the split is by halves of the bytes, and if
/// a half is still too big (large entries), entries are packed into as many
/// nodes as they need.
fn split_if_full(node: &mut Node, shape: Shape, appended: bool) -> Vec<(Bytes, Child)> {
    if node.stored_bytes(shape.inline_limit) <= shape.node_bytes {
        return Vec::new();
    }
    match node {
        Node::Leaf(entries) => {
            let sizes: Vec<usize> = entries
                .iter()
                .map(|(key, value)| 2 + key.len() + value.stored_bytes(shape.inline_limit))
                .collect();
            let total: usize = sizes.iter().sum();
            let mut cuts = Vec::new();
            if appended && total - sizes[sizes.len() - 1] <= shape.node_bytes {
                cuts.push(entries.len() - 1);
            } else {
                let mut accumulated = 0;
                let mut at = entries.len() - 1;
                for (index, size) in sizes.iter().enumerate() {
                    accumulated += size;
                    if accumulated > total / 2 {
                        at = index;
                        break;
                    }
                }
                let at = at.clamp(1, entries.len() - 1);
                let left: usize = sizes[..at].iter().sum();
                if left <= shape.node_bytes && total - left <= shape.node_bytes {
                    cuts.push(at);
                } else {
                    let mut filled = 0;
                    for (index, size) in sizes.iter().enumerate() {
                        if filled + size > shape.node_bytes && index > 0 {
                            cuts.push(index);
                            filled = 0;
                        }
                        filled += size;
                    }
                }
            }
            let mut siblings = Vec::with_capacity(cuts.len());
            for &cut in cuts.iter().rev() {
                let right = entries.split_off(cut);
                siblings.push((
                    right[0].0.clone(),
                    Child::Memory(Rc::new(Node::Leaf(right))),
                ));
            }
            siblings.reverse();
            siblings
        }
        Node::Branch {
            separators,
            children,
        } => {
            // Keys are short (at most `MAX_KEY_BYTES`), so two nodes do.
            let middle = if appended {
                separators.len() - 1
            } else {
                separators.len() / 2
            };
            let right_separators = separators.split_off(middle + 1);
            let up = separators.pop().expect("a full branch has separators");
            let right_children = children.split_off(middle + 1);
            vec![(
                up,
                Child::Memory(Rc::new(Node::Branch {
                    separators: right_separators,
                    children: right_children,
                })),
            )]
        }
    }
}

fn remove_from(
    child: &mut Child,
    pages: &impl Resident,
    key: &[u8],
    shape: Shape,
    retired: &mut Vec<PageId>,
) -> Option<Value> {
    match writable(child, pages, retired) {
        Node::Leaf(entries) => {
            let index = entries
                .binary_search_by(|(entry, _)| entry.as_ref().cmp(key))
                .ok()?;
            Some(entries.remove(index).1)
        }
        Node::Branch {
            separators,
            children,
        } => {
            let index = separators.child_index(key);
            let old = remove_from(&mut children[index], pages, key, shape, retired)?;
            rebalance(separators, children, index, pages, shape, retired);
            Some(old)
        }
    }
}

/// After a delete below `children[index]`: drop it if empty, or merge it
/// with an in-memory neighbour if it is under a quarter full and the two
/// fit one node.
fn rebalance(
    separators: &mut Separators,
    children: &mut Vec<Child>,
    index: usize,
    pages: &impl Resident,
    shape: Shape,
    retired: &mut Vec<PageId>,
) {
    let Ok(node) = node_of(&children[index], pages) else {
        return;
    };
    if node.is_empty() {
        children.remove(index);
        if !separators.is_empty() {
            separators.remove(index.saturating_sub(1));
        }
        return;
    }
    if node.stored_bytes(shape.inline_limit) >= shape.node_bytes / 4 || children.len() < 2 {
        return;
    }
    // The right neighbour first, then the left one.
    let candidates = [
        (index + 1 < children.len()).then_some(index),
        index.checked_sub(1),
    ];
    for left in candidates.into_iter().flatten() {
        if merge_pair(separators, children, left, pages, shape, retired) {
            return;
        }
    }
}

/// Merges `children[left]` and `children[left + 1]` if both are in memory
/// and fit one node; returns whether it did.
fn merge_pair(
    separators: &mut Separators,
    children: &mut Vec<Child>,
    left: usize,
    pages: &impl Resident,
    shape: Shape,
    retired: &mut Vec<PageId>,
) -> bool {
    let right = left + 1;
    let (Ok(left_node), Ok(right_node)) = (
        node_of(&children[left], pages),
        node_of(&children[right], pages),
    ) else {
        return false;
    };
    let merged = match (&*left_node, &*right_node) {
        (Node::Leaf(left_entries), Node::Leaf(right_entries)) => {
            Node::Leaf(left_entries.iter().chain(right_entries).cloned().collect())
        }
        (
            Node::Branch {
                separators: left_separators,
                children: left_children,
            },
            Node::Branch {
                separators: right_separators,
                children: right_children,
            },
        ) => {
            let merged_separators: Vec<Bytes> = left_separators
                .iter()
                .chain([&separators[left]])
                .chain(right_separators.iter())
                .cloned()
                .collect();
            Node::Branch {
                separators: merged_separators.into(),
                children: left_children
                    .iter()
                    .chain(right_children)
                    .cloned()
                    .collect(),
            }
        }
        _ => return false, // siblings are always at the same height
    };
    if merged.stored_bytes(shape.inline_limit) > shape.node_bytes {
        return false;
    }
    for side in [left, right] {
        if let Child::Page(page) = children[side] {
            retired.push(page);
        }
    }
    children[left] = Child::Memory(Rc::new(merged));
    children.remove(right);
    separators.remove(left);
    true
}

type Range<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

fn before_start(key: &[u8], start: Bound<&[u8]>) -> bool {
    match start {
        Bound::Included(start) => key < start,
        Bound::Excluded(start) => key <= start,
        Bound::Unbounded => false,
    }
}

fn after_end(key: &[u8], end: Bound<&[u8]>) -> bool {
    match end {
        Bound::Included(end) => key > end,
        Bound::Excluded(end) => key >= end,
        Bound::Unbounded => false,
    }
}

/// The children of a branch whose keys may lie in `[start, end]`, found by
/// binary search. Child i holds keys in `[separators[i-1], separators[i])`:
/// it is all below the start when `separators[i] <= start`, and all past
/// the end when `separators[i-1]` is.
fn overlapping_children(
    separators: &[Bytes],
    start: Bound<&[u8]>,
    end: Bound<&[u8]>,
) -> std::ops::Range<usize> {
    let first = match start {
        Bound::Included(start) | Bound::Excluded(start) => {
            separators.partition_point(|separator| separator.as_ref() <= start)
        }
        Bound::Unbounded => 0,
    };
    let last = separators.partition_point(|separator| !after_end(separator, end));
    first..(last + 1).max(first)
}

/// Returns whether the scan is complete (`limit` reached).
fn scan_node(
    node: &Node,
    pages: &impl Resident,
    range: Range,
    descending: bool,
    limit: usize,
    out: &mut Vec<(Bytes, Value)>,
) -> Result<bool, Missing> {
    let (start, end) = range;
    match node {
        Node::Leaf(entries) => {
            let in_range = entries
                .iter()
                .filter(|(key, _)| !before_start(key, start) && !after_end(key, end));
            let take = |entry: &(Bytes, Value), out: &mut Vec<(Bytes, Value)>| {
                out.push(entry.clone());
                out.len() >= limit
            };
            if descending {
                for entry in in_range.rev() {
                    if take(entry, out) {
                        return Ok(true);
                    }
                }
            } else {
                for entry in in_range {
                    if take(entry, out) {
                        return Ok(true);
                    }
                }
            }
            Ok(false)
        }
        Node::Branch {
            separators,
            children,
        } => {
            let overlapping = overlapping_children(separators, start, end);
            let order: Box<dyn Iterator<Item = usize>> = if descending {
                Box::new(overlapping.rev())
            } else {
                Box::new(overlapping)
            };
            for index in order {
                let child = node_of(&children[index], pages)?;
                if scan_node(&child, pages, range, descending, limit, out)? {
                    return Ok(true);
                }
            }
            Ok(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use proptest::prelude::*;

    use super::*;

    /// Pages "on disk" for tests: every node written is kept, and a page
    /// can be made non-resident to exercise `Missing`.
    #[derive(Default)]
    struct Pages {
        nodes: HashMap<PageId, Rc<Node>>,
    }

    impl Resident for Pages {
        fn resident(&self, page: PageId) -> Option<Rc<Node>> {
            self.nodes.get(&page).cloned()
        }
    }

    const SHAPE: Shape = Shape {
        node_bytes: 200,
        inline_limit: 24,
    };
    /// Entries up to two thirds of a node: splits into three happen.
    const LARGE: Shape = Shape {
        node_bytes: 200,
        inline_limit: 120,
    };

    fn key(number: u16) -> Bytes {
        Bytes::from(format!("key{number:05}"))
    }

    fn value(number: u16, length: usize) -> Value {
        Value::Inline(Bytes::from(vec![number as u8; length]))
    }

    /// Moves every in-memory node to "pages" (as a checkpoint does), so
    /// later writes go through copy-on-write of page nodes.
    fn persist(child: &mut Child, pages: &mut Pages, next: &mut PageId) {
        if let Child::Memory(node) = child {
            let mut node = (**node).clone();
            if let Node::Branch { children, .. } = &mut node {
                for child in children.iter_mut() {
                    persist(child, pages, next);
                }
            }
            *next += 1;
            pages.nodes.insert(*next, Rc::new(node));
            *child = Child::Page(*next);
        }
    }

    fn check_structure(
        child: &Child,
        pages: &Pages,
        shape: Shape,
        low: Option<&Bytes>,
        high: Option<&Bytes>,
        depth: usize,
        leaf_depth: &mut Option<usize>,
    ) {
        let node = node_of(child, pages).expect("resident");
        assert!(
            node.stored_bytes(shape.inline_limit) <= shape.node_bytes,
            "node over its size"
        );
        match &*node {
            Node::Leaf(entries) => {
                assert_eq!(
                    *leaf_depth.get_or_insert(depth),
                    depth,
                    "leaves at one depth"
                );
                assert!(
                    entries.windows(2).all(|pair| pair[0].0 < pair[1].0),
                    "leaf sorted"
                );
                for (key, _) in entries {
                    assert!(
                        low.is_none_or(|low| key >= low) && high.is_none_or(|high| key < high),
                        "key within its branch range"
                    );
                }
            }
            Node::Branch {
                separators,
                children,
            } => {
                assert_eq!(children.len(), separators.len() + 1);
                assert!(separators.windows(2).all(|pair| pair[0] < pair[1]));
                for (index, child) in children.iter().enumerate() {
                    let child_low = if index == 0 {
                        low
                    } else {
                        Some(&separators[index - 1])
                    };
                    let child_high = if index == separators.len() {
                        high
                    } else {
                        Some(&separators[index])
                    };
                    check_structure(
                        child,
                        pages,
                        shape,
                        child_low,
                        child_high,
                        depth + 1,
                        leaf_depth,
                    );
                }
            }
        }
    }

    #[derive(Clone, Debug)]
    enum Step {
        Insert(u16, usize),
        Remove(u16),
        Persist,
        Scan(u16, u16, bool, usize),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            6 => (0..300u16, 0..140usize).prop_map(|(key, length)| Step::Insert(key, length)),
            4 => (0..300u16).prop_map(Step::Remove),
            1 => Just(Step::Persist),
            2 => (0..300u16, 0..300u16, any::<bool>(), 1..40usize).prop_map(|(from, to, descending, limit)| Step::Scan(from, to, descending, limit)),
        ]
    }

    fn run_against_model(shape: Shape, steps: Vec<Step>) -> Result<(), TestCaseError> {
        let mut pages = Pages::default();
        let mut next_page = 0;
        let mut tree = Tree::new(Child::Memory(Rc::new(Node::empty_leaf())), shape);
        let mut model: BTreeMap<Bytes, Value> = BTreeMap::new();
        let mut retired = Vec::new();
        for step in steps {
            match step {
                Step::Insert(number, length) => {
                    let old = tree.insert(&pages, key(number), value(number, length), &mut retired);
                    prop_assert_eq!(old, model.insert(key(number), value(number, length)));
                }
                Step::Remove(number) => {
                    prop_assert_eq!(
                        tree.remove(&pages, &key(number), &mut retired),
                        model.remove(&key(number))
                    );
                }
                Step::Persist => persist(&mut tree.root, &mut pages, &mut next_page),
                Step::Scan(from, to, descending, limit) => {
                    let (from, to) = (key(from.min(to)), key(from.max(to)));
                    let mut out = Vec::new();
                    tree.scan(
                        &pages,
                        Bound::Included(&from),
                        Bound::Excluded(&to),
                        descending,
                        limit,
                        &mut out,
                    )
                    .expect("resident");
                    let expected: Vec<(Bytes, Value)> = if descending {
                        model
                            .range(from..to)
                            .rev()
                            .take(limit)
                            .map(|(key, value)| (key.clone(), value.clone()))
                            .collect()
                    } else {
                        model
                            .range(from..to)
                            .take(limit)
                            .map(|(key, value)| (key.clone(), value.clone()))
                            .collect()
                    };
                    prop_assert_eq!(out, expected);
                }
            }
            let mut leaf_depth = None;
            check_structure(&tree.root, &pages, shape, None, None, 0, &mut leaf_depth);
        }
        for (key, value) in &model {
            prop_assert_eq!(
                tree.get(&pages, key).expect("resident"),
                Some(value.clone())
            );
        }
        // Every retired page is one the live tree no longer reaches.
        fn reachable(child: &Child, pages: &Pages, into: &mut Vec<PageId>) {
            if let Child::Page(page) = child {
                into.push(*page);
            }
            if let Node::Branch { children, .. } = &*node_of(child, pages).expect("resident") {
                for child in children {
                    reachable(child, pages, into);
                }
            }
        }
        let mut live = Vec::new();
        reachable(&tree.root, &pages, &mut live);
        prop_assert!(retired.iter().all(|page| !live.contains(page)));
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn matches_a_btreemap_through_splits_merges_and_copies(steps in proptest::collection::vec(step(), 1..400)) {
            run_against_model(SHAPE, steps)?;
        }

        #[test]
        fn large_entries_split_into_as_many_nodes_as_they_need(steps in proptest::collection::vec(step(), 1..400)) {
            run_against_model(LARGE, steps)?;
        }
    }

    #[test]
    fn sequential_inserts_fill_their_leaves() {
        let pages = Pages::default();
        let mut tree = Tree::new(Child::Memory(Rc::new(Node::empty_leaf())), SHAPE);
        let mut retired = Vec::new();
        for number in 0..2000 {
            tree.insert(&pages, key(number), value(number, 8), &mut retired);
        }
        fn leaves(child: &Child, pages: &Pages, out: &mut Vec<usize>) {
            match &*node_of(child, pages).unwrap() {
                Node::Leaf(_) => out.push(
                    node_of(child, pages)
                        .unwrap()
                        .stored_bytes(SHAPE.inline_limit),
                ),
                Node::Branch { children, .. } => {
                    children.iter().for_each(|child| leaves(child, pages, out))
                }
            }
        }
        let mut sizes = Vec::new();
        leaves(&tree.root, &pages, &mut sizes);
        let fill = sizes.iter().sum::<usize>() as f64 / (sizes.len() * SHAPE.node_bytes) as f64;
        assert!(
            fill > 0.85,
            "leaves of an append-only load are {:.0}% full",
            fill * 100.0
        );
    }

    #[test]
    fn a_frozen_root_keeps_its_version() {
        let pages = Pages::default();
        let mut tree = Tree::new(Child::Memory(Rc::new(Node::empty_leaf())), SHAPE);
        let mut retired = Vec::new();
        for number in 0..200 {
            tree.insert(&pages, key(number), value(number, 8), &mut retired);
        }
        let frozen = Tree::new(tree.root.clone(), SHAPE);
        for number in 0..200 {
            tree.remove(&pages, &key(number), &mut retired);
        }
        for number in 0..200 {
            assert_eq!(
                frozen.get(&pages, &key(number)).unwrap(),
                Some(value(number, 8))
            );
            assert_eq!(tree.get(&pages, &key(number)).unwrap(), None);
        }
    }

    #[test]
    fn deletes_merge_nodes_and_shrink_the_tree() {
        let mut pages = Pages::default();
        let mut next_page = 0;
        let mut tree = Tree::new(Child::Memory(Rc::new(Node::empty_leaf())), SHAPE);
        let mut retired = Vec::new();
        for number in 0..500 {
            tree.insert(&pages, key(number), value(number, 8), &mut retired);
        }
        persist(&mut tree.root, &mut pages, &mut next_page);
        fn height(child: &Child, pages: &Pages) -> usize {
            match &*node_of(child, pages).unwrap() {
                Node::Leaf(_) => 1,
                Node::Branch { children, .. } => 1 + height(&children[0], pages),
            }
        }
        assert!(
            height(&tree.root, &pages) >= 3,
            "500 keys in 200-byte nodes make a deep tree"
        );
        for number in (0..500).filter(|number| number % 100 != 0) {
            tree.remove(&pages, &key(number), &mut retired);
        }
        assert_eq!(
            height(&tree.root, &pages),
            1,
            "five keys left fit one leaf again"
        );
        assert_eq!(tree.get(&pages, &key(400)).unwrap(), Some(value(400, 8)));
    }

    /// Every page evicted, then visited back in through [`Suspended`].
    fn visit_all(
        tree: &Tree,
        pages: &mut Pages,
        evicted: &mut HashMap<PageId, Rc<Node>>,
        range: (Bound<Bytes>, Bound<Bytes>),
        descending: bool,
        stop_after: usize,
    ) -> Result<Vec<(Bytes, Value)>, TestCaseError> {
        let (mut start, mut end) = range;
        let mut out = Vec::new();
        for _ in 0..10_000 {
            let visited = tree.visit(
                &*pages,
                (as_slice(&start), as_slice(&end)),
                descending,
                &mut |key: &Bytes, value: &Value| {
                    out.push((key.clone(), value.clone()));
                    if out.len() >= stop_after {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                },
            );
            match visited {
                Ok(_) => return Ok(out),
                Err(Suspended {
                    page,
                    resume,
                    ahead,
                }) => {
                    let node = evicted.remove(&page);
                    prop_assert!(node.is_some(), "suspended on page {} twice", page);
                    pages.nodes.insert(page, node.expect("checked"));
                    for page in ahead {
                        let node = evicted.remove(&page);
                        prop_assert!(node.is_some(), "page {} read ahead twice", page);
                        pages.nodes.insert(page, node.expect("checked"));
                    }
                    resume_at(&mut start, &mut end, descending, resume);
                }
            }
        }
        Err(TestCaseError::fail("the visit never finished"))
    }

    fn as_slice(bound: &Bound<Bytes>) -> Bound<&[u8]> {
        bound.as_ref().map(|key| key.as_ref())
    }

    fn bound() -> impl Strategy<Value = Bound<u16>> {
        prop_oneof![
            1 => Just(Bound::Unbounded),
            3 => (0..620u16).prop_map(Bound::Included),
            3 => (0..620u16).prop_map(Bound::Excluded),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        /// A visit over pages that are not in memory sees exactly the
        /// model's rows in range, in order, each once, and loads each page
        /// at most once.
        #[test]
        fn visits_resume_past_missing_pages(
            keys in proptest::collection::btree_set(0..600u16, 0..300),
            fresh in proptest::collection::btree_set(0..600u16, 0..20),
            start in bound(),
            end in bound(),
            descending in any::<bool>(),
            stop_after in 1..400usize,
        ) {
            let mut pages = Pages::default();
            let mut next_page = 0;
            let mut tree = Tree::new(Child::Memory(Rc::new(Node::empty_leaf())), SHAPE);
            let mut model = BTreeMap::new();
            let mut retired = Vec::new();
            for &number in &keys {
                tree.insert(&pages, key(number), value(number, 8), &mut retired);
                model.insert(key(number), value(number, 8));
            }
            persist(&mut tree.root, &mut pages, &mut next_page);
            // Some paths copied back into memory, beside evicted pages.
            for &number in &fresh {
                tree.insert(&pages, key(number), value(number, 3), &mut retired);
                model.insert(key(number), value(number, 3));
            }
            let mut evicted: HashMap<PageId, Rc<Node>> = pages.nodes.drain().collect();
            let range = (start.map(key), end.map(key));
            let empty = match (&range.0, &range.1) {
                (Bound::Included(low) | Bound::Excluded(low), Bound::Included(high) | Bound::Excluded(high)) => {
                    low > high || (low == high && !matches!(range, (Bound::Included(_), Bound::Included(_))))
                }
                _ => false,
            };
            let expected: Vec<(Bytes, Value)> = if empty {
                Vec::new()
            } else {
                let rows = model.range::<Bytes, _>(range.clone()).map(|(key, value)| (key.clone(), value.clone()));
                if descending {
                    rows.rev().take(stop_after).collect()
                } else {
                    rows.take(stop_after).collect()
                }
            };
            let actual = visit_all(&tree, &mut pages, &mut evicted, range, descending, stop_after)?;
            prop_assert_eq!(actual, expected);
        }
    }

    #[test]
    fn missing_pages_are_named_and_scans_resume() {
        let mut pages = Pages::default();
        let mut next_page = 0;
        let mut tree = Tree::new(Child::Memory(Rc::new(Node::empty_leaf())), SHAPE);
        let mut retired = Vec::new();
        for number in 0..100 {
            tree.insert(&pages, key(number), value(number, 8), &mut retired);
        }
        persist(&mut tree.root, &mut pages, &mut next_page);
        let mut evicted: HashMap<PageId, Rc<Node>> = pages.nodes.drain().collect();
        let mut out = Vec::new();
        let mut start: Option<Bytes> = None;
        loop {
            let bound = start.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
            let already = out.len();
            match tree.scan(&pages, bound, Bound::Unbounded, false, usize::MAX, &mut out) {
                Ok(()) => break,
                Err(Missing(page)) => {
                    pages
                        .nodes
                        .insert(page, evicted.remove(&page).expect("a real page"));
                    if out.len() > already {
                        start = Some(out.last().unwrap().0.clone());
                    }
                }
            }
        }
        let keys: Vec<Bytes> = out.into_iter().map(|(key, _)| key).collect();
        assert_eq!(keys, (0..100).map(key).collect::<Vec<_>>());
        assert!(tree.missing(&pages, &key(5)).is_none());
    }
}
