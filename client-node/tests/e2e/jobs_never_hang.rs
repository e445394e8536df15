//! A job never waits forever: over real gRPC, a job submitted to a
//! federation whose nodes are gone fails after its `wait_for_nodes_secs`
//! with a reason that names the numbers, and the operator's `watch` ends
//! with it.

use std::time::Duration;

use veil_wire::v1;

use crate::support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_without_nodes_fails_after_its_wait_and_watch_returns() {
    let _machine = support::share_of_machine().await;
    let dir = tempfile::tempdir().unwrap();
    let coordinator = support::Coordinator::start(dir.path().join("coordinator.state")).await;
    let mut job = veil_job::standard_job("2024-10-02", 90);
    job.timeouts.wait_for_nodes_secs = Some(2.0);
    let spec = job.to_wire();

    let mut operator = coordinator.operator().await;
    // The deadline of this wait is the test's own: far above the job's 2 s.
    let (_, status, transcript) =
        support::run_job_to_end(&mut operator, spec, Duration::from_secs(60)).await;
    assert_eq!(
        v1::JobState::try_from(status.state),
        Ok(v1::JobState::Failed),
        "{status:?}"
    );
    assert!(
        status
            .failure_reason
            .contains("waited 2 s for nodes and only 0 are eligible; the phase needs 3"),
        "{}",
        status.failure_reason
    );
    assert!(
        transcript
            .lines()
            .any(|message| message.starts_with("job failed: ") && message.contains("waited 2 s")),
        "{transcript}"
    );
    coordinator.stop().await;
}
