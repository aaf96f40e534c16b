//! Result codes, the per-thread last error, and the panic boundary every
//! exported function goes through.

use p2pcore::{ConfigError, ConnectError, CoordError, KvError, LookupError, SendError};
use p2pcore_mio::{DataDirError, HandleError, HostError};
use std::cell::RefCell;
use std::ffi::{CStr, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};

/// What a p2pcore function returns: `P2P_OK` (0), a non-negative count or
/// size where the function says so, `P2P_DONE` when there is nothing more,
/// or a negative `P2P_ERR_*` code (then `p2p_last_error` says what went
/// wrong, on the calling thread).
pub type p2p_result = i32;

/// Success.
pub const P2P_OK: p2p_result = 0;
/// Nothing more: no transmit, no deadline, no event (not an error).
pub const P2P_DONE: p2p_result = -1;
/// A pointer was NULL where it may not be, a string was not UTF-8, a
/// length or value was out of range, or a structure's `size` is unknown.
pub const P2P_ERR_INVALID_ARGUMENT: p2p_result = -2;
/// The caller's buffer is too small; the length (or count) out-parameter
/// holds the size needed. Nothing was consumed: call again with more room.
pub const P2P_ERR_BUFFER_TOO_SMALL: p2p_result = -3;
/// An internal error (a bug in p2pcore: please report it with the last
/// error's text). The node that returned it may be unusable: free it.
pub const P2P_ERR_PANIC: p2p_result = -4;
/// The configuration is invalid (the last error names the setting).
pub const P2P_ERR_CONFIG: p2p_result = -5;
/// The operating system refused: binding the socket, the event loop, a
/// thread.
pub const P2P_ERR_IO: p2p_result = -6;
/// The data directory could not be used (locked by another process,
/// unreadable, a corrupt identity file); the last error says what to do.
pub const P2P_ERR_DATA_DIR: p2p_result = -7;
/// The node is closing or closed.
pub const P2P_ERR_CLOSED: p2p_result = -8;
/// The call does not fit the node's mode (e.g. `p2p_node_start_thread`
/// twice).
pub const P2P_ERR_WRONG_MODE: p2p_result = -9;
/// No such entry (e.g. no link to that peer).
pub const P2P_ERR_NOT_FOUND: p2p_result = -10;
/// Send: there is no connection to the destination and none is being set
/// up.
pub const P2P_ERR_NOT_CONNECTED: p2p_result = -11;
/// Send: a node cannot send to itself.
pub const P2P_ERR_SELF_SEND: p2p_result = -12;
/// Send: the message is larger than allowed for its reliability.
pub const P2P_ERR_TOO_LARGE: p2p_result = -13;
/// Send: too many unacknowledged bytes for this destination; retry after a
/// `P2P_EVENT_SEND_READY` event for it.
pub const P2P_ERR_BUFFER_FULL: p2p_result = -14;
/// Send: the remote does not accept unreliable datagrams.
pub const P2P_ERR_DATAGRAMS_UNSUPPORTED: p2p_result = -15;
/// Send: no server is connected, so no peer can be reached; retry after
/// `P2P_EVENT_NETWORK_UP`.
pub const P2P_ERR_NETWORK_DOWN: p2p_result = -16;
/// Send: the destination is not online (no server lists it).
pub const P2P_ERR_UNKNOWN_PEER: p2p_result = -17;
/// Connect: the dial was refused at once (the last error says why).
pub const P2P_ERR_CONNECT: p2p_result = -18;
/// Not available on this platform (e.g. a waitable descriptor on Windows).
pub const P2P_ERR_UNSUPPORTED: p2p_result = -19;
/// Store: no answer within the request's timeout (5 s): no server, Raft
/// leader or quorum was reachable. A write may or may not have been
/// applied; retry later (a majority of the servers must be up).
pub const P2P_ERR_KV_UNAVAILABLE: p2p_result = -20;
/// Store: a key (over `P2P_KV_MAX_KEY_LEN`), value (over
/// `P2P_KV_MAX_VALUE_LEN`) or the whole request is over a bound; the last
/// error or the event's `text` names which and the limit.
pub const P2P_ERR_KV_TOO_LARGE: p2p_result = -21;
/// Store: the request is malformed (an empty key for a put, say).
pub const P2P_ERR_KV_INVALID: p2p_result = -22;
/// Store: the write would take the store over its size bound; delete keys
/// first.
pub const P2P_ERR_KV_STORE_FULL: p2p_result = -23;
/// Store: only peers use the store; this node is a server.
pub const P2P_ERR_KV_NOT_A_PEER: p2p_result = -24;
/// Store: too many requests (64) or watches of this node are waiting;
/// wait for answers (`P2P_EVENT_KV_DONE`) or unwatch first.
pub const P2P_ERR_KV_TOO_MANY: p2p_result = -25;
/// Store: a retried request whose answer the store no longer keeps.
pub const P2P_ERR_KV_STALE: p2p_result = -26;
/// Store: a watch asked for changes older than the store keeps
/// (`P2P_EVENT_KV_WATCH_ENDED`, its `last` the oldest revision kept): read
/// the current state and watch from its revision + 1.
pub const P2P_ERR_KV_COMPACTED: p2p_result = -27;
/// Coordination: a lock, group, queue or service name, queue item or
/// instance id is empty or longer than `P2P_COORD_MAX_NAME` bytes.
pub const P2P_ERR_COORD_INVALID_NAME: p2p_result = -28;
/// Coordination: a lock, campaign or registration needs a session
/// (`p2p_kv_session_open`); the session passed was 0.
pub const P2P_ERR_COORD_NO_SESSION: p2p_result = -29;
/// Coordination (`P2P_EVENT_COORD_ENDED`, `P2P_EVENT_COORD_UPDATED`): the
/// session ended (expired or closed), and with it what the request held.
pub const P2P_ERR_COORD_SESSION_ENDED: p2p_result = -30;
/// Coordination (`P2P_EVENT_COORD_ENDED`): this peer led the group and
/// does no more (its leader key went: its session expired, or it was
/// removed).
pub const P2P_ERR_COORD_LEADERSHIP_LOST: p2p_result = -31;
/// Coordination (`P2P_EVENT_COORD_ENDED`): a lock's or a pop's wait
/// passed first.
pub const P2P_ERR_COORD_TIMEOUT: p2p_result = -32;
/// Coordination (`P2P_EVENT_COORD_ENDED`): a pop that does not wait found
/// fewer items than asked (the event's `count`: the items queued).
pub const P2P_ERR_COORD_NOT_ENOUGH: p2p_result = -33;
/// Coordination: this peer already runs the most coordination requests it
/// may (48); release some first.
pub const P2P_ERR_COORD_TOO_MANY: p2p_result = -34;

