//! QUIC and TLS configuration: self-certifying identities over mutual TLS 1.3.
//!
//! Every node presents a self-signed Ed25519 certificate whose subject
//! alternative name is its node ID. A verifier accepts a certificate only if
//! the ID in it is the one derived from the certificate's key (see
//! [`crate::identity`]), and the TLS handshake's `CertificateVerify` signature
//! proves the presenter holds that key. The dialer additionally checks that the
//! ID is the one it meant to reach; the acceptor learns the dialer's ID from
//! its (mandatory) client certificate. No certificate authority is involved.
//!
//! # Determinism
//!
//! quinn-proto and rustls want randomness in a few places: connection IDs,
//! reset and token keys, the endpoint's packet-number RNG, TLS randoms and the
//! ephemeral X25519 key share. All of it is drawn from the node's seed:
//! quinn-proto takes seeds and key objects through its configuration, and
//! rustls takes a [`CryptoProvider`] whose randomness and key-exchange group we
//! supply here. Because rustls holds those as `&'static` trait objects, they
//! read from a thread-local slot that `with_tls_rng` fills with the calling
//! node's own generator for the duration of each call into quinn-proto. Outside
//! such a call the slot is empty and a TLS operation fails cleanly instead of
//! falling back to an unseeded source.
//!
//! TLS never reads the wall clock either: certificates are checked by key, not
//! by validity period, so rustls gets a fixed [`TimeProvider`].

