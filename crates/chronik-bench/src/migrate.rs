//! `migrate-wal` speed: generates a v1 data directory at scale (v1's layout: WAL records of
//! bincode `CanonicalRecord`s that carry each batch three times, as v1 stores them; 128 MiB
//! files), then times `chronik-server migrate-wal` on it, in MB/s of v1 data.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use bytes::Bytes;
use chronik_migrate::v1::canonical::{CanonicalBatch, V1Record};
use chronik_migrate::v1::writer::{canonical, topic_created_event, wal_record};
use chronik_migrate::v2::{BatchFields, NewRecord, encode_batch};

/// v1 starts a new WAL file past this size.
const V1_ROTATION: u64 = 128 << 20;

#[derive(clap::Args)]
pub struct MigrateArgs {
    #[arg(long, default_value = "chronik-bench-data")]
    dir: PathBuf,
    /// MB (10^6 bytes) of v1 WAL data to generate.
    #[arg(long, default_value_t = 5000)]
    mb: u64,
    #[arg(long, default_value_t = 8)]
    partitions: u32,
    /// Records per batch and bytes per value.
    #[arg(long, default_value_t = 16)]
    batch_records: usize,
    #[arg(long, default_value_t = 1024)]
    value_bytes: usize,
    #[arg(long, default_value = "target/release/chronik-server")]
    server: PathBuf,
    /// Drop the page cache before the migration (needs root), so the input is read from disk.
    #[arg(long)]
    cold: bool,
}

pub fn run(args: MigrateArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir)?;
    let result = run_in(&args);
    let _ = std::fs::remove_dir_all(&args.dir);
    result
}

fn run_in(args: &MigrateArgs) -> anyhow::Result<()> {
    for (k, v) in crate::machine::describe(&args.dir) {
        println!("machine_{k}={v}");
    }
    let input = args.dir.join("v1");
    let started = Instant::now();
    let (bytes, records) = generate(args, &input)?;
    println!("migrate_generated_bytes={bytes} records={records} seconds={:.1}", started.elapsed().as_secs_f64());
    // By default from the page cache, as a migration right after v1 stopped would mostly read.
    if args.cold {
        let dropped =
            Command::new("sync").status()?.success() && std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok();
        println!("migrate_page_cache_dropped={dropped}");
    }
    let output = args.dir.join("out");
    let started = Instant::now();
    let out = Command::new(&args.server)
        .args(["migrate-wal", "--json", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .output()?;
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(out.status.success(), "migrate-wal failed: {}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    anyhow::ensure!(report["records"] == records, "migrated {} records of {records}", report["records"]);
    println!("migrate_seconds={seconds:.2}");
    println!("migrate_records_per_second={:.0}", records as f64 / seconds);
    println!("migrate_v1_mb_per_second={:.1}", bytes as f64 / 1e6 / seconds);
    Ok(())
}

/// Writes `args.mb` of v1 WAL data over `args.partitions` partitions of topic `bench`, and the
/// metadata event creating it; returns (bytes, records).
fn generate(args: &MigrateArgs, dir: &Path) -> anyhow::Result<(u64, u64)> {
    let meta = dir.join("metadata_wal/__chronik_metadata/0");
    std::fs::create_dir_all(&meta)?;
    let event = topic_created_event("bench", args.partitions, &[]);
    std::fs::write(meta.join("wal_0_0.log"), wal_record("__chronik_metadata", 0, &event, 0, 0))?;
    let per_partition = args.mb * 1_000_000 / u64::from(args.partitions);
    let (mut total, mut records) = (0u64, 0u64);
    for p in 0..args.partitions as i32 {
        let pdir = dir.join(format!("wal/bench/{p}"));
        std::fs::create_dir_all(&pdir)?;
        let (mut file_no, mut in_file, mut written, mut offset) = (0u32, 0u64, 0u64, 0i64);
        let mut file =
            std::io::BufWriter::with_capacity(4 << 20, std::fs::File::create(pdir.join(format!("wal_{p}_0.log")))?);
        while written < per_partition {
            let rec = wal_record(
                "bench",
                p,
                &canonical(&batch(args, offset)),
                offset,
                offset + args.batch_records as i64 - 1,
            );
            if in_file >= V1_ROTATION {
                file.flush()?;
                file_no += 1;
                in_file = 0;
                file = std::io::BufWriter::with_capacity(
                    4 << 20,
                    std::fs::File::create(pdir.join(format!("wal_{p}_{file_no}.log")))?,
                );
            }
            file.write_all(&rec)?;
            in_file += rec.len() as u64;
            written += rec.len() as u64;
            offset += args.batch_records as i64;
        }
        file.flush()?;
        total += written;
        records += offset as u64;
    }
    Ok((total, records))
}

/// A batch as v1 stores one from a librdkafka producer: the decoded records and the
/// producer's batch bytes (base offset stamped in).
fn batch(args: &MigrateArgs, base: i64) -> CanonicalBatch {
    let ts = 1_767_225_600_000 + base;
    let records: Vec<NewRecord> = (0..args.batch_records as i64)
        .map(|i| NewRecord {
            offset: base + i,
            timestamp: ts + i,
            key: Some(Bytes::from(format!("key-{}", (base + i) % 10_000))),
            value: Some(Bytes::from(vec![b'a' + ((base + i) % 26) as u8; args.value_bytes])),
            headers: vec![("trace".into(), Some(Bytes::from_static(b"t")))],
        })
        .collect();
    let wire = Bytes::from(encode_batch(BatchFields::PLAIN, &records));
    CanonicalBatch {
        base_offset: base,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
        is_transactional: false,
        is_control: false,
        compression: 0,
        timestamp_type: 0,
        base_timestamp: ts,
        max_timestamp: ts + args.batch_records as i64 - 1,
        records: records
            .into_iter()
            .map(|r| V1Record {
                offset: r.offset,
                timestamp: r.timestamp,
                key: r.key,
                value: r.value,
                headers: r.headers,
                attributes: 0,
            })
            .collect(),
        v1_wire: None,
        v2_wire: Some(wire),
    }
}
