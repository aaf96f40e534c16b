//! What the server and the console are configured with: command-line flags,
//! the server's TOML file (every key in `driver-mio/examples/server.toml`),
//! and the admission they build. Flags override the file.

use crate::Failure;
use clap::Args;
use p2pcore::{Admission, JoinToken, NetworkSecret, PublicKey};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// How a node proves it belongs to the network, and what it asks of others.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AdmissionArgs {
    /// File holding the network secret, one line (`p2pcore secret new` makes
    /// one); every node of the network uses the same.
    #[arg(long, value_name = "FILE")]
    pub(crate) secret_file: Option<PathBuf>,
    /// File holding this node's join token (`p2pcore token issue` makes one).
    #[arg(long, value_name = "FILE")]
    pub(crate) token_file: Option<PathBuf>,
    /// An issuer's public key (64 hex digits) whose tokens are accepted;
    /// repeat for several.
    #[arg(long = "issuer", value_name = "KEY")]
    #[serde(default)]
    pub(crate) issuers: Vec<String>,
    /// Development only: present nothing and admit anyone.
    #[arg(long)]
    #[serde(default)]
    pub(crate) open: bool,
}

impl AdmissionArgs {
    /// The flags over the file's values.
    pub(crate) fn over(self, file: Option<AdmissionArgs>) -> Self {
        let file = file.unwrap_or_default();
        Self {
            secret_file: self.secret_file.or(file.secret_file),
            token_file: self.token_file.or(file.token_file),
            issuers: if self.issuers.is_empty() { file.issuers } else { self.issuers },
            open: self.open || file.open,
        }
    }

    /// The admission these settings ask for.
    pub(crate) fn build(&self) -> Result<Admission, Failure> {
        let ways = [self.secret_file.is_some(), self.token_file.is_some(), self.open];
        match ways {
            [false, false, false] => Err(Failure::new(
                "no admission given: pass --secret-file FILE (make one with `p2pcore secret new`), \
                 or --token-file FILE with --issuer KEY, or --open for development",
            )),
            [true, false, false] => {
                let path = self.secret_file.as_deref().unwrap_or(Path::new(""));
                let secret = read_line(path, "network secret")?;
                if secret.len() < 16 {
                    return Err(Failure::new(format!(
                        "the network secret in {} is {} characters long: use at least 16 \
                         (`p2pcore secret new` makes a good one)",
                        path.display(),
                        secret.len()
                    )));
                }
                Ok(Admission::SharedSecret(NetworkSecret::from_passphrase(&secret)))
            }
            [false, true, false] => {
                let path = self.token_file.as_deref().unwrap_or(Path::new(""));
                let text = read_line(path, "join token")?;
                let token = JoinToken::from_text(&text)
                    .map_err(|e| Failure::new(format!("{}: {e}", path.display())))?;
                if self.issuers.is_empty() {
                    return Err(Failure::new(
                        "--token-file needs --issuer KEY: the issuer keys whose tokens this node accepts",
                    ));
                }
                let issuers = self.issuers.iter().map(|k| parse_key(k)).collect::<Result<_, _>>()?;
                Ok(Admission::Token { token, issuers })
            }
            [false, false, true] => Ok(Admission::Open),
            _ => Err(Failure::new(
                "choose one admission: --secret-file, --token-file (with --issuer), or --open",
            )),
        }
    }
}

/// A public key from 64 hex digits.
pub(crate) fn parse_key(hex: &str) -> Result<PublicKey, Failure> {
    let hex = hex.trim();
    let bad = || Failure::new(format!("`{hex}` is not a public key: it must be 64 hex digits"));
    if hex.len() != 64 || !hex.is_ascii() {
        return Err(bad());
    }
    let mut key = [0u8; 32];
    for (i, b) in key.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(PublicKey(key))
}

/// Hex digits of bytes.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The first line of a small file, trimmed; a clear message if it cannot be
/// read or is empty.
pub(crate) fn read_line(path: &Path, what: &str) -> Result<String, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::new(format!("cannot read the {what} file {}: {e}", path.display())))?;
    let line = text.lines().next().unwrap_or("").trim().to_owned();
    if line.is_empty() {
        return Err(Failure::new(format!("the {what} file {} is empty", path.display())));
    }
    Ok(line)
}

/// An address flag or key, with a message naming it.
pub(crate) fn addr(what: &str, text: &str) -> Result<SocketAddr, Failure> {
    text.trim().parse().map_err(|_| {
        Failure::new(format!(
            "{what}: `{text}` is not an address like 203.0.113.7:7400 or [2001:db8::1]:7400"
        ))
    })
}

/// Addresses, each checked.
pub(crate) fn addrs(what: &str, texts: &[String]) -> Result<Vec<SocketAddr>, Failure> {
    texts.iter().map(|t| addr(what, t)).collect()
}

/// The server's configuration file (every key is documented in
/// `driver-mio/examples/server.toml`). Unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServerFile {
    pub(crate) name: Option<String>,
    pub(crate) data_dir: Option<PathBuf>,
    pub(crate) listen: Option<String>,
    #[serde(default)]
    pub(crate) join: Vec<String>,
    pub(crate) join_timeout_secs: Option<u64>,
    #[serde(default)]
    pub(crate) advertise: Vec<String>,
    pub(crate) raft_fsync: Option<bool>,
    pub(crate) admission: Option<AdmissionArgs>,
    pub(crate) admin: Option<AdminFile>,
    pub(crate) log: Option<LogFile>,
}

/// `[admin]` of the server's file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AdminFile {
    pub(crate) listen: Option<String>,
    pub(crate) token_file: Option<PathBuf>,
}

/// `[log]` of the server's file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LogFile {
    pub(crate) filter: Option<String>,
    pub(crate) format: Option<String>,
}

impl ServerFile {
    /// Reads and parses the file; the message names the file, and for a bad
    /// key or value the line and the key.
    pub(crate) fn read(path: &Path) -> Result<Self, Failure> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Failure::new(format!("cannot read the config file {}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| {
            let at = e
                .span()
                .map(|s| format!(" (line {})", text[..s.start.min(text.len())].matches('\n').count() + 1))
                .unwrap_or_default();
            Failure::new(format!("{}{at}: {}", path.display(), e.message()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.toml");
        std::fs::write(&path, "name = \"a\"\n\n[admin]\nlisten = \"127.0.0.1:9\"\nport = 4\n").unwrap();
        let e = ServerFile::read(&path).unwrap_err().0;
        assert!(e.contains("line 5") && e.contains("unknown field `port`"), "{e}");
    }

    #[test]
    fn the_example_file_parses_and_builds() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/server.toml");
        let file = ServerFile::read(&path).unwrap();
        assert!(file.name.is_some() && file.listen.is_some() && file.admin.is_some() && file.log.is_some());
        assert_eq!(file.raft_fsync, Some(true));
    }

    #[test]
    fn admission_needs_one_way_and_a_real_secret() {
        assert!(AdmissionArgs::default().build().unwrap_err().0.contains("--secret-file"));
        let both = AdmissionArgs { open: true, secret_file: Some("x".into()), ..Default::default() };
        assert!(both.build().unwrap_err().0.contains("choose one"));
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short");
        std::fs::write(&short, "hunter2\n").unwrap();
        let a = AdmissionArgs { secret_file: Some(short), ..Default::default() };
        assert!(a.build().unwrap_err().0.contains("at least 16"));
        assert!(matches!(AdmissionArgs { open: true, ..Default::default() }.build(), Ok(Admission::Open)));
    }
}
