//! # p2pcore-mio — not implemented yet
//!
//! This crate will drive a [`p2pcore::Node`] from a mio event loop around one
//! UDP socket, with batched I/O (`sendmmsg`/`recvmmsg`, GSO/GRO through
//! quinn-udp), for custom loops and server daemons. It is reserved in the
//! workspace so the layout matches the architecture; it exports nothing until
//! that work lands. Until then, drive the core directly: see the contract in
//! the `p2pcore::node` module documentation.
