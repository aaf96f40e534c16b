//! The results of one run: the table (ratio first, goal beside it), the
//! JSON behind it, and the two plots.

use crate::measure::{Forwarding, Rate, Throughput, median, micros, quantile};
use plotters::prelude::*;
use serde::Serialize;
use std::fmt::Write as _;
use std::io;
use std::path::Path;
use std::time::Duration;

/// Everything one run measured. `None` where a system was not available
/// (ENet without `libenet-dev`).
#[derive(Debug, Default, Serialize)]
pub(crate) struct Results {
    pub(crate) mode: &'static str,
    pub(crate) machine: String,
    /// `(message size, p2pcore, quinn, ENet)`.
    pub(crate) throughput: Vec<(usize, Throughput, Throughput, Option<Throughput>)>,
    /// quinn without path MTU discovery (1200-byte packets, as p2pcore), at
    /// the largest size.
    pub(crate) throughput_quinn_1200: Option<(usize, Throughput)>,
    /// Sorted round-trip samples of 64-byte messages.
    pub(crate) rtt_p2pcore: Vec<Duration>,
    pub(crate) rtt_quinn: Vec<Duration>,
    pub(crate) rtt_enet: Option<Vec<Duration>>,
    pub(crate) rtt_udp: Vec<Duration>,
    /// Size of the unreliable messages.
    pub(crate) unreliable_size: usize,
    pub(crate) unreliable_p2pcore: Option<Rate>,
    pub(crate) unreliable_enet: Option<Rate>,
    pub(crate) unreliable_udp: Option<Rate>,
    pub(crate) relay_p2pcore: Option<Forwarding>,
    pub(crate) relay_floor: Option<Forwarding>,
    /// p50 round trips of ~1200-byte messages, (direct, through the
    /// forwarder), for p2pcore then for the bare forwarder.
    pub(crate) relay_rtt: Option<((Duration, Duration), (Duration, Duration))>,
    /// Server RSS with no peer, then `(peers, RSS)`.
    pub(crate) memory_base: u64,
    pub(crate) memory: Vec<(usize, u64)>,
    /// Samples: p2pcore first message, p2pcore direct path, quinn, ENet.
    pub(crate) startup_p2pcore: Vec<Duration>,
    pub(crate) startup_direct: Vec<Duration>,
    pub(crate) startup_quinn: Vec<Duration>,
    pub(crate) startup_enet: Option<Vec<Duration>>,
}

/// A plotted line: its name, colour and points.
type Series = (&'static str, RGBColor, Vec<(f64, f64)>);

/// One row of the table.
struct Row {
    ratio: Option<f64>,
    goal: String,
    what: String,
    p2pcore: String,
    reference: String,
}

fn size_label(n: usize) -> String {
    match n {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} B"),
    }
}

fn goal(met: bool, text: &str) -> String {
    format!("{text} {}", if met { "✓" } else { "✗" })
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", micros(d))
}

impl Results {
    fn rows(&self) -> Vec<Row> {
        let mut rows = Vec::new();
        for (size, p, q, e) in &self.throughput {
            let r = p.mb_per_s / q.mb_per_s;
            rows.push(Row {
                ratio: Some(r),
                goal: goal(r >= 0.95, "≥ 0.95"),
                what: format!("reliable throughput, {} messages (MB/s)", size_label(*size)),
                p2pcore: format!("{:.0}", p.mb_per_s),
                reference: format!("quinn {:.0}", q.mb_per_s),
            });
            if let Some(e) = e {
                rows.push(Row {
                    ratio: Some(p.mb_per_s / e.mb_per_s),
                    goal: String::new(),
                    what: format!("reliable throughput, {} messages (MB/s)", size_label(*size)),
                    p2pcore: format!("{:.0}", p.mb_per_s),
                    reference: format!("ENet {:.0}", e.mb_per_s),
                });
            }
        }
        if let (Some((size, q)), Some((_, p, _, _))) = (&self.throughput_quinn_1200, self.throughput.last()) {
            rows.push(Row {
                ratio: Some(p.mb_per_s / q.mb_per_s),
                goal: String::new(),
                what: format!(
                    "reliable throughput, {} messages, quinn also at 1200-byte packets (MB/s)",
                    size_label(*size)
                ),
                p2pcore: format!("{:.0}", p.mb_per_s),
                reference: format!("quinn, no PMTUD {:.0}", q.mb_per_s),
            });
        }
        if let Some((_, p, q, _)) =
            self.throughput.iter().find(|t| t.0 == 64 << 10).or(self.throughput.last())
        {
            rows.push(Row {
                ratio: Some(p.cpu_ms_per_100mb / q.cpu_ms_per_100mb),
                goal: String::new(),
                what: "CPU per 100 MB at that size, both ends (ms, lower is better)".into(),
                p2pcore: format!("{:.0}", p.cpu_ms_per_100mb),
                reference: format!("quinn {:.0}", q.cpu_ms_per_100mb),
            });
        }
        if !self.rtt_p2pcore.is_empty() {
            self.rtt_rows(&mut rows);
        }
        self.other_rows(&mut rows);
        rows
    }

