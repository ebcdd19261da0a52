//! The live heap: bytes allocated and not yet freed. RSS alone cannot tell a leak from memory
//! the allocator keeps after a burst (a relist, a large scrape); the live heap can. The
//! binary installs [`CountingAllocator`] as its global allocator; a program that embeds the
//! library without it simply has no heap series.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::atomic::{AtomicBool, AtomicIsize, Ordering},
};

/// An allocator (the system's by default), counting the bytes it hands out and takes back.
/// Two relaxed atomic operations per call: nothing next to the allocation itself.
pub struct CountingAllocator<A = System>(pub A);

static LIVE: AtomicIsize = AtomicIsize::new(0);
static INSTALLED: AtomicBool = AtomicBool::new(false);

// SAFETY: every call is passed on to the inner allocator unchanged; only counters move.
unsafe impl<A: GlobalAlloc> GlobalAlloc for CountingAllocator<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's guarantees for `layout` hold for the inner allocator too.
        counted(unsafe { self.0.alloc(layout) }, layout.size() as isize)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        counted(
            unsafe { self.0.alloc_zeroed(layout) },
            layout.size() as isize,
        )
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator with this `layout`.
        unsafe { self.0.dealloc(ptr, layout) };
        counted(ptr, -(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `alloc` and `dealloc`. On failure the old block stays, uncounted
        // change and all.
        let moved = unsafe { self.0.realloc(ptr, layout, new_size) };
        counted(moved, new_size as isize - layout.size() as isize)
    }
}

/// Counts `delta` bytes when the call that returned `ptr` succeeded; passes `ptr` on.
fn counted(ptr: *mut u8, delta: isize) -> *mut u8 {
    if !ptr.is_null() {
        LIVE.fetch_add(delta, Ordering::Relaxed);
        if !INSTALLED.load(Ordering::Relaxed) {
            INSTALLED.store(true, Ordering::Relaxed);
        }
    }
    ptr
}

/// Bytes allocated and not yet freed, or `None` when [`CountingAllocator`] is not the global
/// allocator.
pub fn live_bytes() -> Option<u64> {
    INSTALLED
        .load(Ordering::Relaxed)
        .then(|| LIVE.load(Ordering::Relaxed).max(0) as u64)
}
