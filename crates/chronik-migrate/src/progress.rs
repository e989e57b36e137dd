//! Progress on a terminal: records and bytes per second and an estimate of the time left,
//! redrawn twice a second on stderr while the migration runs (nothing when stderr is not a
//! terminal, so logs and `--json` output stay clean).

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct Progress {
    records: AtomicU64,
    input_bytes: AtomicU64,
    total_input_bytes: AtomicU64,
    done: AtomicBool,
}

impl Progress {
    pub fn new(total_input_bytes: u64) -> Arc<Progress> {
        let p = Arc::new(Progress::default());
        p.total_input_bytes.store(total_input_bytes, Ordering::Relaxed);
        p
    }

    pub fn add_records(&self, n: u64) {
        self.records.fetch_add(n, Ordering::Relaxed);
    }

    pub fn add_input(&self, bytes: u64) {
        self.input_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn input_bytes(&self) -> u64 {
        self.input_bytes.load(Ordering::Relaxed)
    }

    fn line(&self, elapsed: Duration) -> String {
        let secs = elapsed.as_secs_f64().max(0.001);
        let (records, bytes) = (self.records.load(Ordering::Relaxed), self.input_bytes());
        let total = self.total_input_bytes.load(Ordering::Relaxed).max(bytes);
        let rate = bytes as f64 / secs;
        let eta = if rate > 0.0 { (total - bytes) as f64 / rate } else { 0.0 };
        format!(
            "{records} records, {:.1}/{:.1} MB ({:.0} records/s, {:.1} MB/s), ETA {eta:.0} s",
            bytes as f64 / 1e6,
            total as f64 / 1e6,
            records as f64 / secs,
            rate / 1e6
        )
    }

    /// Draws the progress line until [`Progress::finish`], if stderr is a terminal.
    pub fn show(self: &Arc<Self>) -> Option<std::thread::JoinHandle<()>> {
        if !std::io::stderr().is_terminal() {
            return None;
        }
        let p = self.clone();
        let start = Instant::now();
        std::thread::Builder::new()
            .name("migrate-progress".into())
            .spawn(move || {
                while !p.done.load(Ordering::Relaxed) {
                    eprint!("\r\x1b[2K{}", p.line(start.elapsed()));
                    let _ = std::io::stderr().flush();
                    std::thread::sleep(Duration::from_millis(500));
                }
                eprintln!("\r\x1b[2K{}", p.line(start.elapsed()));
            })
            .ok()
    }

    pub fn finish(&self) {
        self.done.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_shows_rates_and_time_left() {
        let p = Progress::new(10_000_000);
        p.add_records(500);
        p.add_input(2_000_000);
        assert_eq!(
            p.line(Duration::from_secs(2)),
            "500 records, 2.0/10.0 MB (250 records/s, 1.0 MB/s), ETA 8 s",
            "2 MB of 10 in 2 s: 8 MB left at 1 MB/s"
        );
    }
}