use crate::error::{CertError, SetupError};
use crate::identity::{Identity, NodeId, PublicKey, Role};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{
    ActiveKeyExchange, CryptoProvider, GetRandomFailed, SecureRandom, SharedSecret, SupportedKxGroup,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::time_provider::TimeProvider;
use rustls::{DigitallySignedStruct, DistinguishedName, NamedGroup, SignatureScheme};
use std::cell::Cell;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The ALPN protocol identifier of p2pcore's QUIC connections.
pub(crate) const ALPN: &[u8] = b"p2pcore/1";

/// TLS server name used when dialing an address without knowing the ID behind it.
const ANY_SERVER_NAME: &str = "any.p2pcore";

// ---------------------------------------------------------------------------
// Seeded randomness for rustls
// ---------------------------------------------------------------------------

thread_local! {
    static TLS_RNG: Cell<Option<Box<ChaCha20Rng>>> = const { Cell::new(None) };
}

/// Runs `f` with `rng` installed as the TLS randomness source of this thread.
///
/// The generator is moved into the thread-local slot and moved back afterwards,
/// so two nodes driven from one thread never see each other's stream.
pub(crate) fn with_tls_rng<R>(rng: &mut Option<Box<ChaCha20Rng>>, f: impl FnOnce() -> R) -> R {
    let previous = TLS_RNG.with(|slot| slot.replace(rng.take()));
    let out = f();
    *rng = TLS_RNG.with(|slot| slot.replace(previous));
    out
}

fn fill_from_scope(buf: &mut [u8]) -> Result<(), GetRandomFailed> {
    TLS_RNG.with(|slot| match slot.take() {
        Some(mut rng) => {
            rng.fill_bytes(buf);
            slot.set(Some(rng));
            Ok(())
        }
        None => Err(GetRandomFailed),
    })
}

#[derive(Debug)]
struct ScopedRandom;

impl SecureRandom for ScopedRandom {
    fn fill(&self, buf: &mut [u8]) -> Result<(), GetRandomFailed> {
        fill_from_scope(buf)
    }
}

/// X25519 key exchange whose ephemeral secret comes from the node's seeded stream.
#[derive(Debug)]
struct SeededX25519;

struct X25519Share {
    secret: [u8; 32],
    public: [u8; 32],
}

impl SupportedKxGroup for SeededX25519 {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, rustls::Error> {
        let mut secret = [0u8; 32];
        fill_from_scope(&mut secret).map_err(|_| rustls::Error::FailedToGetRandomBytes)?;
        let public = kx_public(secret);
        Ok(Box::new(X25519Share { secret, public }))
    }

    fn name(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

impl ActiveKeyExchange for X25519Share {
    fn complete(self: Box<Self>, peer_pub_key: &[u8]) -> Result<SharedSecret, rustls::Error> {
        let peer: [u8; 32] = peer_pub_key
            .try_into()
            .map_err(|_| rustls::Error::from(rustls::PeerMisbehaved::InvalidKeyShare))?;
        let shared = kx_shared(self.secret, self.public, peer);
        // RFC 7748 §6.1: an all-zero output means the peer sent a low-order point.
        if shared == [0u8; 32] {
            return Err(rustls::PeerMisbehaved::InvalidKeyShare.into());
        }
        Ok(SharedSecret::from(&shared[..]))
    }

    fn pub_key(&self) -> &[u8] {
        &self.public
    }

    fn group(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

/// The X25519 public key of `secret`.
#[cfg(not(p2pcore_fuzz_insecure_kx))]
fn kx_public(secret: [u8; 32]) -> [u8; 32] {
    x25519_dalek::x25519(secret, x25519_dalek::X25519_BASEPOINT_BYTES)
}

/// The X25519 shared secret of `secret` (whose public key is `_public`)
/// and the peer's public key.
#[cfg(not(p2pcore_fuzz_insecure_kx))]
fn kx_shared(secret: [u8; 32], _public: [u8; 32], peer: [u8; 32]) -> [u8; 32] {
    x25519_dalek::x25519(secret, peer)
}

/// Fuzzing builds only (`RUSTFLAGS="--cfg p2pcore_fuzz_insecure_kx"`, set
/// by fuzz/README's build command, never by a feature): a key exchange
/// without the curve, so the `pair` target spends its time in the protocol
/// rather than in the (instrumented) scalar multiplications of its many
/// handshakes, which took a third of its time. Both sides derive the same
/// secret from the two public values; it is not secret from anyone.
#[cfg(p2pcore_fuzz_insecure_kx)]
fn kx_public(secret: [u8; 32]) -> [u8; 32] {
    secret
}

/// See the other `kx_public`.
#[cfg(p2pcore_fuzz_insecure_kx)]
fn kx_shared(_secret: [u8; 32], public: [u8; 32], peer: [u8; 32]) -> [u8; 32] {
    let mut shared = [0u8; 32];
    for ((s, a), b) in shared.iter_mut().zip(public).zip(peer) {
        *s = a ^ b ^ 0x5c;
    }
    shared
}

/// rustls wants "now" for ticket ages and certificate validity; we use neither,
/// so it gets a constant instead of the wall clock.
#[derive(Debug)]
struct FixedTime;

/// The instant [`FixedTime`] reports (2023-11-14T22:13:20Z).
const FIXED_UNIX_SECS: u64 = 1_700_000_000;

impl TimeProvider for FixedTime {
    fn current_time(&self) -> Option<UnixTime> {
        Some(UnixTime::since_unix_epoch(Duration::from_secs(FIXED_UNIX_SECS)))
    }
}

static SEEDED_X25519: SeededX25519 = SeededX25519;
static SCOPED_RANDOM: ScopedRandom = ScopedRandom;

fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            let base = rustls::crypto::ring::default_provider();
            Arc::new(CryptoProvider {
                cipher_suites: vec![
                    rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256,
                    rustls::crypto::ring::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
                ],
                kx_groups: vec![&SEEDED_X25519],
                signature_verification_algorithms: base.signature_verification_algorithms,
                secure_random: &SCOPED_RANDOM,
                key_provider: base.key_provider,
            })
        })
        .clone()
}

// ---------------------------------------------------------------------------
// Certificates and verification
// ---------------------------------------------------------------------------

/// A node's certificate and key in the forms rustls wants.
#[derive(Debug)]
pub(crate) struct Credentials {
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
}

impl Credentials {
    /// Creates the self-signed certificate for `identity`. Ed25519 signing is
    /// deterministic and rcgen derives the serial from the key, so the same
    /// identity always yields the same certificate.
    pub(crate) fn new(identity: &Identity) -> Result<Self, rcgen::Error> {
        let key = PrivatePkcs8KeyDer::from(identity.keypair().pkcs8_der());
        let key_pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&key, &rcgen::PKCS_ED25519)?;
        let mut params = rcgen::CertificateParams::new(vec![identity.id().dns_label()])?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::CommonName, identity.id().to_string());
        let cert = params.self_signed(&key_pair)?;
        Ok(Self { cert: cert.der().clone(), key })
    }
}

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410), before the 32 key bytes.
const ED25519_SPKI_PREFIX: [u8; 12] =
    [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

/// The node ID a certificate proves, after checking it is self-certifying.
pub(crate) fn node_id_from_cert(der: &CertificateDer<'_>) -> Result<NodeId, CertError> {
    let cert = webpki::EndEntityCert::try_from(der).map_err(|e| CertError::Malformed(format!("{e:?}")))?;
    let spki = cert.subject_public_key_info();
    let spki = spki.as_ref();
    if spki.len() != ED25519_SPKI_PREFIX.len() + 32 || spki[..12] != ED25519_SPKI_PREFIX {
        return Err(CertError::NotEd25519);
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(&spki[12..]);
    let key = PublicKey(key);
    let mut claimed = None;
    for name in cert.valid_dns_names() {
        if let Ok(id) = name.parse::<NodeId>() {
            claimed = Some(id);
            break;
        }
    }
    let id = claimed.ok_or(CertError::NoNodeId)?;
    if !id.is_key_of(&key) {
        return Err(CertError::NotSelfCertifying(id));
    }
    Ok(id)
}

fn cert_error(e: CertError) -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(Arc::new(e))))
}