/// An error on its way to the caller: a code and the message
/// `p2p_last_error` will return.
#[derive(Debug)]
pub(crate) struct Error {
    pub(crate) code: p2p_result,
    pub(crate) message: String,
}

impl Error {
    pub(crate) fn new(code: p2p_result, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(P2P_ERR_INVALID_ARGUMENT, message)
    }

    pub(crate) fn closed() -> Self {
        Self::new(P2P_ERR_CLOSED, "the node is closed")
    }
}

impl From<SendError> for Error {
    fn from(e: SendError) -> Self {
        let code = match e {
            SendError::NotConnected(_) => P2P_ERR_NOT_CONNECTED,
            SendError::SelfSend => P2P_ERR_SELF_SEND,
            SendError::TooLarge { .. } => P2P_ERR_TOO_LARGE,
            SendError::BufferFull { .. } => P2P_ERR_BUFFER_FULL,
            SendError::DatagramsUnsupported => P2P_ERR_DATAGRAMS_UNSUPPORTED,
            SendError::ShuttingDown => P2P_ERR_CLOSED,
            SendError::NetworkDown => P2P_ERR_NETWORK_DOWN,
            SendError::UnknownPeer(_) => P2P_ERR_UNKNOWN_PEER,
            _ => P2P_ERR_INVALID_ARGUMENT,
        };
        Self::new(code, e.to_string())
    }
}

/// The result code of a store failure (the request functions return it;
/// `P2P_EVENT_KV_DONE` and `P2P_EVENT_KV_WATCH_ENDED` carry it in `code`).
pub(crate) fn kv_code(e: &KvError) -> p2p_result {
    match e {
        KvError::Unavailable => P2P_ERR_KV_UNAVAILABLE,
        KvError::TooLarge { .. } => P2P_ERR_KV_TOO_LARGE,
        KvError::Invalid(_) => P2P_ERR_KV_INVALID,
        KvError::StoreFull { .. } => P2P_ERR_KV_STORE_FULL,
        KvError::NotAPeer => P2P_ERR_KV_NOT_A_PEER,
        KvError::TooManyInFlight(_) => P2P_ERR_KV_TOO_MANY,
        KvError::Stale => P2P_ERR_KV_STALE,
        KvError::Compacted { .. } => P2P_ERR_KV_COMPACTED,
        // A failure this library version does not name.
        _ => P2P_ERR_KV_INVALID,
    }
}

