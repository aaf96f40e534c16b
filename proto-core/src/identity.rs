//! Node identity: key pairs, self-certifying node IDs and human names.
//!
//! A node ID is a role letter (`S` for servers, `C` for peers) followed by a
//! UUID. The UUID is a version-8 UUID built from a SHA-256 hash of the role and
//! the node's Ed25519 public key, so an ID *proves itself*: whoever presents an
//! ID must hold the key that hashes to it, and TLS checks exactly that (see
//! [`crate::quic`]). Because the role is hashed in too, a key cannot pose as a
//! server ID and a peer ID at the same time.
//!
//! File I/O for persisted identities belongs to drivers; this module only
//! converts to and from bytes.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// The role of a node in the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Role {
    /// A public server: keeps the directory, coordinates punching, relays.
    Server,
    /// An ordinary node reached by ID (`C` for "client" in its ID).
    Peer,
}

impl Role {
    /// The letter that starts IDs of this role: `S` or `C`.
    pub fn letter(self) -> char {
        match self {
            Role::Server => 'S',
            Role::Peer => 'C',
        }
    }

    fn from_letter(c: char) -> Option<Self> {
        match c {
            'S' | 's' => Some(Role::Server),
            'C' | 'c' => Some(Role::Peer),
            _ => None,
        }
    }

    /// Lower-case name, as used in reports and configuration files.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Peer => "peer",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Errors from parsing or decoding identities.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The text was empty.
    #[error("empty node ID: expected `S` or `C` followed by a UUID")]
    Empty,
    /// The first character is not a known role letter.
    #[error("node ID starts with {0:?}: expected `S` (server) or `C` (peer)")]
    UnknownRole(char),
    /// The UUID part could not be parsed.
    #[error("node ID has a malformed UUID after the role letter: {0}")]
    BadUuid(String),
    /// The UUID is well formed but is not the version-8 kind p2pcore derives.
    #[error("not a p2pcore node ID: the UUID must be version 8 (derived from a public key)")]
    NotDerived,
    /// A byte encoding had the wrong length.
    #[error("wrong length for {what}: expected {expected} bytes, got {actual}")]
    BadLength {
        /// What was being decoded.
        what: &'static str,
        /// The required length.
        expected: usize,
        /// The length given.
        actual: usize,
    },
    /// A persisted identity did not start with the expected magic and version.
    #[error("not a p2pcore identity file (bad magic or unsupported version)")]
    BadIdentityHeader,
    /// A byte encoding named an unknown role.
    #[error("unknown role byte {0:#04x}")]
    UnknownRoleByte(u8),
}

/// An Ed25519 public key (32 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    /// Verifies an Ed25519 signature made by this key.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &self.0)
            .verify(message, signature)
            .is_ok()
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey(")?;
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…)")
    }
}

/// An Ed25519 key pair, kept as its 32-byte secret seed.
#[derive(Clone)]
pub struct Keypair {
    seed: [u8; 32],
    public: PublicKey,
}

impl Keypair {
    /// The key pair for a 32-byte secret seed. Drivers generate the seed from
    /// the operating system's CSPRNG; the simulator derives it from its seed.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        let public = match ring::signature::Ed25519KeyPair::from_seed_unchecked(&seed) {
            Ok(kp) => {
                use ring::signature::KeyPair as _;
                let mut pk = [0u8; 32];
                pk.copy_from_slice(kp.public_key().as_ref());
                PublicKey(pk)
            }
            // ring accepts every 32-byte seed; this arm is unreachable in practice.
            Err(_) => PublicKey([0; 32]),
        };
        Self { seed, public }
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        self.public
    }

    /// The secret seed, for persistence by a driver.
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.seed
    }

    /// Signs `message` (Ed25519 signatures are deterministic).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        let mut out = [0u8; 64];
        if let Ok(kp) = ring::signature::Ed25519KeyPair::from_seed_unchecked(&self.seed) {
            out.copy_from_slice(kp.sign(message).as_ref());
        }
        out
    }

    /// The key in PKCS#8 v1 form (RFC 8410), as TLS and certificate code want it.
    pub(crate) fn pkcs8_der(&self) -> Vec<u8> {
        // SEQUENCE { INTEGER 0, SEQUENCE { OID 1.3.101.112 }, OCTET STRING { OCTET STRING seed } }
        const PREFIX: [u8; 16] =
            [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
        let mut der = Vec::with_capacity(48);
        der.extend_from_slice(&PREFIX);
        der.extend_from_slice(&self.seed);
        der
    }
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret.
        f.debug_struct("Keypair").field("public", &self.public).finish_non_exhaustive()
    }
}

