//! The CA's issuance journal: one line per certificate issued, appended by
//! the CA tooling next to the revocation list, so that the coordinator (the
//! only writer of the audit log) can record every issuance in it.
//!
//! Format, one issuance per line: `<serial-hex> <role> <unix-seconds> <name>`.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::authority::{IssuedCertificate, unix_seconds};
use crate::identity::{Role, Serial};
use crate::revocation::{RevocationError, append_synced_line, complete_lines, read};

/// The journal's file name, in the CA folder.
pub const ISSUED_FILE: &str = "issued.txt";

/// One certificate the CA issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issuance {
    /// The certificate's serial.
    pub serial: Serial,
    /// The role it grants.
    pub role: Role,
    /// When it was issued, in seconds since the Unix epoch.
    pub issued_at_unix_seconds: u64,
    /// The member name it binds.
    pub name: String,
    /// When it expires, in seconds since the Unix epoch; `None` in journals
    /// written before the expiry was recorded.
    pub expires_at_unix_seconds: Option<u64>,
}

/// The issuance journal of one CA folder.
#[derive(Debug, Clone)]
pub struct IssuanceJournal {
    path: PathBuf,
}

impl IssuanceJournal {
    /// The journal at `path` (normally `<ca folder>/issued.txt`); a missing
    /// file is an empty journal.
    pub fn at(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The journal's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends the issuance of `certificate`, synced before returning.
    pub fn record(&self, certificate: &IssuedCertificate) -> Result<Issuance, RevocationError> {
        let issuance = Issuance {
            serial: certificate.serial.clone(),
            role: certificate.role,
            issued_at_unix_seconds: unix_seconds(SystemTime::now()),
            name: certificate.name.clone(),
            expires_at_unix_seconds: Some(unix_seconds(certificate.not_after)),
        };
        let line = format!(
            "{} {} {} {} {}",
            issuance.serial,
            issuance.role,
            issuance.issued_at_unix_seconds,
            issuance.name,
            unix_seconds(certificate.not_after)
        );
        append_synced_line(&self.path, &line, |text| self.parse(text).map(drop))?;
        Ok(issuance)
    }

    /// Every issuance, in the order issued.
    pub fn entries(&self) -> Result<Vec<Issuance>, RevocationError> {
        match std::fs::metadata(&self.path) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            _ => self.parse(&read(&self.path)?),
        }
    }

    fn parse(&self, text: &str) -> Result<Vec<Issuance>, RevocationError> {
        complete_lines(text)
            .map(|(number, line)| {
                parse_line(line).map_err(|reason| RevocationError::Malformed {
                    path: self.path.clone(),
                    line: number,
                    reason,
                })
            })
            .collect()
    }
}

fn parse_line(line: &str) -> Result<Issuance, String> {
    let mut fields = line.split_ascii_whitespace();
    let (Some(serial), Some(role), Some(issued_at), Some(name), expires_at, None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(
            "expected `<serial-hex> <role> <unix-seconds> <name> [<expiry unix-seconds>]`"
                .to_owned(),
        );
    };
    let time = |text: &str| text.parse().map_err(|_| format!("invalid time {text:?}"));
    Ok(Issuance {
        serial: serial.parse().map_err(|error| format!("{error}"))?,
        role: role.parse().map_err(|error| format!("{error}"))?,
        issued_at_unix_seconds: time(issued_at)?,
        name: name.to_owned(),
        expires_at_unix_seconds: expires_at.map(time).transpose()?,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::authority::{CertificateRequest, FederationCa, Validity};

    #[test]
    fn issuances_are_read_back_in_order_and_a_torn_line_is_refused() {
        let directory = tempfile::tempdir().expect("tempdir");
        let journal = IssuanceJournal::at(directory.path().join(ISSUED_FILE));
        assert!(journal.entries().expect("missing file").is_empty());
        let ca = FederationCa::create("test", Validity::starting_now(Duration::from_secs(3600)))
            .expect("ca");
        let validity = Validity::starting_now(Duration::from_secs(600));
        let mut recorded = Vec::new();
        for (role, name) in [(Role::Node, "node-1"), (Role::Auditor, "audit.team")] {
            let (issued, _) = ca
                .issue_with_new_key(&CertificateRequest::member(role, name, validity))
                .expect("issue");
            recorded.push(journal.record(&issued).expect("record"));
        }
        assert_eq!(journal.entries().expect("read"), recorded);
        assert_eq!(recorded[1].name, "audit.team");
        assert_eq!(
            recorded[0].expires_at_unix_seconds,
            Some(unix_seconds(validity.not_after))
        );

        // A line still being written is not read, and nothing is appended after it.
        let mut text = std::fs::read_to_string(journal.path()).expect("read");
        text.push_str("4a01 node 17");
        std::fs::write(journal.path(), &text).expect("write");
        assert_eq!(journal.entries().expect("read").len(), 2);
        let (issued, _) = ca
            .issue_with_new_key(&CertificateRequest::member(Role::Node, "node-2", validity))
            .expect("issue");
        let error = journal.record(&issued).expect_err("torn tail");
        assert!(error.to_string().contains("unterminated line"), "{error}");

        std::fs::write(journal.path(), "zz node 1 x\n").expect("write");
        let error = journal.entries().expect_err("malformed");
        assert!(error.to_string().contains(":1:"), "{error}");
    }

    /// Journals written before expiries were recorded still read, with the
    /// expiry unknown; a malformed expiry is refused.
    #[test]
    fn a_line_without_an_expiry_reads_as_an_unknown_expiry() {
        let old = parse_line("4a01 node 17 node-1").expect("old line");
        assert_eq!(
            (old.name.as_str(), old.expires_at_unix_seconds),
            ("node-1", None)
        );
        let new = parse_line("4a01 node 17 node-1 99").expect("new line");
        assert_eq!(new.expires_at_unix_seconds, Some(99));
        let error = parse_line("4a01 node 17 node-1 soon").expect_err("bad expiry");
        assert!(error.contains("invalid time \"soon\""), "{error}");
    }
}
