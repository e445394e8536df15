//! The operators' and auditors' web console, as plain functions: signed,
//! expiring log-in links and sessions with their CSRF tokens ([`token`]),
//! the privacy page's ε figures composed from ledger charges ([`privacy`]),
//! and the server-rendered pages ([`pages`]), which take plain data structs
//! and escape every piece of text they print ([`html`]).
//!
//! What this crate does *not* do: HTTP, TLS or server-sent events (the
//! coordinator's thin console server does), read the engine, the ledger or
//! the audit log (the server gathers the data and passes charges in), or
//! read the clock (every check takes `now`).

#![forbid(unsafe_code)]

pub mod html;
pub mod pages;
pub mod privacy;
pub mod token;