impl From<KvError> for Error {
    fn from(e: KvError) -> Self {
        Self::new(kv_code(&e), e.to_string())
    }
}

/// The result code of a coordination failure (the request functions return
/// it; `P2P_EVENT_COORD_ENDED` and `P2P_EVENT_COORD_UPDATED` carry it in
/// `code`).
pub(crate) fn coord_code(e: &CoordError) -> p2p_result {
    match e {
        CoordError::Kv(k) => kv_code(k),
        CoordError::InvalidName { .. } => P2P_ERR_COORD_INVALID_NAME,
        CoordError::NoSession => P2P_ERR_COORD_NO_SESSION,
        CoordError::SessionEnded => P2P_ERR_COORD_SESSION_ENDED,
        CoordError::LeadershipLost => P2P_ERR_COORD_LEADERSHIP_LOST,
        CoordError::Timeout => P2P_ERR_COORD_TIMEOUT,
        CoordError::NotEnough { .. } => P2P_ERR_COORD_NOT_ENOUGH,
        CoordError::NoSuchRequest => P2P_ERR_NOT_FOUND,
        CoordError::TooMany(_) => P2P_ERR_COORD_TOO_MANY,
        CoordError::NotAPeer => P2P_ERR_KV_NOT_A_PEER,
        // A failure this library version does not name.
        _ => P2P_ERR_KV_INVALID,
    }
}

impl From<CoordError> for Error {
    fn from(e: CoordError) -> Self {
        let message = match e {
            // The core's text names the Rust call.
            CoordError::NoSession => {
                "this request needs a session: open one with p2p_kv_session_open".to_owned()
            }
            ref e => e.to_string(),
        };
        Self::new(coord_code(&e), message)
    }
}

impl From<ConnectError> for Error {
    fn from(e: ConnectError) -> Self {
        let code = if e == ConnectError::ShuttingDown { P2P_ERR_CLOSED } else { P2P_ERR_CONNECT };
        Self::new(code, e.to_string())
    }
}

impl From<LookupError> for Error {
    fn from(e: LookupError) -> Self {
        let code = match e {
            LookupError::NotAPeer => P2P_ERR_WRONG_MODE,
            LookupError::NetworkDown => P2P_ERR_NETWORK_DOWN,
            _ => P2P_ERR_INVALID_ARGUMENT,
        };
        let message = match e {
            // The core's text names the Rust event.
            LookupError::NetworkDown => {
                "no server is linked to answer the lookup; wait for P2P_EVENT_NETWORK_UP".to_owned()
            }
            ref e => e.to_string(),
        };
        Self::new(code, message)
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Self::new(P2P_ERR_CONFIG, e.to_string())
    }
}

impl From<DataDirError> for Error {
    fn from(e: DataDirError) -> Self {
        Self::new(P2P_ERR_DATA_DIR, e.to_string())
    }
}

impl From<HostError> for Error {
    fn from(e: HostError) -> Self {
        match e {
            HostError::Config(c) => c.into(),
            e => Self::new(P2P_ERR_IO, e.to_string()),
        }
    }
}

impl From<HandleError> for Error {
    fn from(e: HandleError) -> Self {
        match e {
            HandleError::Stopped => Self::closed(),
            HandleError::Send(s) => s.into(),
            HandleError::Connect(c) => c.into(),
            HandleError::Host(h) => h.into(),
            HandleError::Panicked => Self::new(P2P_ERR_PANIC, "the p2pcore network thread panicked"),
            e => Self::new(P2P_ERR_IO, e.to_string()),
        }
    }
}

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

fn set_last_error(message: &str) {
    LAST_ERROR.with(|l| {
        let mut l = l.borrow_mut();
        l.clear();
        l.push_str(message);
    });
}

/// Runs an exported function's body: its error becomes the thread's last
/// error and its code; a panic becomes `P2P_ERR_PANIC` instead of unwinding
/// into C (which would abort the game).
pub(crate) fn call<T: From<i32>>(f: impl FnOnce() -> Result<T, Error>) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            set_last_error(&e.message);
            T::from(e.code)
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            set_last_error(&format!("internal error in p2pcore (a bug: please report it): {what}"));
            T::from(P2P_ERR_PANIC)
        }
    }
}