    fn rtt_rows(&self, rows: &mut Vec<Row>) {
        let p50 = |s: &[Duration]| quantile(s, 0.5);
        let p99 = |s: &[Duration]| quantile(s, 0.99);
        let (pp50, qp50) = (p50(&self.rtt_p2pcore), p50(&self.rtt_quinn));
        let extra = micros(pp50) - micros(qp50);
        rows.push(Row {
            ratio: Some(micros(pp50) / micros(qp50)),
            goal: goal(extra <= 10.0, &format!("≤ quinn + 10 µs ({extra:+.0} µs)")),
            what: "round trip p50, 64 B reliable (lower is better)".into(),
            p2pcore: us(pp50),
            reference: format!("quinn {}", us(qp50)),
        });
        rows.push(Row {
            ratio: Some(micros(p99(&self.rtt_p2pcore)) / micros(p99(&self.rtt_quinn))),
            goal: String::new(),
            what: "round trip p99, 64 B reliable (lower is better)".into(),
            p2pcore: us(p99(&self.rtt_p2pcore)),
            reference: format!("quinn {}", us(p99(&self.rtt_quinn))),
        });
        if let Some(e) = &self.rtt_enet {
            rows.push(Row {
                ratio: Some(micros(pp50) / micros(p50(e))),
                goal: String::new(),
                what: "round trip p50, 64 B reliable (lower is better)".into(),
                p2pcore: us(pp50),
                reference: format!("ENet {}", us(p50(e))),
            });
        }
        rows.push(Row {
            ratio: Some(micros(pp50) / micros(p50(&self.rtt_udp))),
            goal: String::new(),
            what: "round trip p50, 64 B (lower is better)".into(),
            p2pcore: us(pp50),
            reference: format!("bare UDP {}", us(p50(&self.rtt_udp))),
        });
    }

