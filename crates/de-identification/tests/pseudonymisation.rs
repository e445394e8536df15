//! Pseudonymisation and key management: determinism, key separation, owner-only key files,
//! rotation, and pseudonyms that cannot be recomputed without the key.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use chrono::NaiveDate;
use proptest::prelude::*;
use ring::digest;
use veil_de_identification::{DeidError, KEY_FILE_MODE, PseudonymKey};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// MD5 (RFC 1321), written out here because no MD5 crate is in the dependency tree and the test
/// only needs to show that pseudonyms are not unkeyed MD5 digests.
fn md5_hex(message: &[u8]) -> String {
    const SHIFTS: [u32; 64] = [
        7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5,
        9, 14, 20, 5, 9, 14, 20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10,
        15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
    ];
    let constants: Vec<u32> = (0..64)
        .map(|index| ((index as f64 + 1.0).sin().abs() * 4_294_967_296.0) as u32)
        .collect();
    let mut state: [u32; 4] = [0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476];
    let mut padded = message.to_vec();
    padded.push(0x80);
    while padded.len() % 64 != 56 {
        padded.push(0);
    }
    padded.extend_from_slice(&((message.len() as u64).wrapping_mul(8)).to_le_bytes());
    for block in padded.chunks(64) {
        let words: Vec<u32> = block
            .chunks(4)
            .map(|word| u32::from_le_bytes([word[0], word[1], word[2], word[3]]))
            .collect();
        let [mut a, mut b, mut c, mut d] = state;
        for round in 0..64 {
            let (mixed, word_index) = match round / 16 {
                0 => ((b & c) | (!b & d), round),
                1 => ((d & b) | (!d & c), (5 * round + 1) % 16),
                2 => (b ^ c ^ d, (3 * round + 5) % 16),
                _ => (c ^ (b | !d), (7 * round) % 16),
            };
            let rotated = a
                .wrapping_add(mixed)
                .wrapping_add(constants[round])
                .wrapping_add(words[word_index])
                .rotate_left(SHIFTS[round]);
            a = d;
            d = c;
            c = b;
            b = b.wrapping_add(rotated);
        }
        for (slot, value) in state.iter_mut().zip([a, b, c, d]) {
            *slot = slot.wrapping_add(value);
        }
    }
    hex(&state
        .iter()
        .flat_map(|word| word.to_le_bytes())
        .collect::<Vec<_>>())
}

#[test]
fn md5_helper_matches_rfc_1321_vectors() {
    assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
    assert_eq!(md5_hex(b"abc"), "900150983cd24fb0d6963f7d28e17f72");
}

fn fixed_key(byte: u8) -> PseudonymKey {
    PseudonymKey::from_bytes([byte; 32])
}

#[test]
fn pseudonyms_are_deterministic_per_key_and_differ_across_keys() {
    let key = fixed_key(1);
    let same_bytes = fixed_key(1);
    let other_key = fixed_key(2);
    let first = key.pseudonymise("customer-000123");
    assert_eq!(first, key.pseudonymise("customer-000123"));
    assert_eq!(first, same_bytes.pseudonymise("customer-000123"));
    assert_ne!(first, other_key.pseudonymise("customer-000123"));
    assert_ne!(first, key.pseudonymise("customer-000124"));
    assert_eq!(first.len(), 64);
    assert!(
        first
            .bytes()
            .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
    );
}

#[test]
fn normalised_spellings_share_a_pseudonym() {
    let key = fixed_key(3);
    let canonical = key.pseudonymise("alice@example.com");
    for spelling in [
        " Alice@Example.com ",
        "ALICE@EXAMPLE.COM",
        "\u{3000}ａｌｉｃｅ＠ｅｘａｍｐｌｅ．ｃｏｍ",
    ] {
        assert_eq!(key.pseudonymise(spelling), canonical, "{spelling:?}");
    }
    assert_ne!(key.pseudonymise("alice@example.co"), canonical);
}

#[test]
fn key_file_is_created_owner_only_and_reused() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let path = directory.path().join("pseudonym.key");
    let created = PseudonymKey::load_or_create(&path).expect("create key");
    let metadata = fs::metadata(&path).expect("key file exists");
    assert_eq!(metadata.permissions().mode() & 0o777, KEY_FILE_MODE);
    assert_eq!(metadata.len(), 32);
    let reloaded = PseudonymKey::load_or_create(&path).expect("reload key");
    assert_eq!(
        created.pseudonymise("13800138000"),
        reloaded.pseudonymise("13800138000")
    );
    // A second key file in another place is a different random key.
    let other = PseudonymKey::load_or_create(&directory.path().join("other.key")).expect("create");
    assert_ne!(
        created.pseudonymise("13800138000"),
        other.pseudonymise("13800138000")
    );
}

#[test]
fn exposed_or_malformed_key_files_are_refused() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let exposed = directory.path().join("exposed.key");
    fs::write(&exposed, [7u8; 32]).expect("write");
    fs::set_permissions(&exposed, fs::Permissions::from_mode(0o644)).expect("chmod");
    assert!(matches!(
        PseudonymKey::load_or_create(&exposed),
        Err(DeidError::KeyFilePermissions { mode: 0o644, .. })
    ));
    let short = directory.path().join("short.key");
    fs::write(&short, [7u8; 16]).expect("write");
    fs::set_permissions(&short, fs::Permissions::from_mode(0o600)).expect("chmod");
    assert!(matches!(
        PseudonymKey::load_or_create(&short),
        Err(DeidError::KeyFileLength { found: 16, .. })
    ));
    let missing_directory = directory.path().join("no-such-directory").join("k.key");
    assert!(matches!(
        PseudonymKey::load_or_create(&missing_directory),
        Err(DeidError::KeyIo { .. })
    ));
}

