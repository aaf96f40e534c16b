//! Per-node accounting for tests and benchmarks: a counting global allocator
//! that charges every allocation to the simulated host whose code made it,
//! and the CPU time spent inside each host's node.
//!
//! The simulator says which host runs ([`crate::sim::Sim::set_memory_scope`]);
//! pass it [`scope`]. A test or bench binary that wants the figures installs
//! the allocator itself:
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOC: p2pcore_tests::memory::Counting = p2pcore_tests::memory::Counting;
//! ```
//!
//! Accounts are per host index, up to [`SLOTS`] - 1 hosts (the rest share the
//! last account with everything the simulator itself allocates), and global:
//! one simulation at a time per process.
#![allow(unsafe_code)] // a global allocator is unsafe by nature

use crate::sim::HostId;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicIsize, AtomicU64, Ordering};
use std::time::Instant;

/// Accounts: one per host index, the last one for everything else.
pub const SLOTS: usize = 16_384;
const UNSCOPED: u16 = (SLOTS - 1) as u16;
/// Room before each allocation for the account that made it, so a free is
/// charged back to the right account whoever frees it.
const HEADER: usize = 16;

static HELD: [AtomicIsize; SLOTS] = [const { AtomicIsize::new(0) }; SLOTS];
static PEAK: [AtomicIsize; SLOTS] = [const { AtomicIsize::new(0) }; SLOTS];
static CPU_NS: [AtomicU64; SLOTS] = [const { AtomicU64::new(0) }; SLOTS];

thread_local! {
    static OWNER: Cell<u16> = const { Cell::new(UNSCOPED) };
    static ENTERED: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// The counting allocator (over the system allocator).
#[derive(Debug)]
pub struct Counting;

fn padded(layout: Layout) -> Option<(Layout, usize)> {
    let pad = layout.align().max(HEADER);
    Some((Layout::from_size_align(layout.size().checked_add(pad)?, layout.align().max(HEADER)).ok()?, pad))
}

fn charge(owner: u16, bytes: isize) {
    let held = HELD[owner as usize].fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK[owner as usize].fetch_max(held, Ordering::Relaxed);
}

// SAFETY: every block handed out is `pad` bytes into a block obtained from
// `System` with the padded layout; `dealloc` undoes exactly that.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some((outer, pad)) = padded(layout) else { return std::ptr::null_mut() };
        // SAFETY: `outer` has a non-zero size (it includes the header).
        let base = unsafe { System.alloc(outer) };
        if base.is_null() {
            return base;
        }
        let owner = OWNER.try_with(Cell::get).unwrap_or(UNSCOPED);
        // SAFETY: the header lies inside the block, aligned to at least 16.
        unsafe { (base as *mut u16).write(owner) };
        charge(owner, layout.size() as isize);
        // SAFETY: `pad` < outer size.
        unsafe { base.add(pad) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let Some((outer, pad)) = padded(layout) else { return };
        // SAFETY: `ptr` came from `alloc` with this layout: the block starts `pad` earlier.
        let base = unsafe { ptr.sub(pad) };
        // SAFETY: written by `alloc`.
        let owner = unsafe { (base as *const u16).read() };
        HELD[owner as usize].fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: allocated by `System` with `outer`.
        unsafe { System.dealloc(base, outer) };
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // A grown block stays with the account that first allocated it.
        let Some((outer, pad)) = padded(layout) else { return std::ptr::null_mut() };
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return std::ptr::null_mut();
        };
        let Some((new_outer, _)) = padded(new_layout) else { return std::ptr::null_mut() };
        // SAFETY: as in `dealloc`.
        let base = unsafe { ptr.sub(pad) };
        // SAFETY: written by `alloc`.
        let owner = unsafe { (base as *const u16).read() };
        // SAFETY: `base` was allocated by `System` with `outer`; the header
        // moves with the block.
        let grown = unsafe { System.realloc(base, outer, new_outer.size()) };
        if grown.is_null() {
            return grown;
        }
        charge(owner, new_size as isize - layout.size() as isize);
        // SAFETY: `pad` < new outer size.
        unsafe { grown.add(pad) }
    }
}

/// The simulator's scope hook: from now on allocations and CPU time are
/// charged to `h` (`None`: back to the unscoped account).
pub fn scope(h: Option<HostId>) {
    let slot = h.map_or(UNSCOPED, |h| (h as u16).min(UNSCOPED - 1));
    let previous = OWNER.try_with(|o| o.replace(slot)).unwrap_or(UNSCOPED);
    let now = Instant::now();
    if let Ok(Some(entered)) = ENTERED.try_with(|e| e.replace(h.map(|_| now)))
        && previous != UNSCOPED
    {
        let ns = u64::try_from(now.duration_since(entered).as_nanos()).unwrap_or(u64::MAX);
        CPU_NS[previous as usize].fetch_add(ns, Ordering::Relaxed);
    }
}

/// Bytes held by host `h`'s node now, and the most since [`reset_peak`].
pub fn held(h: HostId) -> (isize, isize) {
    let slot = h.min(SLOTS - 1);
    (HELD[slot].load(Ordering::Relaxed), PEAK[slot].load(Ordering::Relaxed))
}

/// Starts a new peak for host `h` at what it holds now.
pub fn reset_peak(h: HostId) {
    let slot = h.min(SLOTS - 1);
    PEAK[slot].store(HELD[slot].load(Ordering::Relaxed), Ordering::Relaxed);
}

/// Bytes held by every account together (the simulator's own included).
pub fn total_held() -> isize {
    HELD.iter().map(|a| a.load(Ordering::Relaxed)).sum()
}

/// Nanoseconds spent inside host `h`'s node (wall time between scope entry
/// and exit; the simulator runs on one thread, so this is its CPU time).
pub fn cpu_ns(h: HostId) -> u64 {
    CPU_NS[h.min(SLOTS - 1)].load(Ordering::Relaxed)
}

/// Clears every account's CPU time (between runs of one process).
pub fn reset_cpu() {
    for c in &CPU_NS {
        c.store(0, Ordering::Relaxed);
    }
}
