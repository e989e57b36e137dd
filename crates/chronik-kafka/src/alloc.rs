//! A global allocator that keeps hostile array lengths from aborting the broker.
//!
//! kafka-protocol decodes an array by first reserving `length` elements, with `length` taken
//! from the wire (up to 2^31). A 20-byte request can thus ask for hundreds of GiB; the system
//! allocator refuses and Rust aborts the process. This allocator serves very large requests
//! with `mmap(MAP_NORESERVE)`: address space without committed memory, touched only as elements
//! are really decoded (which stops at the end of the frame), and unmapped on free.

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations at or above this size go to `mmap`.
const LARGE: usize = 1 << 30;

pub struct GuardedAllocator;

/// Whether `layout` is served by `mmap` rather than the system allocator. Page alignment is the
/// most `mmap` guarantees.
fn is_large(layout: Layout) -> bool {
    layout.size() >= LARGE && layout.align() <= 4096
}

// SAFETY: every block either forwards to `System` with the caller's arguments unchanged, or
// serves a large layout from its own anonymous mapping, which is page-aligned (enough for any
// alignment `is_large` admits), at least `size` bytes long, and unmapped only by `dealloc` of
// the same layout.
unsafe impl GlobalAlloc for GuardedAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_large(layout) {
            // SAFETY: anonymous private mapping; the result is checked against MAP_FAILED.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    layout.size(),
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                    -1,
                    0,
                )
            };
            return if p == libc::MAP_FAILED { std::ptr::null_mut() } else { p as *mut u8 };
        }
        // SAFETY: the caller upholds `alloc`'s contract, which `System` shares.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_large(layout) {
            // SAFETY: a large layout's pointer came from the mmap above, with this size.
            unsafe { libc::munmap(ptr as *mut libc::c_void, layout.size()) };
            return;
        }
        // SAFETY: a small layout's pointer came from `System` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_large(layout) {
            // SAFETY: as `alloc`; fresh anonymous pages are already zero.
            return unsafe { self.alloc(layout) };
        }
        // SAFETY: the caller upholds `alloc_zeroed`'s contract, which `System` shares.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let small = layout.size() < LARGE && new_size < LARGE;
        if small || layout.align() > 4096 {
            // SAFETY: both sizes are served by `System` (or neither layout is large), so `ptr`
            // came from `System` with `layout`.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // SAFETY: `realloc`'s contract makes `new_size`, rounded to `layout.align()`, a valid
        // layout size, and the alignment is unchanged.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: a non-zero-sized layout (new_size is at least LARGE here or layout was).
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are live, distinct, and at least as long as the copied prefix;
            // `ptr` was allocated by this allocator with `layout`.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}
