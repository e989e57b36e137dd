//! The raw disk, measured the way the WAL uses it, so the WAL's figures have a same-run baseline.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

use crate::stats::Latencies;

const MIB: usize = 1 << 20;

fn prewritten(path: &Path, size: usize) -> std::io::Result<File> {
    let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path)?;
    let zeros = vec![0u8; MIB];
    for off in (0..size).step_by(MIB) {
        file.write_all_at(&zeros, off as u64)?;
    }
    file.sync_all()?;
    Ok(file)
}

/// MB/s (10^6 bytes) of sequential 1 MiB writes into a pre-written file, fdatasync after each.
pub fn fdatasync_per_mib_mbps(dir: &Path, file_mib: usize, passes: usize) -> std::io::Result<f64> {
    let path = dir.join("raw-disk.bin");
    let file = prewritten(&path, file_mib * MIB)?;
    let buf: Vec<u8> = (0..MIB).map(|i| (i * 7) as u8).collect();
    let start = Instant::now();
    for _ in 0..passes {
        for off in (0..file_mib * MIB).step_by(MIB) {
            file.write_all_at(&buf, off as u64)?;
            file.sync_data()?;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    std::fs::remove_file(&path)?;
    Ok((file_mib * passes * MIB) as f64 / 1e6 / secs)
}

/// p50 and p99 (ms) of a 4 KiB write followed by fdatasync, into a pre-written file.
pub fn small_fdatasync_latency(dir: &Path, samples: usize) -> std::io::Result<(f64, f64)> {
    let path = dir.join("raw-4k.bin");
    let file = prewritten(&path, 64 * MIB)?;
    let buf = vec![0x5au8; 4096];
    let mut lat = Latencies::default();
    for i in 0..samples {
        let t = Instant::now();
        file.write_all_at(&buf, ((i * 4096) % (64 * MIB)) as u64)?;
        file.sync_data()?;
        lat.push(t.elapsed().as_micros() as u64);
    }
    std::fs::remove_file(&path)?;
    Ok((lat.percentile_ms(50.0), lat.percentile_ms(99.0)))
}

/// Bytes free for an unprivileged writer on the file system holding `dir` (0 if unknown).
pub fn free_bytes(dir: &Path) -> u64 {
    let out = std::process::Command::new("df").args(["--output=avail", "-B1"]).arg(dir).output();
    out.ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().nth(1).and_then(|l| l.trim().parse().ok()))
        .unwrap_or(0)
}
