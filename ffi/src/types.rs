//! Value types shared by every part of the C API (node IDs, addresses,
//! identities, the version), their text forms, and the checked conversions
//! of the raw pointers C hands in.

use crate::result::{Error, P2P_ERR_BUFFER_TOO_SMALL, P2P_OK, call, p2p_result};
use p2pcore::{Identity, NodeId, Role};
use std::ffi::{CStr, c_char};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// The library's version, `"major.minor.patch"` (the header's
/// `P2P_VERSION` macro, written by cbindgen.toml).
pub const P2P_VERSION: &str = "0.1.0";
/// The library's major version.
pub const P2P_VERSION_MAJOR: u32 = 0;
/// The library's minor version.
pub const P2P_VERSION_MINOR: u32 = 1;
/// The library's patch version.
pub const P2P_VERSION_PATCH: u32 = 0;

/// Bytes in a node ID (`p2p_node_id.bytes`).
pub const P2P_NODE_ID_LEN: u32 = 17;
/// Room a node ID's text form needs, with its NUL (`S` or `C`, then a UUID).
pub const P2P_NODE_ID_STR_LEN: u32 = 38;
/// Room an address's text form needs at most, with its NUL
/// (`[v6%scope]:port`).
pub const P2P_ADDR_STR_LEN: u32 = 64;
/// Bytes in an identity blob (`p2p_identity_generate`, `p2p_node_identity`).
pub const P2P_IDENTITY_LEN: u32 = 38;
/// Bytes in a name field of the API's structures (64 bytes of UTF-8 at
/// most, NUL-terminated, padded).
pub const P2P_NAME_LEN: u32 = 68;

/// Role of a peer: an ordinary node (a game client, a game server behind
/// NAT, a service). Its ID starts with `C`.
pub const P2P_ROLE_PEER: u32 = 0;
/// Role of a server: public, keeps the directory, relays. Its ID starts
/// with `S`.
pub const P2P_ROLE_SERVER: u32 = 1;

/// No address (an unset `p2p_addr`).
pub const P2P_AF_NONE: u16 = 0;
/// An IPv4 address: `ip[0..4]`.
pub const P2P_AF_IPV4: u16 = 4;
/// An IPv6 address: `ip[0..16]`, with `scope_id`.
pub const P2P_AF_IPV6: u16 = 6;

/// A node ID: 17 bytes (a role letter's byte and a UUID), passed by value or
/// by pointer; never a pointer into the library. All zero means "none"
/// where a field says so. Compare with `memcmp`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct p2p_node_id {
    /// The binary form.
    pub bytes: [u8; 17],
}

/// An IP address and port (IPv4 or IPv6), platform-neutral (no
/// `sockaddr`). 24 bytes.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct p2p_addr {
    /// `P2P_AF_IPV4`, `P2P_AF_IPV6`, or `P2P_AF_NONE` for no address.
    pub family: u16,
    /// The port, in host byte order.
    pub port: u16,
    /// IPv6 scope (interface index); 0 otherwise.
    pub scope_id: u32,
    /// The address in network byte order: 4 bytes for IPv4, 16 for IPv6.
    pub ip: [u8; 16],
}

impl From<NodeId> for p2p_node_id {
    fn from(id: NodeId) -> Self {
        Self { bytes: id.to_bytes() }
    }
}

impl p2p_node_id {
    pub(crate) fn to_id(self) -> Result<NodeId, Error> {
        NodeId::from_bytes(&self.bytes).map_err(|e| Error::invalid(format!("not a node ID: {e}")))
    }
}

impl From<SocketAddr> for p2p_addr {
    fn from(a: SocketAddr) -> Self {
        let mut ip = [0u8; 16];
        match a {
            SocketAddr::V4(v4) => {
                ip[..4].copy_from_slice(&v4.ip().octets());
                Self { family: P2P_AF_IPV4, port: v4.port(), scope_id: 0, ip }
            }
            SocketAddr::V6(v6) => {
                ip.copy_from_slice(&v6.ip().octets());
                Self { family: P2P_AF_IPV6, port: v6.port(), scope_id: v6.scope_id(), ip }
            }
        }
    }
}

