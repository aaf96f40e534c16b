//! Admission: who may join the network.
//!
//! TLS proves *who* a node is; admission decides whether it *belongs*. Both
//! sides of every connection present a credential after the TLS handshake and
//! check the other's:
//!
//! * [`Admission::Open`] — development mode: nothing is presented and anything
//!   is accepted. A node in another mode refuses open nodes.
//! * [`Admission::SharedSecret`] — every member knows a 32-byte network secret.
//!   Each side proves it with `HMAC-SHA256(secret, exporter)`, where `exporter`
//!   is keying material exported from *this* TLS session (RFC 5705/8446) with a
//!   context naming the prover's side and node ID. The secret never crosses the
//!   wire, and a proof cannot be replayed on another connection or reflected
//!   back by the other side.
//! * [`Admission::Token`] — every member carries a [`JoinToken`] signed by an
//!   issuer key the other side trusts: issuer, node ID, role, expiry. A token is
//!   bound to the node ID that TLS authenticated, so a stolen token is useless
//!   without the node's private key.

use crate::identity::{Keypair, NODE_ID_LEN, NodeId, PublicKey, Role};
use serde::{Deserialize, Serialize};
use std::fmt;

/// TLS exporter label for admission proofs.
const EXPORTER_LABEL: &[u8] = b"EXPORTER-p2pcore-admission-v1";

/// A 32-byte secret shared by the members of a network.
#[derive(Clone, PartialEq, Eq)]
pub struct NetworkSecret([u8; 32]);

impl NetworkSecret {
    /// A secret from 32 random bytes (the recommended form).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// A secret derived from a passphrase with SHA-256. Convenient for
    /// configuration files; use a long random passphrase.
    pub fn from_passphrase(passphrase: &str) -> Self {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(b"p2pcore network secret v1\0");
        ctx.update(passphrase.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        Self(out)
    }
}

impl fmt::Debug for NetworkSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NetworkSecret(…)")
    }
}

/// How this node proves membership and what it requires of others.
#[derive(Clone, Debug, Default)]
pub enum Admission {
    /// Development only: present nothing, accept anyone.
    #[default]
    Open,
    /// Prove knowledge of a shared secret; require the same proof.
    SharedSecret(NetworkSecret),
    /// Present a join token; require a valid token from one of `issuers`.
    Token {
        /// This node's own token.
        token: JoinToken,
        /// Issuer keys whose tokens are accepted.
        issuers: Vec<PublicKey>,
    },
}

impl Admission {
    /// Which kind of admission this is.
    pub fn mode(&self) -> AdmissionMode {
        match self {
            Admission::Open => AdmissionMode::Open,
            Admission::SharedSecret(_) => AdmissionMode::SharedSecret,
            Admission::Token { .. } => AdmissionMode::Token,
        }
    }
}

/// How a network admits nodes (the kind of [`Admission`], without its keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AdmissionMode {
    /// Anyone is accepted.
    Open,
    /// A proof of the shared network secret is required.
    SharedSecret,
    /// A join token from a trusted issuer is required.
    Token,
}

impl std::fmt::Display for AdmissionMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Open => "open",
            Self::SharedSecret => "shared secret",
            Self::Token => "join token",
        })
    }
}

/// What kind of credential a node presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CredentialKind {
    /// Nothing.
    None,
    /// A proof of a shared secret.
    SecretProof,
    /// A join token.
    Token,
}

impl std::fmt::Display for CredentialKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::None => "no credential",
            Self::SecretProof => "a shared-secret proof",
            Self::Token => "a join token",
        })
    }
}

/// A signed statement that a node may join the network in a role until a time.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinToken {
    /// The key that signed it.
    pub issuer: PublicKey,
    /// The node it admits.
    pub node: NodeId,
    /// The role it admits the node in (always the role in the node ID).
    pub role: Role,
    /// Seconds since the Unix epoch after which it is no longer valid.
    pub expires_unix: u64,
    /// Ed25519 signature by `issuer` over the fields above.
    signature: Signature,
}

/// A 64-byte signature (serde handles arrays up to 32 elements only).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Signature([u8; 32], [u8; 32]);

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("issuer", &self.issuer)
            .field("node", &self.node)
            .field("role", &self.role)
            .field("expires_unix", &self.expires_unix)
            .finish_non_exhaustive()
    }
}

/// Prefix of a token's text form.
const TOKEN_PREFIX: &str = "p2ptok1:";

/// Why a token's text form could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenParseError {
    /// Missing the `p2ptok1:` prefix.
    #[error("not a p2pcore join token: it must start with `p2ptok1:`")]
    Prefix,
    /// Not hexadecimal.
    #[error("join token is not valid hexadecimal after the prefix")]
    Hex,
    /// Hex decoded but the contents are malformed.
    #[error("join token is malformed: {0}")]
    Malformed(String),
}

fn signed_body(issuer: &PublicKey, node: &NodeId, role: Role, expires_unix: u64) -> Vec<u8> {
    let mut body = Vec::with_capacity(80);
    body.extend_from_slice(b"p2pcore join token v1\0");
    body.extend_from_slice(&issuer.0);
    body.extend_from_slice(&node.to_bytes());
    body.push(role.letter() as u8);
    body.extend_from_slice(&expires_unix.to_be_bytes());
    body
}

