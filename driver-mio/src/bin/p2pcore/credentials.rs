//! `p2pcore id`, `p2pcore secret new`, `p2pcore token issue | verify |
//! new-issuer`: identities and credentials, for operators' scripts.

use crate::settings::{hex, parse_key, read_line};
use crate::{Failure, Outcome};
use clap::{Args, Subcommand, ValueEnum};
use p2pcore::{Identity, JoinToken, Keypair, NodeId, Role};
use p2pcore_mio::{DataDir, os_seed};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A node's role, as the command line names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum RoleArg {
    /// A server (IDs start with S).
    Server,
    /// A peer (IDs start with C).
    Peer,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Role {
        match r {
            RoleArg::Server => Role::Server,
            RoleArg::Peer => Role::Peer,
        }
    }
}

/// `p2pcore id`.
#[derive(Debug, Args)]
pub(crate) struct IdArgs {
    /// The data directory (created with a new identity if missing).
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// The role of the node that uses the directory.
    #[arg(long, value_enum, default_value = "server")]
    role: RoleArg,
}

pub(crate) fn id(a: IdArgs) -> Outcome {
    let dir = DataDir::open(&a.data_dir, a.role.into())?;
    println!("{}", dir.id());
    if dir.created() {
        eprintln!("created a new identity in {}", a.data_dir.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// `p2pcore secret ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum SecretCommand {
    /// Print a new random network secret (or write it to a file, readable by
    /// its owner only); give the same one to every node with --secret-file.
    New {
        /// Write it here instead of printing it.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

pub(crate) fn secret(c: SecretCommand) -> Outcome {
    let SecretCommand::New { out } = c;
    let text = hex(&os_seed()?);
    match out {
        Some(path) => {
            write_private(&path, &text)?;
            eprintln!("wrote a new network secret to {}", path.display());
        }
        None => println!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes `text` and a newline to a new file only its owner can read.
fn write_private(path: &Path, text: &str) -> Result<(), Failure> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(path).map_err(|e| {
        Failure::new(format!(
            "cannot create {}: {e} (it must not exist yet; choose another path)",
            path.display()
        ))
    })?;
    writeln!(f, "{text}").map_err(|e| Failure::new(format!("cannot write {}: {e}", path.display())))
}

/// `p2pcore token ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum TokenCommand {
    /// Create an issuer key (its secret goes to a file; its public key,
    /// printed, is what nodes pass as --issuer).
    NewIssuer {
        /// The file for the issuer's secret key (readable by its owner only).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Issue a join token for a node.
    Issue {
        /// The issuer's secret key file (from `p2pcore token new-issuer`).
        #[arg(long, value_name = "FILE")]
        issuer_key: PathBuf,
        /// The role the token admits (must match the node ID's letter).
        #[arg(long, value_enum)]
        role: RoleArg,
        /// The node it admits (`p2pcore id` prints a data directory's).
        #[arg(long, value_name = "ID")]
        node: String,
        /// How long it is valid: a number of seconds, or with a unit (30d,
        /// 12h, 90m, 3600s).
        #[arg(long, value_name = "DURATION")]
        expires: String,
    },
    /// Check a token: its signature by a trusted issuer, its node, expiry.
    Verify {
        /// The token (its text form), or @FILE to read it from a file.
        token: String,
        /// A trusted issuer's public key (repeat for several).
        #[arg(long = "issuer", value_name = "KEY", required = true)]
        issuers: Vec<String>,
        /// The node that presents it (default: the one it names).
        #[arg(long, value_name = "ID")]
        node: Option<String>,
    },
}

fn node_id(text: &str) -> Result<NodeId, Failure> {
    text.trim().parse().map_err(|e| Failure::new(format!("`{text}` is not a node ID: {e}")))
}

/// "30d", "12h", "90m", "3600s" or plain seconds.
fn duration(text: &str) -> Result<Duration, Failure> {
    let t = text.trim();
    let (digits, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 =
        digits.parse().map_err(|_| Failure::new(format!("`{text}` is not a duration like 30d or 12h")))?;
    let secs = match unit {
        "" | "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86_400),
        _ => None,
    };
    secs.filter(|s| *s > 0)
        .map(Duration::from_secs)
        .ok_or_else(|| Failure::new(format!("`{text}` is not a duration like 30d, 12h, 90m or 3600s")))
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn issuer(path: &Path) -> Result<Keypair, Failure> {
    let text = read_line(path, "issuer key")?;
    let key = parse_key(&text).map_err(|_| {
        Failure::new(format!("{} does not hold an issuer key (64 hex digits)", path.display()))
    })?;
    Ok(Keypair::from_seed(key.0))
}

pub(crate) fn token(c: TokenCommand) -> Outcome {
    match c {
        TokenCommand::NewIssuer { out } => {
            let seed = os_seed()?;
            write_private(&out, &hex(&seed))?;
            println!("{}", hex(&Keypair::from_seed(seed).public().0));
            eprintln!("wrote the issuer's secret key to {}; the line above is its public key", out.display());
        }
        TokenCommand::Issue { issuer_key, role, node, expires } => {
            let node = node_id(&node)?;
            if node.role() != Role::from(role) {
                return Err(Failure::new(format!(
                    "{node} is a {}'s ID but --role says {}: a token admits a node in the role its ID carries",
                    node.role().as_str(),
                    Role::from(role).as_str()
                )));
            }
            let keypair = issuer(&issuer_key)?;
            let until = unix_now().saturating_add(duration(&expires)?.as_secs());
            println!("{}", JoinToken::issue(&keypair, node, until).to_text());
        }
        TokenCommand::Verify { token, issuers, node } => {
            let text = match token.strip_prefix('@') {
                Some(path) => read_line(Path::new(path), "join token")?,
                None => token,
            };
            let token = JoinToken::from_text(&text).map_err(|e| Failure::new(e.to_string()))?;
            let issuers = issuers.iter().map(|k| parse_key(k)).collect::<Result<Vec<_>, _>>()?;
            let node = node.as_deref().map(node_id).transpose()?.unwrap_or(token.node);
            token
                .verify(&issuers, node, unix_now())
                .map_err(|e| Failure::new(format!("the token is not valid: {e}")))?;
            let left = token.expires_unix.saturating_sub(unix_now());
            println!(
                "valid: admits {} as a {} for {} more hours",
                token.node,
                token.role.as_str(),
                left / 3600
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A fresh peer identity, for a console started without a data directory.
pub(crate) fn ephemeral(role: Role) -> Result<Identity, Failure> {
    Ok(Identity::from_seed(role, os_seed()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration("30d").unwrap(), Duration::from_secs(30 * 86_400));
        assert_eq!(duration("90").unwrap(), Duration::from_secs(90));
        assert!(duration("0").is_err());
        assert!(duration("5y").unwrap_err().0.contains("like 30d"));
        assert!(duration("99999999999999999999d").is_err());
    }
}
