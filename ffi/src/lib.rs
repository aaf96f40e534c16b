//! # p2pcore-ffi — not implemented yet
//!
//! This crate will expose [`p2pcore::Node`] to C and game engines: opaque
//! handles, caller-owned buffers, negative error codes with a `DONE`-style
//! sentinel, an explicit `now` argument, `catch_unwind` at the boundary, and
//! a cbindgen-generated header that states the threading and ownership rules.
//! It is reserved in the workspace so the layout matches the architecture and
//! exports nothing until that work lands.
