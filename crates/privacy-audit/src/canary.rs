//! Canaries for a one-run audit: the auditor's secret seed, its public
//! commitment, the kit a partner installs, and the canaries themselves,
//! derived from the seed alone so the node that inserts them and the auditor
//! who attacks them compute the same rows without exchanging anything else.
//!
//! # Design
//!
//! A canary is a synthetic customer in the model's *input* space (features
//! already scaled by the federation's scaling): a point at distance
//! [`CANARY_RADIUS`] from the origin in a uniformly random direction, far
//! outside the data (scaled features have mean 0 and standard deviation 1,
//! so real customers sit at distance about √d), with a uniformly random
//! binary label. Far from the data the model's prediction is an
//! extrapolation that no real customer pins down, so a canary's own gradient
//! is what moves it: when the canary trained, its label is fitted and its
//! loss is low; when it did not, its label agrees with the extrapolation only
//! by chance. Random directions make canaries nearly orthogonal to each
//! other, so one canary's inclusion says little about another's (the
//! one-run theorem needs the inclusions independent, which they are by
//! construction; near-orthogonality is what makes the attack strong).
//!
//! Each canary is included independently with probability 1/2. Every value
//! is HMAC-SHA-256 of the seed over a label naming the canary and what is
//! drawn, so the stream is reproducible from the seed and unpredictable
//! without it.

use ring::digest::{SHA256, digest};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use crate::error::AuditError;

/// Distance of every canary from the origin of the scaled feature space,
/// in standard deviations: far outside the data for any feature count the
/// models use (real rows sit near √d ≤ 5 for 20 features).
pub const CANARY_RADIUS: f32 = 8.0;

/// Bytes of an audit seed.
pub const SEED_BYTES: usize = 32;

/// The auditor's secret: every canary and inclusion bit derives from it.
#[derive(Clone, PartialEq, Eq)]
pub struct AuditSeed([u8; SEED_BYTES]);

impl std::fmt::Debug for AuditSeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The seed decides every inclusion bit: never printed.
        f.write_str("AuditSeed(<secret>)")
    }
}

impl AuditSeed {
    /// A fresh seed from the operating system's generator.
    pub fn generate() -> Result<Self, AuditError> {
        let mut bytes = [0u8; SEED_BYTES];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| AuditError::Randomness)?;
        Ok(Self(bytes))
    }

    /// A seed from its hex form, as kept in a kit file.
    pub fn from_hex(text: &str) -> Result<Self, AuditError> {
        let bytes = decode_hex(text.trim()).ok_or(AuditError::SeedFormat)?;
        let bytes: [u8; SEED_BYTES] = bytes.try_into().map_err(|_| AuditError::SeedFormat)?;
        Ok(Self(bytes))
    }

    /// The hex form, for the kit file only.
    pub fn to_hex(&self) -> String {
        encode_hex(&self.0)
    }

    /// SHA-256 of the seed: what the job names, so the coordinator learns
    /// which kit the job is for but not the seed.
    pub fn commitment(&self) -> [u8; 32] {
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(digest(&SHA256, &self.0).as_ref());
        bytes
    }
}

/// What the auditor hands the audited partner out of band, and the partner
/// names in its node config (`privacy_audit_kit`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditKit {
    /// The seed, hex.
    pub seed: String,
    /// How many canaries to generate.
    pub canaries: u64,
}

impl std::fmt::Debug for AuditKit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditKit")
            .field("seed", &"<secret>")
            .field("canaries", &self.canaries)
            .finish()
    }
}

impl AuditKit {
    /// The kit for `seed` and `canaries`.
    pub fn new(seed: &AuditSeed, canaries: u64) -> Self {
        Self {
            seed: seed.to_hex(),
            canaries,
        }
    }

    /// The kit's seed.
    pub fn audit_seed(&self) -> Result<AuditSeed, AuditError> {
        AuditSeed::from_hex(&self.seed)
    }
}

/// One synthetic customer, in the model's input space.
#[derive(Debug, Clone, PartialEq)]
pub struct Canary {
    /// Scaled feature values, one per model input.
    pub features: Vec<f32>,
    /// The binary label, 0 or 1.
    pub label: f32,
    /// Whether the node trains on it (the secret bit the attack guesses).
    pub included: bool,
}

/// The `count` canaries of `seed` for a model with `n_features` inputs.
pub fn generate_canaries(
    seed: &AuditSeed,
    count: usize,
    n_features: usize,
) -> Result<Vec<Canary>, AuditError> {
    if n_features == 0 {
        return Err(AuditError::NoFeatures);
    }
    let key = hmac::Key::new(hmac::HMAC_SHA256, &seed.0);
    Ok((0..count as u64)
        .map(|index| {
            let bits = draw(&key, b"bits", index, 0)[0];
            let mut stream = UniformStream::new(&key, index);
            let mut direction: Vec<f32> =
                (0..n_features).map(|_| stream.standard_normal()).collect();
            let norm = direction
                .iter()
                .map(|value| f64::from(*value).powi(2))
                .sum::<f64>()
                .sqrt()
                .max(f64::MIN_POSITIVE);
            for value in &mut direction {
                *value = (f64::from(*value) * f64::from(CANARY_RADIUS) / norm) as f32;
            }
            Canary {
                features: direction,
                label: f32::from(bits & 1),
                included: bits & 2 != 0,
            }
        })
        .collect())
}