impl p2p_addr {
    pub(crate) fn to_socket_addr(self) -> Result<SocketAddr, Error> {
        match self.family {
            P2P_AF_IPV4 => {
                let [a, b, c, d, ..] = self.ip;
                Ok(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(a, b, c, d), self.port)))
            }
            P2P_AF_IPV6 => {
                Ok(SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(self.ip), self.port, 0, self.scope_id)))
            }
            f => Err(Error::invalid(format!(
                "address family {f} is neither P2P_AF_IPV4 (4) nor P2P_AF_IPV6 (6)"
            ))),
        }
    }

    pub(crate) fn from_ip(ip: IpAddr) -> Self {
        Self::from(SocketAddr::new(ip, 0))
    }
}

pub(crate) fn role_of(role: u32) -> Result<Role, Error> {
    match role {
        P2P_ROLE_PEER => Ok(Role::Peer),
        P2P_ROLE_SERVER => Ok(Role::Server),
        r => Err(Error::invalid(format!("role {r} is neither P2P_ROLE_PEER (0) nor P2P_ROLE_SERVER (1)"))),
    }
}

// ----- checked pointers --------------------------------------------------

/// `p` as a reference, or an error naming the argument.
///
/// # Safety
/// `p` is NULL or points to a valid `T` for `'a`.
pub(crate) unsafe fn arg<'a, T>(p: *const T, what: &str) -> Result<&'a T, Error> {
    // SAFETY: the caller's promise.
    unsafe { p.as_ref() }.ok_or_else(|| Error::invalid(format!("`{what}` is NULL")))
}

/// `p` as a mutable reference, or an error naming the argument.
///
/// # Safety
/// `p` is NULL or points to a valid, writable `T` for `'a`.
pub(crate) unsafe fn arg_mut<'a, T>(p: *mut T, what: &str) -> Result<&'a mut T, Error> {
    // SAFETY: the caller's promise.
    unsafe { p.as_mut() }.ok_or_else(|| Error::invalid(format!("`{what}` is NULL")))
}

/// A NUL-terminated UTF-8 string argument; `None` for NULL.
///
/// # Safety
/// `p` is NULL or a NUL-terminated string valid for `'a`.
pub(crate) unsafe fn str_arg<'a>(p: *const c_char, what: &str) -> Result<Option<&'a str>, Error> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: the caller's promise.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str().map(Some).map_err(|_| Error::invalid(format!("`{what}` is not valid UTF-8")))
}

/// `len` bytes at `p` (NULL is allowed when `len` is 0).
///
/// # Safety
/// `p` is NULL or points to `len` readable bytes valid for `'a`.
pub(crate) unsafe fn bytes_arg<'a>(p: *const u8, len: u32, what: &str) -> Result<&'a [u8], Error> {
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(Error::invalid(format!("`{what}` is NULL but its length is {len}")));
    }
    // SAFETY: the caller's promise.
    Ok(unsafe { std::slice::from_raw_parts(p, len as usize) })
}

/// Writes `items` to the caller's array under the length-in/length-out
/// convention: `*count` holds the array's capacity on entry and the number
/// of items on return; when they do not fit nothing is written and
/// `P2P_ERR_BUFFER_TOO_SMALL` returned (with `*count` the number needed).
///
/// # Safety
/// `count` is NULL or valid; `out` is NULL or has room for `*count` items.
pub(crate) unsafe fn fill<T>(items: Vec<T>, out: *mut T, count: *mut u32) -> Result<p2p_result, Error> {
    // SAFETY: the caller's promise.
    let count = unsafe { arg_mut(count, "count") }?;
    let cap = *count as usize;
    let n = items.len();
    *count = u32::try_from(n).unwrap_or(u32::MAX);
    if n > cap {
        return Err(Error::new(
            P2P_ERR_BUFFER_TOO_SMALL,
            format!("{n} entries need room; the array holds {cap} (the count now says how many)"),
        ));
    }
    if n > 0 && out.is_null() {
        return Err(Error::invalid("`out` is NULL"));
    }
    for (i, item) in items.into_iter().enumerate() {
        // SAFETY: i < n <= cap, and `out` has room for cap items.
        unsafe { out.add(i).write(item) };
    }
    Ok(P2P_OK)
}

