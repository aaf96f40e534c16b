//! `bench`: p2pcore side by side with bare quinn, ENet and bare UDP on
//! loopback, in one run, reported as ratios (absolute figures on a shared
//! machine swing between runs; ratios within one run hold).
//!
//! ```text
//! cargo run --release -p p2pcore-bench --bin bench            # full, for BENCHMARKS.md
//! cargo run --release -p p2pcore-bench --bin bench -- --quick # seconds, what CI runs
//! ```
//!
//! Prints the table and writes `report.md`, `report.json`,
//! `throughput.svg` and `rtt.svg` to `--out` (default `target/bench`).
//! See BENCHMARKS.md for what each figure means and the latest results.
#![allow(clippy::print_stdout, clippy::print_stderr)]

#[cfg(have_enet)]
mod enet;
#[cfg(have_enet)]
mod enet_ref;
mod measure;
mod p2p;
mod quinn_ref;
mod report;
mod udp;

use clap::{Parser, Subcommand};
use measure::Throughput;
use report::Results;
use std::io;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Parser)]
#[command(about = "p2pcore next to bare quinn, ENet and bare UDP on loopback, as ratios")]
struct Args {
    /// A few seconds instead of a few minutes: small transfers and samples.
    #[arg(long)]
    quick: bool,
    /// Where the report and plots go.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Measure only these parts (for profiling one of them); the table
    /// then holds only their rows.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Part>,
    #[command(subcommand)]
    command: Option<Cmd>,
}

/// The parts of the suite.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Part {
    Throughput,
    Rtt,
    Unreliable,
    Relay,
    Memory,
    Startup,
}

#[derive(Subcommand)]
enum Cmd {
    /// Internal: the server whose memory is measured, in its own process.
    #[command(hide = true)]
    ServeChild,
}

/// How much each part measures.
struct Plan {
    sizes: Vec<(usize, usize)>,
    pings: usize,
    blast_seconds: f64,
    relay_pings: usize,
    peers: Vec<usize>,
    starts: usize,
}

impl Plan {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                sizes: vec![(64, 2 << 20), (16 << 10, 16 << 20), (1 << 20, 16 << 20)],
                pings: 200,
                blast_seconds: 0.3,
                relay_pings: 100,
                peers: vec![10, 30],
                starts: 2,
            }
        } else {
            Self {
                sizes: vec![
                    (64, 32 << 20),
                    (1 << 10, 128 << 20),
                    (16 << 10, 256 << 20),
                    (64 << 10, 256 << 20),
                    (1 << 20, 256 << 20),
                ],
                pings: 5000,
                blast_seconds: 2.0,
                relay_pings: 2000,
                peers: vec![100, 1000],
                starts: 10,
            }
        }
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cpu}, {cores} cores, Linux {}", kernel.trim())
}

fn step(name: &str) -> Instant {
    eprintln!("== {name}");
    Instant::now()
}

#[cfg(have_enet)]
mod enet_side {
    pub(crate) use crate::enet_ref::{blast, round_trips, startup, throughput};
}

/// Without ENet every ENet figure is absent.
#[cfg(not(have_enet))]
mod enet_side {
    use crate::measure::{Rate, Throughput};
    use std::io;
    use std::time::Duration;
    fn absent<T>() -> io::Result<T> {
        Err(io::Error::new(io::ErrorKind::Unsupported, "built without ENet (apt-get install libenet-dev)"))
    }
    pub(crate) fn throughput(_: usize, _: usize) -> io::Result<Throughput> {
        absent()
    }
    pub(crate) fn round_trips(_: usize, _: usize) -> io::Result<Vec<Duration>> {
        absent()
    }
    pub(crate) fn blast(_: f64, _: usize) -> io::Result<Rate> {
        absent()
    }
    pub(crate) fn startup(_: usize) -> io::Result<Vec<Duration>> {
        absent()
    }
}

