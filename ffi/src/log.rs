//! The optional per-node log callback.
//!
//! The core and the host log through `tracing`. Each node has its own
//! subscriber ([`Capture`]) that queues records (bounded) while the node
//! works — on the caller's thread in hosted and raw mode, on the network
//! thread in thread mode — and the records are handed to the caller's
//! callback only inside `p2p_node_service` / `p2p_poll_events` (or the raw
//! mode's `p2p_core_poll_events`), on the caller's thread, outside every
//! lock: the callback may call back into the library. No global logger is
//! installed, so a host application's own `tracing` setup is untouched.

use std::collections::VecDeque;
use std::ffi::{CString, c_char, c_void};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Dispatch, Event, Level, Metadata, Subscriber};

/// No logging (the default).
pub const P2P_LOG_OFF: u32 = 0;
/// Errors only.
pub const P2P_LOG_ERROR: u32 = 1;
/// Warnings and errors.
pub const P2P_LOG_WARN: u32 = 2;
/// Informational messages and above.
pub const P2P_LOG_INFO: u32 = 3;
/// Debugging detail and above.
pub const P2P_LOG_DEBUG: u32 = 4;
/// Everything (very verbose: per packet).
pub const P2P_LOG_TRACE: u32 = 5;

/// A log callback: `level` is `P2P_LOG_*`, `target` the Rust module that
/// logged, `message` the text; both strings are valid only during the
/// call. It runs on the thread that called `p2p_node_service`,
/// `p2p_poll_events` or `p2p_core_poll_events`, never on another; it may
/// call the library, and must not unwind (throw) into it.
pub type p2p_log_fn = Option<
    unsafe extern "C" fn(user: *mut c_void, level: u32, target: *const c_char, message: *const c_char),
>;

/// Records kept between two deliveries; later ones are counted and dropped
/// (a flood of trace output cannot grow memory).
const MAX_RECORDS: usize = 4096;

struct LogRecord {
    level: u32,
    target: CString,
    message: CString,
}

/// Where a node's subscriber queues records.
#[derive(Default)]
struct Sink {
    level: AtomicU32,
    records: Mutex<VecDeque<LogRecord>>,
    dropped: AtomicU64,
}

/// The `tracing` subscriber of one node.
struct Capture {
    sink: Arc<Sink>,
}

fn level_code(l: &Level) -> u32 {
    match *l {
        Level::ERROR => P2P_LOG_ERROR,
        Level::WARN => P2P_LOG_WARN,
        Level::INFO => P2P_LOG_INFO,
        Level::DEBUG => P2P_LOG_DEBUG,
        _ => P2P_LOG_TRACE,
    }
}

/// Formats an event's fields: the message first, then `key=value` pairs.
#[derive(Default)]
struct Text {
    message: String,
    fields: String,
}

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }
}

fn c_string(s: String) -> CString {
    CString::new(s).unwrap_or_else(|e| {
        let mut bytes = e.into_vec();
        bytes.retain(|b| *b != 0);
        CString::new(bytes).unwrap_or_default()
    })
}

