//! A game backend's operations on p2pcore (three mio servers and a tokio
//! peer on loopback, in this process) next to their Redis equivalents (a
//! `redis-server` this bench starts on a free loopback port), plus what
//! only the coordination layer offers: lock hand-over, contention
//! throughput, election failover and queue pops.
//!
//! `cargo bench -p p2pcore-tokio --bench backend_vs_redis` (about 1000
//! operations each); `-- --quick` for a few (CI). Without `redis-server`
//! installed the Redis column says how to install it and the p2pcore half
//! still runs.
//!
//! Not like for like: a p2pcore write is replicated to a majority of
//! three Raft servers before it is answered (two round trips to the
//! cluster; these servers keep their Raft log in memory, with no disk) and
//! a read is linearizable (a ReadIndex round); Redis answers from one
//! process's memory, replicating nothing. A p2pcore pop reads the whole
//! queue before taking its items, so its cost grows with the queue's
//! length (here up to 1000 items).

#![allow(clippy::print_stdout, missing_docs)]

#[path = "../examples/common/mod.rs"]
#[allow(dead_code)]
mod common;

use common::{Cluster, quantile_ms};
use p2pcore::{CoordRequest, InstanceFilter, InstanceInfo};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// One measured operation: latency samples.
struct Row {
    op: &'static str,
    p2p: Vec<Duration>,
    redis: Option<Vec<Duration>>,
}

fn fmt(samples: &Option<Vec<Duration>>, what: &str) -> (String, String) {
    match samples {
        Some(s) if !s.is_empty() => {
            let mut s = s.clone();
            (format!("{:.3}", quantile_ms(&mut s, 0.5)), format!("{:.3}", quantile_ms(&mut s, 0.99)))
        }
        _ => (what.to_owned(), what.to_owned()),
    }
}

/// Times `n` runs of `f`.
async fn time_async<F, Fut>(n: usize, mut f: F) -> Vec<Duration>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        f(i).await;
        out.push(t.elapsed());
    }
    out
}

fn time_sync(n: usize, mut f: impl FnMut(usize)) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        f(i);
        out.push(t.elapsed());
    }
    out
}

/// The extra p2pcore figures.
#[derive(Default)]
struct Extra {
    lock_cycle: Vec<Duration>,
    grants_per_s: f64,
    failover: Vec<Duration>,
    failover_error: Option<String>,
    pop: Vec<Duration>,
}

