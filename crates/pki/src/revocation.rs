//! The federation's revocation list: an append-only text file of revoked
//! serials, shared by the CA tooling that writes it and the coordinator that
//! consults it on every handshake and every RPC.
//!
//! Format, one revocation per line: `<serial-hex> <reason> <unix-seconds>`;
//! lines starting with `#` are comments. Only newline-terminated lines count,
//! so a line still being appended by another process is read once complete.

use std::collections::HashMap;
use std::fmt;
use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use crate::authority::unix_seconds;
use crate::identity::Serial;

/// Why a certificate was revoked (the RFC 5280 reasons Veil uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevocationReason {
    /// The member's private key may be known to someone else.
    KeyCompromise,
    /// The member left the federation.
    CessationOfOperation,
    /// A newer certificate replaces this one (rotation).
    Superseded,
    /// The member's organisation or role changed.
    AffiliationChanged,
    /// No reason given.
    Unspecified,
}

impl RevocationReason {
    const ALL: [RevocationReason; 5] = [
        RevocationReason::KeyCompromise,
        RevocationReason::CessationOfOperation,
        RevocationReason::Superseded,
        RevocationReason::AffiliationChanged,
        RevocationReason::Unspecified,
    ];

    /// The token written to the revocation file.
    pub fn as_str(self) -> &'static str {
        match self {
            RevocationReason::KeyCompromise => "key-compromise",
            RevocationReason::CessationOfOperation => "cessation-of-operation",
            RevocationReason::Superseded => "superseded",
            RevocationReason::AffiliationChanged => "affiliation-changed",
            RevocationReason::Unspecified => "unspecified",
        }
    }
}

impl fmt::Display for RevocationReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RevocationReason {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|reason| reason.as_str() == text)
            .ok_or_else(|| format!("unknown revocation reason {text:?}"))
    }
}

/// One entry of the revocation list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// Serial of the revoked certificate.
    pub serial: Serial,
    /// Why it was revoked.
    pub reason: RevocationReason,
    /// When it was revoked, in seconds since the Unix epoch.
    pub revoked_at_unix_seconds: u64,
}

/// Errors reading or writing the revocation file.
#[derive(Debug, thiserror::Error)]
pub enum RevocationError {
    /// The file exists but could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The revocation file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A complete line is not a valid revocation.
    #[error("{path}:{line}: {reason}")]
    Malformed {
        /// The revocation file.
        path: PathBuf,
        /// One-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
}

/// Identifies one version of the file cheaply: an append changes the length,
/// a replacement changes the inode, an edit in place changes the mtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

#[derive(Debug, Default)]
struct Cache {
    /// Stamp of the file the entries were read from; `None` when the file
    /// did not exist (no revocations yet).
    stamp: Option<FileStamp>,
    entries: HashMap<Serial, Revocation>,
}

#[derive(Debug)]
struct Shared {
    path: PathBuf,
    /// A std mutex: it is held only to compare a stamp or swap the parsed
    /// map, never across an await, and checks run inside rustls callbacks
    /// that cannot await anyway.
    cache: Mutex<Cache>,
}

/// A shared handle on the revocation file. Cloning is cheap; every clone
/// sees the same cache. Each check costs one `stat` and re-reads the file
/// only when it changed, so a revocation written by another process is
/// honoured on the very next handshake or RPC.
#[derive(Debug, Clone)]
pub struct RevocationList {
    shared: Arc<Shared>,
}

impl RevocationList {
    /// Opens the list at `path`. A missing file means nothing is revoked yet;
    /// an unreadable or malformed one is an error.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, RevocationError> {
        let list = Self {
            shared: Arc::new(Shared {
                path: path.into(),
                cache: Mutex::new(Cache::default()),
            }),
        };
        list.refresh()?;
        Ok(list)
    }

    /// The revocation file's path.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Whether `serial` is revoked, re-reading the file if it changed.
    /// Errors mean the status is unknown; callers refuse the peer.
    pub fn is_revoked(&self, serial: &Serial) -> Result<bool, RevocationError> {
        self.refresh()?;
        Ok(self.lock().entries.contains_key(serial))
    }

    /// All revocations, in no particular order.
    pub fn entries(&self) -> Result<Vec<Revocation>, RevocationError> {
        self.refresh()?;
        Ok(self.lock().entries.values().cloned().collect())
    }

