//! Refusals against an active (malicious) coordinator: substituted keys,
//! requests for both shares of a peer, survivor sets below t, inconsistent
//! survivor views, and a job threshold below the partner's policy floor.

mod harness;

use harness::{Cohort, node};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use veil_secure_aggregation::client::{ConsistencyCheck, ShareKeys, Unmask};
use veil_secure_aggregation::{
    ClientError, ClientSession, FailureReason, KeyDirectory, Refusal, RejectedMessage,
    SurvivorList, UnmaskRequest,
};

fn refused(result: Result<impl Sized, ClientError>) -> Refusal {
    match result {
        Err(ClientError::Refused(refusal)) => refusal,
        Err(other) => panic!("expected a refusal, got {other}"),
        Ok(_) => panic!("expected a refusal, got success"),
    }
}

/// Runs phase 1 for every client honestly.
fn advertised(
    cohort: &Cohort,
    rng: &mut ChaCha20Rng,
) -> (Vec<ClientSession<ShareKeys>>, KeyDirectory) {
    let mut server = cohort.server();
    let mut sessions = Vec::new();
    for index in 0..cohort.params.cohort().len() {
        let (session, message) = cohort.client(index).advertise_keys(rng).unwrap();
        server.handle_key_advertisement(message).unwrap();
        sessions.push(session);
    }
    let (_, directory) = server.finish_phase().unwrap();
    (sessions, directory)
}

/// Runs phases 1 to 3 honestly with everyone, returning sessions awaiting the survivor list.
fn masked(
    cohort: &Cohort,
    rng: &mut ChaCha20Rng,
) -> (Vec<ClientSession<ConsistencyCheck>>, SurvivorList) {
    let mut server = cohort.server();
    let mut sessions = Vec::new();
    for index in 0..cohort.params.cohort().len() {
        let (session, message) = cohort.client(index).advertise_keys(rng).unwrap();
        server.handle_key_advertisement(message).unwrap();
        sessions.push(session);
    }
    let (mut server, directory) = server.finish_phase().unwrap();
    let mut sharing = Vec::new();
    for session in sessions {
        let (session, message) = session.share_keys(&directory, rng).unwrap();
        server.handle_encrypted_shares(message).unwrap();
        sharing.push(session);
    }
    let (mut server, forwarded) = server.finish_phase().unwrap();
    let mut masking = Vec::new();
    for (index, session) in sharing.into_iter().enumerate() {
        let bundle = forwarded
            .iter()
            .find(|bundle| bundle.recipient == node(index))
            .unwrap();
        let (session, message) = session.masked_input(bundle, &cohort.inputs[index]).unwrap();
        server.handle_masked_input(&message).unwrap();
        masking.push(session);
    }
    let (_, survivors) = server.finish_phase().unwrap();
    (masking, survivors)
}

/// Runs phases 1 to 4 honestly, returning sessions awaiting the unmask request and the honest request.
fn checked(cohort: &Cohort, rng: &mut ChaCha20Rng) -> (Vec<ClientSession<Unmask>>, UnmaskRequest) {
    let (masking, survivors) = masked(cohort, rng);
    let mut signatures = Vec::new();
    let mut sessions = Vec::new();
    for session in masking {
        let (session, signature) = session.consistency_check(&survivors).unwrap();
        signatures.push(signature);
        sessions.push(session);
    }
    let request = UnmaskRequest {
        signatures,
        self_mask_share_peers: survivors.survivors.clone(),
        mask_key_share_peers: Vec::new(),
    };
    (sessions, request)
}

#[test]
fn substituted_key_fails_signature_verification() {
    let cohort = Cohort::new(5, 4, 3, 32, 4, 1);
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let (sessions, mut directory) = advertised(&cohort, &mut rng);
    // The coordinator swaps node 2's mask key for one it controls.
    let victim = directory
        .advertisements
        .iter_mut()
        .find(|advertisement| advertisement.node_id == node(2))
        .unwrap();
    victim.mask_public_key = [42u8; 32];
    let forged = victim.clone();
    let first = sessions.into_iter().next().unwrap();
    assert_eq!(
        refused(first.share_keys(&directory, &mut rng)),
        Refusal::InvalidAdvertisementSignature { node: node(2) }
    );
    // An honest server also rejects such an advertisement on arrival.
    let mut server = cohort.server();
    assert_eq!(
        server.handle_key_advertisement(forged),
        Err(RejectedMessage::InvalidSignature { node: node(2) })
    );
}

#[test]
fn altered_own_advertisement_is_refused() {
    let cohort = Cohort::new(4, 3, 2, 32, 4, 3);
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let (sessions, mut directory) = advertised(&cohort, &mut rng);
    directory.advertisements[0].encryption_public_key = [7u8; 32];
    let first = sessions.into_iter().next().unwrap();
    assert_eq!(
        refused(first.share_keys(&directory, &mut rng)),
        Refusal::OwnAdvertisementAltered
    );
}

