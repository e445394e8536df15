//! What authenticating a cohort costs a node: `cohort_verification [N] [REPS]`
//! issues N node certificates from a fresh CA and times
//! `PeerTrust::verify_cohort` over them (chain, validity, name, key, duplicate
//! keys, revocation set), printing the median and the spread in milliseconds,
//! on first sight and with the credentials remembered from an earlier phase.
//! Compare with the round figures of `veil-secure-aggregation`'s `simulate_round`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use veil_node_protocol::{MemberCredential, PeerTrust, RememberedCredentials};
use veil_pki::{CertificateRequest, FederationCa, Role, Validity};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).map_or(Ok(100), |value| value.parse())?;
    let reps: usize = args.get(2).map_or(Ok(30), |value| value.parse())?;
    let validity = Validity::starting_now(Duration::from_secs(86_400));
    let ca = FederationCa::create("bench", validity)?;
    let mut members = Vec::with_capacity(n);
    let mut own_key = [0u8; 32];
    for index in 0..n {
        let name = format!("node-{index:05}");
        let (issued, key) =
            ca.issue_with_new_key(&CertificateRequest::member(Role::Node, &name, validity))?;
        if index == 0 {
            own_key = key.public_key().0;
        }
        members.push(MemberCredential {
            node_id: name,
            certificate_der: issued.certificate_der.to_vec(),
            claimed_key: key.public_key().0.to_vec(),
        });
    }
    let cohort: Vec<String> = members
        .iter()
        .map(|member| member.node_id.clone())
        .collect();
    let trust = PeerTrust::Federation {
        root: Arc::new(ca.root().clone()),
        revoked: Default::default(),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    // First sight (a fresh memory each time, as at a job's first secure
    // phase), then seen before (one memory, as at every later phase).
    let mut remembered = RememberedCredentials::default();
    for (label, fresh) in [("first sight", true), ("seen before", false)] {
        let mut times = Vec::with_capacity(reps);
        for _ in 0..reps {
            if fresh {
                remembered = RememberedCredentials::default();
            }
            let start = Instant::now();
            trust
                .verify_cohort(
                    &mut remembered,
                    "node-00000",
                    &own_key,
                    &cohort,
                    &members,
                    now,
                )
                .map_err(|refusal| refusal.detail)?;
            times.push(start.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(f64::total_cmp);
        println!(
            "n={n} reps={reps} {label}: verify_cohort_ms median={:.3} min={:.3} max={:.3}",
            times[reps / 2],
            times[0],
            times[reps - 1]
        );
    }
    Ok(())
}
