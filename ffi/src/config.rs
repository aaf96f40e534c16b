//! `p2p_config`: the versioned, size-prefixed configuration structure, its
//! key/value settings, and how both become a [`Config`] and a
//! [`HostConfig`].

use crate::result::{Error, P2P_ERR_CONFIG, P2P_OK, call, call_void, p2p_result};
use crate::types::{P2P_ROLE_PEER, arg, arg_mut, bytes_arg, role_of, str_arg};
use p2pcore::{
    Admission, Config, ConnectPolicy, DirectoryMode, Identity, JoinToken, NetworkSecret, PublicKey, Role,
};
use p2pcore_mio::{DataDir, HostConfig, os_seed};
use std::ffi::{c_char, c_void};
use std::net::SocketAddr;
use std::time::Duration;

/// The layout version `p2p_config_default` writes into `p2p_config.version`.
pub const P2P_CONFIG_VERSION: u32 = 1;

/// How to create a node (`p2p_node_create`, `p2p_core_create`).
///
/// Always start from `p2p_config_default`, which sets `size`, `version`
/// and the defaults; then set the fields you need, and anything else with
/// `p2p_config_set`. Later versions of the library only add fields at the
/// end, and read `size` to know which ones a caller compiled against.
///
/// Strings are NUL-terminated UTF-8 owned by the caller; they are read
/// during `p2p_node_create` / `p2p_core_create` only. NULL means "not set".
#[repr(C)]
#[derive(Debug)]
pub struct p2p_config {
    /// `sizeof(p2p_config)` of the caller's header (set by
    /// `p2p_config_default`).
    pub size: u32,
    /// `P2P_CONFIG_VERSION` of the caller's header (set by
    /// `p2p_config_default`).
    pub version: u32,
    /// `P2P_ROLE_PEER` (default) or `P2P_ROLE_SERVER`.
    pub role: u32,
    /// Hosted mode: how long `p2p_node_close` may take, in ms (default
    /// 2000).
    pub close_timeout_ms: u32,
    /// Hosted mode: 1 to send batches with UDP segmentation offload where
    /// the system has it (default), 0 to send datagram by datagram (for
    /// network cards whose GSO misbehaves).
    pub gso: u32,
    /// Length of `identity` in bytes (`P2P_IDENTITY_LEN`), or 0.
    pub identity_len: u32,
    /// The node's human-readable name: 1 to 64 bytes of UTF-8, no control
    /// characters. Required.
    pub name: *const c_char,
    /// A directory that keeps the node's identity across runs (created if
    /// missing) and locks out a second process. NULL: use `identity`, or a
    /// new identity for this run only.
    pub data_dir: *const c_char,
    /// An identity blob (`p2p_identity_generate`, `p2p_node_identity`) to
    /// run as, when `data_dir` is NULL.
    pub identity: *const u8,
    /// 32 bytes seeding the node's random choices; NULL (default) takes
    /// them from the operating system. Set it only to replay a run.
    pub seed: *const u8,
    /// Hosted mode: the address to bind, e.g. `"0.0.0.0:0"` (default: any
    /// IPv4 interface, a free port), `"[::]:7400"` (IPv6 and IPv4).
    pub bind: *const c_char,
    /// Servers to contact first, comma-separated (`"203.0.113.7:7400,
    /// [2001:db8::1]:7400"`): a peer's bootstrap servers, a server's
    /// introducers.
    pub bootstrap: *const c_char,
    /// Addresses others should dial to reach this node, comma-separated
    /// (servers behind a port forward or with a public IP their interfaces
    /// lack). NULL: the interface addresses.
    pub advertise: *const c_char,
    /// Admission by a network passphrase every node of the network shares
    /// (proved over TLS, never sent). NULL together with `join_token`:
    /// open admission, for development only.
    pub secret: *const c_char,
    /// Admission by a join token (its text form) this node presents;
    /// `token_issuers` lists the issuer keys whose tokens it accepts.
    pub join_token: *const c_char,
    /// Issuer public keys (64 hex digits each), comma-separated, for
    /// `join_token`.
    pub token_issuers: *const c_char,
    /// Settings made with `p2p_config_set`; owned by the library, released
    /// by `p2p_config_clear`. Do not touch.
    pub settings: *mut c_void,
}

/// Settings made with `p2p_config_set`, in order.
type Settings = Vec<(String, String)>;