impl Subscriber for Capture {
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        // The level can change at any time (p2p_node_set_log): ask every time.
        Interest::sometimes()
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        level_code(metadata.level()) <= self.sink.level.load(Ordering::Relaxed)
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        // Spans carry nothing this sink shows; they all share one ID.
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let Ok(mut records) = self.sink.records.lock() else { return };
        if records.len() >= MAX_RECORDS {
            self.sink.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut text = Text::default();
        event.record(&mut text);
        text.message.push_str(&text.fields);
        let meta = event.metadata();
        records.push_back(LogRecord {
            level: level_code(meta.level()),
            target: c_string(meta.target().to_owned()),
            message: c_string(text.message),
        });
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

/// The caller's callback and its context pointer.
#[derive(Clone, Copy)]
struct Callback {
    f: unsafe extern "C" fn(*mut c_void, u32, *const c_char, *const c_char),
    user: *mut c_void,
}

// SAFETY: the library only stores `user` and passes it back to the caller's
// callback, on a thread of the caller's; it never dereferences it.
unsafe impl Send for Callback {}

/// One node's logging: the subscriber, and the callback records go to.
pub(crate) struct Logger {
    sink: Arc<Sink>,
    dispatch: Dispatch,
    callback: Mutex<Option<Callback>>,
}

impl Logger {
    pub(crate) fn new() -> Self {
        let sink = Arc::new(Sink::default());
        let dispatch = Dispatch::new(Capture { sink: sink.clone() });
        Self { sink, dispatch, callback: Mutex::new(None) }
    }

    /// The subscriber, for a network thread to log to.
    pub(crate) fn dispatch(&self) -> Dispatch {
        self.dispatch.clone()
    }

    /// Sets the callback and the most verbose level it gets (`P2P_LOG_OFF`
    /// or a NULL callback: none).
    pub(crate) fn set(&self, f: p2p_log_fn, user: *mut c_void, level: u32) {
        let level = if f.is_some() { level.min(P2P_LOG_TRACE) } else { P2P_LOG_OFF };
        if let Ok(mut cb) = self.callback.lock() {
            *cb = f.map(|f| Callback { f, user });
        }
        self.sink.level.store(level, Ordering::Relaxed);
        if level == P2P_LOG_OFF
            && let Ok(mut records) = self.sink.records.lock()
        {
            records.clear();
        }
    }

    /// Runs `f` with this node's subscriber as the thread's (when logging
    /// is on; otherwise the thread's own stays).
    pub(crate) fn scope<R>(&self, f: impl FnOnce() -> R) -> R {
        if self.sink.level.load(Ordering::Relaxed) == P2P_LOG_OFF {
            f()
        } else {
            tracing::dispatcher::with_default(&self.dispatch, f)
        }
    }

    /// Hands the queued records to the callback, on this thread. Call it
    /// without holding any of the node's locks.
    pub(crate) fn deliver(&self) {
        let Some(cb) = self.callback.lock().ok().and_then(|c| *c) else { return };
        let records: Vec<LogRecord> = match self.sink.records.lock() {
            Ok(mut r) if !r.is_empty() => r.drain(..).collect(),
            _ => Vec::new(),
        };
        let dropped = self.sink.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            let message =
                c_string(format!("{dropped} log records were dropped (more than {MAX_RECORDS} queued)"));
            // SAFETY: the caller's callback, with strings valid for the call.
            unsafe { (cb.f)(cb.user, P2P_LOG_WARN, c"p2pcore_ffi".as_ptr(), message.as_ptr()) };
        }
        for r in records {
            // SAFETY: the caller's callback, with strings valid for the call.
            unsafe { (cb.f)(cb.user, r.level, r.target.as_ptr(), r.message.as_ptr()) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    unsafe extern "C" fn collect(
        user: *mut c_void,
        level: u32,
        target: *const c_char,
        message: *const c_char,
    ) {
        // SAFETY: `user` is the Vec the test passed; strings are valid.
        let out = unsafe { &mut *user.cast::<Vec<(u32, String, String)>>() };
        let s = |p| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
        out.push((level, s(target), s(message)));
    }

    #[test]
    fn records_reach_the_callback_only_when_delivered_and_at_the_level_asked() {
        let logger = Logger::new();
        let mut got: Vec<(u32, String, String)> = Vec::new();
        let user = (&mut got as *mut Vec<(u32, String, String)>).cast::<c_void>();
        logger.scope(|| tracing::warn!("before the callback"));
        logger.set(Some(collect), user, P2P_LOG_INFO);
        logger.scope(|| {
            tracing::info!(peer = 7, "hello");
            tracing::debug!("too verbose");
        });
        // SAFETY: `got` is only read after the callback ran.
        assert!(unsafe { &*user.cast::<Vec<(u32, String, String)>>() }.is_empty(), "nothing before deliver");
        logger.deliver();
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].0, P2P_LOG_INFO);
        assert_eq!(got[0].2, "hello peer=7");
        assert!(got[0].1.contains("log"), "{}", got[0].1);
    }

    #[test]
    fn a_flood_is_bounded_and_reported() {
        let logger = Logger::new();
        let mut got: Vec<(u32, String, String)> = Vec::new();
        let user = (&mut got as *mut Vec<(u32, String, String)>).cast::<c_void>();
        logger.set(Some(collect), user, P2P_LOG_TRACE);
        logger.scope(|| {
            for i in 0..MAX_RECORDS + 10 {
                tracing::trace!(i, "flood");
            }
        });
        logger.deliver();
        assert_eq!(got.len(), MAX_RECORDS + 1);
        assert!(got[0].2.contains("10 log records were dropped"), "{}", got[0].2);
    }
}
