//! kill -9 of a real writer process in the middle of its saves leaves the
//! store at a whole committed snapshot, never a mix.
//!
//! This file has its own `main` (`harness = false`): run with
//! `--crash-writer <path> <first version>` it is the child that saves
//! snapshots of growing version forever and reports each commit on stdout;
//! otherwise it is the parent, which kills such children with SIGKILL and
//! checks what survived.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::{NameCodec, TestJob, model, synthetic_snapshot};
use veil_federation::store::JobStore;
use veil_job_store::SqliteJobStore;

/// Large enough that a save (a 0.8 MB checkpoint plus fsync) takes long
/// compared with reading a line, so most kills land inside a transaction.
const PARAMETERS: usize = 200_000;
const JOB: &str = "job-1";
/// Kill cycles; each restarts the writer from what survived.
const CYCLES: u32 = 4;
/// Commits the parent waits for in each cycle before killing.
const COMMITS_BEFORE_KILL: u32 = 3;

fn open(path: &Path) -> SqliteJobStore<TestJob> {
    SqliteJobStore::open(path, NameCodec).unwrap_or_else(|error| panic!("open {path:?}: {error}"))
}

/// The child: saves version after version, announcing each commit.
fn crash_writer(path: &Path, first_version: u32) -> ! {
    let mut store = open(path);
    let stdout = std::io::stdout();
    for version in first_version.. {
        store
            .save(&synthetic_snapshot(JOB, PARAMETERS, version))
            .unwrap_or_else(|error| panic!("child save {version}: {error}"));
        let mut out = stdout.lock();
        let reported = writeln!(out, "{version}").and_then(|()| out.flush());
        if reported.is_err() {
            // The parent stopped listening; nothing more to prove.
            std::process::exit(0);
        }
    }
    std::process::exit(0)
}

fn spawn_writer(path: &Path, first_version: u32) -> Child {
    let executable = std::env::current_exe().unwrap_or_else(|error| panic!("current_exe: {error}"));
    Command::new(executable)
        .arg("--crash-writer")
        .arg(path)
        .arg(first_version.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("spawn writer: {error}"))
}

/// Lets the child commit a few versions, then kills it with SIGKILL; returns
/// the last version it reported as committed.
fn kill_after_commits(mut child: Child) -> u32 {
    let Some(stdout) = child.stdout.take() else {
        panic!("writer has no stdout");
    };
    let mut last_reported = None;
    for (count, line) in BufReader::new(stdout).lines().enumerate() {
        let line = line.unwrap_or_else(|error| panic!("reading the writer: {error}"));
        last_reported = Some(
            line.trim()
                .parse::<u32>()
                .unwrap_or_else(|error| panic!("{line:?}: {error}")),
        );
        if count + 1 >= COMMITS_BEFORE_KILL as usize {
            break;
        }
    }
    // std's kill is SIGKILL on Unix: no destructor, no rollback, no flush.
    child.kill().unwrap_or_else(|error| panic!("kill: {error}"));
    let status = child.wait().unwrap_or_else(|error| panic!("wait: {error}"));
    assert!(
        !status.success(),
        "the writer was killed, not finished: {status}"
    );
    last_reported.unwrap_or_else(|| panic!("the writer committed nothing"))
}

fn parent() {
    let directory = tempfile::tempdir().unwrap_or_else(|error| panic!("tempdir: {error}"));
    let path = directory.path().join("coordinator.sqlite");
    let mut next_version = 0;
    for cycle in 1..=CYCLES {
        let last_reported = kill_after_commits(spawn_writer(&path, next_version));
        let store = open(&path);
        let snapshots = store
            .load_all()
            .unwrap_or_else(|error| panic!("cycle {cycle}: {error}"));
        assert_eq!(snapshots.len(), 1, "cycle {cycle}");
        let recovered = &snapshots[0];
        // The child may have committed one more version than it reported
        // before the signal arrived, never less and never two more.
        let version = recovered.model_version;
        assert!(
            version == last_reported || version == last_reported + 1,
            "cycle {cycle}: reported {last_reported}, recovered {version}"
        );
        assert_eq!(
            *recovered,
            synthetic_snapshot(JOB, PARAMETERS, version),
            "cycle {cycle}"
        );
        let versions = store
            .model_versions(JOB)
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(versions, (0..=version).collect::<Vec<_>>(), "cycle {cycle}");
        let first = store
            .model_checkpoint(JOB, 0)
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(first, Some(model(PARAMETERS, 0)), "cycle {cycle}");
        println!(
            "cycle {cycle}: killed after version {last_reported}, recovered version {version}"
        );
        next_version = version + 1;
    }
}

fn main() {
    let arguments: Vec<String> = std::env::args().collect();
    if let [_, flag, path, first_version] = arguments.as_slice()
        && flag == "--crash-writer"
    {
        let first_version = first_version
            .parse()
            .unwrap_or_else(|error| panic!("first version {first_version:?}: {error}"));
        crash_writer(Path::new(path), first_version);
    }
    // `cargo test` passes libtest's options and name filters; this file has
    // one test, listed on `--list` and skipped when a filter excludes it.
    const NAME: &str = "kill_9_mid_save_leaves_a_whole_snapshot";
    if arguments.iter().any(|argument| argument == "--list") {
        println!("{NAME}: test");
        return;
    }
    let filters: Vec<&String> = arguments
        .iter()
        .skip(1)
        .filter(|argument| !argument.starts_with('-'))
        .collect();
    if !filters.is_empty() && !filters.iter().any(|filter| NAME.contains(filter.as_str())) {
        println!("test result: ok. 0 passed; 1 filtered out");
        return;
    }
    parent();
    println!("test {NAME} ... ok");
}