fn verify_signature(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    rustls::crypto::verify_tls13_signature(message, cert, dss, &provider().signature_verification_algorithms)
}

/// Whom a dialer expects to find at the address it dials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect {
    /// Exactly this node.
    Node(NodeId),
    /// Any node of this role (an introducer or bootstrap server known only by address).
    AnyOf(Role),
}

impl Expect {
    /// The node meant, when a particular one is.
    pub(crate) fn node(&self) -> Option<NodeId> {
        match self {
            Expect::Node(id) => Some(*id),
            Expect::AnyOf(_) => None,
        }
    }

    fn server_name(&self) -> String {
        match self {
            Expect::Node(id) => format!("{}.p2pcore", id.dns_label()),
            Expect::AnyOf(_) => ANY_SERVER_NAME.to_owned(),
        }
    }
}

/// The dialer's verifier: accepts the expected node (or role) only, and
/// remembers whom it actually met so a mismatch can be reported clearly.
#[derive(Debug)]
pub(crate) struct DialVerifier {
    expect: Expect,
    met: Arc<OnceLock<Result<NodeId, CertError>>>,
}

impl ServerCertVerifier for DialVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let result = if intermediates.is_empty() {
            node_id_from_cert(end_entity)
        } else {
            Err(CertError::UnexpectedChain)
        };
        let _ = self.met.set(result.clone());
        let id = result.map_err(cert_error)?;
        let ok = match self.expect {
            Expect::Node(expected) => id == expected,
            Expect::AnyOf(role) => id.role() == role,
        };
        if ok {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls13RequiredForQuic))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// The acceptor's verifier: a client certificate is mandatory and must be
/// self-certifying; who the client is gets decided after the handshake.
#[derive(Debug)]
struct AcceptVerifier;

impl ClientCertVerifier for AcceptVerifier {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if !intermediates.is_empty() {
            return Err(cert_error(CertError::UnexpectedChain));
        }
        node_id_from_cert(end_entity).map_err(cert_error)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls13RequiredForQuic))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// The key that authenticates path probes between two peers: exported from