    fn other_rows(&self, rows: &mut Vec<Row>) {
        if let Some(p) = &self.unreliable_p2pcore {
            let size = size_label(self.unreliable_size);
            let cell = |r: &Rate| format!("{:.0}/s, loss {:.1} %", r.delivered_per_s(), r.loss() * 100.0);
            if let Some(e) = &self.unreliable_enet {
                let r = p.delivered_per_s() / e.delivered_per_s();
                rows.push(Row {
                    ratio: Some(r),
                    goal: goal(r >= 1.0, "≥ 1"),
                    what: format!("unreliable {size} messages delivered per second"),
                    p2pcore: cell(p),
                    reference: format!("ENet {}", cell(e)),
                });
            }
            if let Some(u) = &self.unreliable_udp {
                rows.push(Row {
                    ratio: Some(p.delivered_per_s() / u.delivered_per_s()),
                    goal: String::new(),
                    what: format!("unreliable {size} messages delivered per second"),
                    p2pcore: cell(p),
                    reference: format!("bare UDP {}", cell(u)),
                });
            }
        }
        if let (Some(p), Some(f)) = (&self.relay_p2pcore, &self.relay_floor) {
            let r = p.per_core_s() / f.per_core_s();
            rows.push(Row {
                ratio: Some(r),
                goal: goal(r >= 0.9, "≥ 0.9"),
                what: "relay: ~1200-byte datagrams one core forwards per second".into(),
                p2pcore: format!("{:.0}", p.per_core_s()),
                reference: format!("recvmmsg→sendmmsg {:.0}", f.per_core_s()),
            });
            rows.push(Row {
                ratio: Some(p.per_s() / f.per_s()),
                goal: String::new(),
                what: "relay: datagrams forwarded per second during the blast (bounded by the sender)".into(),
                p2pcore: format!("{:.0}", p.per_s()),
                reference: format!("recvmmsg→sendmmsg {:.0}", f.per_s()),
            });
            rows.push(Row {
                ratio: Some(p.cpu_ms_per_mb() / f.cpu_ms_per_mb()),
                goal: String::new(),
                what: "relay: forwarder CPU per relayed MB (ms, lower is better)".into(),
                p2pcore: format!("{:.2}", p.cpu_ms_per_mb()),
                reference: format!("recvmmsg→sendmmsg {:.2}", f.cpu_ms_per_mb()),
            });
        }
        if let Some((p, f)) = self.relay_rtt {
            let added = |(direct, relayed): (Duration, Duration)| relayed.saturating_sub(direct);
            let (pa, fa) = (added(p), added(f));
            rows.push(Row {
                ratio: Some(micros(pa).max(1.0) / micros(fa).max(1.0)),
                goal: String::new(),
                what: "relay: round-trip p50 added by relaying ~1200-byte messages (lower is better)".into(),
                p2pcore: us(pa),
                reference: format!("recvmmsg→sendmmsg {}", us(fa)),
            });
        }
        for (n, rss) in &self.memory {
            let per = rss.saturating_sub(self.memory_base) as f64 / *n as f64;
            rows.push(Row {
                ratio: None,
                goal: String::new(),
                what: format!("server memory per connected peer at {n} peers (RSS delta)"),
                p2pcore: format!("{:.1} KiB", per / 1024.0),
                reference: format!(
                    "RSS {:.1} MiB, {:.1} MiB with none",
                    *rss as f64 / 1048576.0,
                    self.memory_base as f64 / 1048576.0
                ),
            });
        }
        if self.startup_p2pcore.is_empty() {
            return;
        }
        let first = median(self.startup_p2pcore.clone());
        rows.push(Row {
            ratio: Some(micros(first) / micros(median(self.startup_quinn.clone()))),
            goal: String::new(),
            what: "start to first message delivered, median (lower is better; p2pcore: server, directory, then the peer)".into(),
            p2pcore: format!("{:.1} ms", micros(first) / 1e3),
            reference: format!("quinn {:.1} ms", micros(median(self.startup_quinn.clone())) / 1e3),
        });
        if let Some(e) = &self.startup_enet {
            rows.push(Row {
                ratio: Some(micros(first) / micros(median(e.clone()))),
                goal: String::new(),
                what: "start to first message delivered, median (lower is better)".into(),
                p2pcore: format!("{:.1} ms", micros(first) / 1e3),
                reference: format!("ENet {:.1} ms", micros(median(e.clone())) / 1e3),
            });
        }
        rows.push(Row {
            ratio: None,
            goal: String::new(),
            what: "start to a direct path to the other peer, median".into(),
            p2pcore: format!("{:.1} ms", micros(median(self.startup_direct.clone())) / 1e3),
            reference: String::new(),
        });
    }