/// Fills `*cfg` with the defaults of this header's version: a peer, bound
/// to `0.0.0.0:0`, GSO on, a 2 s close timeout, no identity (a new one per
/// run), open admission; every string NULL.
///
/// Returns `P2P_OK` or `P2P_ERR_INVALID_ARGUMENT` (NULL). A config that
/// `p2p_config_set` was used on must be released with `p2p_config_clear`
/// before it is filled again.
///
/// Thread safety: any thread; one config is used by one thread at a time.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_config_default(cfg: *mut p2p_config) -> p2p_result {
    call(|| {
        // SAFETY: the caller passes a writable config (or NULL).
        let cfg = unsafe { arg_mut(cfg, "cfg") }?;
        *cfg = p2p_config {
            size: std::mem::size_of::<p2p_config>() as u32,
            version: P2P_CONFIG_VERSION,
            role: P2P_ROLE_PEER,
            close_timeout_ms: 2000,
            gso: 1,
            identity_len: 0,
            name: std::ptr::null(),
            data_dir: std::ptr::null(),
            identity: std::ptr::null(),
            seed: std::ptr::null(),
            bind: std::ptr::null(),
            bootstrap: std::ptr::null(),
            advertise: std::ptr::null(),
            secret: std::ptr::null(),
            join_token: std::ptr::null(),
            token_issuers: std::ptr::null(),
            settings: std::ptr::null_mut(),
        };
        Ok(P2P_OK)
    })
}

/// Sets one of the settings that have no field of their own, by name, from
/// text (numbers in decimal; `true`/`false`; durations in the unit the key
/// names). The value is checked now: an unknown key or a bad value returns
/// `P2P_ERR_CONFIG` and the last error names the key and what it accepts.
/// Setting a key again replaces its value.
///
/// Keys: `idle_timeout_ms`, `keep_alive_interval_ms`, `hello_timeout_ms`,
/// `max_message_size`, `send_buffer_limit`, `resume_window_ms`,
/// `datagram_buffer`; `peer.connect` (`eager` or `on_demand`),
/// `peer.directory` (`full` or `lookup`), `peer.idle_timeout_ms`, `peer.keep_alive_interval_ms`,
/// `peer.hole_punching`; `limits.receive_window`,
/// `limits.stream_receive_window`, `limits.receive_buffer`,
/// `limits.max_handshakes`, `limits.max_handshakes_per_ip`,
/// `limits.retry_above`; `cluster.raft_tick_ms`, `cluster.election_ticks`,
/// `cluster.heartbeat_ticks`, `cluster.reconnect_min_ms`,
/// `cluster.reconnect_max_ms`, `cluster.forget_after_ms`,
/// `cluster.prefer_least_loaded`, `cluster.load_ratio`;
/// `host.max_turn_datagrams`, `host.max_turn_time_us`,
/// `host.local_addrs_interval_ms` (0: never re-read),
/// `host.recv_buffer`, `host.send_buffer` (bytes; 0: the system default).
/// ARCHITECTURE.md and the Rust documentation of `p2pcore::Config` say what
/// each does.
///
/// Ownership: the library keeps a copy of `key` and `value` in the config
/// until `p2p_config_clear`. Thread safety: one config, one thread at a time.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_config_set(
    cfg: *mut p2p_config,
    key: *const c_char,
    value: *const c_char,
) -> p2p_result {
    call(|| {
        // SAFETY: the caller passes a config and two strings (or NULL).
        let cfg = unsafe { arg_mut(cfg, "cfg") }?;
        let key = unsafe { str_arg(key, "key") }?.ok_or_else(|| Error::invalid("`key` is NULL"))?;
        let value = unsafe { str_arg(value, "value") }?.ok_or_else(|| Error::invalid("`value` is NULL"))?;
        check_header(cfg)?;
        // Check the value against a scratch configuration now, so a mistake
        // is reported where it was made.
        let mut scratch = Config::new(Identity::from_seed(Role::Peer, [0; 32]), "check", [0; 32]);
        let mut host = HostConfig::new(([0, 0, 0, 0], 0).into());
        apply(key, value, &mut scratch, &mut host)?;
        if cfg.settings.is_null() {
            cfg.settings = Box::into_raw(Box::<Settings>::default()).cast::<c_void>();
        }
        // SAFETY: `settings` is only ever set here, to a boxed `Settings`.
        let settings = unsafe { &mut *cfg.settings.cast::<Settings>() };
        settings.retain(|(k, _)| k != key);
        settings.push((key.to_owned(), value.to_owned()));
        Ok(P2P_OK)
    })
}

