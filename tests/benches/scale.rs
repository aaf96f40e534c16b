//! Scale: what a cluster of 3 servers costs as the number of peers grows.
//!
//! Each run: 3 servers, N public peers joining evenly over the first 10 s,
//! on-demand connections (no peer-to-peer links: what is measured is the
//! cluster's own cost), 30 s of virtual time. A counting allocator charges
//! every allocation to the node that made it and the simulator's scope hook
//! times every call into a node, so the figures are per node, not per
//! process. Printed per N:
//!
//! * wall time of the whole run and its speed (virtual seconds per wall
//!   second: ≥ 1 means the simulator keeps up with real time);
//! * per server: CPU time in the join wave (0–10 s) and in the idle window
//!   (20–30 s), bytes sent and received in each, memory held at the end;
//! * per peer: memory held at the end; the process's memory at its peak;
//! * the growth exponent of each figure between consecutive sizes
//!   (log(f₂/f₁) / log(N₂/N₁): 1 is linear, 2 quadratic).
//!
//! ```text
//! cargo bench -p p2pcore-tests --bench scale                       # 100, 300, 1000 peers
//! cargo bench -p p2pcore-tests --bench scale -- --peers 100,1000,10000 --svg bench/results/scale.svg
//! cargo bench -p p2pcore-tests --bench scale -- --lookup          # directory lookup mode
//! ```
#![allow(clippy::print_stdout, clippy::print_stderr)] // a bench binary reports on stdout

use p2pcore::ConnectPolicy;
use p2pcore_tests::memory::{self, Counting};
use p2pcore_tests::sim::{HostId, LinkParams, NodeSpec, Sim, SimConfig};
use plotters::prelude::*;
use std::time::{Duration, Instant};

#[global_allocator]
static ALLOC: Counting = Counting;

const JOIN: Duration = Duration::from_secs(10);
const SETTLE: Duration = Duration::from_secs(20);
const END: Duration = Duration::from_secs(30);
const MIB: f64 = (1 << 20) as f64;

/// One run's figures.
#[derive(Debug, Clone, Copy)]
struct Figures {
    peers: usize,
    wall: Duration,
    /// Per server (mean of the three).
    join_cpu: Duration,
    idle_cpu: Duration,
    join_bytes: u64,
    idle_bytes: u64,
    server_mem: f64,
    /// Per peer (mean).
    peer_mem: f64,
    /// Everything allocated at once, at its peak (nodes and simulator).
    process_peak: f64,
    /// Peers each peer saw online at the end (mean), for the sanity check.
    seen: f64,
}

fn server_totals(sim: &Sim, servers: &[HostId]) -> (u64, u64) {
    let cpu = servers.iter().map(|h| memory::cpu_ns(*h)).sum::<u64>() / servers.len() as u64;
    let bytes = servers.iter().map(|h| sim.host(*h).bytes.sent + sim.host(*h).bytes.received).sum::<u64>()
        / servers.len() as u64;
    (cpu, bytes)
}

fn run(n: usize, lookup: bool) -> Figures {
    memory::reset_cpu();
    let wall = Instant::now();
    let mut sim =
        Sim::new(SimConfig { seed: 20, link: LinkParams::default(), trace: false, ..SimConfig::default() });
    sim.set_memory_scope(memory::scope);
    sim.set_configure(move |c, _| {
        c.peer.connect = ConnectPolicy::OnDemand;
        if lookup {
            c.peer.directory = p2pcore::DirectoryMode::Lookup;
        }
    });
    let s1 = sim.add_node(NodeSpec::server("s1"));
    let s2 = sim.add_node(NodeSpec::server("s2").via(&[s1]));
    let s3 = sim.add_node(NodeSpec::server("s3").via(&[s1]));
    let servers = [s1, s2, s3];
    let peers: Vec<HostId> = (0..n)
        .map(|i| {
            let start = Duration::from_micros(JOIN.as_micros() as u64 * i as u64 / n as u64);
            sim.add_node(
                NodeSpec { start_after: Some(start), ..NodeSpec::peer(&format!("p{i}"), None) }.via(&servers),
            )
        })
        .collect();
    let mut process_peak = memory::total_held();
    let mut step = |sim: &mut Sim, until: Duration| {
        while sim.elapsed() < until {
            sim.run_for(Duration::from_millis(500));
            process_peak = process_peak.max(memory::total_held());
        }
    };
    step(&mut sim, JOIN);
    let (join_cpu, join_bytes) = server_totals(&sim, &servers);
    step(&mut sim, SETTLE);
    let (settle_cpu, settle_bytes) = server_totals(&sim, &servers);
    step(&mut sim, END);
    let (end_cpu, end_bytes) = server_totals(&sim, &servers);
    let wall = wall.elapsed();
    let server_mem = servers.iter().map(|h| memory::held(*h).0 as f64).sum::<f64>() / servers.len() as f64;
    let peer_mem = peers.iter().map(|h| memory::held(*h).0 as f64).sum::<f64>() / n as f64;
    let seen = peers.iter().map(|h| sim.node(*h).map_or(0, |node| node.peers().len()) as f64).sum::<f64>()
        / n as f64;
    Figures {
        peers: n,
        wall,
        join_cpu: Duration::from_nanos(join_cpu),
        idle_cpu: Duration::from_nanos(end_cpu - settle_cpu),
        join_bytes,
        idle_bytes: end_bytes - settle_bytes,
        server_mem,
        peer_mem,
        process_peak: process_peak as f64,
        seen,
    }
}

