use std::time::Duration;

use crate::error::{Result, WalError};
use crate::segment::{MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE};

/// When an append counts as durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// Durable only after an fdatasync that covers it. Appends waiting at the same time share
    /// one fdatasync round (group commit).
    Always,
    /// Reported durable as soon as it is written to the OS; a background fdatasync runs at this
    /// interval. A process crash loses nothing; a power loss can lose up to one interval.
    Periodic(Duration),
}

#[derive(Debug, Clone)]
pub struct WalOptions {
    /// Size of each segment file, preallocated before use.
    pub segment_size: u64,
    pub sync_mode: SyncMode,
    /// Segments kept prepared ahead of the active one, so a roll never waits for the disk.
    pub spare_segments: usize,
    /// How often the garbage collector looks for segments it can retire.
    pub gc_interval: Duration,
    /// The oldest segment is retired by copying its live entries forward when they are at most
    /// this fraction of it; above that it waits for their owners to purge them.
    pub gc_rewrite_max_live_fraction: f64,
    /// Bytes of the newest log data left in the OS page cache; older data of sealed segments is
    /// dropped from it as the log grows (see `cache`). `None` leaves caching to the kernel.
    pub page_cache_window: Option<u64>,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_size: 128 << 20,
            sync_mode: SyncMode::Always,
            spare_segments: 1,
            gc_interval: Duration::from_secs(1),
            gc_rewrite_max_live_fraction: 0.25,
            page_cache_window: None,
        }
    }
}

impl WalOptions {
    pub fn validate(&self) -> Result<()> {
        if !(MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&self.segment_size) {
            return Err(WalError::InvalidOption(format!(
                "segment size {} is outside {MIN_SEGMENT_SIZE}..={MAX_SEGMENT_SIZE} bytes",
                self.segment_size
            )));
        }
        if let SyncMode::Periodic(d) = self.sync_mode
            && d.is_zero()
        {
            return Err(WalError::InvalidOption("periodic sync interval must be above zero".into()));
        }
        if self.spare_segments == 0 {
            return Err(WalError::InvalidOption("at least one spare segment is needed".into()));
        }
        if !(0.0..=1.0).contains(&self.gc_rewrite_max_live_fraction) {
            return Err(WalError::InvalidOption("gc_rewrite_max_live_fraction must be within 0..=1".into()));
        }
        Ok(())
    }
}
