//! The YCSB benchmark runs end to end at a toy size: PhotonDB and a
//! throwaway PostgreSQL cluster started and stopped by it, every workload,
//! the analytics (whose counts the two peers must agree on), the report.
//! No figure is checked: timing belongs to the benchmark itself.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn every_workload_runs_against_both_peers() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let server = std::env::var("PHOTONDB_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target/debug/photondb"));
    assert!(
        server.exists(),
        "build the server first (cargo build -p photondb): {}",
        server.display()
    );
    let scratch = tempfile::tempdir().expect("scratch directory");
    let report = scratch.path().join("report.md");
    let output = Command::new(env!("CARGO_BIN_EXE_ycsb-bench"))
        .args([
            "--records",
            "3000",
            "--threads",
            "2",
            "--seconds",
            "1",
            "--batch",
            "500",
            "--cache-mib",
            "64",
        ])
        .args(["--workloads", "a,b,c,d,e,f", "--durability", "hard"])
        .arg("--binary")
        .arg(&server)
        .arg("--directory")
        .arg(scratch.path())
        .arg("--output")
        .arg(&report)
        .output()
        .expect("run ycsb-bench");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "ycsb-bench failed:\n{stderr}");
    let text = std::fs::read_to_string(&report).expect("the report");
    for workload in ["A (", "B (", "C (", "D (", "E (", "F ("] {
        assert!(
            text.contains(&format!("| {workload}")),
            "no row for workload {workload} in:\n{text}"
        );
    }
    assert!(text.contains("filtered count over"), "{text}");
    let results: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(report.with_extension("json")).expect("the JSON twin"),
    )
    .expect("JSON");
    assert_eq!(results["group_count_seconds"]["groups"], 100);
    for row in results["workloads"].as_array().expect("workloads") {
        assert!(row["photondb"]["operations"].as_u64().unwrap() > 0, "{row}");
        assert!(row["postgres"]["operations"].as_u64().unwrap() > 0, "{row}");
        // A second of queries costs each side's processes some CPU: zero
        // would mean the wrong processes were read.
        for peer in ["photondb", "postgres"] {
            for side in ["server_cpu_seconds", "client_cpu_seconds"] {
                assert!(
                    row[peer][side].as_f64().unwrap() > 0.0,
                    "{peer} {side}: {row}"
                );
            }
        }
    }
    assert!(text.contains("CPU per operation"), "{text}");
}
