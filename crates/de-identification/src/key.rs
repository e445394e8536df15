//! The partner-held pseudonymisation key: generation, owner-only storage, rotation, and keyed
//! pseudonyms of identifiers.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use crate::error::DeidError;

/// Length of the secret in bytes: HMAC-SHA256 gains nothing from a longer key and a shorter one
/// would weaken it.
pub const PSEUDONYM_KEY_LENGTH: usize = 32;

/// Unix permission bits a key file must have: read and write for the owner, nothing for anyone else.
pub const KEY_FILE_MODE: u32 = 0o600;

/// A 32-byte secret held only by the partner. Pseudonyms are HMAC-SHA256 under this key, so
/// nobody without the key (the coordinator, auditors, other partners) can recompute or reverse them.
///
/// The raw bytes are not kept after the HMAC key is derived and are never printed by `Debug`.
pub struct PseudonymKey {
    /// ring's prepared HMAC key; it already holds the inner and outer padded states, so each
    /// pseudonym costs only the two compressions of the message.
    hmac_key: hmac::Key,
}

/// The outcome of [`PseudonymKey::rotate`].
#[derive(Debug)]
pub struct RotatedKey {
    /// The freshly generated key, now stored at the original path.
    pub new_key: PseudonymKey,
    /// Where the previous key was moved, if there was one.
    pub retired_key_path: Option<PathBuf>,
}

impl PseudonymKey {
    /// Builds a key from known bytes. Meant for tests and benchmarks that need fixed keys;
    /// production keys come from [`PseudonymKey::load_or_create`].
    pub fn from_bytes(bytes: [u8; PSEUDONYM_KEY_LENGTH]) -> PseudonymKey {
        PseudonymKey {
            hmac_key: hmac::Key::new(hmac::HMAC_SHA256, &bytes),
        }
    }

    /// Loads the key at `path`, or generates one with the operating system's cryptographic
    /// generator and writes it there with mode 0600 if the file does not exist yet.
    ///
    /// An existing file that is group- or world-accessible, or that does not hold exactly
    /// 32 bytes, is refused rather than used.
    pub fn load_or_create(path: &Path) -> Result<PseudonymKey, DeidError> {
        // Two attempts cover the race where another process creates the file between our failed
        // open and our create: the second attempt then reads what it wrote.
        for _ in 0..2 {
            match read_key_file(path) {
                Ok(bytes) => return Ok(PseudonymKey::from_bytes(bytes)),
                Err(DeidError::KeyIo { source, .. }) if source.kind() == ErrorKind::NotFound => {}
                Err(other) => return Err(other),
            }
            match create_key_file(path) {
                Ok(bytes) => return Ok(PseudonymKey::from_bytes(bytes)),
                Err(DeidError::KeyIo { source, .. })
                    if source.kind() == ErrorKind::AlreadyExists => {}
                Err(other) => return Err(other),
            }
        }
        read_key_file(path).map(PseudonymKey::from_bytes)
    }

    /// Rotates the key at `path`: the current key file (if any) is renamed to
    /// `<file name>.retired-<retired_on>` beside it, and a new key is generated at `path`.
    ///
    /// Pseudonyms under the new key do not match those under the old one, so records cannot be
    /// linked across the rotation without the retired key. The date is passed in rather than read
    /// from the clock so the operation is reproducible in tests.
    pub fn rotate(path: &Path, retired_on: NaiveDate) -> Result<RotatedKey, DeidError> {
        let retired_key_path = if path.exists() {
            // Validate the old key before moving it, so a corrupt or exposed file is reported
            // instead of being archived as if it were good.
            read_key_file(path)?;
            let retired = retired_path(path, retired_on);
            if retired.exists() {
                return Err(DeidError::RetiredKeyExists { path: retired });
            }
            fs::rename(path, &retired).map_err(|source| DeidError::KeyIo {
                path: path.to_owned(),
                source,
            })?;
            Some(retired)
        } else {
            None
        };
        let new_key = PseudonymKey::from_bytes(create_key_file(path)?);
        Ok(RotatedKey {
            new_key,
            retired_key_path,
        })
    }

    /// Returns lower-case hex of HMAC-SHA256(key, normalise_identifier(value)): 64 characters.
    pub fn pseudonymise(&self, value: &str) -> String {
        let mut pseudonym = String::with_capacity(PSEUDONYM_TAG_LENGTH * 2);
        push_pseudonym(&self.tag(value, &mut String::new()), &mut pseudonym);
        pseudonym
    }

    /// The HMAC-SHA256 tag behind the pseudonym of `value`, reusing `scratch` for the normalised
    /// value, so the per-row path can write the pseudonym into a string it reuses.
    pub(crate) fn tag(&self, value: &str, scratch: &mut String) -> PseudonymTag {
        normalise_identifier_into(value, scratch);
        let tag = hmac::sign(&self.hmac_key, scratch.as_bytes());
        let mut bytes = [0u8; PSEUDONYM_TAG_LENGTH];
        // HMAC-SHA256 tags are always 32 bytes, so the copy is total.
        bytes.copy_from_slice(tag.as_ref());
        bytes
    }
}

/// Length of an HMAC-SHA256 tag.
const PSEUDONYM_TAG_LENGTH: usize = 32;

/// The raw HMAC-SHA256 tag of an identifier; its lower-case hex is the pseudonym.
pub(crate) type PseudonymTag = [u8; PSEUDONYM_TAG_LENGTH];

