//! `chronik-server debug wal-*`: read-only views of a WAL directory.

use std::path::{Path, PathBuf};

use anyhow::Context;
use chronik_wal::inspect;

/// Accepts either a WAL directory or a data directory containing `wal/`.
fn wal_dir(path: &Path) -> PathBuf {
    let nested = path.join("wal");
    if nested.is_dir() { nested } else { path.to_path_buf() }
}

pub fn dump(path: &Path, json: bool) -> anyhow::Result<()> {
    let dir = wal_dir(path);
    let mut out = std::io::stdout().lock();
    use std::io::Write;
    inspect::dump(&dir, |segment, records| {
        if json {
            for r in records {
                let _ = writeln!(out, "{}", serde_json::to_string(r).unwrap_or_default());
            }
            return;
        }
        let _ = writeln!(
            out,
            "# segment {} ({}) {} records, {}",
            segment.seq,
            segment.path.display(),
            segment.records,
            if segment.sealed { "sealed" } else { "unsealed" }
        );
        let _ = writeln!(
            out,
            "{:>10} {:<13} {:>8} {:>12} {:>8} {:>6} {:>4} {:>9}",
            "offset", "type", "group", "index", "term", "leader", "kind", "bytes"
        );
        for r in records {
            let _ = writeln!(
                out,
                "{:>10} {:<13} {:>8} {:>12} {:>8} {:>6} {:>4} {:>9}",
                r.offset, r.record_type, r.group, r.index, r.term, r.leader_id, r.entry_kind, r.payload_len
            );
        }
        if let Some(c) = &segment.corruption {
            let _ = writeln!(out, "CORRUPT at byte {}: {}", c.offset, c.reason);
        } else if let Some(t) = &segment.tail {
            let _ = writeln!(out, "valid records end at byte {}: {t}", segment.end);
        }
    })
    .with_context(|| format!("reading WAL in {}", dir.display()))
}

/// Returns the process exit code (0 clean, 2 torn tail only, 1 corruption).
pub fn verify(path: &Path, json: bool) -> anyhow::Result<i32> {
    let dir = wal_dir(path);
    let report = inspect::verify(&dir).with_context(|| format!("reading WAL in {}", dir.display()))?;
    let code = if !report.problems.is_empty() {
        1
    } else if report.torn_tail.is_some() {
        2
    } else {
        0
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(code);
    }
    let records: u64 = report.segments.iter().map(|s| s.records).sum();
    println!("{} segments, {} records checked in {}", report.segments.len(), records, dir.display());
    for p in &report.problems {
        println!("CORRUPT: {} at byte {}: {}", p.path.display(), p.offset, p.reason);
    }
    if let Some(t) = &report.torn_tail {
        println!(
            "torn tail: {} at byte {}: {} (recovery truncates the log here)",
            t.path.display(),
            t.offset,
            t.reason
        );
    }
    if code == 0 {
        println!("OK");
    }
    Ok(code)
}

pub fn stats(path: &Path, json: bool) -> anyhow::Result<()> {
    let dir = wal_dir(path);
    let s = inspect::stats(&dir).with_context(|| format!("reading WAL in {}", dir.display()))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    println!(
        "segments: {} ({} sealed), {} retired files awaiting reuse",
        s.segments, s.sealed_segments, s.retired_files
    );
    println!("disk bytes: {}, record bytes: {}", s.disk_bytes, s.record_bytes);
    for (t, n) in &s.records_by_type {
        println!("records {t}: {n}");
    }
    println!("groups: {}", s.groups.len());
    for (g, gs) in &s.groups {
        println!(
            "  group {g}: entries {} [{}..{}], last purged {}",
            gs.entries,
            gs.first_index.map_or("-".into(), |v| v.to_string()),
            gs.last_index.map_or("-".into(), |v| v.to_string()),
            gs.last_purged_index.map_or("-".into(), |v| v.to_string())
        );
    }
    Ok(())
}