/// The columns of the table: per server unless said otherwise.
const COLUMNS: [&str; 8] =
    ["wall s", "join cpu ms", "idle cpu ms", "join MB", "idle MB", "server MiB", "peer KiB", "peak MiB"];

/// A row's values, in [`COLUMNS`] order.
fn columns(f: &Figures) -> [f64; 8] {
    [
        f.wall.as_secs_f64(),
        f.join_cpu.as_secs_f64() * 1e3,
        f.idle_cpu.as_secs_f64() * 1e3,
        f.join_bytes as f64 / 1e6,
        f.idle_bytes as f64 / 1e6,
        f.server_mem / MIB,
        f.peer_mem / 1024.0,
        f.process_peak / MIB,
    ]
}

fn exponent(a: f64, b: f64, na: usize, nb: usize) -> f64 {
    (b / a).ln() / (nb as f64 / na as f64).ln()
}

fn plot(rows: &[Figures], path: &str) -> Result<(), Box<dyn std::error::Error>> {
    let names = [
        "wall time",
        "server CPU, join wave",
        "server CPU, idle",
        "server bytes, join wave",
        "server memory",
    ];
    let pick = |f: &Figures| {
        [
            f.wall.as_secs_f64(),
            f.join_cpu.as_secs_f64(),
            f.idle_cpu.as_secs_f64(),
            f.join_bytes as f64,
            f.server_mem,
        ]
    };
    let (n0, nmax) = (rows[0].peers as f64, rows[rows.len() - 1].peers as f64);
    let base = pick(&rows[0]);
    let ymax = (nmax / n0).powi(2);
    let root = SVGBackend::new(path, (720, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("cost relative to the smallest run (log-log)", ("sans-serif", 18))
        .margin(12)
        .margin_right(36)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d((n0..nmax).log_scale(), (0.5..ymax).log_scale())?;
    chart.configure_mesh().x_desc("peers").y_desc("× smallest").draw()?;
    for (exp, style) in [(1.0, BLACK.mix(0.6)), (2.0, BLACK.mix(0.3))] {
        chart
            .draw_series(LineSeries::new([n0, nmax].map(|n| (n, (n / n0).powf(exp))), style))?
            .label(if exp == 1.0 { "N (linear)" } else { "N² (quadratic)" })
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], style));
    }
    for (i, name) in names.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let points: Vec<(f64, f64)> =
            rows.iter().map(|f| (f.peers as f64, (pick(f)[i] / base[i]).max(0.5))).collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2)));
        chart.draw_series(points.into_iter().map(|p| Circle::new(p, 3, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

fn main() {
    let mut sizes = vec![100usize, 300, 1000];
    let mut svg = None;
    let mut lookup = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--peers" => {
                let list = args.next().unwrap_or_default();
                match list.split(',').map(str::parse).collect::<Result<Vec<usize>, _>>() {
                    Ok(v) if !v.is_empty() && v.iter().all(|n| *n > 0) => sizes = v,
                    _ => {
                        eprintln!(
                            "scale: --peers takes a comma-separated list of sizes, e.g. --peers 100,1000"
                        );
                        std::process::exit(2);
                    }
                }
            }
            "--svg" => svg = args.next(),
            "--lookup" => lookup = true,
            // `cargo bench` passes `--bench`; other harness flags are ignored too.
            _ => {}
        }
    }
    sizes.sort_unstable();
    println!(
        "3 servers, N peers joining over {} s, on-demand, {} s virtual; directory: {}",
        JOIN.as_secs(),
        END.as_secs(),
        if lookup { "lookup" } else { "full" }
    );
    let header: String = COLUMNS.iter().map(|h| format!("{h:>12}")).collect();
    println!("{:>6}{header} {:>9} {:>8}", "peers", "speed", "seen");
    let mut rows: Vec<Figures> = Vec::new();
    for n in sizes {
        let f = run(n, lookup);
        let cols = columns(&f);
        println!(
            "{:>6}{} {:>8.2}x {:>8.0}",
            n,
            cols.iter().map(|v| format!("{v:>12.2}")).collect::<String>(),
            END.as_secs_f64() / f.wall.as_secs_f64(),
            f.seen
        );
        rows.push(f);
    }
    if rows.len() > 1 {
        println!("growth exponents (1 = linear in N, 2 = quadratic):");
        let overall = [rows[0], rows[rows.len() - 1]];
        let spans = rows.windows(2).chain((rows.len() > 2).then_some(&overall[..]));
        for w in spans {
            let (a, b) = (columns(&w[0]), columns(&w[1]));
            let exps: String = a
                .iter()
                .zip(&b)
                .map(|(x, y)| format!("{:>12.2}", exponent(*x, *y, w[0].peers, w[1].peers)))
                .collect();
            println!("{:>6}{exps}", format!("{}→{}", w[0].peers, w[1].peers));
        }
    }
    if let Some(path) = svg {
        match plot(&rows, &path) {
            Ok(()) => println!("plot written to {path}"),
            Err(e) => eprintln!("scale: could not write {path}: {e}"),
        }
    }
}