/// [`call`] for functions that return nothing (frees, releases): a panic
/// is swallowed (the last error says so) rather than unwound into C.
pub(crate) fn call_void(f: impl FnOnce()) {
    let _: i32 = call(|| {
        f();
        Ok(P2P_OK)
    });
}

/// Copies the calling thread's last error message into `buf` (at most
/// `len - 1` bytes and a terminating NUL, cut at a character boundary).
///
/// Returns the message's full length in bytes, without the NUL: compare it
/// with `len` to see whether it was cut (`NULL`/0 asks only for the length).
/// The message is the one of the last failed call on this thread; calls that
/// succeed leave it alone.
///
/// Thread safety: any thread (each thread has its own last error).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_last_error(buf: *mut c_char, len: u32) -> u32 {
    // Not through `call`: a failure here must not replace the message.
    catch_unwind(AssertUnwindSafe(|| {
        LAST_ERROR.with(|l| {
            let l = l.borrow();
            if !buf.is_null() && len > 0 {
                let mut n = l.len().min(len as usize - 1);
                while !l.is_char_boundary(n) {
                    n -= 1;
                }
                // SAFETY: the caller gives `len` writable bytes at `buf`.
                unsafe {
                    std::ptr::copy_nonoverlapping(l.as_ptr(), buf.cast::<u8>(), n);
                    *buf.add(n) = 0;
                }
            }
            u32::try_from(l.len()).unwrap_or(u32::MAX)
        })
    }))
    .unwrap_or(0)
}

/// A static, NUL-terminated description of a result code (`"P2P_OK"`,
/// `"P2P_ERR_BUFFER_FULL: ..."`), for logs. Never NULL; unknown codes give
/// `"unknown p2pcore result code"`.
///
/// Thread safety: any thread. Ownership: the string is static; do not free it.
#[unsafe(no_mangle)]
pub extern "C" fn p2p_result_str(result: p2p_result) -> *const c_char {
    result_str(result).as_ptr()
}