/// their end-to-end TLS session (RFC 5705 / RFC 8446 §7.5), so both ends
/// derive the same secret and nobody else can.
pub(crate) fn probe_key(conn: &quinn_proto::Connection) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    conn.crypto_session().export_keying_material(&mut out, b"EXPORTER-p2pcore-path-probe-v1", b"").ok()?;
    Some(out)
}

/// The authenticated node ID of an established connection's remote side.
pub(crate) fn remote_id(conn: &quinn_proto::Connection) -> Option<NodeId> {
    let identity = conn.crypto_session().peer_identity()?;
    let certs = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    node_id_from_cert(certs.first()?).ok()
}

// ---------------------------------------------------------------------------
// quinn-proto configuration
// ---------------------------------------------------------------------------

/// Connection IDs from a seeded stream instead of the thread RNG.
struct SeededCids {
    rng: ChaCha20Rng,
}

/// Length of the connection IDs this node issues.
const CID_LEN: usize = 8;

impl quinn_proto::ConnectionIdGenerator for SeededCids {
    fn generate_cid(&mut self) -> quinn_proto::ConnectionId {
        let mut b = [0u8; CID_LEN];
        self.rng.fill_bytes(&mut b);
        quinn_proto::ConnectionId::new(&b)
    }

    fn cid_len(&self) -> usize {
        CID_LEN
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

/// Transport tuning shared by every connection of a node.
#[derive(Debug, Clone)]
pub(crate) struct TransportParams {
    pub(crate) idle_timeout: Duration,
    pub(crate) keep_alive: Duration,
    pub(crate) datagram_buffer: usize,
    pub(crate) stream_receive_window: u64,
}

/// Connection-level receive window of a connection whose remote is not yet
/// admitted: room for the handshake messages, nothing more.
pub(crate) const PRE_ADMISSION_WINDOW: u32 = 64 << 10;

/// The clock quinn-proto reads for Retry token expiry: the node's own
/// monotonic time (updated on every input) on top of a fixed epoch, so tokens
/// expire as they should and a run still replays exactly.
#[derive(Debug, Default)]
pub(crate) struct NodeClock {
    elapsed_ms: std::sync::atomic::AtomicU64,
}

impl NodeClock {
    /// Sets the node's age, as of its latest input.
    pub(crate) fn set(&self, elapsed: Duration) {
        let ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        self.elapsed_ms.store(ms, std::sync::atomic::Ordering::Relaxed);
    }
}

impl quinn_proto::TimeSource for NodeClock {
    fn now(&self) -> SystemTime {
        let ms = self.elapsed_ms.load(std::sync::atomic::Ordering::Relaxed);
        UNIX_EPOCH + Duration::from_secs(FIXED_UNIX_SECS) + Duration::from_millis(ms)
    }
}

/// Builds quinn-proto's per-node configuration from a node's identity and seed.
pub(crate) struct QuicSetup {
    creds: Credentials,
    /// Connections to and between servers.
    transport: Arc<quinn_proto::TransportConfig>,
    /// Peer-to-peer connections (longer idle timeout: they outlive a relay).
    peer_transport: Arc<quinn_proto::TransportConfig>,
}

fn transport(params: &TransportParams) -> Result<quinn_proto::TransportConfig, SetupError> {
    let mut t = quinn_proto::TransportConfig::default();
    let idle = quinn_proto::IdleTimeout::try_from(params.idle_timeout)
        .map_err(|e| SetupError::Transport(e.to_string()))?;
    t.max_idle_timeout(Some(idle));
    t.keep_alive_interval(Some(params.keep_alive));
    // QUIC never times out faster than three probe timeouts, and until RTT
    // samples arrive those follow the initial RTT guess. RFC 9002's 333 ms
    // would stretch the idle timeout of a fresh connection to ~3 s; 100 ms
    // keeps liveness detection within `Config::idle_timeout` from the start.
    t.initial_rtt(Duration::from_millis(100));
    // Until the remote is admitted it may open nothing but the control
    // stream, and the whole connection gets a small window: a stranger who
    // completes TLS can make us buffer at most that. Admission raises both
    // (`Conn::admit`). The control stream is the only bidirectional one.
    t.max_concurrent_uni_streams(quinn_proto::VarInt::from_u32(0));
    t.max_concurrent_bidi_streams(quinn_proto::VarInt::from_u32(1));
    t.receive_window(quinn_proto::VarInt::from_u32(PRE_ADMISSION_WINDOW));
    t.stream_receive_window(
        quinn_proto::VarInt::from_u64(params.stream_receive_window).unwrap_or(quinn_proto::VarInt::MAX),
    );
    t.datagram_receive_buffer_size(Some(params.datagram_buffer));
    t.datagram_send_buffer_size(params.datagram_buffer);
    // Relayed packets gain a raw-frame header; path MTU probing through a
    // relay would probe the wrong path, so stay at the QUIC minimum.
    t.mtu_discovery_config(None);
    Ok(t)
}

impl QuicSetup {
    pub(crate) fn new(
        identity: &Identity,
        params: &TransportParams,
        peer_params: &TransportParams,
    ) -> Result<Self, SetupError> {
        let creds = Credentials::new(identity)?;
        Ok(Self {
            creds,
            transport: Arc::new(transport(params)?),
            peer_transport: Arc::new(transport(peer_params)?),
        })
    }

    /// The endpoint configuration, with every secret and seed derived from `seed`.
    pub(crate) fn endpoint_config(&self, seed: &[u8; 32]) -> quinn_proto::EndpointConfig {
        let reset_key = crate::rng::derive_seed(seed, "quic reset key");
        let mut cfg = quinn_proto::EndpointConfig::new(Arc::new(ring::hmac::Key::new(
            ring::hmac::HMAC_SHA256,
            &reset_key,
        )));
        let cid_seed = crate::rng::derive_seed(seed, "quic cids");
        cfg.cid_generator(move || {
            Box::new(SeededCids { rng: ChaCha20Rng::from_seed(cid_seed) })
                as Box<dyn quinn_proto::ConnectionIdGenerator>
        });
        cfg.rng_seed(Some(crate::rng::derive_seed(seed, "quic endpoint")));
        // Raw frames are told apart from QUIC by the fixed bit, so it must stay set.
        cfg.grease_quic_bit(false);
        cfg
    }

    /// The acceptor side of the handshake; `peer` selects the peer-to-peer transport.
    pub(crate) fn server_config(
        &self,
        seed: &[u8; 32],
        peer: bool,
        clock: Arc<NodeClock>,
    ) -> Result<quinn_proto::ServerConfig, SetupError> {
        let mut tls = rustls::ServerConfig::builder_with_details(provider(), Arc::new(FixedTime))
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(Arc::new(AcceptVerifier))
            .with_single_cert(
                vec![self.creds.cert.clone()],
                PrivateKeyDer::Pkcs8(self.creds.key.clone_key()),
            )?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        tls.max_early_data_size = 0;
        tls.send_tls13_tickets = 0;
        tls.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        let crypto = quinn_proto::crypto::rustls::QuicServerConfig::try_from(Arc::new(tls))
            .map_err(|e| SetupError::Quic(e.to_string()))?;
        let token_key = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, &[])
            .extract(&crate::rng::derive_seed(seed, "quic token key"));
        let mut cfg = quinn_proto::ServerConfig::new(Arc::new(crypto), Arc::new(token_key));
        cfg.transport_config(if peer { self.peer_transport.clone() } else { self.transport.clone() });
        // Peer-to-peer connections see one (mapped) address whatever path
        // carries them; a packet from anywhere else must not move them.
        cfg.migration(!peer);
        cfg.time_source(clock);
        let mut validation = quinn_proto::ValidationTokenConfig::default();
        validation.sent(0);
        cfg.validation_token_config(validation);
        Ok(cfg)
    }

    /// The dialer side of one handshake. Returns the TLS server name to use and
    /// a slot that records whom the handshake met.
    pub(crate) fn client_config(
        &self,
        expect: Expect,
        initial_dcid: [u8; 16],
        peer: bool,
    ) -> Result<(quinn_proto::ClientConfig, String, MetSlot), SetupError> {
        let met: MetSlot = Arc::new(OnceLock::new());
        let verifier = Arc::new(DialVerifier { expect, met: met.clone() });
        let mut tls = rustls::ClientConfig::builder_with_details(provider(), Arc::new(FixedTime))
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(
                vec![self.creds.cert.clone()],
                PrivateKeyDer::Pkcs8(self.creds.key.clone_key()),
            )?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        tls.resumption = rustls::client::Resumption::disabled();
        tls.enable_early_data = false;
        let crypto = quinn_proto::crypto::rustls::QuicClientConfig::try_from(Arc::new(tls))
            .map_err(|e| SetupError::Quic(e.to_string()))?;
        let mut cfg = quinn_proto::ClientConfig::new(Arc::new(crypto));
        cfg.transport_config(if peer { self.peer_transport.clone() } else { self.transport.clone() });
        let dcid = quinn_proto::ConnectionId::new(&initial_dcid);
        cfg.initial_dst_cid_provider(Arc::new(move || dcid));
        Ok((cfg, expect.server_name(), met))
    }
}

/// Records the outcome of the dialer's certificate check.
pub(crate) type MetSlot = Arc<OnceLock<Result<NodeId, CertError>>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_prove_their_id() {
        let ident = Identity::from_seed(Role::Server, [1; 32]);
        let creds = Credentials::new(&ident).unwrap();
        assert_eq!(node_id_from_cert(&creds.cert).unwrap(), ident.id());
        // Deterministic: same identity, same certificate.
        assert_eq!(Credentials::new(&ident).unwrap().cert, creds.cert);
    }

