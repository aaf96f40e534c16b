//! Seeded randomness.
//!
//! The core never touches a global RNG: every random choice is drawn from a
//! ChaCha20 stream seeded by [`Config::seed`](crate::Config::seed). Sub-machines
//! (QUIC endpoint, TLS, the Raft election timer) get child seeds derived by
//! hashing the parent seed with a label, so adding a new consumer of randomness
//! does not shift the numbers any other consumer sees.
//!
//! In production the driver fills the seed from the operating system's CSPRNG,
//! which makes the stream as unpredictable as any other CSPRNG output; in the
//! simulator a fixed seed makes a run reproducible byte for byte.

use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// Derives a 32-byte child seed from `seed` and a domain-separation `label`.
pub(crate) fn derive_seed(seed: &[u8; 32], label: &str) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"p2pcore seed v1\0");
    ctx.update(seed);
    ctx.update(label.as_bytes());
    let digest = ctx.finish();
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// The deterministic random number generator of one node.
#[derive(Clone, Debug)]
pub(crate) struct NodeRng(ChaCha20Rng);

impl NodeRng {
    /// Creates a generator from a seed.
    pub(crate) fn from_seed(seed: [u8; 32]) -> Self {
        Self(ChaCha20Rng::from_seed(seed))
    }

    /// A fresh 32-byte seed for a sub-machine.
    pub(crate) fn child_seed(&mut self) -> [u8; 32] {
        let mut out = [0u8; 32];
        self.0.fill_bytes(&mut out);
        out
    }

    /// Fills `buf` with random bytes.
    pub(crate) fn fill(&mut self, buf: &mut [u8]) {
        self.0.fill_bytes(buf);
    }

    /// A uniformly random `u64`.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// A uniformly random integer in `0..n`; `0` when `n == 0`.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.0.random_range(0..n) }
    }

    /// `base` scaled by a random factor in `[1 - spread, 1 + spread]`, so that
    /// many nodes retrying at once do not retry in lock step.
    pub(crate) fn jitter(&mut self, base: std::time::Duration, spread: f64) -> std::time::Duration {
        let spread = spread.clamp(0.0, 1.0);
        base.mul_f64(1.0 - spread + self.0.random::<f64>() * 2.0 * spread)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream() {
        let mut a = NodeRng::from_seed([7; 32]);
        let mut b = NodeRng::from_seed([7; 32]);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        let mut c = NodeRng::from_seed([8; 32]);
        assert_ne!(a.next_u64(), c.next_u64());
    }

    #[test]
    fn below_and_jitter_stay_in_range() {
        let mut r = NodeRng::from_seed([3; 32]);
        assert_eq!(r.below(0), 0);
        for _ in 0..1000 {
            assert!(r.below(10) < 10);
            let d = r.jitter(std::time::Duration::from_millis(100), 0.25);
            assert!(d.as_millis() >= 75 && d.as_millis() <= 125);
        }
    }

    #[test]
    fn derive_seed_separates_labels() {
        let s = [1u8; 32];
        assert_eq!(derive_seed(&s, "quic"), derive_seed(&s, "quic"));
        assert_ne!(derive_seed(&s, "quic"), derive_seed(&s, "tls"));
        assert_ne!(derive_seed(&s, "quic"), derive_seed(&[2u8; 32], "quic"));
    }
}
