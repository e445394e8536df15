//! No code: this crate exists for its dependency list, which cargo-hakari
//! keeps equal to the union of the features every member uses (see
//! `scripts/workspace-hack`), so `cargo run -p veil-demo` and `cargo test
//! --workspace` compile each dependency once, the same way.