    #[test]
    fn garbage_certificates_are_rejected() {
        let der = CertificateDer::from(vec![0x30, 0x03, 0x01, 0x01, 0xff]);
        assert!(matches!(node_id_from_cert(&der), Err(CertError::Malformed(_))));
    }

    #[test]
    fn tls_randomness_only_inside_a_scope() {
        let mut buf = [0u8; 8];
        assert!(ScopedRandom.fill(&mut buf).is_err());
        let mut rng = Some(Box::new(ChaCha20Rng::from_seed([9; 32])));
        let a = with_tls_rng(&mut rng, || {
            let mut b = [0u8; 8];
            ScopedRandom.fill(&mut b).unwrap();
            b
        });
        assert!(rng.is_some(), "generator handed back");
        let mut again = Some(Box::new(ChaCha20Rng::from_seed([9; 32])));
        let b = with_tls_rng(&mut again, || {
            let mut b = [0u8; 8];
            ScopedRandom.fill(&mut b).unwrap();
            b
        });
        assert_eq!(a, b);
        assert!(SeededX25519.start().is_err());
    }

    #[test]
    fn x25519_agrees() {
        let mut rng = Some(Box::new(ChaCha20Rng::from_seed([5; 32])));
        let (a, b) =
            with_tls_rng(&mut rng, || (SeededX25519.start().unwrap(), SeededX25519.start().unwrap()));
        let (pa, pb) = (a.pub_key().to_vec(), b.pub_key().to_vec());
        let sa = a.complete(&pb).unwrap();
        let sb = b.complete(&pa).unwrap();
        assert_eq!(sa.secret_bytes(), sb.secret_bytes());
        let mut rng = Some(Box::new(ChaCha20Rng::from_seed([6; 32])));
        let c = with_tls_rng(&mut rng, || SeededX25519.start().unwrap());
        assert!(c.complete(&[0u8; 32]).is_err(), "low-order point rejected");
    }
}
