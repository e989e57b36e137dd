//! Named steps of multi-step operations where a debug build can be told to die at once
//! (`CHRONIK_TEST_CRASH_AT=<name>`), so tests kill the real process at an exact point and
//! check what a restart finds. Release builds compile the points to nothing.

/// Dies (no destructor, no flush: what `kill -9` leaves on disk) if the process was started
/// with `CHRONIK_TEST_CRASH_AT=name`.
#[cfg(debug_assertions)]
pub(crate) fn crash_point(name: &str) {
    static CRASH_AT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    if CRASH_AT.get_or_init(|| std::env::var("CHRONIK_TEST_CRASH_AT").ok()).as_deref() == Some(name) {
        eprintln!("CHRONIK_TEST_CRASH_AT={name}: dying here");
        std::process::abort();
    }
}

#[cfg(not(debug_assertions))]
#[inline(always)]
pub(crate) fn crash_point(_name: &str) {}
