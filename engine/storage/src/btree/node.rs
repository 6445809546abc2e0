//! B-Tree nodes in memory, and their 4 KiB page form.
//!
//! Page layout (little-endian):
//! ```text
//! offset size field
//!      0    4 magic "PBTP"
//!      4    1 kind: 1 leaf, 2 branch, 3 overflow run, 4 metadata run
//!      5    1 reserved (0)
//!      6    2 entries (leaf, branch) or 0
//!      8    8 page number of this page (a page read from the wrong place
//!             fails this check)
//!     16    4 bytes of payload after the header
//!     20    4 crc32c of the whole page with this field zeroed
//!     24    8 reserved (0)
//!     32      payload
//! leaf entry:   key length u16, key, tag u8 (0 inline, 1 overflow),
//!               inline: length u32, bytes; overflow: first page u64,
//!               pages u32, length u32
//! branch:       first child u64, then per separator: key length u16, key,
//!               child u64 (child i holds keys >= separator i-1 and
//!               < separator i)
//! ```
//! Overflow and metadata runs are consecutive pages: each page has the same
//! header (entries 0) and carries up to 4,064 bytes of the value.

use std::rc::Rc;

use bytes::Bytes;

use super::separators::Separators;

use crate::io::BLOCK_BYTES;

pub type PageId = u64;

pub const PAGE_BYTES: usize = BLOCK_BYTES;
pub const HEADER_BYTES: usize = 32;
/// Payload bytes a page can carry.
pub const PAGE_PAYLOAD: usize = PAGE_BYTES - HEADER_BYTES;

const MAGIC: u32 = u32::from_le_bytes(*b"PBTP");

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageKind {
    Leaf = 1,
    Branch = 2,
    Overflow = 3,
    Metadata = 4,
}

/// A stored value: in the leaf, or in a run of overflow pages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Inline(Bytes),
    Overflow {
        first: PageId,
        pages: u32,
        length: u32,
    },
}

impl Value {
    /// Bytes this value takes in a leaf page once written, given the size
    /// above which values are moved out to overflow pages.
    pub fn stored_bytes(&self, inline_limit: usize) -> usize {
        match self {
            Value::Inline(bytes) if bytes.len() <= inline_limit => 1 + 4 + bytes.len(),
            _ => 1 + 8 + 4 + 4,
        }
    }
}

/// A child of a branch: a page on disk (loaded through the cache when
/// needed), or a node changed since the last checkpoint.
#[derive(Clone, Debug)]
pub enum Child {
    Page(PageId),
    Memory(Rc<Node>),
}

#[derive(Clone, Debug)]
pub enum Node {
    /// Entries in key order.
    Leaf(Vec<(Bytes, Value)>),
    /// `children.len() == separators.len() + 1`.
    Branch {
        separators: Separators,
        children: Vec<Child>,
    },
}

impl Node {
    pub fn empty_leaf() -> Node {
        Node::Leaf(Vec::new())
    }