impl JoinToken {
    /// Issues a token for `node` (in the role its ID carries), valid until `expires_unix`.
    pub fn issue(issuer: &Keypair, node: NodeId, expires_unix: u64) -> Self {
        let issuer_key = issuer.public();
        let sig = issuer.sign(&signed_body(&issuer_key, &node, node.role(), expires_unix));
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        a.copy_from_slice(&sig[..32]);
        b.copy_from_slice(&sig[32..]);
        Self { issuer: issuer_key, node, role: node.role(), expires_unix, signature: Signature(a, b) }
    }

    /// Checks the token for `node` at `now_unix` against trusted `issuers`.
    pub fn verify(&self, issuers: &[PublicKey], node: NodeId, now_unix: u64) -> Result<(), AdmissionError> {
        if !issuers.contains(&self.issuer) {
            return Err(AdmissionError::UntrustedIssuer);
        }
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(&self.signature.0);
        sig[32..].copy_from_slice(&self.signature.1);
        if !self.issuer.verify(&signed_body(&self.issuer, &self.node, self.role, self.expires_unix), &sig) {
            return Err(AdmissionError::BadSignature);
        }
        if self.node != node {
            return Err(AdmissionError::TokenForOtherNode { token_for: self.node });
        }
        if self.role != node.role() {
            return Err(AdmissionError::WrongRole);
        }
        if now_unix >= self.expires_unix {
            return Err(AdmissionError::Expired { expired_unix: self.expires_unix, now_unix });
        }
        Ok(())
    }

    /// Text form: `p2ptok1:` followed by hexadecimal.
    pub fn to_text(&self) -> String {
        let bytes = postcard::to_allocvec(self).unwrap_or_default();
        let mut s = String::with_capacity(TOKEN_PREFIX.len() + bytes.len() * 2);
        s.push_str(TOKEN_PREFIX);
        for b in bytes {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }

    /// Parses [`JoinToken::to_text`] output. The signature is checked by [`JoinToken::verify`].
    pub fn from_text(text: &str) -> Result<Self, TokenParseError> {
        let hex = text.trim().strip_prefix(TOKEN_PREFIX).ok_or(TokenParseError::Prefix)?;
        if hex.len() % 2 != 0 {
            return Err(TokenParseError::Hex);
        }
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| {
                u8::from_str_radix(hex.get(i..i + 2).ok_or(TokenParseError::Hex)?, 16)
                    .map_err(|_| TokenParseError::Hex)
            })
            .collect::<Result<Vec<u8>, _>>()?;
        postcard::from_bytes(&bytes).map_err(|e| TokenParseError::Malformed(e.to_string()))
    }
}

/// Why a credential was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AdmissionError {
    /// The remote presented nothing (or the wrong kind of credential) but this network requires one.
    #[error("this network requires a {required} credential; the remote presented {presented}")]
    CredentialRequired {
        /// The mode the refusing side runs in.
        required: AdmissionMode,
        /// What the remote presented.
        presented: CredentialKind,
    },
    /// The shared-secret proof does not match: the remote does not know the network secret.
    #[error("wrong network secret")]
    BadProof,
    /// The token's issuer is not trusted here.
    #[error("join token issuer is not trusted by this network")]
    UntrustedIssuer,
    /// The token's signature does not verify.
    #[error("join token signature is invalid")]
    BadSignature,
    /// The token was issued to another node.
    #[error("join token was issued to {token_for}, not to the node presenting it")]
    TokenForOtherNode {
        /// Whom the token names.
        token_for: NodeId,
    },
    /// The token's role does not match the node's role.
    #[error("join token role does not match the node's role")]
    WrongRole,
    /// The token has expired.
    #[error("join token expired at {expired_unix} (unix seconds); now is {now_unix}")]
    Expired {
        /// Expiry.
        expired_unix: u64,
        /// The verifier's current time.
        now_unix: u64,
    },
    /// TLS keying material could not be exported (should not happen with TLS 1.3).
    #[error("could not export TLS keying material")]
    Exporter,
}

/// What a node presents in its Hello or Welcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Credential {
    None,
    SecretProof([u8; 32]),
    Token(JoinToken),
}

impl Credential {
    fn kind(&self) -> CredentialKind {
        match self {
            Credential::None => CredentialKind::None,
            Credential::SecretProof(_) => CredentialKind::SecretProof,
            Credential::Token(_) => CredentialKind::Token,
        }
    }
}

/// Which side of a connection a proof is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Dialer,
    Acceptor,
}

/// Exports the keying material a side's proof is computed over.
pub(crate) fn exporter_input(
    session: &dyn quinn_proto::crypto::Session,
    side: Side,
    prover: NodeId,
) -> Option<[u8; 32]> {
    let mut context = Vec::with_capacity(1 + NODE_ID_LEN);
    context.push(match side {
        Side::Dialer => b'D',
        Side::Acceptor => b'A',
    });
    context.extend_from_slice(&prover.to_bytes());
    let mut out = [0u8; 32];
    session.export_keying_material(&mut out, EXPORTER_LABEL, &context).ok()?;
    Some(out)
}

