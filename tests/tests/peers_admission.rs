//! Admission for peers works as for servers, and a refused peer is told why.

mod common;

use p2pcore::AdmissionError;
use p2pcore::{ConnectError, Event, RefuseReason};
use p2pcore_tests::sim::{CredentialFault, NetworkAdmission, NodeSpec};
use std::time::Duration;

#[test]
fn peers_with_the_network_credential_join_and_others_are_told_why_not() {
    for admission in [NetworkAdmission::Secret("s3cret".into()), NetworkAdmission::Token] {
        let mut sim = common::sim(2);
        sim.set_admission(admission.clone());
        let s1 = sim.add_node(NodeSpec::server("s1"));
        let good = sim.add_node(NodeSpec::peer("good", None).via(&[s1]));
        let fault = match admission {
            NetworkAdmission::Token => CredentialFault::ExpiredToken,
            _ => CredentialFault::WrongSecret,
        };
        let bad = sim.add_node(NodeSpec { credential: fault, ..NodeSpec::peer("bad", None).via(&[s1]) });
        sim.run_for(Duration::from_secs(3));
        assert!(sim.node(good).unwrap().network_up(), "{admission:?}");
        assert!(!sim.node(bad).unwrap().network_up(), "{admission:?}");
        let ev = common::events(&mut sim, bad);
        let told = ev.iter().find_map(|e| match e {
            Event::Refused { reason: RefuseReason::Admission(r), by_remote: true, .. } => Some(r.clone()),
            _ => None,
        });
        let expected_kind = match admission {
            NetworkAdmission::Token => matches!(told, Some(AdmissionError::Expired { .. })),
            _ => told == Some(AdmissionError::BadProof),
        };
        assert!(expected_kind, "{admission:?}: {ev:?}");
        assert!(
            ev.iter().any(|e| matches!(e, Event::BootstrapFailed { error: ConnectError::Refused(_), .. }))
        );
        // The good peer never sees the refused one.
        assert!(sim.node(good).unwrap().peers().is_empty());
    }
}
