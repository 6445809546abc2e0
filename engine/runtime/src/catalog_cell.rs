//! The catalog as every thread reads it: without a lock shared between
//! cores.
//!
//! Every query looks up its table (and, for users other than `admin`, its
//! user) in the catalog. Behind a plain `RwLock`, each of those lookups
//! writes the lock's reader count, a cache line every core then takes in
//! turn. Catalog changes are rare (DDL, grants), so each thread keeps its
//! own copy (an `Arc` of an immutable snapshot) and a version number tells
//! it when the copy is stale: reading the version touches a line nobody
//! writes between changes, which every core can hold at once.
//!
//! A change takes the lock, edits the snapshot (copying it when threads
//! still hold the old one) and bumps the version before it lets go; so a
//! thread that sees the new version and takes the lock finds the new
//! snapshot, and a version is never paired with an older catalog.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::engine::Catalog;

/// Tells the catalogs of different engines in one process apart (tests run
/// many), so a thread's copy is never taken for another engine's.
static NEXT_CELL: AtomicU64 = AtomicU64::new(0);

pub(crate) struct CatalogCell {
    cell: u64,
    version: AtomicU64,
    current: RwLock<Arc<Catalog>>,
}

struct ThreadCopy {
    cell: u64,
    version: u64,
    catalog: Arc<Catalog>,
}

thread_local! {
    static COPY: RefCell<Option<ThreadCopy>> = const { RefCell::new(None) };
}

impl Default for CatalogCell {
    fn default() -> Self {
        CatalogCell {
            cell: NEXT_CELL.fetch_add(1, Ordering::Relaxed),
            version: AtomicU64::new(0),
            current: RwLock::new(Arc::new(Catalog::default())),
        }
    }
}

impl CatalogCell {
    /// Runs `read` on the current catalog through this thread's copy,
    /// refreshed first if a change was made since it was taken.
    pub fn with<R>(&self, read: impl FnOnce(&Catalog) -> R) -> R {
        let version = self.version.load(Ordering::Acquire);
        COPY.with(|copy| {
            let Ok(mut copy) = copy.try_borrow_mut() else {
                // A read inside another read of this thread: go to the lock.
                return read(&self.read());
            };
            let fresh = copy
                .as_ref()
                .is_some_and(|copy| copy.cell == self.cell && copy.version == version);
            if !fresh {
                *copy = Some(ThreadCopy {
                    cell: self.cell,
                    version,
                    catalog: self.read().clone(),
                });
            }
            read(&copy.as_ref().expect("refreshed above").catalog)
        })
    }

    /// The catalog under its lock, for reads that are not on a query's
    /// path (DDL, startup, index builds).
    pub fn read(&self) -> RwLockReadGuard<'_, Arc<Catalog>> {
        self.current.read().expect("catalog lock")
    }

    /// The catalog to change; the change is visible to every thread once
    /// the returned guard is dropped.
    pub fn write(&self) -> CatalogWrite<'_> {
        CatalogWrite {
            current: self.current.write().expect("catalog lock"),
            version: &self.version,
        }
    }
}

pub(crate) struct CatalogWrite<'a> {
    current: RwLockWriteGuard<'a, Arc<Catalog>>,
    version: &'a AtomicU64,
}

impl Deref for CatalogWrite<'_> {
    type Target = Catalog;

    fn deref(&self) -> &Catalog {
        &self.current
    }
}

impl DerefMut for CatalogWrite<'_> {
    fn deref_mut(&mut self) -> &mut Catalog {
        // Copies the snapshot if any thread still holds it.
        Arc::make_mut(&mut self.current)
    }
}

impl Drop for CatalogWrite<'_> {
    fn drop(&mut self) {
        // Before the lock is released (fields drop after this body).
        self.version.fetch_add(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use photondb_storage::catalog::DatabaseConfig;

    fn database(name: &str, id: u128) -> DatabaseConfig {
        DatabaseConfig {
            id,
            name: name.into(),
        }
    }

    #[test]
    fn every_thread_sees_a_change_once_it_is_made() {
        let cell = Arc::new(CatalogCell::default());
        assert!(cell.with(|catalog| catalog.databases.is_empty()));
        for round in 0..50u128 {
            cell.write()
                .databases
                .insert(format!("db{round}"), database(&format!("db{round}"), round));
            let expected = round as usize + 1;
            assert_eq!(cell.with(|catalog| catalog.databases.len()), expected);
            let other = cell.clone();
            let seen = std::thread::spawn(move || {
                (
                    other.with(|catalog| catalog.databases.len()),
                    other.with(|catalog| catalog.databases.len()),
                )
            })
            .join()
            .unwrap();
            assert_eq!(seen, (expected, expected));
        }
    }

    #[test]
    fn two_engines_on_one_thread_keep_their_own_catalogs() {
        let (first, second) = (CatalogCell::default(), CatalogCell::default());
        first.write().databases.insert("a".into(), database("a", 1));
        second
            .write()
            .databases
            .insert("b".into(), database("b", 2));
        second
            .write()
            .databases
            .insert("c".into(), database("c", 3));
        assert_eq!(first.with(|catalog| catalog.databases.len()), 1);
        assert_eq!(second.with(|catalog| catalog.databases.len()), 2);
        // The first engine at the version of the copy the thread now holds,
        // the second's: that copy is not taken for the first's.
        {
            let mut change = first.write();
            change.databases.insert("d".into(), database("d", 4));
            change.databases.insert("e".into(), database("e", 5));
        }
        assert_eq!(first.with(|catalog| catalog.databases.len()), 3);
        assert_eq!(second.with(|catalog| catalog.databases.len()), 2);
    }

    #[test]
    fn a_read_inside_a_read_sees_the_same_catalog() {
        let cell = CatalogCell::default();
        cell.write().databases.insert("a".into(), database("a", 1));
        let nested = cell.with(|outer| {
            (
                outer.databases.len(),
                cell.with(|inner| inner.databases.len()),
            )
        });
        assert_eq!(nested, (1, 1));
    }
}
