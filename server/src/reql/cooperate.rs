//! Cooperative scheduling inside long evaluations.
//!
//! Shards run many queries as tasks on one thread; a task that computes for
//! a long time without awaiting I/O would hold up every other query of the
//! core. Loops over rows call [`Budget::tick`], which yields to the
//! executor every `ROWS_PER_SLICE` rows.

const ROWS_PER_SLICE: u32 = 256;

#[derive(Clone, Debug, Default)]
pub struct Budget {
    rows: u32,
}

impl Budget {
    pub async fn tick(&mut self) {
        self.rows += 1;
        if self.rows >= ROWS_PER_SLICE {
            self.rows = 0;
            yield_now().await;
        }
    }
}

pub use photondb_storage::yield_now;
