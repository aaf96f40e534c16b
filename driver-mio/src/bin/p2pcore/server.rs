//! `p2pcore server`: the daemon.

use crate::admin::{self, Admin};
use crate::logging::{self, LogFormat};
use crate::settings::{AdmissionArgs, ServerFile, addr, addrs};
use crate::{Failure, Outcome};
use clap::Args;
use p2pcore::{Admission, Event, Role};
use p2pcore_mio::{DataDir, Host, HostConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// `p2pcore server` flags; each overrides the same key of `--config`.
#[derive(Debug, Args)]
pub(crate) struct ServerArgs {
    /// A TOML file with any of the settings below (see
    /// driver-mio/examples/server.toml); flags override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The server's name, shown to every node (default: the host name's
    /// first label, or "server").
    #[arg(long)]
    name: Option<String>,
    /// Where the server keeps its identity (created if missing; locked while
    /// it runs).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// UDP address to listen on (default 0.0.0.0:7400).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// A server of the cluster to join through (repeat for several); none
    /// founds a new cluster.
    #[arg(long = "join", value_name = "ADDR")]
    join: Vec<String>,
    /// How long to wait at start for a --join server to answer before giving
    /// up (seconds; default 15).
    #[arg(long, value_name = "SECS")]
    join_timeout: Option<u64>,
    /// Address other nodes should dial, when it is not one of this
    /// machine's (a port forward, a public IP); repeat for several.
    #[arg(long = "advertise", value_name = "ADDR")]
    advertise: Vec<String>,
    #[command(flatten)]
    admission: AdmissionArgs,
    /// Admin HTTP address (/metrics, /healthz, /readyz, /map); off unless
    /// given. Off localhost it requires --admin-token-file.
    #[arg(long, value_name = "ADDR")]
    admin: Option<String>,
    /// File holding the bearer token the admin address requires.
    #[arg(long, value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
    /// Log filter: a level (`info`, `debug`) or a `tracing` filter
    /// expression; default RUST_LOG, else info.
    #[arg(long, value_name = "FILTER")]
    log: Option<String>,
    /// Log format.
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    /// Sync the Raft state (data_dir/raft.redb) to disk before confirming
    /// it (default true). `false` is faster but a crash or power loss may
    /// lose state the server had confirmed: tests and throwaway clusters
    /// only.
    #[arg(long, value_name = "BOOL")]
    raft_fsync: Option<bool>,
}

/// The server's settings once flags and file are merged and checked.
struct Settings {
    name: String,
    data_dir: PathBuf,
    listen: SocketAddr,
    join: Vec<SocketAddr>,
    join_timeout: Duration,
    advertise: Vec<SocketAddr>,
    admission: Admission,
    admin: Option<(SocketAddr, Option<String>)>,
    log: Option<String>,
    log_format: LogFormat,
    raft_fsync: bool,
}

fn default_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .and_then(|h| h.trim().split('.').next().map(str::to_owned))
        .filter(|h| p2pcore::validate_name(h).is_ok())
        .unwrap_or_else(|| "server".to_owned())
}

impl ServerArgs {
    fn settings(self) -> Result<Settings, Failure> {
        let file = match &self.config {
            Some(path) => ServerFile::read(path)?,
            None => ServerFile::default(),
        };
        let name = self.name.or(file.name).unwrap_or_else(default_name);
        p2pcore::validate_name(&name).map_err(|e| Failure::new(format!("server name `{name}`: {e}")))?;
        let data_dir = self.data_dir.or(file.data_dir).ok_or_else(|| {
            Failure::new("no data directory: pass --data-dir DIR (or data_dir in the config file)")
        })?;
        let listen = addr("--listen", self.listen.or(file.listen).as_deref().unwrap_or("0.0.0.0:7400"))?;
        let join = addrs("--join", if self.join.is_empty() { &file.join } else { &self.join })?;
        let advertise =
            addrs("--advertise", if self.advertise.is_empty() { &file.advertise } else { &self.advertise })?;
        let admission = self.admission.over(file.admission).build()?;
        let admin_file = file.admin.unwrap_or_default();
        let admin = match self.admin.or(admin_file.listen) {
            None => None,
            Some(a) => {
                let a = addr("--admin", &a)?;
                let token_file = self.admin_token_file.or(admin_file.token_file);
                let token = token_file.map(|f| crate::settings::read_line(&f, "admin token")).transpose()?;
                if !a.ip().is_loopback() && token.is_none() {
                    return Err(Failure::new(format!(
                        "the admin address {a} is reachable from other machines: give --admin-token-file FILE \
                         (a bearer token) or listen on 127.0.0.1"
                    )));
                }
                Some((a, token))
            }
        };
        let log_file = file.log.unwrap_or_default();
        let log_format = match (self.log_format, log_file.format) {
            (Some(f), _) => f,
            (None, Some(f)) => LogFormat::parse(&f)?,
            (None, None) => LogFormat::Text,
        };
        Ok(Settings {
            name,
            data_dir,
            listen,
            join,
            join_timeout: Duration::from_secs(self.join_timeout.or(file.join_timeout_secs).unwrap_or(15)),
            advertise,
            admission,
            admin,
            log: self.log.or(log_file.filter),
            log_format,
            raft_fsync: self.raft_fsync.or(file.raft_fsync).unwrap_or(true),
        })
    }
}