#[test]
fn rotation_retires_the_old_key_under_a_dated_name() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let path = directory.path().join("pseudonym.key");
    let old_key = PseudonymKey::load_or_create(&path).expect("create key");
    let old_pseudonym = old_key.pseudonymise("customer-42");
    let date = NaiveDate::from_ymd_opt(2026, 11, 23).expect("valid date");

    let rotated = PseudonymKey::rotate(&path, date).expect("rotate");
    let retired_path = directory.path().join("pseudonym.key.retired-2026-11-23");
    assert_eq!(
        rotated.retired_key_path.as_deref(),
        Some(retired_path.as_path())
    );
    assert_ne!(rotated.new_key.pseudonymise("customer-42"), old_pseudonym);
    // The retired key still reproduces the old pseudonyms, for deliberate re-linking.
    let retired = PseudonymKey::load_or_create(&retired_path).expect("load retired key");
    assert_eq!(retired.pseudonymise("customer-42"), old_pseudonym);
    // The new key is what the path now holds, with owner-only permissions.
    let current = PseudonymKey::load_or_create(&path).expect("load new key");
    assert_eq!(
        current.pseudonymise("customer-42"),
        rotated.new_key.pseudonymise("customer-42")
    );
    assert_eq!(
        fs::metadata(&path).expect("metadata").permissions().mode() & 0o777,
        KEY_FILE_MODE
    );

    // The retired key keeps its owner-only permissions.
    assert_eq!(
        fs::metadata(&retired_path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777,
        KEY_FILE_MODE
    );

    // Rotating twice on one day would overwrite the retired key, so it is refused.
    assert!(matches!(
        PseudonymKey::rotate(&path, date),
        Err(DeidError::RetiredKeyExists { .. })
    ));
    // Rotating where no key exists simply creates one.
    let fresh = directory.path().join("fresh.key");
    let rotated = PseudonymKey::rotate(&fresh, date).expect("rotate without old key");
    assert_eq!(rotated.retired_key_path, None);
    assert!(fresh.exists());
}

proptest! {
    #[test]
    fn pseudonym_never_equals_the_value_or_an_unkeyed_digest(value in "\\PC{0,40}") {
        let pseudonym = fixed_key(9).pseudonymise(&value);
        prop_assert_ne!(&pseudonym, &value);
        prop_assert_ne!(&pseudonym, &value.to_lowercase());
        prop_assert_ne!(&pseudonym, &value.to_uppercase());
        for candidate in [value.clone(), value.trim().to_lowercase()] {
            let sha256 = hex(digest::digest(&digest::SHA256, candidate.as_bytes()).as_ref());
            prop_assert_ne!(&pseudonym, &sha256);
            prop_assert_ne!(&pseudonym, &sha256.to_uppercase());
            let md5 = md5_hex(candidate.as_bytes());
            prop_assert!(!pseudonym.contains(&md5));
        }
    }
}

/// The operator's command (`veil-rotate-key`) rotates the key named on its command line.
#[test]
fn rotate_key_command_retires_the_old_key_and_writes_a_new_one() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let path = directory.path().join("pseudonym.key");
    let old_pseudonym = PseudonymKey::load_or_create(&path)
        .expect("create key")
        .pseudonymise("customer-42");
    let command = env!("CARGO_BIN_EXE_veil-rotate-key");

    let output = std::process::Command::new(command)
        .arg(&path)
        .output()
        .expect("run veil-rotate-key");
    assert!(output.status.success(), "{output:?}");
    let new_key = PseudonymKey::load_or_create(&path).expect("new key");
    assert_ne!(new_key.pseudonymise("customer-42"), old_pseudonym);
    // The retired key's name carries the date of the run, so it is found by its prefix.
    let retired: Vec<_> = fs::read_dir(directory.path())
        .expect("list directory")
        .filter_map(Result::ok)
        .filter(|entry| {
            entry
                .file_name()
                .to_string_lossy()
                .starts_with("pseudonym.key.retired-")
        })
        .collect();
    assert_eq!(retired.len(), 1);
    let retired_key = PseudonymKey::load_or_create(&retired[0].path()).expect("retired key");
    assert_eq!(retired_key.pseudonymise("customer-42"), old_pseudonym);
    for key_file in [path.clone(), retired[0].path()] {
        assert_eq!(
            fs::metadata(&key_file)
                .expect("metadata")
                .permissions()
                .mode()
                & 0o777,
            KEY_FILE_MODE
        );
    }
    // The command says where the keys are, and never prints the key itself.
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(printed.contains("previous key moved to"), "{printed}");
    let new_key_hex = hex(&fs::read(&path).expect("read new key"));
    assert!(!printed.contains(&new_key_hex), "{printed}");

    // Without exactly one argument it prints its usage and fails without touching anything.
    let output = std::process::Command::new(command)
        .output()
        .expect("run veil-rotate-key");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("usage"));
    // A second rotation on the same day is refused, keeping the retired key.
    let output = std::process::Command::new(command)
        .arg(&path)
        .output()
        .expect("run veil-rotate-key");
    assert!(!output.status.success());
    assert_eq!(
        PseudonymKey::load_or_create(&path)
            .expect("key still there")
            .pseudonymise("customer-42"),
        new_key.pseudonymise("customer-42")
    );
}
