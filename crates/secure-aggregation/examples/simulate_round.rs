//! Whole-round simulation in one process: `simulate_round N D DROPOUT`.
//! Chooses k and t for (N, DROPOUT), drops that fraction of clients after they
//! sent shares (the costliest point: their mask keys must be reconstructed),
//! and prints per-client and coordinator time, bytes sent per client and peak
//! memory, with the coordinator's time also split by phase (advertise /
//! share keys / masked input / consistency check / unmask). Times are wall
//! time around each call: client calls run on one thread, so theirs equal CPU
//! time on an idle core; the coordinator's final unmasking uses every core,
//! so its time is less than its CPU time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use ring::signature::{Ed25519KeyPair, KeyPair};
use veil_secure_aggregation::{
    ClientConfig, ClientSession, ForwardedShares, GraphRequirements, IdentityDirectory, NodeId,
    PartnerPolicy, ProtocolParams, ServerConfig, ServerSession, choose_neighbour_parameters,
};

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmHWM:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

fn input_of(index: usize, vector_length: usize, modulus_mask: u32) -> Vec<u32> {
    let mut rng = ChaCha20Rng::seed_from_u64(index as u64);
    (0..vector_length)
        .map(|_| rng.next_u32() & modulus_mask)
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).map_or(Ok(100), |value| value.parse())?;
    let d: usize = args.get(2).map_or(Ok(100_000), |value| value.parse())?;
    let dropout: f64 = args.get(3).map_or(Ok(0.1), |value| value.parse())?;
    // Plan for at least 5% dropout, and assume 5% of clients collude with the coordinator.
    let chosen = choose_neighbour_parameters(&GraphRequirements {
        n_clients: n,
        dropout_rate: dropout.max(0.05),
        corrupt_fraction: 0.05,
        security_bits: 40,
        correctness_bits: 20,
    })?;
    let nodes: Vec<NodeId> = (0..n)
        .map(|index| NodeId::new(format!("node-{index:05}")))
        .collect::<Result<_, _>>()?;
    let params = Arc::new(ProtocolParams::new(
        nodes.clone(),
        [1u8; 32],
        chosen.neighbour_count,
        chosen.reconstruction_threshold,
        32,
        d,
    )?);
    let keys: Vec<Arc<Ed25519KeyPair>> = (0..n)
        .map(|index| {
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&(index as u64).to_le_bytes());
            Ed25519KeyPair::from_seed_unchecked(&seed).map(Arc::new)
        })
        .collect::<Result<_, _>>()
        .map_err(|_| "key generation failed")?;
    let identities = Arc::new(IdentityDirectory::from_entries(
        nodes
            .iter()
            .cloned()
            .zip(keys.iter().map(|key| key.public_key().as_ref().to_vec())),
    )?);
    let dropped_count = (n as f64 * dropout).round() as usize;
    // Spread the dropped clients over the cohort.
    let stride = (n / dropped_count.max(1)).max(1);
    let is_dropped = |index: usize| {
        dropped_count > 0 && index.is_multiple_of(stride) && index / stride < dropped_count
    };
    let mut rng = ChaCha20Rng::from_seed([3u8; 32]);
    let mut client_time = vec![Duration::ZERO; n];
    let mut client_bytes = vec![0usize; n];
    // Coordinator time per phase: advertise, share keys, masked input,
    // consistency check, unmask (the phase's handle_* calls and its finish_phase).
    let mut server_time = [Duration::ZERO; 5];
    let round_start = Instant::now();

    let mut server = ServerSession::new(ServerConfig {
        job_id: "bench".into(),
        round: 1,
        params: Arc::clone(&params),
        identities: Arc::clone(&identities),
    });
    let mut sessions = Vec::with_capacity(n);
    for index in 0..n {
        let start = Instant::now();
        let config = ClientConfig {
            job_id: "bench".into(),
            round: 1,
            node_id: nodes[index].clone(),
            params: Arc::clone(&params),
            policy: PartnerPolicy {
                minimum_threshold: 1,
            },
            identities: Arc::clone(&identities),
        };
        let (session, message) =
            ClientSession::new(config, Arc::clone(&keys[index]))?.advertise_keys(&mut rng)?;
        client_time[index] += start.elapsed();
        client_bytes[index] += message.to_bytes().len();
        let start = Instant::now();
        server.handle_key_advertisement(message)?;
        server_time[0] += start.elapsed();
        sessions.push((index, session));
    }
    let start = Instant::now();
    let (mut server, directory) = server.finish_phase()?;
    server_time[0] += start.elapsed();

    let mut sharing = Vec::with_capacity(n);
    for (index, session) in sessions {
        let start = Instant::now();
        let (session, message) = session.share_keys(&directory, &mut rng)?;
        client_time[index] += start.elapsed();
        client_bytes[index] += message.to_bytes().len();
        let start = Instant::now();
        server.handle_encrypted_shares(message)?;
        server_time[1] += start.elapsed();
        sharing.push((index, session));
    }
    let start = Instant::now();
    let (mut server, forwarded) = server.finish_phase()?;
    server_time[1] += start.elapsed();

    let mut masking = Vec::with_capacity(n);
    let modulus_mask = params.modulus_mask();
    let mut bundles: std::collections::BTreeMap<NodeId, ForwardedShares> = forwarded
        .into_iter()
        .map(|bundle| (bundle.recipient.clone(), bundle))
        .collect();
    for (index, session) in sharing {
        if is_dropped(index) {
            continue;
        }
        let input = input_of(index, d, modulus_mask);
        let bundle = bundles.remove(&nodes[index]).ok_or("no shares forwarded")?;
        let start = Instant::now();
        let (session, message) = session.masked_input(&bundle, &input)?;
        client_time[index] += start.elapsed();
        // The upload is serialised once for its size; 4 bytes per element plus a header.
        client_bytes[index] += 4 * message.masked_vector.len() + 16 + nodes[index].as_str().len();
        let start = Instant::now();
        server.handle_masked_input(&message)?;
        server_time[2] += start.elapsed();
        masking.push((index, session));
    }
    let start = Instant::now();
    let (mut server, survivors) = server.finish_phase()?;
    server_time[2] += start.elapsed();

    let mut checking = Vec::with_capacity(n);
    for (index, session) in masking {
        let start = Instant::now();
        let (session, message) = session.consistency_check(&survivors)?;
        client_time[index] += start.elapsed();
        client_bytes[index] += message.to_bytes().len();
        let start = Instant::now();
        server.handle_consistency_signature(message)?;
        server_time[3] += start.elapsed();
        checking.push((index, session));
    }
    let start = Instant::now();
    let (mut server, request) = server.finish_phase()?;
    server_time[3] += start.elapsed();

    for (index, session) in checking {
        let start = Instant::now();
        let message = session.unmask(&request)?;
        client_time[index] += start.elapsed();
        client_bytes[index] += message.to_bytes().len();
        let start = Instant::now();
        server.handle_unmask_response(message)?;
        server_time[4] += start.elapsed();
    }
    let start = Instant::now();
    let finished = server.finish_phase()?;
    server_time[4] += start.elapsed();
    let wall = round_start.elapsed();

    let mut expected = vec![0u32; d];
    for index in (0..n).filter(|&index| !is_dropped(index)) {
        for (total, value) in expected.iter_mut().zip(input_of(index, d, modulus_mask)) {
            *total = total.wrapping_add(value);
        }
    }
    let correct = finished.unmasked_sum() == expected.as_slice();
    let survivors_count = finished.survivors().len();
    let surviving_times: Vec<f64> = (0..n)
        .filter(|&index| !is_dropped(index))
        .map(|index| client_time[index].as_secs_f64())
        .collect();
    let mean_client = surviving_times.iter().sum::<f64>() / surviving_times.len().max(1) as f64;
    let max_client = surviving_times.iter().copied().fold(0.0, f64::max);
    let mean_bytes = (0..n)
        .filter(|&index| !is_dropped(index))
        .map(|index| client_bytes[index])
        .sum::<usize>() as f64
        / surviving_times.len().max(1) as f64;
    println!(
        "n={n} d={d} dropout={dropout} k={} t={} survivors={survivors_count} correct={correct} \
         client_mean_s={mean_client:.4} client_max_s={max_client:.4} server_s={:.4} server_phase_s={} bytes_per_client={:.0} \
         wall_s={:.2} peak_rss_mib={:.0}",
        chosen.neighbour_count,
        chosen.reconstruction_threshold,
        server_time.iter().map(Duration::as_secs_f64).sum::<f64>(),
        server_time
            .iter()
            .map(|phase| format!("{:.3}", phase.as_secs_f64()))
            .collect::<Vec<_>>()
            .join("/"),
        mean_bytes,
        wall.as_secs_f64(),
        peak_rss_mib(),
    );
    if !correct {
        return Err("unmasked sum differs from the plain sum".into());
    }
    Ok(())
}