async fn p2pcore_half(
    n: usize,
    contention: Duration,
    failovers: usize,
) -> (Vec<(&'static str, Vec<Duration>)>, Extra) {
    let cluster = Cluster::start(150);
    let ep = cluster.peer(160, "bench").await;
    let session = ep.session(Duration::from_secs(30)).await.expect("session");
    let mut rows = Vec::new();
    rows.push((
        "map: set player -> instance",
        time_async(n, |i| {
            let ep = ep.clone();
            async move {
                ep.put(format!("player/{i}"), "backend-a").await.expect("put");
            }
        })
        .await,
    ));
    rows.push((
        "map: get player -> instance",
        time_async(n, |i| {
            let ep = ep.clone();
            async move {
                assert!(ep.get(format!("player/{i}")).await.expect("get").is_some());
            }
        })
        .await,
    ));
    rows.push(("lock: acquire (free)", Vec::new()));
    let mut acquire = Vec::with_capacity(n);
    let mut release = Vec::with_capacity(n);
    let mut cycle = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        let lock = ep.lock(format!("room/{}", i % 16), session).await.expect("lock");
        let got = t.elapsed();
        lock.unlock().await.expect("unlock");
        acquire.push(got);
        release.push(t.elapsed() - got);
        cycle.push(t.elapsed());
    }
    rows.last_mut().expect("row").1 = acquire;
    rows.push(("lock: release", release));
    rows.push((
        "queue: push",
        time_async(n, |i| {
            let ep = ep.clone();
            async move {
                assert!(ep.push(CoordRequest::push("mm", format!("p{i:06}"), "x")).await.expect("push"));
            }
        })
        .await,
    ));
    let pop = time_async(n, |_| {
        let ep = ep.clone();
        async move {
            assert_eq!(ep.pop("mm", 1, None).await.expect("pop").len(), 1);
        }
    })
    .await;
    rows.push(("queue: pop 1", pop.clone()));
    rows.push((
        "blacklist: add (expiry in value)",
        time_async(n, |i| {
            let ep = ep.clone();
            async move {
                ep.put(format!("blacklist/t{i}"), "9999999999999").await.expect("put");
            }
        })
        .await,
    ));
    rows.push((
        "blacklist: check",
        time_async(n, |i| {
            let ep = ep.clone();
            async move {
                assert!(ep.get(format!("blacklist/t{i}")).await.expect("get").is_some());
            }
        })
        .await,
    ));
    let mut register = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        let r = ep
            .register("rooms", format!("tmp{i}"), InstanceInfo::new(i as u32, 100), session)
            .await
            .expect("register");
        register.push(t.elapsed());
        r.deregister().await.expect("deregister");
    }
    rows.push(("registry: register", register));
    let mut live = Vec::new();
    for i in 0..8 {
        live.push(
            ep.register("rooms", format!("i{i}"), InstanceInfo::new(i, 100), session)
                .await
                .expect("register"),
        );
    }
    rows.push((
        "registry: query all",
        time_async(n, |_| {
            let ep = ep.clone();
            async move {
                assert_eq!(ep.query("rooms", InstanceFilter::all()).await.expect("query").len(), 8);
            }
        })
        .await,
    ));
    drop(live);

    let mut extra = Extra { lock_cycle: cycle, pop, ..Extra::default() };
    // Contention: three peers hammering one lock.
    let mut peers = vec![ep.clone()];
    for i in 0..2u8 {
        peers.push(cluster.peer(161 + i, &format!("bench-{i}")).await);
    }
    let grants = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + contention;
    let mut tasks = Vec::new();
    for p in &peers {
        let (p, grants) = (p.clone(), grants.clone());
        tasks.push(tokio::spawn(async move {
            let s = p.session(Duration::from_secs(30)).await.expect("session");
            while Instant::now() < until {
                let lock = p.lock("hot", s).await.expect("lock");
                grants.fetch_add(1, Ordering::Relaxed);
                lock.unlock().await.expect("unlock");
            }
        }));
    }
    let started = Instant::now();
    for t in tasks {
        t.await.expect("contender");
    }
    extra.grants_per_s = grants.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    // Election failover: the leader's session closed -> the other elected.
    for round in 0..failovers {
        let group = format!("failover-{round}");
        let (a, b) = (&peers[1], &peers[2]);
        let result = tokio::time::timeout(Duration::from_secs(15), async {
            let sa = a.session(Duration::from_secs(30)).await.map_err(|e| e.to_string())?;
            let sb = b.session(Duration::from_secs(30)).await.map_err(|e| e.to_string())?;
            let lead = a
                .campaign(CoordRequest::campaign(group.clone(), sa, "a"))
                .await
                .map_err(|e| e.to_string())?;
            let next = tokio::spawn({
                let (b, group) = (b.clone(), group.clone());
                async move { b.campaign(CoordRequest::campaign(group, sb, "b")).await }
            });
            // b is a candidate once its key is in the group (it then waits).
            let mut watch = a.watch_leader(group.clone());
            let _ = watch.next().await;
            let t = Instant::now();
            a.session_close(sa).await.map_err(|e| e.to_string())?;
            let won = next.await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
            let took = t.elapsed();
            drop(lead);
            won.resign().await.ok();
            Ok::<Duration, String>(took)
        })
        .await;
        match result {
            Ok(Ok(d)) => extra.failover.push(d),
            Ok(Err(e)) => extra.failover_error = Some(e),
            Err(_) => extra.failover_error = Some("no new leader within 15 s".into()),
        }
    }
    for p in peers {
        p.close().await;
    }
    (rows, extra)
}

