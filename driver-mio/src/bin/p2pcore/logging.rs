//! Logs through `tracing`: an env-filter expression (`RUST_LOG` when no
//! `--log` is given), as text or as one JSON object per line, to stderr.

use crate::Failure;
use clap::ValueEnum;
use serde::Deserialize;
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (for log collectors).
    Json,
}

impl LogFormat {
    pub(crate) fn parse(text: &str) -> Result<Self, Failure> {
        match text.trim() {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(Failure::new(format!("log format `{other}`: use text or json"))),
        }
    }
}

/// Installs the process's logger. `filter`: an env-filter expression such
/// as `info` or `p2pcore=debug,info`; `None` reads `RUST_LOG`, else `info`.
pub(crate) fn init(filter: Option<&str>, format: LogFormat) -> Result<(), Failure> {
    let filter = match filter {
        Some(f) => EnvFilter::try_new(f).map_err(|e| {
            Failure::new(format!("log filter `{f}`: {e} (try `info` or `p2pcore=debug,info`)"))
        })?,
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    // Colours only on a terminal: not in files, journald or CI logs.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    result.map_err(|e| Failure::new(format!("could not install the logger: {e}")))
}
