//! A branch's separator keys, with an index that searches them without
//! reading them.
//!
//! Every lookup, insert and delete searches one branch per level for the
//! child holding its key. Comparing the keys themselves costs a pointer
//! chase and a `memcmp` call per probe, into bytes scattered over a page
//! buffer or separate allocations: in a profile of YCSB C it was a sixth of
//! the server's user time. So beside the keys sits, per key, a `head`: the
//! eight bytes that follow the prefix every key of the branch shares, as a
//! big-endian integer (zero-padded when the key is shorter). The search
//! compares integers in one contiguous array and reads a key only when its
//! head ties the searched key's.
//!
//! Why a head decides: if two keys share the prefix and their zero-padded
//! next eight bytes differ, the keys compare as those bytes do. Where they
//! first differ either both keys have a real byte, or the shorter key has
//! ended there (a padding zero against a larger byte), so it is a prefix of
//! the other and sorts first. Equal heads decide nothing.
//!
//! The prefix only needs to be common to every key, not the longest: an
//! insert of a key outside it recomputes the index, other changes keep it.

use std::ops::Deref;

use bytes::Bytes;

/// A branch's separators in key order, searchable by [`Separators::child_index`].
/// Reads go through `Deref` to the key slice; changes go through the
/// methods here, which keep the index in step.
#[derive(Clone, Debug, Default)]
pub struct Separators {
    keys: Vec<Bytes>,
    /// How many leading bytes every key shares (with `keys[0]`).
    prefix: usize,
    /// `heads[i]`: `keys[i]`'s eight bytes after the prefix.
    heads: Vec<u64>,
}

/// `key`'s eight bytes after `prefix`, zero-padded, as a big-endian integer.
fn head(key: &[u8], prefix: usize) -> u64 {
    let rest = key.get(prefix..).unwrap_or(&[]);
    let mut bytes = [0u8; 8];
    let taken = rest.len().min(8);
    bytes[..taken].copy_from_slice(&rest[..taken]);
    u64::from_be_bytes(bytes)
}

fn common_prefix(first: &[u8], second: &[u8]) -> usize {
    first
        .iter()
        .zip(second)
        .take_while(|(left, right)| left == right)
        .count()
}

impl From<Vec<Bytes>> for Separators {
    fn from(keys: Vec<Bytes>) -> Separators {
        let mut separators = Separators {
            keys,
            prefix: 0,
            heads: Vec::new(),
        };
        separators.reindex();
        separators
    }
}

impl Deref for Separators {
    type Target = [Bytes];

    fn deref(&self) -> &[Bytes] {
        &self.keys
    }
}

impl Separators {
    /// Recomputes the prefix (keys are sorted, so what the first and last
    /// share every key shares) and every head.
    fn reindex(&mut self) {
        self.prefix = match (self.keys.first(), self.keys.last()) {
            (Some(first), Some(last)) => common_prefix(first, last),
            _ => 0,
        };
        let prefix = self.prefix;
        self.heads.clear();
        self.heads
            .extend(self.keys.iter().map(|key| head(key, prefix)));
    }

    /// Which child holds `key`: how many separators are `<= key`.
    pub fn child_index(&self, key: &[u8]) -> usize {
        let Some(first) = self.keys.first() else {
            return 0;
        };
        let shared = &first[..self.prefix];
        match key.get(..self.prefix) {
            Some(start) if start == shared => {}
            // Past the prefix on the first differing byte: every key is
            // below; otherwise (below it, or a prefix of it) every key is
            // above.
            _ => return if key > shared { self.keys.len() } else { 0 },
        }
        let target = head(key, self.prefix);
        let (mut low, mut high) = (0, self.keys.len());
        while low < high {
            let middle = low + (high - low) / 2;
            let probe = self.heads[middle];
            let at_or_below =
                probe < target || (probe == target && self.keys[middle].as_ref() <= key);
            if at_or_below {
                low = middle + 1;
            } else {
                high = middle;
            }
        }
        low
    }

    pub fn insert(&mut self, index: usize, key: Bytes) {
        let shares_prefix = match self.keys.first() {
            Some(first) => key.get(..self.prefix) == Some(&first[..self.prefix]),
            None => false,
        };
        self.keys.insert(index, key);
        if shares_prefix {
            let head = head(&self.keys[index], self.prefix);
            self.heads.insert(index, head);
        } else {
            self.reindex();
        }
    }

