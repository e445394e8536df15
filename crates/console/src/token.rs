//! Log-in links, sessions and CSRF tokens, signed with HMAC-SHA-256 (ring).
//!
//! `coordinator console-login` issues a *log-in* token in a link; the
//! console redeems it once ([`LoginRedemptions`]) for a *session* token kept
//! in an HttpOnly, SameSite=Strict, Secure cookie; every write form carries
//! the session's CSRF token, an HMAC of the session's nonce, so a page on
//! another site cannot forge one. All three are bound to the console key,
//! expire, and are checked with `now` passed in.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use ring::hmac;
use ring::rand::SecureRandom;

/// Bytes of the console's HMAC key.
pub const KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 16;
/// Longest validity of any token: a working day and a half.
pub const MAX_VALIDITY: Duration = Duration::from_secs(36 * 3600);

/// Who a person is in the console; the same roles as the gRPC services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsoleRole {
    /// Runs jobs: may cancel.
    Operator,
    /// Verifies what was spent: reads everything, changes nothing.
    Auditor,
}

impl ConsoleRole {
    /// The role's name, as the command line and pages spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            ConsoleRole::Operator => "operator",
            ConsoleRole::Auditor => "auditor",
        }
    }

    /// Whether the role may take write actions (cancel a job).
    pub fn may_write(self) -> bool {
        self == ConsoleRole::Operator
    }
}

impl fmt::Display for ConsoleRole {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

impl FromStr for ConsoleRole {
    type Err = TokenError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "operator" => Ok(ConsoleRole::Operator),
            "auditor" => Ok(ConsoleRole::Auditor),
            other => Err(TokenError::UnknownRole(other.to_owned())),
        }
    }
}

/// What a token is for: a log-in token is not a session and the reverse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// In the one-time link `console-login` prints.
    Login,
    /// In the session cookie.
    Session,
}

impl TokenKind {
    fn as_str(self) -> &'static str {
        match self {
            TokenKind::Login => "login",
            TokenKind::Session => "session",
        }
    }
}

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// Log-in or session.
    pub kind: TokenKind,
    /// The person's role.
    pub role: ConsoleRole,
    /// The person's name, for the audit log.
    pub name: String,
    /// When the token stops being valid (UNIX seconds).
    pub expires_unix_s: i64,
    /// Random, so two tokens never collide: what one-time use and CSRF
    /// tokens are bound to.
    nonce: [u8; NONCE_BYTES],
}

/// Why a token, a name or a key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not `payload.mac` in hex, or a payload without its fields.
    #[error("the token is malformed")]
    Malformed,
    /// The MAC does not match: altered, or made with another key.
    #[error("the token's signature does not verify")]
    BadSignature,
    /// Past its expiry.
    #[error("the token expired at {expired_unix_s} (UNIX seconds)")]
    Expired {
        /// When it expired.
        expired_unix_s: i64,
    },
    /// A log-in token used as a session or the reverse.
    #[error("a {found} token where a {expected} token was needed")]
    WrongKind {
        /// The kind needed.
        expected: &'static str,
        /// The kind presented.
        found: &'static str,
    },
    /// A log-in link used a second time.
    #[error("this log-in link was already used")]
    AlreadyUsed,
    /// The CSRF token is missing or not the session's.
    #[error("the form's CSRF token is missing or wrong")]
    BadCsrf,
    /// A role other than operator or auditor.
    #[error("unknown console role '{0}': use operator or auditor")]
    UnknownRole(String),
    /// Names go into the audit log and pages.
    #[error("the name must be 1-64 characters of ASCII letters, digits, '-', '_' or '.'")]
    InvalidName,
    /// Zero, or longer than [`MAX_VALIDITY`].
    #[error("a token must be valid for between 1 second and {} hours", MAX_VALIDITY.as_secs() / 3600)]
    InvalidValidity,
    /// The key file does not hold [`KEY_BYTES`] bytes.
    #[error("a console key has {KEY_BYTES} bytes, not {0}")]
    KeyLength(usize),
    /// The operating system's generator failed.
    #[error("the system random generator failed")]
    Random,
}

/// The console's HMAC key: in the coordinator's state folder, shared by the
/// server and `console-login`.
pub struct ConsoleKey {
    key: hmac::Key,
}

impl fmt::Debug for ConsoleKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("ConsoleKey(..)")
    }
}

impl ConsoleKey {
    /// New random key bytes, to be stored owner-only.
    pub fn generate_bytes(random: &dyn SecureRandom) -> Result<[u8; KEY_BYTES], TokenError> {
        let mut bytes = [0u8; KEY_BYTES];
        random.fill(&mut bytes).map_err(|_| TokenError::Random)?;
        Ok(bytes)
    }

