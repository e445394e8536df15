//! A job never waits forever: over real gRPC, a job submitted to a
//! federation whose nodes are gone fails after its `wait_for_nodes_secs`
//! with a reason that names the numbers, and the operator's `watch` ends
//! with it.

use std::time::Duration;

use coordinator::CoordinatorConfig;
use coordinator::operator::WatchUpdate;
use veil_wire::v1;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_without_nodes_fails_after_its_wait_and_watch_returns() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(coordinator::run(
        CoordinatorConfig {
            state_dir: Some(dir.path().join("coordinator.state")),
            ..CoordinatorConfig::insecure_development()
        },
        listener,
        async {
            let _ = stopped.await;
        },
    ));
    let text = client_node::demo::STANDARD_JOB
        .replace("{cutoff}", "2024-10-02")
        .replace("{horizon}", "90")
        .replace("[timeouts]", "[timeouts]\nwait_for_nodes_secs = 2");
    assert!(
        text.contains("wait_for_nodes_secs = 2"),
        "the template has no [timeouts]"
    );
    let spec = veil_job::file::JobFile::parse(&text).unwrap().to_wire();

    let mut operator = coordinator::operator::connect(&address, None)
        .await
        .unwrap();
    let job_id = coordinator::operator::submit(&mut operator, spec)
        .await
        .unwrap();
    coordinator::operator::start(&mut operator, &job_id)
        .await
        .unwrap();
    let mut messages = Vec::new();
    // The deadline of this wait is the test's own: far above the job's 2 s.
    let status = tokio::time::timeout(
        Duration::from_secs(60),
        coordinator::operator::watch(&mut operator, &job_id, |update| {
            if let WatchUpdate::Message(message) = update {
                messages.push(message.to_owned());
            }
        }),
    )
    .await
    .expect("watch returns once the job has failed")
    .unwrap();
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
        messages
            .iter()
            .any(|message| message.starts_with("job failed: ") && message.contains("waited 2 s")),
        "{messages:?}"
    );
    let _ = stop.send(());
    let _ = server.await;
}
