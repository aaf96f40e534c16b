//! # p2pcore-tests — the deterministic network simulator
//!
//! Runs real [`p2pcore::Node`]s on a seeded, virtual-time network with
//! latency, jitter, loss, duplication, reordering, MTU limits, partitions,
//! crashes and restarts, and LANs behind NAT boxes modelled in RFC 4787
//! terms. [`sim::Sim`] is the Rust API used by the scenario tests under
//! `tests/`; [`scenario`] reads TOML scenario files and [`report`] writes the
//! JSON report of the `p2psim` binary. [`netlab`] is the real-NAT lab:
//! network namespaces and Linux netfilter NATs that real p2pcore processes
//! run behind.

pub mod history;
pub mod log;
pub mod memory;
pub mod nat;
pub mod netlab;
pub mod report;
pub mod scenario;
pub mod sim;
