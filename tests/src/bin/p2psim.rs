//! `p2psim`: run a scenario file and print a JSON report on stdout.
//!
//! ```text
//! cargo run --release -p p2pcore-tests --bin p2psim -- SCENARIO.toml [--seed N]
//! ```
//!
//! With `RUST_LOG` set (for example `RUST_LOG=p2pcore=debug`), the core's
//! diagnostics go to stderr, stamped with virtual time.

use clap::Parser;
use p2pcore_tests::report::Report;
use p2pcore_tests::scenario::Loaded;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Run a p2pcore network scenario in the deterministic simulator and print a JSON report.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Scenario file (TOML). See tests/SCENARIOS.md for the format.
    scenario: PathBuf,
    /// Override the scenario's seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Pretty-print the JSON.
    #[arg(long)]
    pretty: bool,
    /// Leave the event list out of the report (for large runs).
    #[arg(long)]
    no_events: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    p2pcore_tests::log::init_from_env();
    let text = match std::fs::read_to_string(&args.scenario) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("p2psim: cannot read {}: {e}", args.scenario.display());
            eprintln!("hint: pass the path of a scenario file, for example tests/scenarios/two-nodes.toml");
            return ExitCode::from(2);
        }
    };
    let loaded = match Loaded::parse(&text) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("p2psim: {}: {e}", args.scenario.display());
            eprintln!("hint: the scenario format is described in tests/SCENARIOS.md");
            return ExitCode::from(2);
        }
    };
    let seed = args.seed.unwrap_or(loaded.scenario.seed);
    let mut sim = loaded.build(seed);
    sim.run_until(loaded.duration());
    let mut report = Report::new(&sim, seed, loaded.scenario.duration_ms);
    if args.no_events {
        report.events.clear();
    }
    let json =
        if args.pretty { serde_json::to_string_pretty(&report) } else { serde_json::to_string(&report) };
    let json = match json {
        Ok(j) => j,
        Err(e) => {
            eprintln!("p2psim: cannot encode the report: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{json}").is_err() {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
