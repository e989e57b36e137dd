//! The WAL's threads: the syncer (group commit), the preparer (spare segments), the garbage
//! collector (retiring segments nothing needs) and, when a page-cache window is set, the cache
//! trimmer (`cache`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{Result, WalError};
use crate::options::SyncMode;
use crate::wal::{Inner, prepare_segment};

/// A background thread's body.
type Job = Box<dyn FnOnce(Arc<Inner>) + Send>;

pub(crate) fn spawn(inner: &Arc<Inner>) -> Result<Vec<JoinHandle<()>>> {
    let mut threads = Vec::new();
    let mut jobs: Vec<(&str, Job)> = vec![
        ("chronik-wal-sync", Box::new(run_syncer)),
        ("chronik-wal-prep", Box::new(run_preparer)),
        ("chronik-wal-gc", Box::new(run_gc)),
    ];
    if let Some(window) = inner.opts.page_cache_window {
        jobs.push(("chronik-wal-cache", Box::new(move |inner| crate::cache::run_trimmer(inner, window))));
    }
    for (name, job) in jobs {
        let inner = inner.clone();
        let t = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || job(inner))
            .map_err(|e| WalError::io(std::path::PathBuf::from(name), e))?;
        threads.push(t);
    }
    Ok(threads)
}

impl Inner {
    /// One group-commit round: fdatasync every segment holding bytes written so far, then report
    /// durability to the waiters it covers, in order. Returns whether anything was synced.
    pub(crate) fn sync_round(&self) -> Result<bool> {
        let (target, footers, active, waiters) = {
            let mut w = self.writer.lock();
            if let Some(reason) = &w.failed {
                let e = WalError::SyncFailed(reason.clone());
                self.fail_writer(&mut w, &e);
                return Err(e);
            }
            if w.written_lsn == self.durable_lsn.load(Ordering::Acquire)
                && w.unsynced_footers.is_empty()
                && w.waiters.is_empty()
            {
                return Ok(false);
            }
            let target = w.written_lsn;
            let covered = w.waiters.iter().take_while(|(lsn, _)| *lsn <= target).count();
            let waiters: Vec<_> = w.waiters.drain(..covered).collect();
            (target, w.unsynced_footers.clone(), w.active.clone(), waiters)
        };
        let started = Instant::now();
        let synced = footers.iter().try_for_each(|s| s.sync_data()).and_then(|()| active.sync_data());
        match synced {
            Ok(()) => {
                self.durable_lsn.fetch_max(target, Ordering::AcqRel);
                self.writer.lock().unsynced_footers.retain(|s| !footers.iter().any(|f| Arc::ptr_eq(f, s)));
                self.stats.record_sync(started.elapsed());
                for (_, cb) in waiters {
                    cb(Ok(()));
                }
                Ok(true)
            }
            Err(e) => {
                let mut w = self.writer.lock();
                self.fail_writer(&mut w, &e);
                drop(w);
                for (_, cb) in waiters {
                    cb(Err(WalError::SyncFailed(e.to_string())));
                }
                Err(e)
            }
        }
    }
}

fn run_syncer(inner: Arc<Inner>) {
    loop {
        {
            let mut w = inner.writer.lock();
            loop {
                if inner.shutdown.load(Ordering::Acquire) {
                    return; // close() runs the last round itself
                }
                let pending = w.failed.is_none()
                    && (w.written_lsn > inner.durable_lsn.load(Ordering::Acquire) || !w.unsynced_footers.is_empty());
                match inner.opts.sync_mode {
                    SyncMode::Always if pending || !w.waiters.is_empty() => break,
                    SyncMode::Always => inner.sync_cv.wait(&mut w),
                    // Periodic: on the timer, or at once when someone asked for a sync.
                    SyncMode::Periodic(_) if !w.waiters.is_empty() => break,
                    SyncMode::Periodic(interval) => {
                        if inner.sync_cv.wait_for(&mut w, interval).timed_out() && pending {
                            break;
                        }
                    }
                }
            }
        }
        // Errors are sticky in the writer and reported to every waiter.
        let _ = inner.sync_round();
    }
}

fn run_preparer(inner: Arc<Inner>) {
    let mut last_failure: Option<Instant> = None;
    loop {
        let (seq, mut retired) = {
            let mut s = inner.spares.lock();
            loop {
                if inner.shutdown.load(Ordering::Acquire) {
                    return;
                }
                let needed = s.ready.len() < inner.opts.spare_segments;
                let retry_after = if s.waiting > 0 { Duration::from_millis(50) } else { Duration::from_secs(1) };
                let may_try = last_failure.is_none_or(|t| t.elapsed() >= retry_after);
                if needed && may_try {
                    break;
                }
                inner.spares_cv.wait_for(&mut s, Duration::from_millis(100));
            }
            (s.next_seq, std::mem::take(&mut s.retired))
        };
        let result = prepare_segment(&inner.dir, &mut retired, seq, inner.opts.segment_size);
        let mut s = inner.spares.lock();
        s.retired.append(&mut retired);
        match result {
            Ok(segment) => {
                if s.last_error.take().is_some() {
                    tracing::info!("WAL {}: segment preparation works again", inner.dir.display());
                }
                last_failure = None;
                s.next_seq = seq + 1;
                s.ready.push_back(Arc::new(segment));
                inner.stats.segments_prepared.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                if s.last_error.is_none() {
                    tracing::error!("WAL {}: cannot prepare segment {seq}: {e}", inner.dir.display());
                }
                last_failure = Some(Instant::now());
                s.last_error = Some(e);
            }
        }
        inner.spares_cv.notify_all();
    }
}

fn run_gc(inner: Arc<Inner>) {
    let mut next_run = Instant::now() + inner.opts.gc_interval;
    loop {
        {
            let mut s = inner.spares.lock();
            loop {
                if inner.shutdown.load(Ordering::Acquire) {
                    return;
                }
                if inner.gc_requested.swap(false, Ordering::AcqRel) || Instant::now() >= next_run {
                    break;
                }
                inner.spares_cv.wait_for(&mut s, next_run.saturating_duration_since(Instant::now()));
            }
        }
        if let Err(e) = crate::gc::collect(&inner) {
            tracing::warn!("WAL {}: garbage collection: {e}", inner.dir.display());
        }
        next_run = Instant::now() + inner.opts.gc_interval;
    }
}