/// Releases what `p2p_config_set` stored in `*cfg` (the fields are left as
/// they are). NULL, and a config without settings, are fine.
///
/// Thread safety: one config, one thread at a time.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_config_clear(cfg: *mut p2p_config) {
    call_void(|| {
        // SAFETY: the caller passes a config (or NULL).
        if let Ok(cfg) = unsafe { arg_mut(cfg, "cfg") }
            && !cfg.settings.is_null()
        {
            // SAFETY: `settings` is only ever set to a boxed `Settings`.
            drop(unsafe { Box::from_raw(cfg.settings.cast::<Settings>()) });
            cfg.settings = std::ptr::null_mut();
        }
    })
}

fn check_header(cfg: &p2p_config) -> Result<(), Error> {
    // Version 1 is the first layout: any other size or version was not made
    // by a p2p_config_default this library knows.
    if cfg.version != P2P_CONFIG_VERSION || cfg.size as usize != std::mem::size_of::<p2p_config>() {
        return Err(Error::invalid(format!(
            "p2p_config has size {} and version {}; this library expects size {} and version {}: \
             fill it with p2p_config_default and use the header that came with the library",
            cfg.size,
            cfg.version,
            std::mem::size_of::<p2p_config>(),
            P2P_CONFIG_VERSION
        )));
    }
    Ok(())
}

fn parse<T: std::str::FromStr>(key: &str, value: &str, what: &str) -> Result<T, String> {
    value.trim().parse().map_err(|_| format!("`{key}` takes {what}; `{value}` is not one"))
}

fn flag(key: &str, value: &str) -> Result<bool, String> {
    match value.trim() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!("`{key}` takes true or false; `{value}` is neither")),
    }
}

fn ms(key: &str, value: &str) -> Result<Duration, String> {
    parse(key, value, "a number of milliseconds").map(Duration::from_millis)
}

fn bytes(key: &str, value: &str) -> Result<usize, String> {
    parse(key, value, "a number of bytes")
}

/// Every key `p2p_config_set` knows, for the error message.
const KEYS: &str = "idle_timeout_ms, keep_alive_interval_ms, hello_timeout_ms, max_message_size, \
    send_buffer_limit, resume_window_ms, datagram_buffer, peer.connect, peer.directory, peer.idle_timeout_ms, \
    peer.keep_alive_interval_ms, peer.hole_punching, limits.receive_window, \
    limits.stream_receive_window, limits.receive_buffer, limits.max_handshakes, \
    limits.max_handshakes_per_ip, limits.retry_above, cluster.raft_tick_ms, cluster.election_ticks, \
    cluster.heartbeat_ticks, cluster.reconnect_min_ms, cluster.reconnect_max_ms, \
    cluster.forget_after_ms, cluster.prefer_least_loaded, cluster.load_ratio, host.max_turn_datagrams, \
    host.max_turn_time_us, host.local_addrs_interval_ms, host.recv_buffer, host.send_buffer";