/// A self-certifying node ID: role letter plus a UUID derived from the public key.
///
/// IDs are totally ordered (servers before peers, then by UUID bytes); the
/// order is used for deterministic tie-breaks such as which of two duplicate
/// connections survives.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    role: Role,
    uuid: [u8; 16],
}

/// Length of [`NodeId::to_bytes`].
pub const NODE_ID_LEN: usize = 17;

impl NodeId {
    /// The ID a node of `role` with public key `key` has.
    pub fn derive(role: Role, key: &PublicKey) -> Self {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(b"p2pcore node id v1\0");
        ctx.update(&[role.letter() as u8]);
        ctx.update(&key.0);
        let digest = ctx.finish();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest.as_ref()[..16]);
        let uuid = uuid::Uuid::new_v8(bytes);
        Self { role, uuid: *uuid.as_bytes() }
    }

    /// Whether `key` is the key this ID was derived from.
    pub fn is_key_of(&self, key: &PublicKey) -> bool {
        Self::derive(self.role, key) == *self
    }

    /// The role encoded in the ID.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The UUID part.
    pub fn uuid(&self) -> uuid::Uuid {
        uuid::Uuid::from_bytes(self.uuid)
    }

    /// Binary form: the role letter as one ASCII byte, then the 16 UUID bytes.
    pub fn to_bytes(&self) -> [u8; NODE_ID_LEN] {
        let mut out = [0u8; NODE_ID_LEN];
        out[0] = self.role.letter() as u8;
        out[1..].copy_from_slice(&self.uuid);
        out
    }

    /// Parses [`NodeId::to_bytes`] output.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, IdError> {
        if bytes.len() != NODE_ID_LEN {
            return Err(IdError::BadLength { what: "node ID", expected: NODE_ID_LEN, actual: bytes.len() });
        }
        let role = match bytes[0] {
            b'S' => Role::Server,
            b'C' => Role::Peer,
            b => return Err(IdError::UnknownRoleByte(b)),
        };
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&bytes[1..]);
        Self::checked(role, uuid)
    }

    fn checked(role: Role, uuid: [u8; 16]) -> Result<Self, IdError> {
        let u = uuid::Uuid::from_bytes(uuid);
        if u.get_version_num() != 8 || u.get_variant() != uuid::Variant::RFC4122 {
            return Err(IdError::NotDerived);
        }
        Ok(Self { role, uuid })
    }

    /// A short form for logs: role letter and the first 8 hex digits.
    pub fn short(&self) -> String {
        let mut s = String::with_capacity(9);
        s.push(self.role.letter());
        for b in &self.uuid[..4] {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }

    /// The ID as a lower-case DNS label (used as the TLS server name).
    pub(crate) fn dns_label(&self) -> String {
        self.to_string().to_ascii_lowercase()
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.role.letter(), self.uuid().hyphenated())
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for NodeId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let mut chars = s.chars();
        let first = chars.next().ok_or(IdError::Empty)?;
        let role = Role::from_letter(first).ok_or(IdError::UnknownRole(first))?;
        let rest = chars.as_str();
        let uuid = uuid::Uuid::try_parse(rest).map_err(|e| IdError::BadUuid(e.to_string()))?;
        Self::checked(role, *uuid.as_bytes())
    }
}

