//! A job never waits forever: over real gRPC, a job submitted to a
//! federation whose nodes are gone fails after its `wait_for_nodes_secs`
//! with a reason that names the numbers, and the operator's `watch` ends
//! with it.

use std::time::Duration;

use veil_wire::v1;

mod support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_without_nodes_fails_after_its_wait_and_watch_returns() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = support::Coordinator::start(dir.path().join("coordinator.state")).await;
    let text = veil_job::STANDARD_JOB
        .replace("{cutoff}", "2024-10-02")
        .replace("{horizon}", "90")
        .replace("[timeouts]", "[timeouts]\nwait_for_nodes_secs = 2");
    assert!(
        text.contains("wait_for_nodes_secs = 2"),
        "the template has no [timeouts]"
    );
    let spec = veil_job::file::JobFile::parse(&text).unwrap().to_wire();

    let mut operator = coordinator.operator().await;
    let job_id = coordinator::operator::submit(&mut operator, spec)
        .await
        .unwrap();
    coordinator::operator::start(&mut operator, &job_id)
        .await
        .unwrap();
    // The deadline of this wait is the test's own: far above the job's 2 s.
    let (status, transcript) =
        support::watch_to_end(&mut operator, &job_id, Duration::from_secs(60)).await;
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