fn proof(secret: &NetworkSecret, exported: &[u8; 32]) -> [u8; 32] {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret.0);
    let tag = ring::hmac::sign(&key, exported);
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// The credential this node presents; `exported` is [`exporter_input`] for its own side.
pub(crate) fn present(admission: &Admission, exported: Option<[u8; 32]>) -> Credential {
    match admission {
        Admission::Open => Credential::None,
        Admission::SharedSecret(secret) => match exported {
            Some(e) => Credential::SecretProof(proof(secret, &e)),
            None => Credential::None,
        },
        Admission::Token { token, .. } => Credential::Token(token.clone()),
    }
}

/// Checks the remote's credential; `exported` is [`exporter_input`] for the remote's side.
pub(crate) fn check(
    admission: &Admission,
    credential: &Credential,
    remote: NodeId,
    exported: Option<[u8; 32]>,
    now_unix: u64,
) -> Result<(), AdmissionError> {
    let required =
        || AdmissionError::CredentialRequired { required: admission.mode(), presented: credential.kind() };
    match (admission, credential) {
        (Admission::Open, _) => Ok(()),
        (Admission::SharedSecret(secret), Credential::SecretProof(p)) => {
            let exported = exported.ok_or(AdmissionError::Exporter)?;
            let expected = proof(secret, &exported);
            // Constant-time comparison through ring's HMAC verification.
            let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret.0);
            ring::hmac::verify(&key, &exported, p).map_err(|_| AdmissionError::BadProof)?;
            debug_assert_eq!(&expected, p);
            Ok(())
        }
        (Admission::Token { issuers, .. }, Credential::Token(t)) => t.verify(issuers, remote, now_unix),
        _ => Err(required()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    fn id(seed: u8, role: Role) -> NodeId {
        Identity::from_seed(role, [seed; 32]).id()
    }

    #[test]
    fn tokens_verify_and_fail_clearly() {
        let issuer = Keypair::from_seed([9; 32]);
        let other_issuer = Keypair::from_seed([10; 32]);
        let node = id(1, Role::Server);
        let t = JoinToken::issue(&issuer, node, 1000);
        let trusted = [issuer.public()];
        assert_eq!(t.verify(&trusted, node, 999), Ok(()));
        assert!(matches!(t.verify(&trusted, node, 1000), Err(AdmissionError::Expired { .. })));
        assert_eq!(t.verify(&[other_issuer.public()], node, 1), Err(AdmissionError::UntrustedIssuer));
        let other = id(2, Role::Server);
        assert_eq!(t.verify(&trusted, other, 1), Err(AdmissionError::TokenForOtherNode { token_for: node }));
        let mut forged = t.clone();
        forged.expires_unix = u64::MAX;
        assert_eq!(forged.verify(&trusted, node, 1), Err(AdmissionError::BadSignature));
        let mut wrong_role = t.clone();
        wrong_role.role = Role::Peer;
        assert_eq!(wrong_role.verify(&trusted, node, 1), Err(AdmissionError::BadSignature));
    }

    #[test]
    fn token_text_round_trip() {
        let t = JoinToken::issue(&Keypair::from_seed([9; 32]), id(3, Role::Peer), 42);
        let text = t.to_text();
        assert!(text.starts_with("p2ptok1:"));
        assert_eq!(JoinToken::from_text(&text).unwrap(), t);
        assert_eq!(JoinToken::from_text("abc"), Err(TokenParseError::Prefix));
        assert_eq!(JoinToken::from_text("p2ptok1:zz"), Err(TokenParseError::Hex));
        assert!(matches!(JoinToken::from_text("p2ptok1:00"), Err(TokenParseError::Malformed(_))));
    }

    #[test]
    fn secret_proofs() {
        let s = NetworkSecret::from_passphrase("correct horse");
        let exported = [7u8; 32];
        let cred = present(&Admission::SharedSecret(s.clone()), Some(exported));
        let remote = id(1, Role::Peer);
        assert_eq!(check(&Admission::SharedSecret(s.clone()), &cred, remote, Some(exported), 0), Ok(()));
        // A different session's keying material: the proof does not transfer.
        assert_eq!(
            check(&Admission::SharedSecret(s.clone()), &cred, remote, Some([8; 32]), 0),
            Err(AdmissionError::BadProof)
        );
        let wrong = Admission::SharedSecret(NetworkSecret::from_passphrase("battery staple"));
        assert_eq!(check(&wrong, &cred, remote, Some(exported), 0), Err(AdmissionError::BadProof));
        // Open nodes are refused by secret networks; open networks accept anyone.
        let e = check(&Admission::SharedSecret(s), &Credential::None, remote, Some(exported), 0).unwrap_err();
        assert!(e.to_string().contains("requires a shared secret credential"), "{e}");
        assert_eq!(check(&Admission::Open, &cred, remote, None, 0), Ok(()));
        assert!(!format!("{:?}", NetworkSecret::from_bytes([1; 32])).contains('1'));
    }
}