impl Serialize for NodeId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.collect_str(self)
        } else {
            serializer.serialize_bytes(&self.to_bytes())
        }
    }
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = NodeId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a p2pcore node ID")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<NodeId, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<NodeId, E> {
                NodeId::from_bytes(v).map_err(E::custom)
            }
        }
        if deserializer.is_human_readable() {
            deserializer.deserialize_str(V)
        } else {
            deserializer.deserialize_bytes(V)
        }
    }
}

/// A node's long-term identity: its role and key pair.
#[derive(Clone, Debug)]
pub struct Identity {
    role: Role,
    keypair: Keypair,
    id: NodeId,
}

const IDENTITY_MAGIC: &[u8; 4] = b"P2PI";
const IDENTITY_VERSION: u8 = 1;
/// Length of [`Identity::to_bytes`].
pub const IDENTITY_LEN: usize = 4 + 1 + 1 + 32;

impl Identity {
    /// An identity from a role and key pair.
    pub fn new(role: Role, keypair: Keypair) -> Self {
        let id = NodeId::derive(role, &keypair.public());
        Self { role, keypair, id }
    }

    /// An identity whose key comes from a 32-byte secret seed.
    pub fn from_seed(role: Role, seed: [u8; 32]) -> Self {
        Self::new(role, Keypair::from_seed(seed))
    }

    /// The node ID.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The key pair.
    pub fn keypair(&self) -> &Keypair {
        &self.keypair
    }

    /// Encodes the identity (including the secret key) for persistence:
    /// `"P2PI"`, version, role letter, 32-byte secret seed.
    pub fn to_bytes(&self) -> [u8; IDENTITY_LEN] {
        let mut out = [0u8; IDENTITY_LEN];
        out[..4].copy_from_slice(IDENTITY_MAGIC);
        out[4] = IDENTITY_VERSION;
        out[5] = self.role.letter() as u8;
        out[6..].copy_from_slice(&self.keypair.secret_bytes());
        out
    }

    /// Decodes [`Identity::to_bytes`] output.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, IdError> {
        if bytes.len() != IDENTITY_LEN {
            return Err(IdError::BadLength { what: "identity", expected: IDENTITY_LEN, actual: bytes.len() });
        }
        if &bytes[..4] != IDENTITY_MAGIC || bytes[4] != IDENTITY_VERSION {
            return Err(IdError::BadIdentityHeader);
        }
        let role = match bytes[5] {
            b'S' => Role::Server,
            b'C' => Role::Peer,
            b => return Err(IdError::UnknownRoleByte(b)),
        };
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&bytes[6..]);
        Ok(Self::from_seed(role, seed))
    }
}

/// Longest accepted human name, in bytes of UTF-8.
pub const MAX_NAME_LEN: usize = 64;

/// Errors for human-readable node names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Names must not be empty.
    #[error("node name is empty")]
    Empty,
    /// Names are limited to [`MAX_NAME_LEN`] bytes.
    #[error("node name is {0} bytes long; at most {MAX_NAME_LEN} are allowed")]
    TooLong(usize),
    /// Control characters would corrupt logs and terminals.
    #[error("node name contains a control character")]
    ControlCharacter,
}