    /// The table in Markdown, ratio column first.
    pub(crate) fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "| ratio | goal | measure | p2pcore | reference |");
        let _ = writeln!(s, "|---:|---|---|---:|---|");
        for r in self.rows() {
            let ratio = r.ratio.map_or_else(|| "—".to_string(), |x| format!("{x:.2}"));
            let _ = writeln!(s, "| {ratio} | {} | {} | {} | {} |", r.goal, r.what, r.p2pcore, r.reference);
        }
        s
    }

    /// Writes `report.md`, `report.json`, `throughput.svg` and `rtt.svg`.
    pub(crate) fn write(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let md = format!("p2pcore benchmark, {} run, {}\n\n{}", self.mode, self.machine, self.table());
        std::fs::write(dir.join("report.md"), md)?;
        std::fs::write(
            dir.join("report.json"),
            serde_json::to_string_pretty(self).map_err(io::Error::other)?,
        )?;
        if !self.throughput.is_empty() {
            self.plot_throughput(&dir.join("throughput.svg")).map_err(|e| io::Error::other(e.to_string()))?;
        }
        if !self.rtt_p2pcore.is_empty() {
            self.plot_rtt(&dir.join("rtt.svg")).map_err(|e| io::Error::other(e.to_string()))?;
        }
        Ok(())
    }

    fn plot_throughput(&self, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
        root.fill(&WHITE)?;
        let max = self
            .throughput
            .iter()
            .flat_map(|(_, p, q, e)| [p.mb_per_s, q.mb_per_s, e.map_or(0.0, |e| e.mb_per_s)])
            .fold(1.0, f64::max);
        let (lo, hi) = (
            self.throughput.first().map_or(64, |t| t.0) as f64 / 1.5,
            self.throughput.last().map_or(1 << 20, |t| t.0) as f64 * 1.5,
        );
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("Reliable throughput, one channel, loopback ({} run)", self.mode),
                ("sans-serif", 20),
            )
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d((lo..hi).log_scale(), 0.0..max * 1.1)?;
        chart
            .configure_mesh()
            .x_desc("message size (bytes, log scale)")
            .y_desc("MB/s")
            .x_label_formatter(&|x| size_label(x.round() as usize))
            .draw()?;
        let series: [Series; 3] = [
            ("p2pcore", RED, self.throughput.iter().map(|t| (t.0 as f64, t.1.mb_per_s)).collect()),
            ("quinn", BLUE, self.throughput.iter().map(|t| (t.0 as f64, t.2.mb_per_s)).collect()),
            (
                "ENet",
                GREEN,
                self.throughput.iter().filter_map(|t| t.3.map(|e| (t.0 as f64, e.mb_per_s))).collect(),
            ),
        ];
        for (name, color, points) in series {
            if points.is_empty() {
                continue;
            }
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
            chart.draw_series(points.into_iter().map(|p| Circle::new(p, 4, color.filled())))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()?;
        root.present()?;
        Ok(())
    }

    fn plot_rtt(&self, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut systems: Vec<(&str, RGBColor, &[Duration])> =
            vec![("p2pcore", RED, &self.rtt_p2pcore), ("quinn", BLUE, &self.rtt_quinn)];
        if let Some(e) = &self.rtt_enet {
            systems.push(("ENet", GREEN, e));
        }
        systems.push(("bare UDP", BLACK, &self.rtt_udp));
        let lo =
            systems.iter().filter_map(|s| s.2.first()).map(|d| micros(*d)).fold(f64::MAX, f64::min).max(1.0);
        let hi = systems.iter().filter_map(|s| s.2.last()).map(|d| micros(*d)).fold(1.0, f64::max);
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("Round trips of 64-byte messages, loopback ({} run)", self.mode),
                ("sans-serif", 20),
            )
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d((lo * 0.8..hi * 1.25).log_scale(), 0.0..1.0)?;
        chart
            .configure_mesh()
            .x_desc("round trip (µs, log scale)")
            .y_desc("share of round trips ≤ x")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .draw()?;
        for (name, color, samples) in systems {
            // At most ~500 points a curve (every k-th sample, and the
            // last): the shape is the same, the SVG a tenth the size.
            let n = samples.len().max(1);
            let k = n.div_ceil(500);
            let points: Vec<(f64, f64)> = samples
                .iter()
                .enumerate()
                .filter(|(i, _)| i % k == k - 1 || i + 1 == n)
                .map(|(i, d)| (micros(*d), (i + 1) as f64 / n as f64))
                .collect();
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()?;
        root.present()?;
        Ok(())
    }
}