    /// The key from its stored bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, TokenError> {
        if bytes.len() != KEY_BYTES {
            return Err(TokenError::KeyLength(bytes.len()));
        }
        Ok(Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, bytes),
        })
    }

    /// A signed token for `name` in `role`, valid from `now_unix_s` for `valid`.
    pub fn issue(
        &self,
        kind: TokenKind,
        role: ConsoleRole,
        name: &str,
        now_unix_s: i64,
        valid: Duration,
        random: &dyn SecureRandom,
    ) -> Result<String, TokenError> {
        validate_name(name)?;
        if valid.is_zero() || valid > MAX_VALIDITY {
            return Err(TokenError::InvalidValidity);
        }
        let mut nonce = [0u8; NONCE_BYTES];
        random.fill(&mut nonce).map_err(|_| TokenError::Random)?;
        let expires = now_unix_s.saturating_add(valid.as_secs() as i64);
        let payload = format!(
            "{}\n{}\n{}\n{}\n{}",
            kind.as_str(),
            role.as_str(),
            name,
            expires,
            hex(&nonce)
        );
        let tag = hmac::sign(&self.key, payload.as_bytes());
        Ok(format!("{}.{}", hex(payload.as_bytes()), hex(tag.as_ref())))
    }

    /// The claims of `token` if it is genuine, of `kind`, and unexpired.
    pub fn verify(
        &self,
        token: &str,
        kind: TokenKind,
        now_unix_s: i64,
    ) -> Result<Claims, TokenError> {
        let (payload_hex, tag_hex) = token.split_once('.').ok_or(TokenError::Malformed)?;
        let payload = unhex(payload_hex).ok_or(TokenError::Malformed)?;
        let tag = unhex(tag_hex).ok_or(TokenError::Malformed)?;
        // The MAC first, in constant time: nothing unauthenticated is parsed.
        hmac::verify(&self.key, &payload, &tag).map_err(|_| TokenError::BadSignature)?;
        let payload = String::from_utf8(payload).map_err(|_| TokenError::Malformed)?;
        let fields: Vec<&str> = payload.split('\n').collect();
        let [found_kind, role, name, expires, nonce] = fields[..] else {
            return Err(TokenError::Malformed);
        };
        let found_kind = match found_kind {
            "login" => TokenKind::Login,
            "session" => TokenKind::Session,
            _ => return Err(TokenError::Malformed),
        };
        if found_kind != kind {
            return Err(TokenError::WrongKind {
                expected: kind.as_str(),
                found: found_kind.as_str(),
            });
        }
        let expires_unix_s: i64 = expires.parse().map_err(|_| TokenError::Malformed)?;
        if now_unix_s >= expires_unix_s {
            return Err(TokenError::Expired {
                expired_unix_s: expires_unix_s,
            });
        }
        let nonce: [u8; NONCE_BYTES] = unhex(nonce)
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or(TokenError::Malformed)?;
        Ok(Claims {
            kind,
            role: role.parse()?,
            name: name.to_owned(),
            expires_unix_s,
            nonce,
        })
    }

    /// The CSRF token of a session: its write forms carry it.
    pub fn csrf_token(&self, session: &Claims) -> String {
        hex(hmac::sign(&self.key, &csrf_message(session)).as_ref())
    }

    /// Checks a form's CSRF token against the session, in constant time.
    pub fn check_csrf(&self, session: &Claims, presented: &str) -> Result<(), TokenError> {
        let tag = unhex(presented).ok_or(TokenError::BadCsrf)?;
        hmac::verify(&self.key, &csrf_message(session), &tag).map_err(|_| TokenError::BadCsrf)
    }
}

fn csrf_message(session: &Claims) -> Vec<u8> {
    let mut message = b"csrf\n".to_vec();
    message.extend_from_slice(&session.nonce);
    message
}

/// Log-in tokens already redeemed, until they expire: a link works once.
#[derive(Debug, Default)]
pub struct LoginRedemptions {
    used: BTreeMap<[u8; NONCE_BYTES], i64>,
}

impl LoginRedemptions {
    /// Marks a verified log-in token used; refuses it if it was.
    pub fn redeem(&mut self, login: &Claims, now_unix_s: i64) -> Result<(), TokenError> {
        self.used.retain(|_, expires| *expires > now_unix_s);
        if self.used.contains_key(&login.nonce) {
            return Err(TokenError::AlreadyUsed);
        }
        self.used.insert(login.nonce, login.expires_unix_s);
        Ok(())
    }
}

