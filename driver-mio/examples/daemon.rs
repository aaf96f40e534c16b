//! The daemon mode: a server with a persistent identity in a data
//! directory, blocking in `Host::run` until Ctrl-C (or `--seconds N`), then
//! closing gracefully within the close timeout.
//!
//! `cargo run -p p2pcore-mio --example daemon -- [--listen 0.0.0.0:7400] [--data-dir DIR] [--join ADDR] [--seconds N]`
#![allow(clippy::print_stdout)]

use p2pcore::{Event, Role};
use p2pcore_mio::{DataDir, Host, HostConfig};
use std::time::Duration;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut listen = "127.0.0.1:7400".to_owned();
    let mut data_dir = std::env::temp_dir().join("p2pcore-example-daemon");
    let mut join = Vec::new();
    let mut seconds = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--listen" => listen = value()?,
            "--data-dir" => data_dir = value()?.into(),
            "--join" => join.push(value()?.parse()?),
            "--seconds" => seconds = Some(value()?.parse::<u64>()?),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let dir = DataDir::open(&data_dir, Role::Server)?;
    println!(
        "{} {} (data dir {})",
        if dir.created() { "created" } else { "loaded" },
        dir.id(),
        data_dir.display()
    );
    let mut config = dir.config("example-server")?;
    config.bootstrap = join;
    let mut host = Host::bind_in(HostConfig::new(listen.parse()?), &dir, config)?;
    println!("listening on {}", host.local_addr());

    let closer = host.closer();
    ctrlc::set_handler({
        let closer = closer.clone();
        move || closer.close()
    })?;
    if let Some(s) = seconds {
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(s));
            closer.close();
        });
    }
    host.run(|host, event| match event {
        Event::Connected { id, .. } => println!("connected: {id} ({} links)", host.node().links().count()),
        Event::MasterChanged { .. } => println!("master: {:?}", host.node().master()),
        other => println!("{other:?}"),
    })?;
    println!("closed");
    Ok(())
}
