//! Admission between servers: a shared secret proved over the TLS exporter,
//! signed join tokens, or open mode; refusals are reported on both sides.

mod common;

use p2pcore::{AdmissionError, AdmissionMode, CredentialKind};
use p2pcore::{Event, RefuseReason};
use p2pcore_tests::sim::{CredentialFault, NetworkAdmission, NodeSpec, Sim};
use std::time::Duration;

fn pair(admission: NetworkAdmission, fault: CredentialFault) -> (Sim, usize, usize) {
    let mut sim = common::sim(3);
    sim.set_admission(admission);
    let s1 = sim.add_node(NodeSpec::server("s1"));
    let s2 = sim.add_node(NodeSpec { credential: fault, ..NodeSpec::server("s2").via(&[s1]) });
    sim.run_for(Duration::from_secs(3));
    (sim, s1, s2)
}

fn refusals(sim: &mut Sim, h: usize) -> Vec<(RefuseReason, bool)> {
    common::events(sim, h)
        .into_iter()
        .filter_map(|e| match e {
            Event::Refused { reason, by_remote, .. } => Some((reason, by_remote)),
            _ => None,
        })
        .collect()
}

#[test]
fn matching_credentials_form_a_cluster() {
    for admission in
        [NetworkAdmission::Open, NetworkAdmission::Secret("s3cret".into()), NetworkAdmission::Token]
    {
        let (sim, s1, s2) = pair(admission.clone(), CredentialFault::None);
        assert!(common::linked(&sim, s1, s2), "{admission:?}");
        assert!(sim.agreed_master().is_some());
    }
}

#[test]
fn a_wrong_secret_is_refused_and_both_sides_say_so() {
    let (mut sim, s1, s2) = pair(NetworkAdmission::Secret("s3cret".into()), CredentialFault::WrongSecret);
    assert!(!common::linked(&sim, s1, s2));
    let at_s1 = refusals(&mut sim, s1);
    assert!(at_s1.contains(&(RefuseReason::Admission(AdmissionError::BadProof), false)), "{at_s1:?}");
    let ev = common::events(&mut sim, s2);
    assert!(
        ev.iter().any(|e| matches!(
            e,
            Event::Refused { reason: RefuseReason::Admission(AdmissionError::BadProof), by_remote: true, .. }
        )),
        "{ev:?}"
    );
    // The joiner keeps trying its introducer and says why it fails.
    assert!(
        ev.iter()
            .any(|e| matches!(e, Event::BootstrapFailed { error: p2pcore::ConnectError::Refused(_), .. }))
    );
}

#[test]
fn a_node_without_credential_is_refused() {
    let (mut sim, s1, s2) = pair(NetworkAdmission::Secret("s3cret".into()), CredentialFault::Missing);
    assert!(!common::linked(&sim, s1, s2));
    let r = refusals(&mut sim, s1);
    let Some((RefuseReason::Admission(AdmissionError::CredentialRequired { required, presented }), false)) =
        r.first().cloned()
    else {
        panic!("{r:?}")
    };
    assert_eq!((required, presented), (AdmissionMode::SharedSecret, CredentialKind::None));
    assert_eq!(required.to_string(), "shared secret");
    assert_eq!(presented.to_string(), "no credential");
}

#[test]
fn bad_tokens_are_refused_with_the_reason() {
    let (mut sim, s1, _) = pair(NetworkAdmission::Token, CredentialFault::ExpiredToken);
    let r = refusals(&mut sim, s1);
    assert!(
        matches!(r.first(), Some((RefuseReason::Admission(AdmissionError::Expired { .. }), false))),
        "{r:?}"
    );
    let (mut sim, s1, _) = pair(NetworkAdmission::Token, CredentialFault::UntrustedToken);
    let r = refusals(&mut sim, s1);
    assert!(
        matches!(r.first(), Some((RefuseReason::Admission(AdmissionError::UntrustedIssuer), false))),
        "{r:?}"
    );
}

#[test]
fn the_dialer_refuses_an_acceptor_without_credential() {
    // s1 is open (accepts anyone); s2 requires the secret and refuses s1's empty Welcome.
    let mut sim = common::sim(4);
    sim.set_admission(NetworkAdmission::Secret("s3cret".into()));
    let s1 = sim.add_node(NodeSpec { credential: CredentialFault::Missing, ..NodeSpec::server("s1") });
    let s2 = sim.add_node(NodeSpec::server("s2").via(&[s1]));
    sim.run_for(Duration::from_secs(2));
    assert!(!common::linked(&sim, s1, s2) && !common::linked(&sim, s2, s1));
    let at_s2 = refusals(&mut sim, s2);
    assert!(
        matches!(
            at_s2.first(),
            Some((RefuseReason::Admission(AdmissionError::CredentialRequired { .. }), false))
        ),
        "{at_s2:?}"
    );
    let at_s1 = common::events(&mut sim, s1);
    assert!(
        at_s1
            .iter()
            .any(|e| matches!(e, Event::Refused { reason: RefuseReason::Admission(_), by_remote: true, .. })),
        "{at_s1:?}"
    );
    // s1 never saw a connection come and go.
    assert!(
        at_s1.iter().all(|e| !matches!(e, Event::Connected { .. } | Event::Disconnected { .. })),
        "{at_s1:?}"
    );
}