    /// The payload size of this node's page.
    pub fn stored_bytes(&self, inline_limit: usize) -> usize {
        match self {
            Node::Leaf(entries) => entries
                .iter()
                .map(|(key, value)| 2 + key.len() + value.stored_bytes(inline_limit))
                .sum(),
            Node::Branch { separators, .. } => {
                8 + separators
                    .iter()
                    .map(|key| 2 + key.len() + 8)
                    .sum::<usize>()
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        match self {
            Node::Leaf(entries) => entries.is_empty(),
            Node::Branch { children, .. } => children.is_empty(),
        }
    }
}

/// A node's page on its own (tests; checkpoints use [`encode_node_into`]).
#[cfg(test)]
pub fn encode_node(node: &Node, page: PageId, inline_limit: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(PAGE_BYTES);
    encode_node_into(node, page, inline_limit, &mut out);
    out
}

/// Encodes a node whose children and large values already have pages,
/// appending the page to `out`: a checkpoint encodes its pages straight
/// into the buffer it writes, with no image of its own. `Child::Memory` or
/// an inline value over the limit here is a bug in the checkpoint writer.
pub fn encode_node_into(node: &Node, page: PageId, inline_limit: usize, out: &mut Vec<u8>) {
    let start = out.len();
    out.resize(start + HEADER_BYTES, 0);
    let (kind, entries) = match node {
        Node::Leaf(entries) => {
            for (key, value) in entries {
                out.extend_from_slice(&(key.len() as u16).to_le_bytes());
                out.extend_from_slice(key);
                match value {
                    Value::Inline(bytes) => {
                        assert!(
                            bytes.len() <= inline_limit,
                            "a large value must be moved to overflow pages before encoding"
                        );
                        out.push(0);
                        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
                        out.extend_from_slice(bytes);
                    }
                    Value::Overflow {
                        first,
                        pages,
                        length,
                    } => {
                        out.push(1);
                        out.extend_from_slice(&first.to_le_bytes());
                        out.extend_from_slice(&pages.to_le_bytes());
                        out.extend_from_slice(&length.to_le_bytes());
                    }
                }
            }
            (PageKind::Leaf, entries.len())
        }
        Node::Branch {
            separators,
            children,
        } => {
            let page_of = |child: &Child| match child {
                Child::Page(page) => *page,
                Child::Memory(_) => panic!("children are written before their parent"),
            };
            out.extend_from_slice(&page_of(&children[0]).to_le_bytes());
            for (key, child) in separators.iter().zip(&children[1..]) {
                out.extend_from_slice(&(key.len() as u16).to_le_bytes());
                out.extend_from_slice(key);
                out.extend_from_slice(&page_of(child).to_le_bytes());
            }
            (PageKind::Branch, separators.len())
        }
    };
    let payload = out.len() - start - HEADER_BYTES;
    assert!(
        payload <= PAGE_PAYLOAD,
        "a node of {payload} bytes does not fit a page"
    );
    out.resize(start + PAGE_BYTES, 0);
    seal_in_place(kind, entries as u16, page, payload, &mut out[start..]);
}

/// Appends a page to `out`: its header and checksum around `payload`.
fn seal_into(kind: PageKind, entries: u16, page: PageId, payload: &[u8], out: &mut Vec<u8>) {
    debug_assert!(payload.len() <= PAGE_PAYLOAD);
    let start = out.len();
    out.resize(start + HEADER_BYTES, 0);
    out.extend_from_slice(payload);
    out.resize(start + PAGE_BYTES, 0);
    seal_in_place(kind, entries, page, payload.len(), &mut out[start..]);
}

/// Fills the header of a page whose payload (of `length` bytes, zeros
/// after it) is in place, then its checksum.
fn seal_in_place(kind: PageKind, entries: u16, page: PageId, length: usize, out: &mut [u8]) {
    out[..HEADER_BYTES].fill(0);
    out[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    out[4] = kind as u8;
    out[6..8].copy_from_slice(&entries.to_le_bytes());
    out[8..16].copy_from_slice(&page.to_le_bytes());
    out[16..20].copy_from_slice(&(length as u32).to_le_bytes());
    let crc = crc32c::crc32c(out);
    out[20..24].copy_from_slice(&crc.to_le_bytes());
}

/// The checksum of a page, taken with its checksum field as zeros.
fn page_checksum(bytes: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&bytes[..20]);
    let crc = crc32c::crc32c_append(crc, &[0; 4]);
    crc32c::crc32c_append(crc, &bytes[24..])
}

/// Checks a page's header and checksum; returns its kind, entry count and
/// payload. The error says what is wrong.
pub fn open_page(bytes: &[u8], page: PageId) -> Result<(PageKind, u16, &[u8]), String> {
    if bytes.len() != PAGE_BYTES {
        return Err(format!("page is {} bytes", bytes.len()));
    }
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    if u32_at(0) != MAGIC {
        return Err("not a B-Tree page (bad magic)".into());
    }
    if page_checksum(bytes) != u32_at(20) {
        return Err("page checksum mismatch".into());
    }
    let stored_page = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    if stored_page != page {
        return Err(format!("page says it is page {stored_page}"));
    }
    let kind = match bytes[4] {
        1 => PageKind::Leaf,
        2 => PageKind::Branch,
        3 => PageKind::Overflow,
        4 => PageKind::Metadata,
        other => return Err(format!("unknown page kind {other}")),
    };
    let length = u32_at(16) as usize;
    if length > PAGE_PAYLOAD {
        return Err(format!("payload length {length} exceeds the page"));
    }
    let entries = u16::from_le_bytes([bytes[6], bytes[7]]);
    Ok((kind, entries, &bytes[HEADER_BYTES..HEADER_BYTES + length]))
}

/// Decodes a leaf or branch page read from `page`.
pub fn decode_node(bytes: &[u8], page: PageId) -> Result<Node, String> {
    let (kind, entries, payload) = open_page(bytes, page)?;
    let mut reader = Reader {
        bytes: payload,
        at: 0,
    };
    let node = match kind {
        PageKind::Leaf => {
            let mut out = Vec::with_capacity(entries as usize);
            for _ in 0..entries {
                let key = reader.key()?;
                let value = match reader.u8()? {
                    0 => {
                        let length = reader.u32()? as usize;
                        Value::Inline(Bytes::copy_from_slice(reader.take(length)?))
                    }
                    1 => Value::Overflow {
                        first: reader.u64()?,
                        pages: reader.u32()?,
                        length: reader.u32()?,
                    },
                    other => return Err(format!("unknown value tag {other}")),
                };
                out.push((key, value));
            }
            Node::Leaf(out)
        }
        PageKind::Branch => {
            let mut children = vec![Child::Page(reader.u64()?)];
            let mut separators = Vec::with_capacity(entries as usize);
            for _ in 0..entries {
                separators.push(reader.key()?);
                children.push(Child::Page(reader.u64()?));
            }
            Node::Branch {
                separators: separators.into(),
                children,
            }
        }
        other => return Err(format!("expected a leaf or branch page, found {other:?}")),
    };
    if reader.at != payload.len() {
        return Err("trailing bytes after the last entry".into());
    }
    Ok(node)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(count)
            .filter(|&end| end <= self.bytes.len())
            .ok_or("entry runs past the payload")?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn key(&mut self) -> Result<Bytes, String> {
        let length = u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes")) as usize;
        Ok(Bytes::copy_from_slice(self.take(length)?))
    }
}

/// A run's pages on their own (tests; checkpoints use [`encode_run_into`]).
#[cfg(test)]
pub fn encode_run(kind: PageKind, first: PageId, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(run_pages(value.len()) * PAGE_BYTES);
    encode_run_into(kind, first, value, &mut out);
    out
}

/// Splits `value` into sealed pages of a run starting at `first`,
/// appending them to `out`.
pub fn encode_run_into(kind: PageKind, first: PageId, value: &[u8], out: &mut Vec<u8>) {
    for index in 0..run_pages(value.len()) {
        let start = index * PAGE_PAYLOAD;
        let end = (start + PAGE_PAYLOAD).min(value.len());
        seal_into(kind, 0, first + index as u64, &value[start..end], out);
    }
}

/// Pages a run of `length` bytes takes (at least one).
pub fn run_pages(length: usize) -> usize {
    length.div_ceil(PAGE_PAYLOAD).max(1)
}

/// Reassembles a run read from `first`; `length` is what the referrer says.
pub fn decode_run(
    kind: PageKind,
    first: PageId,
    bytes: &[u8],
    length: usize,
) -> Result<Vec<u8>, (usize, String)> {
    let mut out = Vec::with_capacity(length);
    for (index, page) in bytes.chunks(PAGE_BYTES).enumerate() {
        let (found, _, payload) =
            open_page(page, first + index as u64).map_err(|error| (index, error))?;
        if found != kind {
            return Err((index, format!("expected a {kind:?} page, found {found:?}")));
        }
        out.extend_from_slice(payload);
    }
    if out.len() != length {
        return Err((
            0,
            format!("run holds {} bytes, its referrer says {length}", out.len()),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_leaf() -> Node {
        Node::Leaf(vec![
            (
                Bytes::from_static(b"alpha"),
                Value::Inline(Bytes::from_static(b"one")),
            ),
            (
                Bytes::from_static(b"beta"),
                Value::Overflow {
                    first: 40,
                    pages: 3,
                    length: 9000,
                },
            ),
            (Bytes::from_static(b""), Value::Inline(Bytes::new())),
        ])
    }

    #[test]
    fn nodes_round_trip() {
        let leaf = sample_leaf();
        let decoded = decode_node(&encode_node(&leaf, 7, 1024), 7).unwrap();
        let (Node::Leaf(expected), Node::Leaf(found)) = (&leaf, &decoded) else {
            panic!("a leaf")
        };
        assert_eq!(expected, found);
        let branch = Node::Branch {
            separators: vec![Bytes::from_static(b"m"), Bytes::from_static(b"t")].into(),
            children: vec![Child::Page(3), Child::Page(4), Child::Page(5)],
        };
        match decode_node(&encode_node(&branch, 9, 1024), 9).unwrap() {
            Node::Branch {
                separators,
                children,
            } => {
                assert_eq!(
                    *separators,
                    [Bytes::from_static(b"m"), Bytes::from_static(b"t")]
                );
                let pages: Vec<u64> = children
                    .iter()
                    .map(|child| match child {
                        Child::Page(page) => *page,
                        Child::Memory(_) => panic!("decoded children are pages"),
                    })
                    .collect();
                assert_eq!(pages, vec![3, 4, 5]);
            }
            Node::Leaf(_) => panic!("a branch"),
        }
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let page = encode_node(&sample_leaf(), 7, 1024);
        for bit in 0..PAGE_BYTES * 8 {
            let mut damaged = page.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(
                decode_node(&damaged, 7).is_err(),
                "flip of bit {bit} went unnoticed"
            );
        }
    }

    #[test]
    fn a_page_read_from_the_wrong_place_is_refused() {
        let page = encode_node(&sample_leaf(), 7, 1024);
        assert!(decode_node(&page, 8).unwrap_err().contains("page 7"));
    }

    #[test]
    fn runs_round_trip_and_check_their_length() {
        let value: Vec<u8> = (0..10_000u32).map(|index| index as u8).collect();
        let run = encode_run(PageKind::Overflow, 20, &value);
        assert_eq!(run.len(), run_pages(value.len()) * PAGE_BYTES);
        assert_eq!(
            decode_run(PageKind::Overflow, 20, &run, value.len()).unwrap(),
            value
        );
        assert!(decode_run(PageKind::Overflow, 21, &run, value.len()).is_err());
        assert!(decode_run(PageKind::Overflow, 20, &run, value.len() + 1).is_err());
        assert!(decode_run(PageKind::Metadata, 20, &run, value.len()).is_err());
    }
}