    /// Revokes `serial`: appends a line and syncs it to disk before
    /// returning, so a revocation that was reported done survives a crash.
    /// Revoking an already revoked serial keeps the first entry.
    pub fn revoke(
        &self,
        serial: &Serial,
        reason: RevocationReason,
    ) -> Result<Revocation, RevocationError> {
        let revocation = Revocation {
            serial: serial.clone(),
            reason,
            revoked_at_unix_seconds: unix_seconds(SystemTime::now()),
        };
        let path = &self.shared.path;
        let line = format!(
            "{} {} {}",
            revocation.serial, revocation.reason, revocation.revoked_at_unix_seconds
        );
        append_synced_line(path, &line, |text| parse(path, text).map(drop))?;
        self.refresh()?;
        Ok(revocation)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        // The cache is rebuilt from the file, so a panic elsewhere while
        // holding the lock leaves nothing that a re-read cannot repair.
        self.shared
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn refresh(&self) -> Result<(), RevocationError> {
        let path = &self.shared.path;
        let stamp = match std::fs::metadata(path) {
            Ok(metadata) => Some(FileStamp {
                len: metadata.len(),
                modified: metadata.modified().ok(),
                inode: metadata.ino(),
            }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(RevocationError::Io {
                    path: path.clone(),
                    source,
                });
            }
        };
        if self.lock().stamp == stamp && stamp.is_some() {
            return Ok(());
        }
        let entries = match stamp {
            Some(_) => parse(path, &read(path)?)?,
            None => HashMap::new(),
        };
        let mut cache = self.lock();
        cache.stamp = stamp;
        cache.entries = entries;
        Ok(())
    }
}

pub(crate) fn read(path: &Path) -> Result<String, RevocationError> {
    std::fs::read_to_string(path).map_err(|source| RevocationError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Appends `line` and a newline to a CA list file, synced before returning,
/// so an entry reported done survives a crash. Refuses to append to a file
/// readers would reject (`validate`), or after an unterminated line (a write
/// interrupted by a crash), which the appended entry would be glued onto:
/// the operator repairs the file first.
pub(crate) fn append_synced_line(
    path: &Path,
    line: &str,
    validate: impl FnOnce(&str) -> Result<(), RevocationError>,
) -> Result<(), RevocationError> {
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => {
            return Err(RevocationError::Io {
                path: path.to_owned(),
                source,
            });
        }
    };
    validate(&existing)?;
    if !existing.is_empty() && !existing.ends_with('\n') {
        return Err(RevocationError::Malformed {
            path: path.to_owned(),
            line: existing.lines().count(),
            reason: "unterminated line, probably an interrupted write; repair the file".to_owned(),
        });
    }
    let io_error = |source| RevocationError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io_error)?;
    file.write_all(format!("{line}\n").as_bytes())
        .map_err(io_error)?;
    file.sync_all().map_err(io_error)
}

/// The complete (newline-terminated) lines of a CA list file with their
/// 1-based numbers, skipping blanks and `#` comments; an unterminated tail is
/// a line still being appended by another process and is read once complete.
pub(crate) fn complete_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.split_inclusive('\n')
        .enumerate()
        .map_while(|(index, line)| Some((index + 1, line.strip_suffix('\n')?.trim())))
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
}

fn parse(path: &Path, text: &str) -> Result<HashMap<Serial, Revocation>, RevocationError> {
    let mut entries = HashMap::new();
    for (number, line) in complete_lines(text) {
        let revocation = parse_line(line).map_err(|reason| RevocationError::Malformed {
            path: path.to_owned(),
            line: number,
            reason,
        })?;
        entries
            .entry(revocation.serial.clone())
            .or_insert(revocation);
    }
    Ok(entries)
}

fn parse_line(line: &str) -> Result<Revocation, String> {
    let mut fields = line.split_ascii_whitespace();
    let (Some(serial), Some(reason), Some(revoked_at), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err("expected `<serial-hex> <reason> <unix-seconds>`".to_owned());
    };
    Ok(Revocation {
        serial: serial.parse().map_err(|error| format!("{error}"))?,
        reason: reason.parse()?,
        revoked_at_unix_seconds: revoked_at
            .parse()
            .map_err(|_| format!("invalid time {revoked_at:?}"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serial(hex: &str) -> Serial {
        hex.parse().expect("serial")
    }

    #[test]
    fn a_revocation_by_another_handle_is_seen_at_once() {
        let directory = tempfile::tempdir().expect("tempdir");
        let path = directory.path().join("revoked.txt");
        let server_view = RevocationList::open(&path).expect("open missing file");
        assert!(!server_view.is_revoked(&serial("4a01")).expect("check"));

        let ca_view = RevocationList::open(&path).expect("open");
        ca_view
            .revoke(&serial("4a01"), RevocationReason::KeyCompromise)
            .expect("revoke");
        assert!(server_view.is_revoked(&serial("4a01")).expect("check"));
        assert!(!server_view.is_revoked(&serial("4a02")).expect("check"));

        ca_view
            .revoke(&serial("4a02"), RevocationReason::Superseded)
            .expect("revoke");
        let mut entries = server_view.entries().expect("entries");
        entries.sort_by(|a, b| a.serial.cmp(&b.serial));
        let reasons: Vec<_> = entries.iter().map(|entry| entry.reason).collect();
        assert_eq!(
            reasons,
            [
                RevocationReason::KeyCompromise,
                RevocationReason::Superseded
            ]
        );
    }

    #[test]
    fn torn_tails_are_skipped_and_malformed_lines_fail_closed() {
        let directory = tempfile::tempdir().expect("tempdir");
        let path = directory.path().join("revoked.txt");
        std::fs::write(&path, "# header\n4a01 key-compromise 10\n4a02 supers").expect("write");
        let list = RevocationList::open(&path).expect("open");
        assert!(list.is_revoked(&serial("4a01")).expect("check"));
        assert!(!list.is_revoked(&serial("4a02")).expect("check"));

        // Appending now would glue the entry onto the torn line: refused.
        assert!(matches!(
            list.revoke(&serial("4a03"), RevocationReason::Unspecified),
            Err(RevocationError::Malformed { line: 3, .. })
        ));

        std::fs::write(&path, "4a01 key-compromise 10\nnot a revocation\n").expect("write");
        assert!(matches!(
            list.is_revoked(&serial("4a01")),
            Err(RevocationError::Malformed { line: 2, .. })
        ));
    }
}