/// Applies one key/value setting. Range checks beyond the type's are the
/// core's (`Node::new` names the setting); this only parses.
fn apply(key: &str, value: &str, c: &mut Config, h: &mut HostConfig) -> Result<(), Error> {
    let k = key;
    let v = value;
    let r: Result<(), String> = (|| {
        match k {
            "idle_timeout_ms" => c.idle_timeout = ms(k, v)?,
            "keep_alive_interval_ms" => c.keep_alive_interval = ms(k, v)?,
            "hello_timeout_ms" => c.hello_timeout = ms(k, v)?,
            "max_message_size" => c.max_message_size = bytes(k, v)?,
            "send_buffer_limit" => c.send_buffer_limit = bytes(k, v)?,
            "resume_window_ms" => c.resume_window = ms(k, v)?,
            "datagram_buffer" => c.datagram_buffer = bytes(k, v)?,
            "peer.connect" => {
                c.peer.connect = match v.trim() {
                    "eager" => ConnectPolicy::Eager,
                    "on_demand" => ConnectPolicy::OnDemand,
                    _ => return Err(format!("`{k}` takes eager or on_demand; `{v}` is neither")),
                }
            }
            "peer.directory" => {
                c.peer.directory = match v.trim() {
                    "full" => DirectoryMode::Full,
                    "lookup" => DirectoryMode::Lookup,
                    _ => return Err(format!("`{k}` takes full or lookup; `{v}` is neither")),
                }
            }
            "peer.idle_timeout_ms" => c.peer.idle_timeout = ms(k, v)?,
            "peer.keep_alive_interval_ms" => c.peer.keep_alive_interval = ms(k, v)?,
            "peer.hole_punching" => c.peer.hole_punching = flag(k, v)?,
            "limits.receive_window" => c.limits.receive_window = parse(k, v, "a number of bytes")?,
            "limits.stream_receive_window" => {
                c.limits.stream_receive_window = parse(k, v, "a number of bytes")?
            }
            "limits.receive_buffer" => c.limits.receive_buffer = bytes(k, v)?,
            "limits.max_handshakes" => c.limits.max_handshakes = parse(k, v, "a count")?,
            "limits.max_handshakes_per_ip" => c.limits.max_handshakes_per_ip = parse(k, v, "a count")?,
            "limits.retry_above" => c.limits.retry_above = parse(k, v, "a count")?,
            "cluster.raft_tick_ms" => c.cluster.raft_tick = ms(k, v)?,
            "cluster.election_ticks" => c.cluster.election_ticks = parse(k, v, "a count of ticks")?,
            "cluster.heartbeat_ticks" => c.cluster.heartbeat_ticks = parse(k, v, "a count of ticks")?,
            "cluster.reconnect_min_ms" => c.cluster.reconnect_min = ms(k, v)?,
            "cluster.reconnect_max_ms" => c.cluster.reconnect_max = ms(k, v)?,
            "cluster.forget_after_ms" => c.cluster.forget_after = ms(k, v)?,
            "cluster.prefer_least_loaded" => c.cluster.prefer_least_loaded = flag(k, v)?,
            "cluster.load_ratio" => c.cluster.load_ratio = parse(k, v, "a number such as 2.0")?,
            "host.max_turn_datagrams" => {
                h.max_turn_datagrams = parse::<usize>(k, v, "a count")?.max(1);
            }
            "host.max_turn_time_us" => {
                h.max_turn_time = Duration::from_micros(parse(k, v, "a number of microseconds")?)
            }
            "host.local_addrs_interval_ms" => {
                let d = ms(k, v)?;
                h.local_addrs_interval = (!d.is_zero()).then_some(d);
            }
            "host.recv_buffer" => h.recv_buffer = Some(bytes(k, v)?).filter(|b| *b > 0),
            "host.send_buffer" => h.send_buffer = Some(bytes(k, v)?).filter(|b| *b > 0),
            _ => return Err(format!("unknown setting `{k}`; the settings are: {KEYS}")),
        }
        Ok(())
    })();
    r.map_err(|m| Error::new(P2P_ERR_CONFIG, m))
}

/// What a `p2p_config` becomes: the node's configuration, the host's, and
/// the data directory holding the identity (kept open for its lock).
#[derive(Debug)]
pub(crate) struct Built {
    pub(crate) config: Config,
    pub(crate) host: HostConfig,
    pub(crate) data_dir: Option<DataDir>,
}

fn addrs(key: &str, list: Option<&str>) -> Result<Vec<SocketAddr>, Error> {
    let Some(list) = list else { return Ok(Vec::new()) };
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse().map_err(|_| {
                Error::new(
                    P2P_ERR_CONFIG,
                    format!("`{key}`: `{s}` is not an address like 203.0.113.7:7400 or [2001:db8::1]:7400"),
                )
            })
        })
        .collect()
}