pub(crate) fn run(args: ServerArgs) -> Outcome {
    let s = args.settings()?;
    logging::init(s.log.as_deref(), s.log_format)?;
    if matches!(s.admission, Admission::Open) {
        tracing::warn!(
            "ADMISSION IS OPEN (--open): anyone who can reach this server can join the network. \
             Development only: use --secret-file or --token-file in production."
        );
    }
    let dir = DataDir::open(&s.data_dir, Role::Server)?;
    let mut config = dir.config(&s.name)?;
    config.bootstrap = s.join.clone();
    config.advertise = s.advertise.clone();
    config.admission = s.admission;
    let mut host_config = HostConfig::new(s.listen);
    host_config.raft_fsync = s.raft_fsync;
    if !s.raft_fsync {
        tracing::warn!(
            "raft_fsync is off: a crash or power loss may lose Raft state this server confirmed. \
             Tests and throwaway clusters only."
        );
    }
    let mut host = Host::bind_in(host_config, &dir, config)?;
    tracing::info!(
        id = %host.id(),
        name = %s.name,
        listen = %host.local_addr(),
        data_dir = %s.data_dir.display(),
        created = dir.created(),
        raft_fsync = s.raft_fsync,
        "server started"
    );
    let admin = match &s.admin {
        Some((a, token)) => Some(Admin::start(*a, token.clone())?),
        None => None,
    };
    let closer = host.closer();
    ctrlc::set_handler(move || closer.close())
        .map_err(|e| Failure::new(format!("could not install the SIGINT/SIGTERM handler: {e}")))?;

    let started = Instant::now();
    let mut joined = s.join.is_empty();
    let mut events = Vec::new();
    let mut next_snapshot = Instant::now();
    loop {
        host.service(Duration::from_millis(200))?;
        host.drain_events(&mut events);
        for e in events.drain(..) {
            if let Err(f) = startup_check(&e, joined) {
                host.close()?;
                return Err(f);
            }
            joined |= matches!(e, Event::ServerUp { .. });
            log_event(&e);
        }
        if !joined && started.elapsed() >= s.join_timeout {
            host.close()?;
            return Err(Failure::new(format!(
                "no server answered at {} within {} s: check the address and that a p2pcore server runs \
                 there (and its firewall), or start without --join to found a new cluster",
                list(&s.join),
                s.join_timeout.as_secs()
            )));
        }
        if let Some(admin) = &admin
            && Instant::now() >= next_snapshot
        {
            admin.publish(admin::Snapshot::capture(&host));
            next_snapshot = Instant::now() + Duration::from_millis(500);
        }
        if host.is_closed() {
            break;
        }
    }
    tracing::info!("server closed");
    Ok(ExitCode::SUCCESS)
}

fn list(addrs: &[SocketAddr]) -> String {
    addrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// While joining, a refusal of this node's credential ends the start: it
/// will not get better by retrying.
pub(crate) fn startup_check(e: &Event, joined: bool) -> Result<(), Failure> {
    if joined {
        return Ok(());
    }
    match e {
        Event::Refused { addr, reason, by_remote: true, .. } => Err(Failure::new(format!(
            "the server at {addr} refused this node: {reason} (check that --secret-file or the token matches \
             the network's)"
        ))),
        Event::Refused { addr, reason, by_remote: false, .. } => Err(Failure::new(format!(
            "the server at {addr} did not present an acceptable credential: {reason} (check that both use the \
             same network secret or issuer)"
        ))),
        _ => Ok(()),
    }
}

fn log_event(e: &Event) {
    match e {
        Event::ServerUp { id, name } => tracing::info!(%id, %name, "server up"),
        Event::ServerDown { id, name } => tracing::warn!(%id, %name, "server down"),
        Event::MasterChanged { master, basis, term, epoch } => {
            let basis = basis.map_or("none", |b| b.as_str());
            match master {
                Some(m) => tracing::info!(master = %m, basis, term, epoch, "master changed"),
                None => tracing::info!(basis, "no master (election in progress)"),
            }
        }
        Event::PeerOnline { id, name } => tracing::info!(%id, %name, "peer online"),
        Event::PeerOffline { id, name } => tracing::info!(%id, %name, "peer offline"),
        Event::Refused { id, addr, reason, by_remote } => {
            tracing::warn!(%id, %addr, %reason, by_remote, "connection refused")
        }
        Event::BootstrapFailed { addr, error, retry_in } => {
            tracing::warn!(%addr, %error, retry_in_ms = retry_in.as_millis() as u64, "join server unreachable")
        }
        Event::ConnectFailed { addr, error, .. } => tracing::debug!(%addr, %error, "dial failed"),
        Event::Connected { id, name, addr } => tracing::debug!(%id, %name, %addr, "connected"),
        Event::Disconnected { id, reason } => tracing::debug!(%id, %reason, "disconnected"),
        other => tracing::trace!(event = ?other, "event"),
    }
}