/// Names are printable and short: they go into the audit log and pages.
pub fn validate_name(name: &str) -> Result<(), TokenError> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(())
    } else {
        Err(TokenError::InvalidName)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&text[at..at + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;

    const NOW: i64 = 1_800_000_000;
    const HOURS_8: Duration = Duration::from_secs(8 * 3600);

    fn key() -> ConsoleKey {
        ConsoleKey::from_bytes(&ConsoleKey::generate_bytes(&SystemRandom::new()).unwrap()).unwrap()
    }

    fn issue(key: &ConsoleKey, kind: TokenKind, role: ConsoleRole) -> String {
        key.issue(kind, role, "ada", NOW, HOURS_8, &SystemRandom::new())
            .unwrap()
    }

    #[test]
    fn a_genuine_token_verifies_until_it_expires() {
        let key = key();
        let token = issue(&key, TokenKind::Login, ConsoleRole::Auditor);
        let claims = key.verify(&token, TokenKind::Login, NOW + 60).unwrap();
        assert_eq!(claims.role, ConsoleRole::Auditor);
        assert_eq!(claims.name, "ada");
        assert_eq!(claims.expires_unix_s, NOW + 8 * 3600);
        assert_eq!(
            key.verify(&token, TokenKind::Login, NOW + 8 * 3600),
            Err(TokenError::Expired {
                expired_unix_s: NOW + 8 * 3600
            })
        );
    }

    #[test]
    fn a_tampered_token_or_another_key_is_refused() {
        let key = key();
        let token = issue(&key, TokenKind::Session, ConsoleRole::Auditor);
        // Turn the auditor into an operator in the payload: the MAC fails.
        let (payload, tag) = token.split_once('.').unwrap();
        let text = String::from_utf8(unhex(payload).unwrap()).unwrap();
        let forged = format!(
            "{}.{tag}",
            hex(text.replace("auditor", "operator").as_bytes())
        );
        assert_eq!(
            key.verify(&forged, TokenKind::Session, NOW),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            self::key().verify(&token, TokenKind::Session, NOW),
            Err(TokenError::BadSignature)
        );
        for garbage in ["", "abc", "zz.zz", "00.", ".00"] {
            assert!(
                key.verify(garbage, TokenKind::Session, NOW).is_err(),
                "{garbage}"
            );
        }
    }

    #[test]
    fn a_login_token_is_not_a_session_and_works_once() {
        let key = key();
        let login = issue(&key, TokenKind::Login, ConsoleRole::Operator);
        assert_eq!(
            key.verify(&login, TokenKind::Session, NOW),
            Err(TokenError::WrongKind {
                expected: "session",
                found: "login"
            })
        );
        let claims = key.verify(&login, TokenKind::Login, NOW).unwrap();
        let mut redemptions = LoginRedemptions::default();
        assert_eq!(redemptions.redeem(&claims, NOW), Ok(()));
        assert_eq!(
            redemptions.redeem(&claims, NOW + 1),
            Err(TokenError::AlreadyUsed)
        );
    }

    #[test]
    fn csrf_tokens_belong_to_one_session() {
        let key = key();
        let first = key
            .verify(
                &issue(&key, TokenKind::Session, ConsoleRole::Operator),
                TokenKind::Session,
                NOW,
            )
            .unwrap();
        let second = key
            .verify(
                &issue(&key, TokenKind::Session, ConsoleRole::Operator),
                TokenKind::Session,
                NOW,
            )
            .unwrap();
        let csrf = key.csrf_token(&first);
        assert_eq!(key.check_csrf(&first, &csrf), Ok(()));
        assert_eq!(key.check_csrf(&second, &csrf), Err(TokenError::BadCsrf));
        assert_eq!(key.check_csrf(&first, ""), Err(TokenError::BadCsrf));
    }

    #[test]
    fn names_roles_and_validity_are_checked() {
        let key = key();
        let random = SystemRandom::new();
        for name in ["", "a b", "<script>", &"x".repeat(65)] {
            assert_eq!(
                key.issue(
                    TokenKind::Login,
                    ConsoleRole::Operator,
                    name,
                    NOW,
                    HOURS_8,
                    &random
                ),
                Err(TokenError::InvalidName),
                "{name}"
            );
        }
        assert_eq!(
            key.issue(
                TokenKind::Login,
                ConsoleRole::Operator,
                "ada",
                NOW,
                Duration::ZERO,
                &random
            ),
            Err(TokenError::InvalidValidity)
        );
        assert_eq!(
            "root".parse::<ConsoleRole>(),
            Err(TokenError::UnknownRole("root".to_owned()))
        );
        assert_eq!(
            ConsoleKey::from_bytes(&[0; 5]).unwrap_err(),
            TokenError::KeyLength(5)
        );
    }
}
