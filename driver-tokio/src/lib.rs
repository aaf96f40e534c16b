//! # p2pcore-tokio — not implemented yet
//!
//! This crate will offer an async handle to a [`p2pcore::Node`] for Rust
//! services on tokio. It is reserved in the workspace so the layout matches
//! the architecture; it exports nothing until that work lands. Until then,
//! drive the core directly: see the contract in the `p2pcore::node` module
//! documentation.