/// A `redis-server` this bench started; killed when dropped.
struct RedisServer {
    child: Child,
    port: u16,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_redis() -> Result<RedisServer, String> {
    let port =
        TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| e.to_string())?.port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                "redis-server is not installed (apt-get install redis-server)".to_owned()
            }
            _ => format!("could not start redis-server: {e}"),
        })?;
    let server = RedisServer { child, port };
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).map_err(|e| e.to_string())?;
    let give_up = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(mut c) = client.get_connection()
            && redis::cmd("PING").query::<String>(&mut c).is_ok()
        {
            return Ok(server);
        }
        if Instant::now() > give_up {
            return Err("redis-server did not answer PING within 10 s".to_owned());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn redis_half(port: u16, n: usize) -> redis::RedisResult<Vec<(&'static str, Vec<Duration>)>> {
    let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?.get_connection()?;
    let mut q = |cmd: &mut redis::Cmd| cmd.query::<redis::Value>(&mut c).expect("redis command");
    let mut rows = Vec::new();
    rows.push((
        "map: set player -> instance",
        time_sync(n, |i| {
            q(redis::cmd("SET").arg(format!("player/{i}")).arg("backend-a"));
        }),
    ));
    rows.push((
        "map: get player -> instance",
        time_sync(n, |i| {
            q(redis::cmd("GET").arg(format!("player/{i}")));
        }),
    ));
    rows.push((
        "lock: acquire (free)",
        time_sync(n, |i| {
            q(redis::cmd("SET").arg(format!("room/{}", i % 16)).arg("owner").arg("NX").arg("PX").arg(30_000));
        }),
    ));
    rows.push((
        "lock: release",
        time_sync(n, |i| {
            q(redis::cmd("DEL").arg(format!("room/{}", i % 16)));
        }),
    ));
    rows.push((
        "queue: push",
        time_sync(n, |i| {
            q(redis::cmd("ZADD").arg("mm").arg(i).arg(format!("p{i:06}")));
        }),
    ));
    rows.push((
        "queue: pop 1",
        time_sync(n, |_| {
            q(redis::cmd("ZPOPMIN").arg("mm").arg(1));
        }),
    ));
    rows.push((
        "blacklist: add (expiry in value)",
        time_sync(n, |i| {
            q(redis::cmd("SETEX").arg(format!("blacklist/t{i}")).arg(3600).arg("1"));
        }),
    ));
    rows.push((
        "blacklist: check",
        time_sync(n, |i| {
            q(redis::cmd("EXISTS").arg(format!("blacklist/t{i}")));
        }),
    ));
    rows.push((
        "registry: register",
        time_sync(n, |i| {
            q(redis::cmd("HSET").arg("rooms").arg(format!("i{}", i % 8)).arg(format!("load={i}")));
        }),
    ));
    rows.push((
        "registry: query all",
        time_sync(n, |_| {
            q(redis::cmd("HGETALL").arg("rooms"));
        }),
    ));
    Ok(rows)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (n, contention, failovers) =
        if quick { (30, Duration::from_millis(500), 1) } else { (1000, Duration::from_secs(3), 5) };
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    println!("backend_vs_redis: {n} operations each{}", if quick { " (--quick)" } else { "" });
    let (p2p, extra) = rt.block_on(p2pcore_half(n, contention, failovers));
    let (redis_rows, redis_note) = match start_redis() {
        Ok(server) => match redis_half(server.port, n) {
            Ok(rows) => (Some(rows), String::new()),
            Err(e) => (None, format!("redis: {e}")),
        },
        Err(e) => (None, e),
    };
    let mut rows: Vec<Row> = p2p.into_iter().map(|(op, p2p)| Row { op, p2p, redis: None }).collect();
    if let Some(r) = redis_rows {
        for (op, s) in r {
            if let Some(row) = rows.iter_mut().find(|row| row.op == op) {
                row.redis = Some(s);
            }
        }
    }
    println!();
    println!("| operation | p2pcore p50 ms | p2pcore p99 ms | Redis p50 ms | Redis p99 ms |");
    println!("|---|---:|---:|---:|---:|");
    for row in &rows {
        let (pa, pb) = fmt(&Some(row.p2p.clone()), "-");
        let (ra, rb) = fmt(&row.redis, "n/a");
        println!("| {} | {pa} | {pb} | {ra} | {rb} |", row.op);
    }
    if !redis_note.is_empty() {
        println!("\nRedis column: {redis_note}");
    }
    let mut cycle = extra.lock_cycle;
    let mut pop = extra.pop;
    println!("\np2pcore coordination:");
    println!(
        "  lock acquire+release (uncontended): p50 {:.3} ms, p99 {:.3} ms",
        quantile_ms(&mut cycle, 0.5),
        quantile_ms(&mut cycle, 0.99)
    );
    println!("  contention, 3 peers on one lock: {:.0} grants/s", extra.grants_per_s);
    println!(
        "  queue pop (1 item): p50 {:.3} ms, p99 {:.3} ms",
        quantile_ms(&mut pop, 0.5),
        quantile_ms(&mut pop, 0.99)
    );
    let mut f = extra.failover;
    if f.is_empty() {
        println!("  election failover: not measured ({})", extra.failover_error.unwrap_or_default());
    } else {
        println!(
            "  election failover (leader's session closed -> new Elected): p50 {:.1} ms, max {:.1} ms over {} rounds{}",
            quantile_ms(&mut f, 0.5),
            quantile_ms(&mut f, 1.0),
            f.len(),
            extra.failover_error.map(|e| format!(" (a round failed: {e})")).unwrap_or_default()
        );
    }
}