/// Copies `bytes` to a caller buffer under the length-in/length-out
/// convention (`*len`: capacity in, bytes written or needed out).
///
/// # Safety
/// `len` is NULL or valid; `out` is NULL or has room for `*len` bytes.
pub(crate) unsafe fn fill_bytes(bytes: &[u8], out: *mut u8, len: *mut u32) -> Result<p2p_result, Error> {
    // SAFETY: the caller's promise.
    let len = unsafe { arg_mut(len, "len") }?;
    let cap = *len as usize;
    *len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    if bytes.len() > cap {
        return Err(Error::new(
            P2P_ERR_BUFFER_TOO_SMALL,
            format!("{} bytes need room; the buffer holds {cap} (the length now says how many)", bytes.len()),
        ));
    }
    if !bytes.is_empty() {
        if out.is_null() {
            return Err(Error::invalid("`out` is NULL"));
        }
        // SAFETY: `out` has room for cap >= bytes.len() bytes.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), out, bytes.len()) };
    }
    Ok(P2P_OK)
}

/// Copies `s` and a NUL to a caller buffer (`*len`: capacity in, bytes
/// written or needed out, counting the NUL).
///
/// # Safety
/// As [`fill_bytes`].
pub(crate) unsafe fn fill_str(s: &str, out: *mut c_char, len: *mut u32) -> Result<p2p_result, Error> {
    let mut bytes = Vec::with_capacity(s.len() + 1);
    bytes.extend_from_slice(s.as_bytes());
    bytes.push(0);
    // SAFETY: the caller's promise.
    unsafe { fill_bytes(&bytes, out.cast::<u8>(), len) }
}

/// A name for a fixed-size field: at most `N - 1` bytes (cut at a character
/// boundary), NUL-terminated, the rest zero.
pub(crate) fn name_field<const N: usize>(s: &str) -> [c_char; N] {
    let mut out = [0 as c_char; N];
    let mut n = s.len().min(N - 1);
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    for (o, b) in out.iter_mut().zip(&s.as_bytes()[..n]) {
        *o = *b as c_char;
    }
    out
}

// ----- exported functions -----------------------------------------------

/// The library's version as a static NUL-terminated string
/// (`"0.1.0"`; equal to `P2P_VERSION` when header and library match).
///
/// Thread safety: any thread. Ownership: static; do not free.
#[unsafe(no_mangle)]
pub extern "C" fn p2p_version() -> *const c_char {
    c"0.1.0".as_ptr()
}

/// Parses a node ID's text form (`S` or `C` and a UUID, as
/// `p2p_node_id_format` writes it) into `*out`.
///
/// Returns `P2P_OK`, or `P2P_ERR_INVALID_ARGUMENT` (a NULL pointer, or text
/// that is not a node ID: the last error says why).
///
/// Thread safety: any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_node_id_parse(text: *const c_char, out: *mut p2p_node_id) -> p2p_result {
    call(|| {
        // SAFETY: the caller passes a string and a writable ID (or NULL).
        let text = unsafe { str_arg(text, "text") }?.ok_or_else(|| Error::invalid("`text` is NULL"))?;
        let out = unsafe { arg_mut(out, "out") }?;
        let id: NodeId = text.trim().parse().map_err(|e| Error::invalid(format!("not a node ID: {e}")))?;
        *out = id.into();
        Ok(P2P_OK)
    })
}

/// Writes a node ID's text form and a NUL to `buf`. `*len` holds the
/// buffer's size on entry and the bytes written (or needed), NUL included,
/// on return; `P2P_NODE_ID_STR_LEN` is always enough.
///
/// Returns `P2P_OK`, `P2P_ERR_BUFFER_TOO_SMALL` or
/// `P2P_ERR_INVALID_ARGUMENT` (NULL, or bytes that are not a node ID).
///
/// Thread safety: any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_node_id_format(
    id: *const p2p_node_id,
    buf: *mut c_char,
    len: *mut u32,
) -> p2p_result {
    call(|| {
        // SAFETY: the caller passes a valid ID, buffer and length (or NULL).
        let id = unsafe { arg(id, "id") }?.to_id()?;
        unsafe { fill_str(&id.to_string(), buf, len) }
    })
}

/// Parses `"1.2.3.4:5"` or `"[::1]:5"` into `*out`.
///
/// Returns `P2P_OK` or `P2P_ERR_INVALID_ARGUMENT`.
///
/// Thread safety: any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_addr_parse(text: *const c_char, out: *mut p2p_addr) -> p2p_result {
    call(|| {
        // SAFETY: the caller passes a string and a writable address (or NULL).
        let text = unsafe { str_arg(text, "text") }?.ok_or_else(|| Error::invalid("`text` is NULL"))?;
        let out = unsafe { arg_mut(out, "out") }?;
        let addr: SocketAddr = text
            .trim()
            .parse()
            .map_err(|_| Error::invalid(format!("`{text}` is not an address like 1.2.3.4:5 or [::1]:5")))?;
        *out = addr.into();
        Ok(P2P_OK)
    })
}