pub(crate) fn result_str(result: p2p_result) -> &'static CStr {
    match result {
        P2P_OK => c"P2P_OK: success",
        P2P_DONE => c"P2P_DONE: nothing more",
        P2P_ERR_INVALID_ARGUMENT => {
            c"P2P_ERR_INVALID_ARGUMENT: an argument is NULL, not UTF-8 or out of range"
        }
        P2P_ERR_BUFFER_TOO_SMALL => {
            c"P2P_ERR_BUFFER_TOO_SMALL: the buffer is too small; the size needed was returned"
        }
        P2P_ERR_PANIC => c"P2P_ERR_PANIC: internal error in p2pcore (a bug: please report it)",
        P2P_ERR_CONFIG => c"P2P_ERR_CONFIG: the configuration is invalid",
        P2P_ERR_IO => c"P2P_ERR_IO: the operating system refused (socket, event loop or thread)",
        P2P_ERR_DATA_DIR => c"P2P_ERR_DATA_DIR: the data directory cannot be used",
        P2P_ERR_CLOSED => c"P2P_ERR_CLOSED: the node is closing or closed",
        P2P_ERR_WRONG_MODE => c"P2P_ERR_WRONG_MODE: the call does not fit the node's mode",
        P2P_ERR_NOT_FOUND => c"P2P_ERR_NOT_FOUND: no such entry",
        P2P_ERR_NOT_CONNECTED => c"P2P_ERR_NOT_CONNECTED: no connection to the destination",
        P2P_ERR_SELF_SEND => c"P2P_ERR_SELF_SEND: a node cannot send to itself",
        P2P_ERR_TOO_LARGE => c"P2P_ERR_TOO_LARGE: the message is too large for its reliability",
        P2P_ERR_BUFFER_FULL => {
            c"P2P_ERR_BUFFER_FULL: the send buffer is full; retry after P2P_EVENT_SEND_READY"
        }
        P2P_ERR_DATAGRAMS_UNSUPPORTED => {
            c"P2P_ERR_DATAGRAMS_UNSUPPORTED: the remote does not accept unreliable datagrams"
        }
        P2P_ERR_NETWORK_DOWN => {
            c"P2P_ERR_NETWORK_DOWN: no server is connected; retry after P2P_EVENT_NETWORK_UP"
        }
        P2P_ERR_UNKNOWN_PEER => c"P2P_ERR_UNKNOWN_PEER: the destination is not online",
        P2P_ERR_CONNECT => c"P2P_ERR_CONNECT: the dial was refused",
        P2P_ERR_UNSUPPORTED => c"P2P_ERR_UNSUPPORTED: not available on this platform",
        P2P_ERR_KV_UNAVAILABLE => {
            c"P2P_ERR_KV_UNAVAILABLE: the store did not answer in time (no server, leader or quorum); retry later"
        }
        P2P_ERR_KV_TOO_LARGE => c"P2P_ERR_KV_TOO_LARGE: a key, value or request is over the store's bounds",
        P2P_ERR_KV_INVALID => c"P2P_ERR_KV_INVALID: the store request is malformed",
        P2P_ERR_KV_STORE_FULL => c"P2P_ERR_KV_STORE_FULL: the store is full; delete keys first",
        P2P_ERR_KV_NOT_A_PEER => c"P2P_ERR_KV_NOT_A_PEER: only a peer can use the store",
        P2P_ERR_KV_TOO_MANY => {
            c"P2P_ERR_KV_TOO_MANY: too many store requests or watches are waiting; wait for answers"
        }
        P2P_ERR_KV_STALE => c"P2P_ERR_KV_STALE: the request's answer is no longer kept",
        P2P_ERR_KV_COMPACTED => {
            c"P2P_ERR_KV_COMPACTED: the watch's start is compacted away; read, then watch from there"
        }
        P2P_ERR_COORD_INVALID_NAME => {
            c"P2P_ERR_COORD_INVALID_NAME: a coordination name or id is empty or over P2P_COORD_MAX_NAME bytes"
        }
        P2P_ERR_COORD_NO_SESSION => {
            c"P2P_ERR_COORD_NO_SESSION: this request needs a session (p2p_kv_session_open)"
        }
        P2P_ERR_COORD_SESSION_ENDED => {
            c"P2P_ERR_COORD_SESSION_ENDED: the session ended; what it held is gone"
        }
        P2P_ERR_COORD_LEADERSHIP_LOST => c"P2P_ERR_COORD_LEADERSHIP_LOST: this peer no longer leads the group",
        P2P_ERR_COORD_TIMEOUT => c"P2P_ERR_COORD_TIMEOUT: the wait passed before the request was served",
        P2P_ERR_COORD_NOT_ENOUGH => c"P2P_ERR_COORD_NOT_ENOUGH: the queue holds fewer items than asked",
        P2P_ERR_COORD_TOO_MANY => {
            c"P2P_ERR_COORD_TOO_MANY: too many coordination requests are running; release some"
        }
        _ => c"unknown p2pcore result code",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_a_code_and_a_message() {
        let r: i32 = call(|| -> Result<i32, Error> { panic!("boom") });
        assert_eq!(r, P2P_ERR_PANIC);
        let mut buf = [0 as c_char; 128];
        // SAFETY: 128 writable bytes.
        let n = unsafe { p2p_last_error(buf.as_mut_ptr(), 128) };
        // SAFETY: the function NUL-terminated it.
        let text = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_str().unwrap();
        assert_eq!(n as usize, text.len());
        assert!(text.contains("boom"), "{text}");
    }

    #[test]
    fn last_error_is_cut_at_a_character_boundary() {
        let _: i32 = call(|| -> Result<i32, Error> { Err(Error::invalid("ééé")) });
        let mut buf = [0x7f as c_char; 4];
        // SAFETY: 4 writable bytes.
        let n = unsafe { p2p_last_error(buf.as_mut_ptr(), 4) };
        assert_eq!(n, 6);
        // 3 bytes of room: one 2-byte character fits, the NUL follows it.
        // SAFETY: NUL-terminated within the buffer.
        assert_eq!(unsafe { CStr::from_ptr(buf.as_ptr()) }.to_bytes(), "é".as_bytes());
        // SAFETY: NULL asks for the length only.
        assert_eq!(unsafe { p2p_last_error(std::ptr::null_mut(), 0) }, 6);
    }

    #[test]
    fn every_code_has_its_own_description() {
        let codes = -34..=0;
        let mut seen = std::collections::BTreeSet::new();
        for c in codes {
            let s = result_str(c).to_str().unwrap();
            assert!(s.starts_with("P2P_"), "{c}: {s}");
            assert!(seen.insert(s), "{c}: {s} repeated");
        }
        assert_eq!(result_str(-1000).to_str().unwrap(), "unknown p2pcore result code");
    }
}