/// HMAC-SHA-256 of `purpose`, the canary's index and a block counter.
fn draw(key: &hmac::Key, purpose: &[u8], index: u64, block: u32) -> [u8; 32] {
    let mut message = Vec::with_capacity(48);
    message.extend_from_slice(b"veil-canary-v1/");
    message.extend_from_slice(purpose);
    message.extend_from_slice(&index.to_le_bytes());
    message.extend_from_slice(&block.to_le_bytes());
    let tag = hmac::sign(key, &message);
    let mut bytes = [0u8; 32];
    bytes.copy_from_slice(tag.as_ref());
    bytes
}

/// Uniforms in (0, 1] for one canary's direction, four per HMAC block.
struct UniformStream<'a> {
    key: &'a hmac::Key,
    index: u64,
    block: u32,
    buffered: Vec<f64>,
}

impl<'a> UniformStream<'a> {
    fn new(key: &'a hmac::Key, index: u64) -> Self {
        Self {
            key,
            index,
            block: 0,
            buffered: Vec::new(),
        }
    }

    fn uniform(&mut self) -> f64 {
        if self.buffered.is_empty() {
            let bytes = draw(self.key, b"direction", self.index, self.block);
            self.block += 1;
            // 53 random bits each, mapped to (0, 1] so the logarithm below is finite.
            self.buffered = bytes
                .chunks_exact(8)
                .rev()
                .map(|chunk| {
                    let mut word = [0u8; 8];
                    word.copy_from_slice(chunk);
                    ((u64::from_le_bytes(word) >> 11) + 1) as f64 / (1u64 << 53) as f64
                })
                .collect();
        }
        self.buffered.pop().unwrap_or(1.0)
    }

    /// Box-Muller; the second normal is dropped, which costs nothing that matters.
    fn standard_normal(&mut self) -> f32 {
        let radius = (-2.0 * self.uniform().ln()).sqrt();
        let angle = 2.0 * std::f64::consts::PI * self.uniform();
        (radius * angle.cos()) as f32
    }
}

fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Lower-case or upper-case hex, even length; `None` otherwise.
pub fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|start| u8::from_str_radix(text.get(start..start + 2)?, 16).ok())
        .collect()
}

/// Hex of a commitment, for job files, logs and reports.
pub fn commitment_hex(commitment: &[u8; 32]) -> String {
    encode_hex(commitment)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed() -> AuditSeed {
        AuditSeed::from_hex(&"ab".repeat(32)).unwrap_or_else(|error| panic!("{error}"))
    }

    #[test]
    fn canaries_are_reproducible_far_out_and_about_half_included() {
        let first = generate_canaries(&seed(), 2000, 9).unwrap_or_else(|error| panic!("{error}"));
        let again = generate_canaries(&seed(), 2000, 9).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(first, again);
        for canary in &first {
            let norm = canary
                .features
                .iter()
                .map(|value| f64::from(*value).powi(2))
                .sum::<f64>()
                .sqrt();
            // f32 rounding of 9 coordinates of size ≤ 8: far below 1e-4.
            assert!((norm - f64::from(CANARY_RADIUS)).abs() < 1e-4, "{norm}");
            assert!(canary.label == 0.0 || canary.label == 1.0);
        }
        let included = first.iter().filter(|canary| canary.included).count();
        let positive = first.iter().filter(|canary| canary.label == 1.0).count();
        // Binomial(2000, 1/2) has standard deviation 22.4: ±150 is 6.7σ.
        assert!((850..=1150).contains(&included), "{included}");
        assert!((850..=1150).contains(&positive), "{positive}");
        let other = AuditSeed::from_hex(&"cd".repeat(32)).unwrap_or_else(|error| panic!("{error}"));
        let different =
            generate_canaries(&other, 2000, 9).unwrap_or_else(|error| panic!("{error}"));
        assert_ne!(first, different);
    }

    #[test]
    fn kit_round_trips_and_the_seed_is_never_printed() {
        let seed = AuditSeed::generate().unwrap_or_else(|error| panic!("{error}"));
        let kit = AuditKit::new(&seed, 1000);
        assert_eq!(kit.audit_seed().ok(), Some(seed.clone()));
        assert!(!format!("{kit:?}").contains(&seed.to_hex()));
        assert!(!format!("{seed:?}").contains(&seed.to_hex()));
        assert_ne!(
            seed.commitment().to_vec(),
            decode_hex(&seed.to_hex()).unwrap_or_default()
        );
        assert_eq!(
            AuditSeed::from_hex("abc").err(),
            Some(AuditError::SeedFormat)
        );
        assert_eq!(
            AuditSeed::from_hex(&"zz".repeat(32)).err(),
            Some(AuditError::SeedFormat)
        );
    }
}
