//! Counters a partition keeps for metrics: fixed-bucket histograms cheap
//! enough for the write path (an increment, no allocation), read out by the
//! layers above and exported there.

/// Upper bounds of the fdatasync latency buckets, in seconds.
pub const SYNC_SECONDS_BOUNDS: [f64; 14] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// Upper bounds of the group-commit buckets: WAL records made durable by
/// one flush.
pub const GROUP_COMMIT_BOUNDS: [f64; 11] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// A histogram with fixed bucket bounds: counts per bucket (the last for
/// values above every bound), their sum and their number.
#[derive(Clone, Debug)]
pub struct FixedHistogram<const N: usize> {
    pub bounds: [f64; N],
    /// `counts[i]` counts values in (bounds[i-1], bounds[i]]; `counts[N]`
    /// the rest. Not cumulative.
    pub counts: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

impl<const N: usize> FixedHistogram<N> {
    pub fn new(bounds: [f64; N]) -> Self {
        FixedHistogram {
            bounds,
            counts: vec![0; N + 1],
            sum: 0.0,
            count: 0,
        }
    }

    pub fn observe(&mut self, value: f64) {
        let bucket = self
            .bounds
            .iter()
            .position(|bound| value <= *bound)
            .unwrap_or(N);
        self.counts[bucket] += 1;
        self.sum += value;
        self.count += 1;
    }

    /// Adds another histogram with the same bounds.
    pub fn merge(&mut self, other: &FixedHistogram<N>) {
        for (count, other) in self.counts.iter_mut().zip(&other.counts) {
            *count += other;
        }
        self.sum += other.sum;
        self.count += other.count;
    }
}

/// What one partition reports.
#[derive(Clone, Debug)]
pub struct PartitionStats {
    pub wal_bytes_written: u64,
    pub wal_flushes: u64,
    pub sync_seconds: FixedHistogram<14>,
    pub group_commit_records: FixedHistogram<11>,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub cached_bytes: u64,
    /// Partitions stopped by a failed write or sync (they refuse writes
    /// until a restart recovers them).
    pub poisoned_partitions: u64,
}

impl Default for PartitionStats {
    fn default() -> Self {
        PartitionStats {
            wal_bytes_written: 0,
            wal_flushes: 0,
            sync_seconds: FixedHistogram::new(SYNC_SECONDS_BOUNDS),
            group_commit_records: FixedHistogram::new(GROUP_COMMIT_BOUNDS),
            cache_hits: 0,
            cache_misses: 0,
            cached_bytes: 0,
            poisoned_partitions: 0,
        }
    }
}

impl PartitionStats {
    /// Adds another partition's figures.
    pub fn merge(&mut self, other: &PartitionStats) {
        self.wal_bytes_written += other.wal_bytes_written;
        self.wal_flushes += other.wal_flushes;
        self.sync_seconds.merge(&other.sync_seconds);
        self.group_commit_records.merge(&other.group_commit_records);
        self.cache_hits += other.cache_hits;
        self.cache_misses += other.cache_misses;
        self.cached_bytes += other.cached_bytes;
        self.poisoned_partitions += other.poisoned_partitions;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_land_in_the_first_bucket_whose_bound_holds_them() {
        let mut histogram = FixedHistogram::new([1.0, 2.0, 4.0]);
        for value in [0.5, 1.0, 1.5, 4.0, 9.0] {
            histogram.observe(value);
        }
        assert_eq!(histogram.counts, vec![2, 1, 1, 1]);
        assert_eq!(histogram.count, 5);
        assert_eq!(histogram.sum, 16.0);
        let mut total = histogram.clone();
        total.merge(&histogram);
        assert_eq!(total.counts, vec![4, 2, 2, 2]);
    }
}