/// An ENet figure, or `None` with a note when ENet is unavailable.
fn enet<T>(r: io::Result<T>) -> io::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == io::ErrorKind::Unsupported => {
            eprintln!("   ENet skipped: {e}");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

const UNRELIABLE_SIZE: usize = 100;

fn run(args: &Args) -> io::Result<Results> {
    let plan = Plan::new(args.quick);
    let mut r =
        Results { mode: if args.quick { "quick" } else { "full" }, machine: machine(), ..Results::default() };
    let all = Instant::now();
    let wanted = |p: Part| args.only.is_empty() || args.only.contains(&p);

    let t = step("reliable throughput");
    for &(size, total) in plan.sizes.iter().filter(|_| wanted(Part::Throughput)) {
        let p: Throughput = p2p::throughput(size, total);
        let q = quinn_ref::throughput(size, total, true)?;
        let e = enet(enet_side::throughput(size, total))?;
        eprintln!(
            "   {size} B: p2pcore {:.0}, quinn {:.0}, ENet {} MB/s",
            p.mb_per_s,
            q.mb_per_s,
            e.map_or("-".into(), |e| format!("{:.0}", e.mb_per_s))
        );
        r.throughput.push((size, p, q, e));
    }
    // Where the gap to quinn comes from: quinn held to p2pcore's packet size.
    if let Some(&(size, total)) = plan.sizes.last().filter(|_| wanted(Part::Throughput)) {
        let q = quinn_ref::throughput(size, total, false)?;
        eprintln!("   {size} B, quinn without path MTU discovery: {:.0} MB/s", q.mb_per_s);
        r.throughput_quinn_1200 = Some((size, q));
    }
    eprintln!("   {:.1} s", t.elapsed().as_secs_f64());

    let t = step("round trips, 64 B");
    if wanted(Part::Rtt) {
        // Both ends on one CPU (see `on_one_cpu`).
        measure::on_one_cpu(|| -> io::Result<()> {
            r.rtt_p2pcore = p2p::round_trips(plan.pings, 64, false);
            r.rtt_quinn = quinn_ref::round_trips(plan.pings, 64)?;
            r.rtt_enet = enet(enet_side::round_trips(plan.pings, 64))?;
            r.rtt_udp = udp::ping_pong(plan.pings, 64, false)?;
            Ok(())
        })?;
    }
    eprintln!("   {:.1} s", t.elapsed().as_secs_f64());

    let t = step("unreliable messages");
    r.unreliable_size = UNRELIABLE_SIZE;
    if wanted(Part::Unreliable) {
        r.unreliable_p2pcore = Some(p2p::blast(plan.blast_seconds, UNRELIABLE_SIZE, false).0);
        r.unreliable_enet = enet(enet_side::blast(plan.blast_seconds, UNRELIABLE_SIZE))?;
        r.unreliable_udp = Some(udp::blast(plan.blast_seconds, UNRELIABLE_SIZE, false)?.0);
    }
    eprintln!("   {:.1} s", t.elapsed().as_secs_f64());

    let t = step("relay forwarding");
    if wanted(Part::Relay) {
        r.relay_p2pcore = p2p::blast(plan.blast_seconds, 0, true).1;
        r.relay_floor = udp::blast(plan.blast_seconds, 1200, true)?.1;
        // p2pcore messages of 1100 bytes travel in ~1200-byte relayed
        // frames. All three parties on one CPU (see `on_one_cpu`).
        r.relay_rtt = Some(measure::on_one_cpu(|| -> io::Result<_> {
            Ok((
                (
                    measure::quantile(&p2p::round_trips(plan.relay_pings, 1100, false), 0.5),
                    measure::quantile(&p2p::round_trips(plan.relay_pings, 1100, true), 0.5),
                ),
                (
                    measure::quantile(&udp::ping_pong(plan.relay_pings, 1200, false)?, 0.5),
                    measure::quantile(&udp::ping_pong(plan.relay_pings, 1200, true)?, 0.5),
                ),
            ))
        })?);
    }
    eprintln!("   {:.1} s", t.elapsed().as_secs_f64());

    if wanted(Part::Memory) {
        let t = step("server memory per peer");
        let (base, memory) = p2p::server_memory(&plan.peers)?;
        r.memory_base = base;
        r.memory = memory;
        eprintln!("   {:.1} s", t.elapsed().as_secs_f64());
    }

    let t = step("time to first message");
    if wanted(Part::Startup) {
        (r.startup_p2pcore, r.startup_direct) = p2p::startup(plan.starts);
        r.startup_quinn = quinn_ref::startup(plan.starts)?;
        r.startup_enet = enet(enet_side::startup(plan.starts))?;
    }
    eprintln!("   {:.1} s", t.elapsed().as_secs_f64());
    eprintln!("== all in {:.1} s", all.elapsed().as_secs_f64());
    Ok(r)
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Cmd::ServeChild) = args.command {
        return match p2p::serve_child() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("serve-child: {e}");
                ExitCode::FAILURE
            }
        };
    }
    // quinn and p2pcore both use rustls on ring; say so once for quinn's
    // builders.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match run(&args).and_then(|r| {
        r.write(&args.out)?;
        Ok(r)
    }) {
        Ok(r) => {
            println!("p2pcore benchmark, {} run, {}\n", r.mode, r.machine);
            print!("{}", r.table());
            println!("\nreport and plots in {}", args.out.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench failed: {e}");
            ExitCode::FAILURE
        }
    }
}
