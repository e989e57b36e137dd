//! Clean restarts under a workload that recycles segments: every open finds exactly the log
//! that was closed, warns about nothing and discards nothing. (Recycled segments hold their
//! previous life's bytes after the last record; recovery must know where the log ends without
//! tripping over them.)

mod common;

use common::*;

#[test]
fn clean_restarts_with_recycled_segments_warn_about_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let len = 4000;
    let mut next = 1u64;
    let mut recycled = 0;
    for round in 0..10 {
        let (wal, report) = chronik_wal::Wal::open(dir.path(), small_opts()).unwrap();
        assert!(report.warnings.is_empty(), "round {round}: {:?}", report.warnings);
        assert!(report.torn_tail.is_none(), "round {round}: {:?}", report.torn_tail);
        if next > 1 {
            let first = wal.group_info(1).unwrap().first_index.unwrap();
            assert_entries(&wal, 1, first, next - 1, len);
        }
        // About two segments of entries, then everything but the last few purged and collected,
        // so retired segments come back as spares.
        append_durable(&wal, 1, next..next + 120, len);
        next += 120;
        wal.purge(1, pos(next - 5)).unwrap();
        wal.sync().unwrap();
        for _ in 0..5 {
            wal.collect_garbage().unwrap();
        }
        recycled += wal.stats().segments_retired;
        wal.close().unwrap();
    }
    assert!(recycled >= 10, "the workload recycled segments ({recycled} retired)");
}
