//! The page-cache window: full segments behind it leave the page cache, and what left it still
//! reads back intact (from the file).
// Unsafe: mincore(2) and sysconf(3) have no std wrapper; this test needs them to see page residency.
#![allow(unsafe_code)]

mod common;

use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

use chronik_wal::{Wal, WalOptions};
use common::*;

/// Pages of `path` resident in the page cache, and its page count (mincore on a fresh mapping).
fn resident_pages(path: &Path) -> (usize, usize) {
    let file = File::open(path).unwrap();
    // SAFETY: a read-only mapping of a file nothing writes while the test looks at it.
    let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
    // SAFETY: sysconf only reads a system value.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    let pages = map.len().div_ceil(page);
    let mut vec = vec![0u8; pages];
    // SAFETY: `vec` holds one byte per page of the mapping, as mincore requires.
    let r = unsafe { libc::mincore(map.as_ptr() as *mut libc::c_void, map.len(), vec.as_mut_ptr()) };
    assert_eq!(r, 0, "mincore: {}", std::io::Error::last_os_error());
    (vec.iter().filter(|v| **v & 1 == 1).count(), pages)
}

fn segment_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| chronik_wal::segment::parse_segment_file_name(p.file_name().unwrap().to_str().unwrap()).is_some())
        .collect();
    files.sort();
    files
}

#[test]
fn segments_behind_the_window_leave_the_page_cache_and_still_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let opts = WalOptions { page_cache_window: Some(256 * 1024), ..small_opts() };
    let (wal, _) = Wal::open(dir.path(), opts).unwrap();
    // About 2.5 MiB: ten 256 KiB segments, all but the newest two well behind the window.
    for chunk in 0..50u64 {
        append_durable(&wal, 1, chunk * 50 + 1..chunk * 50 + 51, 1000);
    }
    // Read everything once, so the oldest pages are also mapped by this process.
    assert_entries(&wal, 1, 1, 2500, 1000);

    let deadline = Instant::now() + Duration::from_secs(10);
    while wal.stats().cache_bytes_dropped < 1 << 20 {
        assert!(Instant::now() < deadline, "nothing dropped: {:?}", wal.stats());
        std::thread::sleep(Duration::from_millis(50));
    }
    let oldest = &segment_files(dir.path())[0];
    let (resident, pages) = resident_pages(oldest);
    assert!(resident <= 1, "{resident} of {pages} pages of {} still cached", oldest.display());

    // Dropped from the cache, not from the log.
    assert_entries(&wal, 1, 1, 2500, 1000);
    drop(wal);
    let (wal, _) = Wal::open(dir.path(), small_opts()).unwrap();
    assert_entries(&wal, 1, 1, 2500, 1000);
}

#[test]
fn without_a_window_nothing_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let wal = open(dir.path());
    for chunk in 0..20u64 {
        append_durable(&wal, 1, chunk * 50 + 1..chunk * 50 + 51, 1000);
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(wal.stats().cache_bytes_dropped, 0);
    let oldest = &segment_files(dir.path())[0];
    let (resident, pages) = resident_pages(oldest);
    assert!(resident > pages / 2, "only {resident} of {pages} pages cached");
}

#[test]
fn a_record_length_damaged_on_disk_is_a_corrupt_error_not_a_huge_read() {
    let dir = tempfile::tempdir().unwrap();
    let opts = WalOptions { page_cache_window: Some(0), ..small_opts() };
    let (wal, _) = Wal::open(dir.path(), opts).unwrap();
    for chunk in 0..10u64 {
        append_durable(&wal, 1, chunk * 50 + 1..chunk * 50 + 51, 1000);
    }
    wal.trim_page_cache();
    // The first record of the oldest segment: its payload length (header bytes 12..16) becomes
    // 4 GiB - 1, as a damaged disk might return it.
    let oldest = &segment_files(dir.path())[0];
    let file = std::fs::OpenOptions::new().write(true).open(oldest).unwrap();
    std::os::unix::fs::FileExt::write_all_at(
        &file,
        &u32::MAX.to_le_bytes(),
        chronik_wal::segment::SEGMENT_HEADER_LEN + 12,
    )
    .unwrap();
    let err = wal.read(1, 1).expect_err("a damaged length is refused");
    assert!(matches!(err, chronik_wal::WalError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("past the segment's end"), "{err}");
}