/// Reads a caller's `p2p_config` into a [`Built`].
///
/// # Safety
/// `cfg` is NULL or a `p2p_config` whose non-NULL pointers are valid.
pub(crate) unsafe fn build(cfg: *const p2p_config) -> Result<Built, Error> {
    // SAFETY: the caller's promise.
    let cfg = unsafe { arg(cfg, "cfg") }?;
    check_header(cfg)?;
    let config_err = |m: String| Error::new(P2P_ERR_CONFIG, m);
    let role = role_of(cfg.role)?;
    // SAFETY (every pointer read below): the caller's promise.
    let name = unsafe { str_arg(cfg.name, "name") }?
        .ok_or_else(|| config_err("`name` is NULL: every node needs a name (1 to 64 bytes)".into()))?;
    let seed = match unsafe { bytes_arg(cfg.seed, if cfg.seed.is_null() { 0 } else { 32 }, "seed") }? {
        [] => os_seed()?,
        s => s.try_into().unwrap_or([0; 32]),
    };
    let mut data_dir = None;
    let identity = if let Some(dir) = unsafe { str_arg(cfg.data_dir, "data_dir") }? {
        let dir = DataDir::open(dir, role)?;
        let identity = dir.identity().clone();
        data_dir = Some(dir);
        identity
    } else if !cfg.identity.is_null() {
        let blob = unsafe { bytes_arg(cfg.identity, cfg.identity_len, "identity") }?;
        let identity = Identity::from_bytes(blob)
            .map_err(|e| config_err(format!("`identity` is not an identity blob: {e}")))?;
        if identity.role() != role {
            return Err(config_err(format!(
                "`identity` is a {}'s but `role` asks for a {}",
                identity.role().as_str(),
                role.as_str()
            )));
        }
        identity
    } else {
        Identity::from_seed(role, os_seed()?)
    };
    let mut config = Config::new(identity, name, seed);
    config.bootstrap = addrs("bootstrap", unsafe { str_arg(cfg.bootstrap, "bootstrap") }?)?;
    config.advertise = addrs("advertise", unsafe { str_arg(cfg.advertise, "advertise") }?)?;
    let secret = unsafe { str_arg(cfg.secret, "secret") }?;
    let token = unsafe { str_arg(cfg.join_token, "join_token") }?;
    config.admission = match (secret, token) {
        (Some(_), Some(_)) => {
            return Err(config_err("set either `secret` or `join_token`, not both".into()));
        }
        (Some(s), None) => Admission::SharedSecret(NetworkSecret::from_passphrase(s)),
        (None, Some(t)) => {
            let token =
                JoinToken::from_text(t.trim()).map_err(|e| config_err(format!("`join_token`: {e}")))?;
            let issuers = unsafe { str_arg(cfg.token_issuers, "token_issuers") }?
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(parse_key)
                .collect::<Result<Vec<_>, _>>()
                .map_err(config_err)?;
            if issuers.is_empty() {
                return Err(config_err(
                    "`join_token` needs `token_issuers`: the issuer keys whose tokens this node accepts"
                        .into(),
                ));
            }
            Admission::Token { token, issuers }
        }
        (None, None) => {
            tracing::warn!(node = name, "admission is open: any node may join (development only)");
            Admission::Open
        }
    };
    let bind = unsafe { str_arg(cfg.bind, "bind") }?.unwrap_or("0.0.0.0:0");
    let bind: SocketAddr = bind
        .trim()
        .parse()
        .map_err(|_| config_err(format!("`bind`: `{bind}` is not an address like 0.0.0.0:0 or [::]:7400")))?;
    let mut host = HostConfig::new(bind);
    host.gso = cfg.gso != 0;
    host.close_timeout = Duration::from_millis(u64::from(cfg.close_timeout_ms));
    if !cfg.settings.is_null() {
        // SAFETY: `settings` is only ever set to a boxed `Settings`.
        let settings = unsafe { &*cfg.settings.cast::<Settings>() };
        for (k, v) in settings {
            apply(k, v, &mut config, &mut host)?;
        }
    }
    Ok(Built { config, host, data_dir })
}