/// Checks that `name` is usable as a human-readable node name.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong(name.len()));
    }
    if name.chars().any(char::is_control) {
        return Err(NameError::ControlCharacter);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(role: Role, seed: u8) -> NodeId {
        Identity::from_seed(role, [seed; 32]).id()
    }

    #[test]
    fn id_text_round_trip() {
        for role in [Role::Server, Role::Peer] {
            let a = id(role, 1);
            let text = a.to_string();
            assert_eq!(text.chars().next(), Some(role.letter()));
            assert_eq!(text.len(), 37);
            assert_eq!(text.parse::<NodeId>().unwrap(), a);
            assert_eq!(text.to_lowercase().parse::<NodeId>().unwrap(), a);
            assert_eq!(a.dns_label().parse::<NodeId>().unwrap(), a);
        }
    }

    #[test]
    fn id_text_errors_are_clear() {
        assert_eq!("".parse::<NodeId>(), Err(IdError::Empty));
        assert_eq!("X123".parse::<NodeId>(), Err(IdError::UnknownRole('X')));
        assert!(matches!("Snot-a-uuid".parse::<NodeId>(), Err(IdError::BadUuid(_))));
        // A valid v4 UUID is not a derived ID.
        assert_eq!("S550e8400-e29b-41d4-a716-446655440000".parse::<NodeId>(), Err(IdError::NotDerived));
        let msg = "Q".parse::<NodeId>().unwrap_err().to_string();
        assert!(msg.contains("`S` (server) or `C` (peer)"), "{msg}");
    }

    #[test]
    fn id_bytes_round_trip_and_errors() {
        let a = id(Role::Peer, 9);
        assert_eq!(NodeId::from_bytes(&a.to_bytes()).unwrap(), a);
        assert!(matches!(NodeId::from_bytes(&[0u8; 3]), Err(IdError::BadLength { .. })));
        let mut b = a.to_bytes();
        b[0] = b'Z';
        assert_eq!(NodeId::from_bytes(&b), Err(IdError::UnknownRoleByte(b'Z')));
    }

    #[test]
    fn id_proves_key_and_role() {
        let ident = Identity::from_seed(Role::Server, [4; 32]);
        let key = ident.keypair().public();
        assert!(ident.id().is_key_of(&key));
        let other = Keypair::from_seed([5; 32]).public();
        assert!(!ident.id().is_key_of(&other));
        // Same key, other role: a different ID.
        assert_ne!(NodeId::derive(Role::Peer, &key), ident.id());
    }

    #[test]
    fn ids_are_totally_ordered() {
        let mut ids: Vec<NodeId> =
            (0..20u8).map(|i| id(if i % 2 == 0 { Role::Server } else { Role::Peer }, i)).collect();
        ids.sort();
        for w in ids.windows(2) {
            assert!(w[0] < w[1]);
        }
        // Servers sort before peers.
        let first_peer = ids.iter().position(|i| i.role() == Role::Peer).unwrap();
        assert!(ids[..first_peer].iter().all(|i| i.role() == Role::Server));
    }

    #[test]
    fn identity_bytes_round_trip() {
        let ident = Identity::from_seed(Role::Peer, [42; 32]);
        let bytes = ident.to_bytes();
        let back = Identity::from_bytes(&bytes).unwrap();
        assert_eq!(back.id(), ident.id());
        assert_eq!(back.keypair().secret_bytes(), [42; 32]);
        let mut bad = bytes;
        bad[0] = b'X';
        assert_eq!(Identity::from_bytes(&bad).unwrap_err(), IdError::BadIdentityHeader);
        assert!(Identity::from_bytes(&bytes[..10]).is_err());
    }

    #[test]
    fn signatures_verify() {
        let kp = Keypair::from_seed([1; 32]);
        let sig = kp.sign(b"hello");
        assert!(kp.public().verify(b"hello", &sig));
        assert!(!kp.public().verify(b"hullo", &sig));
        assert!(!format!("{kp:?}").contains("seed"));
    }

    #[test]
    fn serde_forms() {
        let a = id(Role::Server, 3);
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(json, format!("\"{a}\""));
        assert_eq!(serde_json::from_str::<NodeId>(&json).unwrap(), a);
        let bin = postcard::to_allocvec(&a).unwrap();
        assert_eq!(bin.len(), 18);
        assert_eq!(postcard::from_bytes::<NodeId>(&bin).unwrap(), a);
    }

    #[test]
    fn names() {
        assert!(validate_name("alice").is_ok());
        assert_eq!(validate_name(""), Err(NameError::Empty));
        assert!(matches!(validate_name(&"x".repeat(65)), Err(NameError::TooLong(65))));
        assert_eq!(validate_name("a\nb"), Err(NameError::ControlCharacter));
    }
}
