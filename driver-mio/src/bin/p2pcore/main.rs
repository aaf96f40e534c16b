//! `p2pcore`: the command for operators and developers, on the mio host
//! (feature `cli` of `p2pcore-mio`, so the library's users never build its
//! dependencies).
//!
//! * `p2pcore server`: the daemon (config file or flags, admission, logs,
//!   graceful close on SIGINT/SIGTERM, an admin address with Prometheus
//!   metrics, health and readiness, and a live network map);
//! * `p2pcore peer`: an interactive console that joins a network
//!   (scriptable with `--exec` and stdin);
//! * `p2pcore demo`: a whole network on loopback, narrated;
//! * `p2pcore id`, `secret new`, `token issue|verify|new-issuer`: identity
//!   and credentials.
//!
//! Every mistake prints one line (what, where, how to fix it) and exits 1;
//! usage mistakes exit 2 (clap's convention).
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod admin;
mod console;
mod credentials;
mod demo;
mod kv;
mod logging;
mod server;
mod settings;
mod waits;

use clap::{Parser, Subcommand};
use std::fmt;
use std::process::ExitCode;

/// p2pcore: programs on many LANs talking by node ID.
#[derive(Debug, Parser)]
#[command(name = "p2pcore", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a server: join or found a cluster, keep the directory, relay.
    Server(server::ServerArgs),
    /// Join a network as a peer, with a console (`peers`, `send`, ...).
    Peer(console::PeerArgs),
    /// Start a network on loopback (3 servers, 4 peers) and narrate it.
    Demo(demo::DemoArgs),
    /// Print the node ID of a data directory, creating it if needed.
    Id(credentials::IdArgs),
    /// Network secrets.
    #[command(subcommand)]
    Secret(credentials::SecretCommand),
    /// Join tokens.
    #[command(subcommand)]
    Token(credentials::TokenCommand),
}

/// A failure to report: one line saying what went wrong and how to fix it.
#[derive(Debug)]
pub(crate) struct Failure(pub(crate) String);

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Failure {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// Errors whose own message already says what and how to fix it.
macro_rules! failure_from {
    ($($t:ty),*) => {$(
        impl From<$t> for Failure {
            fn from(e: $t) -> Self {
                Self(e.to_string())
            }
        }
    )*};
}
failure_from!(p2pcore_mio::DataDirError, p2pcore_mio::HostError, p2pcore_mio::HandleError);

pub(crate) type Outcome = Result<ExitCode, Failure>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Server(a) => server::run(a),
        Command::Peer(a) => console::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Id(a) => credentials::id(a),
        Command::Secret(c) => credentials::secret(c),
        Command::Token(c) => credentials::token(c),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("p2pcore: error: {e}");
            ExitCode::FAILURE
        }
    }
}
