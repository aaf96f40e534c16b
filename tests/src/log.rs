//! The core's `tracing` diagnostics, stamped with the simulator's virtual
//! time instead of the wall clock, so a log lines up with the event trace.
//!
//! `p2psim` and the tests call [`init_from_env`]: with `RUST_LOG` set (for
//! example `RUST_LOG=p2pcore=debug`) every log line goes to stderr; without
//! it nothing is installed and logging costs nothing.

use std::cell::Cell;
use std::time::Duration;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

thread_local! {
    static VIRTUAL_TIME: Cell<Duration> = const { Cell::new(Duration::ZERO) };
}

/// Records the simulator's current virtual time (since the start of the run).
pub fn set_virtual_time(t: Duration) {
    VIRTUAL_TIME.with(|v| v.set(t));
}

/// The virtual time last recorded on this thread.
pub fn virtual_time() -> Duration {
    VIRTUAL_TIME.with(Cell::get)
}

/// Formats log timestamps as virtual milliseconds, like the event trace.
#[derive(Debug, Clone, Copy, Default)]
pub struct VirtualTime;

impl FormatTime for VirtualTime {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        write!(w, "{:>10.3}ms", virtual_time().as_secs_f64() * 1000.0)
    }
}

/// Installs a stderr logger filtered by `RUST_LOG`, if it is set and no
/// logger is installed yet. Returns whether logging is on.
pub fn init_from_env() -> bool {
    let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG") else {
        return false;
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_timer(VirtualTime)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init()
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_time_is_per_thread_and_formatted_in_ms() {
        set_virtual_time(Duration::from_micros(1_234_567));
        assert_eq!(virtual_time(), Duration::from_micros(1_234_567));
        let mut s = String::new();
        VirtualTime.format_time(&mut Writer::new(&mut s)).unwrap();
        assert_eq!(s, "  1234.567ms");
        std::thread::spawn(|| assert_eq!(virtual_time(), Duration::ZERO)).join().unwrap();
    }
}