/// Writes an address's text form and a NUL to `buf` (`*len`: size in,
/// bytes written or needed out, NUL included; `P2P_ADDR_STR_LEN` is always
/// enough).
///
/// Thread safety: any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_addr_format(
    addr: *const p2p_addr,
    buf: *mut c_char,
    len: *mut u32,
) -> p2p_result {
    call(|| {
        // SAFETY: the caller passes a valid address, buffer and length (or NULL).
        let addr = unsafe { arg(addr, "addr") }?.to_socket_addr()?;
        unsafe { fill_str(&addr.to_string(), buf, len) }
    })
}

/// Creates a new identity (a key pair from the operating system's random
/// generator, and the role) and writes its blob, `P2P_IDENTITY_LEN` bytes,
/// to `out` (`*len`: size in, bytes written or needed out). Keep it secret
/// and pass it as `p2p_config.identity` to keep a node ID across runs
/// (or use `p2p_config.data_dir`, which does this for you).
///
/// Thread safety: any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_identity_generate(role: u32, out: *mut u8, len: *mut u32) -> p2p_result {
    call(|| {
        let role = role_of(role)?;
        let seed = p2pcore_mio::os_seed().map_err(Error::from)?;
        let identity = Identity::from_seed(role, seed);
        // SAFETY: the caller passes a buffer and its length (or NULL).
        unsafe { fill_bytes(&identity.to_bytes(), out, len) }
    })
}

/// The node ID of an identity blob.
///
/// Returns `P2P_OK` or `P2P_ERR_INVALID_ARGUMENT` (not an identity blob).
///
/// Thread safety: any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_identity_id(identity: *const u8, len: u32, out: *mut p2p_node_id) -> p2p_result {
    call(|| {
        // SAFETY: the caller passes `len` bytes and a writable ID (or NULL).
        let bytes = unsafe { bytes_arg(identity, len, "identity") }?;
        let out = unsafe { arg_mut(out, "out") }?;
        let identity =
            Identity::from_bytes(bytes).map_err(|e| Error::invalid(format!("not an identity blob: {e}")))?;
        *out = identity.id().into();
        Ok(P2P_OK)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_matches_the_crate() {
        assert_eq!(P2P_VERSION, env!("CARGO_PKG_VERSION"));
        let v: Vec<u32> = P2P_VERSION.split('.').map(|p| p.parse().unwrap()).collect();
        assert_eq!(v, [P2P_VERSION_MAJOR, P2P_VERSION_MINOR, P2P_VERSION_PATCH]);
        // SAFETY: a static NUL-terminated string.
        assert_eq!(unsafe { CStr::from_ptr(p2p_version()) }.to_str().unwrap(), P2P_VERSION);
    }

    #[test]
    fn lengths_are_the_core_s() {
        // The header needs literals; these keep them honest.
        assert_eq!(P2P_NODE_ID_LEN as usize, p2pcore::NODE_ID_LEN);
        assert_eq!(P2P_IDENTITY_LEN as usize, p2pcore::IDENTITY_LEN);
        assert_eq!(std::mem::size_of::<p2p_node_id>(), p2pcore::NODE_ID_LEN);
        let id = Identity::from_seed(Role::Server, [1; 32]).id();
        assert_eq!(id.to_string().len() + 1, P2P_NODE_ID_STR_LEN as usize);
    }

    #[test]
    fn addresses_round_trip() {
        for text in ["1.2.3.4:5", "[::1]:7400", "[fe80::1%3]:9"] {
            let a: SocketAddr = text.parse().unwrap();
            assert_eq!(p2p_addr::from(a).to_socket_addr().unwrap(), a);
        }
        assert!(p2p_addr::default().to_socket_addr().is_err());
        let long: SocketAddr = "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff%4294967295]:65535".parse().unwrap();
        assert!(long.to_string().len() < P2P_ADDR_STR_LEN as usize);
    }

    #[test]
    fn names_are_cut_at_character_boundaries() {
        let f: [c_char; 4] = name_field("aéé");
        // SAFETY: NUL-terminated.
        assert_eq!(unsafe { CStr::from_ptr(f.as_ptr()) }.to_str().unwrap(), "aé");
        let f: [c_char; 68] = name_field(&"x".repeat(64));
        assert_eq!(f[63], b'x' as c_char);
        assert_eq!(f[64], 0);
    }
}
