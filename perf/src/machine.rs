//! What the machine under test is, and its own storage limits, measured at
//! the start of every run so each figure can be read against them.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Instant;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

fn first_line(path: &str) -> String {
    fs::read_to_string(path)
        .map(|text| text.lines().next().unwrap_or("").trim().to_owned())
        .unwrap_or_default()
}

/// The mount (device and file system type) that holds `path`.
fn mount_of(path: &Path) -> (String, String) {
    let path = fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    let mut best = (0, String::new(), String::new());
    for line in mounts.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() >= 3 && path.starts_with(fields[1]) && fields[1].len() >= best.0 {
            best = (fields[1].len(), fields[0].to_owned(), fields[2].to_owned());
        }
    }
    (best.1, best.2)
}

pub fn describe(directory: &Path) -> Value {
    let memory_kib: u64 = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|line| line.starts_with("MemTotal:"))
                .map(|line| line.to_owned())
        })
        .and_then(|line| {
            line.split_whitespace()
                .nth(1)
                .and_then(|value| value.parse().ok())
        })
        .unwrap_or(0);
    let (device, file_system) = mount_of(directory);
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|line| line.starts_with("model name"))
                .map(|line| line.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    json!({
        "cores": std::thread::available_parallelism().map_or(1, |count| count.get()),
        "cpu": cpu,
        "memory_gib": (memory_kib as f64 / 1048576.0 * 10.0).round() / 10.0,
        "kernel": first_line("/proc/sys/kernel/osrelease"),
        "device": device,
        "file_system": file_system,
    })
}

/// fdatasync latency after a 4 KiB overwrite, back to back.
pub fn fdatasync_latency(directory: &Path, samples: usize) -> Histogram<u64> {
    let path = directory.join("fdatasync-probe");
    let mut file = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)
        .expect("probe file");
    let block = vec![7u8; 4096];
    file.write_all(&block).expect("probe write");
    file.sync_all().expect("probe sync");
    let mut histogram = Histogram::new(3).expect("histogram");
    for _ in 0..samples {
        use std::os::unix::fs::FileExt;
        file.write_all_at(&block, 0).expect("probe write");
        let started = Instant::now();
        file.sync_data().expect("probe fdatasync");
        histogram
            .record(started.elapsed().as_nanos() as u64)
            .expect("record");
    }
    let _ = fs::remove_file(&path);
    histogram
}

/// Sequential O_DIRECT write then read bandwidth with 1 MiB blocks, MB/s.
pub fn direct_io_bandwidth(directory: &Path, total_mib: usize) -> (f64, f64) {
    let path = directory.join("direct-io-probe");
    let layout = std::alloc::Layout::from_size_align(1 << 20, 4096).expect("layout");
    // SAFETY: the layout has a non-zero size; the buffer is freed below.
    let buffer = unsafe { std::alloc::alloc_zeroed(layout) };
    assert!(!buffer.is_null(), "allocation failed");
    // SAFETY: `buffer` points to `layout.size()` initialised bytes.
    let slice = unsafe { std::slice::from_raw_parts_mut(buffer, layout.size()) };
    let file = fs::OpenOptions::new()
        .create(true)
        .read(true)
        .write(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .expect("direct-I/O probe file");
    use std::os::unix::fs::FileExt;
    let started = Instant::now();
    for index in 0..total_mib {
        file.write_all_at(slice, (index << 20) as u64)
            .expect("direct write");
    }
    file.sync_data().expect("sync");
    let write = total_mib as f64 * 1.048576 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    for index in 0..total_mib {
        file.read_exact_at(slice, (index << 20) as u64)
            .expect("direct read");
    }
    let read = total_mib as f64 * 1.048576 / started.elapsed().as_secs_f64();
    // SAFETY: allocated above with the same layout.
    unsafe { std::alloc::dealloc(buffer, layout) };
    let _ = fs::remove_file(&path);
    (write, read)
}