fn parse_key(hex: &str) -> Result<PublicKey, String> {
    let bad = || format!("`token_issuers`: `{hex}` is not a public key (64 hex digits)");
    if hex.len() != 64 || !hex.is_ascii() {
        return Err(bad());
    }
    let mut key = [0u8; 32];
    for (i, b) in key.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(PublicKey(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::P2P_ERR_INVALID_ARGUMENT;
    use std::ffi::CString;

    fn default() -> p2p_config {
        let mut cfg = std::mem::MaybeUninit::<p2p_config>::uninit();
        // SAFETY: a writable config.
        assert_eq!(unsafe { p2p_config_default(cfg.as_mut_ptr()) }, P2P_OK);
        // SAFETY: p2p_config_default filled every field.
        unsafe { cfg.assume_init() }
    }

    fn set(cfg: &mut p2p_config, k: &str, v: &str) -> p2p_result {
        let (k, v) = (CString::new(k).unwrap(), CString::new(v).unwrap());
        // SAFETY: valid config and strings.
        unsafe { p2p_config_set(cfg, k.as_ptr(), v.as_ptr()) }
    }

    #[test]
    fn settings_are_checked_when_set_and_applied_when_built() {
        let mut cfg = default();
        let name = CString::new("tester").unwrap();
        cfg.name = name.as_ptr();
        assert_eq!(set(&mut cfg, "idle_timeout_ms", "4000"), P2P_OK);
        assert_eq!(set(&mut cfg, "peer.connect", "on_demand"), P2P_OK);
        assert_eq!(set(&mut cfg, "peer.directory", "lookup"), P2P_OK);
        assert_eq!(set(&mut cfg, "peer.directory", "some"), P2P_ERR_CONFIG);
        assert_eq!(set(&mut cfg, "host.max_turn_datagrams", "7"), P2P_OK);
        assert_eq!(set(&mut cfg, "idle_timeout_ms", "5000"), P2P_OK, "set again: replaced");
        assert_eq!(set(&mut cfg, "idle_timeout", "5000"), P2P_ERR_CONFIG);
        assert_eq!(set(&mut cfg, "peer.hole_punching", "maybe"), P2P_ERR_CONFIG);
        // SAFETY: a valid config.
        let built = unsafe { build(&cfg) }.unwrap();
        assert_eq!(built.config.idle_timeout, Duration::from_secs(5));
        assert_eq!(built.config.peer.connect, ConnectPolicy::OnDemand);
        assert_eq!(built.config.peer.directory, DirectoryMode::Lookup);
        assert_eq!(built.host.max_turn_datagrams, 7);
        assert!(matches!(built.config.admission, Admission::Open));
        // SAFETY: a valid config.
        unsafe { p2p_config_clear(&mut cfg) };
        assert!(cfg.settings.is_null());
        // SAFETY: a valid config.
        unsafe { p2p_config_clear(&mut cfg) };
    }

    #[test]
    fn unknown_layouts_and_bad_fields_are_refused() {
        let mut cfg = default();
        cfg.size -= 8;
        // SAFETY: a valid config.
        assert_eq!(unsafe { build(&cfg) }.unwrap_err().code, P2P_ERR_INVALID_ARGUMENT);
        let mut cfg = default();
        // SAFETY: a valid config.
        let e = unsafe { build(&cfg) }.unwrap_err();
        assert!(e.message.contains("`name` is NULL"), "{}", e.message);
        let name = CString::new("n").unwrap();
        let bootstrap = CString::new("1.2.3.4:5, nonsense").unwrap();
        cfg.name = name.as_ptr();
        cfg.bootstrap = bootstrap.as_ptr();
        // SAFETY: a valid config.
        let e = unsafe { build(&cfg) }.unwrap_err();
        assert!(e.message.contains("`nonsense`"), "{}", e.message);
        cfg.bootstrap = std::ptr::null();
        cfg.role = 7;
        // SAFETY: a valid config.
        assert_eq!(unsafe { build(&cfg) }.unwrap_err().code, P2P_ERR_INVALID_ARGUMENT);
    }

    #[test]
    fn admission_by_secret_or_token() {
        let mut cfg = default();
        let name = CString::new("n").unwrap();
        let secret = CString::new("correct horse").unwrap();
        cfg.name = name.as_ptr();
        cfg.secret = secret.as_ptr();
        // SAFETY: a valid config.
        assert!(matches!(unsafe { build(&cfg) }.unwrap().config.admission, Admission::SharedSecret(_)));
        let issuer = p2pcore::Keypair::from_seed([9; 32]);
        let me = Identity::from_seed(Role::Peer, [3; 32]);
        let token = CString::new(JoinToken::issue(&issuer, me.id(), u64::MAX / 2).to_text()).unwrap();
        let hex: String = issuer.public().0.iter().map(|b| format!("{b:02x}")).collect();
        let issuers = CString::new(hex).unwrap();
        let blob = me.to_bytes();
        cfg.secret = std::ptr::null();
        cfg.join_token = token.as_ptr();
        cfg.identity = blob.as_ptr();
        cfg.identity_len = blob.len() as u32;
        // SAFETY: a valid config.
        let e = unsafe { build(&cfg) }.unwrap_err();
        assert!(e.message.contains("token_issuers"), "{}", e.message);
        cfg.token_issuers = issuers.as_ptr();
        // SAFETY: a valid config.
        let built = unsafe { build(&cfg) }.unwrap();
        assert_eq!(built.config.identity.id(), me.id());
        assert!(matches!(built.config.admission, Admission::Token { ref issuers, .. } if issuers.len() == 1));
    }
}