    pub fn remove(&mut self, index: usize) -> Bytes {
        self.heads.remove(index);
        self.keys.remove(index)
    }

    pub fn pop(&mut self) -> Option<Bytes> {
        self.heads.pop();
        self.keys.pop()
    }

    /// Keeps the first `at` separators and returns the rest; each half gets
    /// its own (longer, so more telling) prefix.
    pub fn split_off(&mut self, at: usize) -> Separators {
        let right = Separators::from(self.keys.split_off(at));
        self.reindex();
        right
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What `child_index` must equal: the plain search over the keys.
    fn model_index(keys: &[Bytes], key: &[u8]) -> usize {
        keys.partition_point(|separator| separator.as_ref() <= key)
    }

    /// Keys from a small alphabet with zero bytes and shared prefixes, so
    /// that heads tie, keys end inside a head and some keys are prefixes of
    /// others.
    fn key() -> impl Strategy<Value = Vec<u8>> {
        (
            prop_oneof![
                Just(vec![]),
                Just(vec![7u8, 1, 2, 3, 4, 5]),
                Just(vec![7u8, 1])
            ],
            proptest::collection::vec(
                prop_oneof![Just(0u8), Just(1u8), Just(7u8), Just(255u8)],
                0..14,
            ),
        )
            .prop_map(|(mut prefix, rest)| {
                prefix.extend(rest);
                prefix
            })
    }

    #[derive(Debug, Clone)]
    enum Change {
        Insert(Vec<u8>),
        Remove(usize),
        Pop,
        SplitOff(usize),
    }

    fn change() -> impl Strategy<Value = Change> {
        prop_oneof![
            4 => key().prop_map(Change::Insert),
            1 => any::<usize>().prop_map(Change::Remove),
            1 => Just(Change::Pop),
            1 => any::<usize>().prop_map(Change::SplitOff),
        ]
    }

    fn check(separators: &Separators, model: &[Bytes], probes: &[Vec<u8>]) {
        assert_eq!(&**separators, model);
        for probe in probes.iter().chain(
            model
                .iter()
                .map(|key| key.to_vec())
                .collect::<Vec<_>>()
                .iter(),
        ) {
            assert_eq!(
                separators.child_index(probe),
                model_index(model, probe),
                "probe {probe:?} in {model:?} (prefix {})",
                separators.prefix
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// After any series of changes, the indexed search finds the same
        /// child as comparing every key would, for keys inside, between and
        /// outside the separators.
        #[test]
        fn child_index_matches_a_plain_search(
            initial in proptest::collection::btree_set(key(), 0..40),
            changes in proptest::collection::vec(change(), 0..40),
            probes in proptest::collection::vec(key(), 1..30),
        ) {
            let mut model: Vec<Bytes> = initial.into_iter().map(Bytes::from).collect();
            let mut separators = Separators::from(model.clone());
            check(&separators, &model, &probes);
            for change in changes {
                match change {
                    Change::Insert(key) => {
                        let key = Bytes::from(key);
                        if let Err(index) = model.binary_search(&key) {
                            model.insert(index, key.clone());
                            separators.insert(index, key);
                        }
                    }
                    Change::Remove(index) if !model.is_empty() => {
                        let index = index % model.len();
                        prop_assert_eq!(separators.remove(index), model.remove(index));
                    }
                    Change::Pop => prop_assert_eq!(separators.pop(), model.pop()),
                    Change::SplitOff(at) => {
                        let at = at % (model.len() + 1);
                        let right_model = model.split_off(at);
                        let right = separators.split_off(at);
                        check(&right, &right_model, &probes);
                    }
                    Change::Remove(_) => {}
                }
                check(&separators, &model, &probes);
            }
        }
    }

    #[test]
    fn a_key_below_or_above_the_shared_prefix_goes_to_an_end() {
        let separators = Separators::from(vec![
            Bytes::from_static(b"table1/user10"),
            Bytes::from_static(b"table1/user20"),
        ]);
        assert_eq!(separators.prefix, 11);
        assert_eq!(separators.child_index(b"table0/zzz"), 0);
        assert_eq!(separators.child_index(b"table1"), 0);
        assert_eq!(separators.child_index(b"table1/user"), 0);
        assert_eq!(separators.child_index(b"table1/user15"), 1);
        assert_eq!(separators.child_index(b"table1/user2"), 1);
        assert_eq!(separators.child_index(b"table1/user20"), 2);
        assert_eq!(separators.child_index(b"table2"), 2);
    }
}
