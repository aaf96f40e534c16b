//! What every system's measurements produce, and the arithmetic on them.

use serde::Serialize;
use std::time::Duration;

pub(crate) use crate::p2p::common::thread_cpu;

/// CPU time of the whole process, user and system, to the microsecond
/// (`getrusage`; `/proc`'s 10 ms ticks are too coarse for short runs).
#[allow(unsafe_code)]
pub(crate) fn process_cpu() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `usage` is a valid out-pointer for one `rusage`.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) } != 0 {
        return Duration::ZERO;
    }
    // SAFETY: getrusage succeeded, so it filled `usage`.
    let usage = unsafe { usage.assume_init() };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// The calling thread's CPU mask, and the CPUs in it (none if unknown).
#[allow(unsafe_code)]
fn affinity() -> Option<(libc::cpu_set_t, Vec<usize>)> {
    // SAFETY: `cpu_set_t` is plain data (a bit array); zero is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid `cpu_set_t` of the size given; pid 0 is this thread.
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } != 0 {
        return None;
    }
    // SAFETY: CPU_ISSET reads a bit of the valid set `set`.
    let cpus: Vec<usize> =
        (0..libc::CPU_SETSIZE as usize).filter(|&c| unsafe { libc::CPU_ISSET(c, &set) }).collect();
    (!cpus.is_empty()).then_some((set, cpus))
}

/// Sets the calling thread's CPU mask; false if the OS refused.
#[allow(unsafe_code)]
fn set_affinity(set: &libc::cpu_set_t) -> bool {
    // SAFETY: `set` is a valid `cpu_set_t` of the size given; pid 0 is this thread.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) == 0 }
}

/// A mask holding one CPU.
#[allow(unsafe_code)]
fn only(cpu: usize) -> libc::cpu_set_t {
    // SAFETY: a zeroed set is valid; CPU_SET writes one bit of it.
    let mut one: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    unsafe { libc::CPU_SET(cpu, &mut one) };
    one
}

/// Runs `f` with the calling thread, and so every thread it starts, held
/// to one CPU (the first it may use), then restores the mask.
///
/// Round trips are measured this way: with the two ends on different
/// cores of this 2-vCPU VM, a sample either stays fast or pays a cross-core
/// wakeup of ~50 µs, bimodally and at a share that changes from system to
/// system and run to run, so medians compared luck. On one core a round
/// trip is the software path of both ends and two context switches.
pub(crate) fn on_one_cpu<T>(f: impl FnOnce() -> T) -> T {
    let Some((old, cpus)) = affinity() else { return f() };
    let pinned = set_affinity(&only(cpus[0]));
    let out = f();
    if pinned {
        set_affinity(&old);
    }
    out
}

/// Pins the calling thread to the `i`-th CPU it may use (modulo their
/// number). Bulk transfers put the sender on the first and the receiver on
/// the second, for every system alike — a core each, as two hosts would
/// have — so where the scheduler happens to place the two ends is not one
/// more variable between runs and systems.
pub(crate) fn pin_thread(i: usize) {
    if let Some((_, cpus)) = affinity() {
        set_affinity(&only(cpus[i % cpus.len()]));
    }
}

/// Bulk reliable transfer: goodput and the CPU it cost (every thread of the
/// process, sender and receiver together).
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Throughput {
    pub(crate) mb_per_s: f64,
    pub(crate) cpu_ms_per_100mb: f64,
}

/// A blast of unreliable messages: how many the sender handed over, how
/// many arrived, over how long the sender sent.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Rate {
    pub(crate) sent: u64,
    pub(crate) received: u64,
    pub(crate) seconds: f64,
}

impl Rate {
    /// Messages delivered per second.
    pub(crate) fn delivered_per_s(&self) -> f64 {
        self.received as f64 / self.seconds.max(1e-9)
    }

    /// Share of handed-over messages that never arrived.
    pub(crate) fn loss(&self) -> f64 {
        if self.sent == 0 { 0.0 } else { 1.0 - (self.received.min(self.sent) as f64 / self.sent as f64) }
    }
}

/// What a forwarder (p2pcore's relay or the bare one) did during a blast.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Forwarding {
    pub(crate) forwarded: u64,
    pub(crate) bytes: u64,
    pub(crate) seconds: f64,
    /// CPU time of the forwarding thread.
    pub(crate) cpu: Duration,
}

impl Forwarding {
    pub(crate) fn per_s(&self) -> f64 {
        self.forwarded as f64 / self.seconds.max(1e-9)
    }

    /// Datagrams one core forwards per second at the measured cost: the
    /// forwarder's capacity, whatever the sender could offer.
    pub(crate) fn per_core_s(&self) -> f64 {
        self.forwarded as f64 / self.cpu.as_secs_f64().max(1e-9)
    }

    pub(crate) fn cpu_ms_per_mb(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e3 / (self.bytes as f64 / 1e6).max(1e-9)
    }
}

/// The `p`-quantile (0..=1) of sorted samples.
pub(crate) fn quantile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

pub(crate) fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// The median of a few samples.
pub(crate) fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    quantile(&samples, 0.5)
}