#[test]
fn request_for_both_shares_of_one_peer_is_refused() {
    let cohort = Cohort::new(5, 4, 3, 32, 4, 5);
    let mut rng = ChaCha20Rng::seed_from_u64(6);
    let (sessions, honest) = checked(&cohort, &mut rng);
    let mut sessions = sessions.into_iter();
    let mut both = honest.clone();
    both.mask_key_share_peers = vec![node(3)];
    assert_eq!(
        refused(sessions.next().unwrap().unmask(&both)),
        Refusal::BothSharesRequested { peer: node(3) }
    );
    // Asking for a survivor's mask key alone is refused too.
    let mut key_of_survivor = honest.clone();
    key_of_survivor
        .self_mask_share_peers
        .retain(|peer| *peer != node(3));
    key_of_survivor.mask_key_share_peers = vec![node(3)];
    assert_eq!(
        refused(sessions.next().unwrap().unmask(&key_of_survivor)),
        Refusal::MaskKeyShareOfSurvivorRequested { peer: node(3) }
    );
    // The honest request is answered with self-mask shares only.
    let response = sessions.next().unwrap().unmask(&honest).unwrap();
    assert_eq!(response.self_mask_shares.len(), 4);
    assert!(response.mask_key_shares.is_empty());
}

#[test]
fn survivor_set_below_threshold_is_refused() {
    let cohort = Cohort::new(6, 5, 4, 32, 4, 7);
    let mut rng = ChaCha20Rng::seed_from_u64(8);
    let (masking, _) = masked(&cohort, &mut rng);
    // The coordinator claims only three clients survived, to isolate node 0's input.
    let shrunken = SurvivorList {
        survivors: vec![node(0), node(1), node(2)],
    };
    let first = masking.into_iter().next().unwrap();
    assert_eq!(
        refused(first.consistency_check(&shrunken)),
        Refusal::TooFewSurvivingNeighbours {
            live: 2,
            required: 4
        }
    );
}

#[test]
fn job_threshold_below_policy_floor_is_refused() {
    let cohort = Cohort::new(6, 5, 3, 32, 4, 9);
    assert_eq!(
        cohort.client_with_policy(0, 4).err(),
        Some(ClientError::Refused(Refusal::ThresholdBelowPolicy {
            job_threshold: 3,
            policy_minimum: 4
        }))
    );
}

#[test]
fn inconsistent_survivor_views_abort_the_round() {
    let cohort = Cohort::new(6, 5, 3, 32, 4, 11);
    let mut rng = ChaCha20Rng::seed_from_u64(12);
    let (masking, honest_list) = masked(&cohort, &mut rng);
    // Node 0 is told that node 5 dropped, everyone else that all survived: the
    // coordinator hopes node 0 reveals node 5's mask key while the others
    // reveal node 5's self mask.
    let partial = SurvivorList {
        survivors: honest_list.survivors[..5].to_vec(),
    };
    let mut signatures = Vec::new();
    let mut sessions = Vec::new();
    for (index, session) in masking.into_iter().enumerate() {
        let shown = if index == 0 { &partial } else { &honest_list };
        let (session, signature) = session.consistency_check(shown).unwrap();
        signatures.push(signature);
        sessions.push(session);
    }
    let request = UnmaskRequest {
        signatures,
        self_mask_share_peers: partial.survivors.clone(),
        mask_key_share_peers: vec![node(5)],
    };
    let mut sessions = sessions.into_iter();
    // Node 0 sees signatures over a different list and aborts.
    assert_eq!(
        refused(sessions.next().unwrap().unmask(&request)),
        Refusal::InconsistentView { signer: node(1) }
    );
    // The others see node 0's signature over a different list and abort too.
    assert_eq!(
        refused(sessions.next().unwrap().unmask(&request)),
        Refusal::InconsistentView { signer: node(0) }
    );
}

#[test]
fn round_fails_when_honest_clients_refuse_to_unmask() {
    // An honest server whose clients all refuse (here: a request tampered in
    // transit) ends in a named failure, not a wrong sum.
    let cohort = Cohort::new(5, 4, 3, 32, 4, 13);
    let mut rng = ChaCha20Rng::seed_from_u64(14);
    let mut server = cohort.server();
    let mut sessions = Vec::new();
    for index in 0..5 {
        let (session, message) = cohort.client(index).advertise_keys(&mut rng).unwrap();
        server.handle_key_advertisement(message).unwrap();
        sessions.push(session);
    }
    let (mut server, directory) = server.finish_phase().unwrap();
    let mut sharing = Vec::new();
    for session in sessions {
        let (session, message) = session.share_keys(&directory, &mut rng).unwrap();
        server.handle_encrypted_shares(message).unwrap();
        sharing.push(session);
    }
    let (mut server, forwarded) = server.finish_phase().unwrap();
    let mut masking = Vec::new();
    for (index, session) in sharing.into_iter().enumerate() {
        let bundle = forwarded
            .iter()
            .find(|bundle| bundle.recipient == node(index))
            .unwrap();
        let (session, message) = session.masked_input(bundle, &cohort.inputs[index]).unwrap();
        server.handle_masked_input(&message).unwrap();
        masking.push(session);
    }
    let (mut server, survivors) = server.finish_phase().unwrap();
    let mut checking = Vec::new();
    for session in masking {
        let (session, signature) = session.consistency_check(&survivors).unwrap();
        server.handle_consistency_signature(signature).unwrap();
        checking.push(session);
    }
    let (server, mut request) = server.finish_phase().unwrap();
    request.mask_key_share_peers = vec![node(1)];
    for session in checking {
        assert!(matches!(
            session.unmask(&request),
            Err(ClientError::Refused(_))
        ));
    }
    let failed = server.finish_phase().err().expect("no shares, no result");
    assert_eq!(
        failed.reason,
        FailureReason::NotEnoughShares {
            peer: node(0),
            secret: veil_secure_aggregation::SecretKind::SelfMaskSeed,
            received: 0,
            required: 3
        }
    );
}