/// Appends the pseudonym of `tag` (its lower-case hex) to `output`.
pub(crate) fn push_pseudonym(tag: &PseudonymTag, output: &mut String) {
    let mut hex = [0u8; PSEUDONYM_TAG_LENGTH * 2];
    for (pair, byte) in hex.chunks_exact_mut(2).zip(tag) {
        pair.copy_from_slice(&HEX_PAIRS[usize::from(*byte)]);
    }
    // Hex digits are ASCII, so the conversion cannot fail; it is checked rather than assumed
    // because this crate forbids unsafe code.
    output.push_str(std::str::from_utf8(&hex).unwrap_or_default());
}

/// The two lower-case hex digits of each byte value, one lookup per byte on the per-row path.
static HEX_PAIRS: [[u8; 2]; 256] = {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut pairs = [[0u8; 2]; 256];
    let mut byte = 0;
    while byte < 256 {
        pairs[byte] = [DIGITS[byte >> 4], DIGITS[byte & 0x0f]];
        byte += 1;
    }
    pairs
};

impl fmt::Debug for PseudonymKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("PseudonymKey { bytes: <redacted> }")
    }
}

/// The canonical form of an identifier before it is keyed, so trivially different spellings of
/// one identifier get one pseudonym:
/// 1. full-width ASCII forms (U+FF01..U+FF5E, common in Chinese input methods) become ASCII;
/// 2. leading and trailing Unicode whitespace (including the ideographic space U+3000) is removed;
/// 3. letters are lower-cased (Unicode lower-case mapping).
///
/// Inner whitespace and punctuation are kept: `138 0013 8000` and `13800138000` stay different.
pub fn normalise_identifier(value: &str) -> String {
    let mut normalised = String::with_capacity(value.len());
    normalise_identifier_into(value, &mut normalised);
    normalised
}

fn normalise_identifier_into(value: &str, normalised: &mut String) {
    normalised.clear();
    let trimmed = value.trim();
    if trimmed.is_ascii() {
        normalised.push_str(trimmed);
        normalised.make_ascii_lowercase();
        return;
    }
    for character in trimmed.chars() {
        let folded = match u32::from(character) {
            code @ 0xFF01..=0xFF5E => char::from_u32(code - 0xFEE0).unwrap_or(character),
            _ => character,
        };
        normalised.extend(folded.to_lowercase());
    }
}

fn retired_path(path: &Path, retired_on: NaiveDate) -> PathBuf {
    let mut file_name = path
        .file_name()
        .map(|name| name.to_os_string())
        .unwrap_or_default();
    file_name.push(format!(".retired-{}", retired_on.format("%Y-%m-%d")));
    path.with_file_name(file_name)
}

fn read_key_file(path: &Path) -> Result<[u8; PSEUDONYM_KEY_LENGTH], DeidError> {
    let io_error = |source| DeidError::KeyIo {
        path: path.to_owned(),
        source,
    };
    let mut file = fs::File::open(path).map_err(io_error)?;
    let metadata = file.metadata().map_err(io_error)?;
    check_owner_only(path, &metadata)?;
    if metadata.len() != PSEUDONYM_KEY_LENGTH as u64 {
        return Err(DeidError::KeyFileLength {
            path: path.to_owned(),
            found: metadata.len(),
        });
    }
    let mut bytes = [0u8; PSEUDONYM_KEY_LENGTH];
    file.read_exact(&mut bytes).map_err(io_error)?;
    Ok(bytes)
}

fn create_key_file(path: &Path) -> Result<[u8; PSEUDONYM_KEY_LENGTH], DeidError> {
    let io_error = |source| DeidError::KeyIo {
        path: path.to_owned(),
        source,
    };
    let mut bytes = [0u8; PSEUDONYM_KEY_LENGTH];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| DeidError::KeyGeneration)?;
    let mut options = OpenOptions::new();
    // `create_new` refuses to follow or overwrite an existing file, and the mode is applied at
    // creation, so the secret is never readable by others, not even for an instant.
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(KEY_FILE_MODE);
    }
    let mut file = options.open(path).map_err(io_error)?;
    file.write_all(&bytes).map_err(io_error)?;
    file.sync_all().map_err(io_error)?;
    Ok(bytes)
}

#[cfg(unix)]
fn check_owner_only(path: &Path, metadata: &fs::Metadata) -> Result<(), DeidError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(DeidError::KeyFilePermissions {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_owner_only(_path: &Path, _metadata: &fs::Metadata) -> Result<(), DeidError> {
    // Client nodes run on Unix; elsewhere file ACLs are left to the operator.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_folds_case_width_and_outer_whitespace() {
        let check = |input: &str, expected: &str| assert_eq!(normalise_identifier(input), expected);
        check("  Alice@Example.COM \t", "alice@example.com");
        check("\u{3000}ＡＢＣ１２３\u{3000}", "abc123");
        check("138 0013 8000", "138 0013 8000");
        check("ÉLODIE", "élodie");
        check("", "");
    }

    #[test]
    fn debug_output_hides_the_key_bytes() {
        let key = PseudonymKey::from_bytes([0xab; PSEUDONYM_KEY_LENGTH]);
        let printed = format!("{key:?}");
        assert!(!printed.contains("ab"), "{printed}");
        assert!(!printed.contains("171"), "{printed}");
    }

    #[test]
    fn hex_is_lower_case_and_two_digits_per_byte() {
        let mut tag = [0u8; PSEUDONYM_TAG_LENGTH];
        tag[..4].copy_from_slice(&[0x00, 0x0f, 0xa5, 0xff]);
        let mut pseudonym = "kept:".to_owned();
        push_pseudonym(&tag, &mut pseudonym);
        assert_eq!(pseudonym, format!("kept:000fa5ff{}", "0".repeat(56)));
    }
}
