//! What the benchmark ran on, printed with every run (docs/BENCHMARKS.md records it).

use std::path::Path;

pub fn describe(dir: &Path) -> Vec<(String, String)> {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().next().and_then(|l| l.split_whitespace().nth(1)).and_then(|kb| kb.parse::<f64>().ok()))
        .map(|kb| format!("{:.1}", kb / 1024.0 / 1024.0))
        .unwrap_or_else(|| "unknown".into());
    let kernel =
        std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_default();
    vec![
        ("machine_cpu".into(), cpu),
        ("machine_cores".into(), cores.to_string()),
        ("machine_mem_gib".into(), mem_gib),
        ("machine_kernel".into(), kernel),
        ("machine_fs".into(), filesystem_of(dir)),
    ]
}

/// The filesystem type and device holding `dir`, from /proc/self/mounts (longest mount prefix).
fn filesystem_of(dir: &Path) -> String {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3 && dir.starts_with(f[1])).then(|| (f[1].len(), format!("{} on {} ({})", f[2], f[1], f[0])))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, s)| s)
        .unwrap_or_else(|| "unknown".into())
}

/// Writes to `gib` GiB of fresh memory, then frees it; returns the seconds that took.
///
/// On a virtual machine whose memory the host backs lazily (as here), the first write to each
/// guest page traps to the host: measured here at about 3 s of system time per GiB. Touching
/// the memory first spares the broker that cost, but only for a while: this VM's kernel hands
/// free memory back to the host, and memory freed 5 s earlier measured as costly as untouched
/// memory (docs/BENCHMARKS.md).
pub fn prewarm_memory(gib: u64) -> f64 {
    let started = std::time::Instant::now();
    let mut chunks = Vec::new();
    for _ in 0..gib {
        // Not zeros: a zeroed allocation comes from untouched pages the kernel maps lazily.
        chunks.push(std::hint::black_box(vec![1u8; 1 << 30]));
    }
    drop(chunks);
    started.elapsed().as_secs_f64()
}
