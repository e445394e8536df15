//! Criterion benchmarks of the protocol's primitives: X25519 agreement with
//! HKDF (one pairwise seed; and x25519-dalek's Montgomery ladder alone, which
//! the agreement replaced), Shamir share/reconstruct of a seed, and mask
//! expansion throughput (compare with `openssl speed -evp aes-128-ctr` on one
//! core in the same run: `scripts/prg_vs_openssl.sh`).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use std::hint::black_box;
use veil_secure_aggregation::crypto::{generate_secret, pairwise_mask_seed, public_key_of};
use veil_secure_aggregation::{NodeId, ProtocolParams, RoundBinding, prg, shamir};

fn key_agreement(criterion: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let own = generate_secret(&mut rng);
    let peer = public_key_of(&generate_secret(&mut rng));
    let (a, b) = (NodeId::new("a").unwrap(), NodeId::new("b").unwrap());
    let params = ProtocolParams::new(vec![a.clone(), b.clone()], [0; 32], 1, 1, 32, 1).unwrap();
    let binding = RoundBinding::new("job", 1, &params);
    criterion.bench_function("x25519_agree_plus_hkdf", |bench| {
        bench.iter(|| pairwise_mask_seed(&own, black_box(&peer), &binding, &a, &b).unwrap())
    });
    // The Montgomery ladder alone (x25519-dalek), against which the Edwards
    // path of `pairwise_mask_seed` (agreement + HKDF) is compared.
    let peer_point = x25519_dalek::PublicKey::from(peer);
    criterion.bench_function("x25519_ladder_only", |bench| {
        bench.iter(|| own.diffie_hellman(black_box(&peer_point)).to_bytes())
    });
    criterion.bench_function("x25519_keygen", |bench| {
        bench.iter(|| public_key_of(&generate_secret(&mut rng)))
    });
}

fn secret_sharing(criterion: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    for (k, t) in [(10usize, 6usize), (100, 51)] {
        let xs: Vec<u64> = (1..=k as u64).collect();
        criterion.bench_function(&format!("shamir_split_seed_k{k}_t{t}"), |bench| {
            bench.iter(|| shamir::split_seed(black_box(&[7u8; 32]), t, &xs, &mut rng).unwrap())
        });
        let shares = shamir::split_seed(&[7u8; 32], t, &xs, &mut rng).unwrap();
        criterion.bench_function(&format!("shamir_reconstruct_seed_t{t}"), |bench| {
            bench.iter(|| shamir::reconstruct_seed(black_box(&shares), t).unwrap())
        });
    }
}

fn mask_expansion(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("mask_expansion");
    for words in [100_000usize, 1_000_000] {
        let mut accumulator = vec![0u32; words];
        group.throughput(Throughput::Bytes(words as u64 * 4));
        group.bench_function(format!("add_mask_{words}_words"), |bench| {
            bench.iter(|| prg::add_mask(black_box(&[9u8; 32]), &mut accumulator))
        });
    }
    group.finish();
}

criterion_group!(benches, key_agreement, secret_sharing, mask_expansion);
criterion_main!(benches);
