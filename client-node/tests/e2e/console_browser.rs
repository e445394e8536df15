//! The web console in a real headless Chromium (driven over WebDriver by
//! `support::webdriver`), against a real coordinator and a real node over
//! mTLS, on data seeded with known personal values:
//! - an operator and an auditor log in with one-time links; a used, tampered
//!   or expired link is refused;
//! - the job page follows a running job live to its end, with no navigation
//!   by the test, through the server-sent events;
//! - the auditor sees no cancel button and the server refuses its cancel;
//!   the auditor sees no start form and the server refuses its start;
//!   the operator starts a second job by pasting its job file; a cross-site
//!   POST and a same-site POST without the CSRF token are refused; the
//!   operator cancels the second job;
//! - the privacy chart has one point per ledger charge with the ledger's values;
//! - no page carries a seeded personal value in any form;
//! - log-ins, failed log-ins and writes are in the audit log.
//!
//! Screenshots of every page go to `<target>/tmp/console-screenshots/`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use client_node::config::NodeConfig;
use coordinator::CoordinatorConfig;
use coordinator::console::{CONSOLE_KEY_FILE, ConsoleConfig, ConsoleIdentity, login_link};
use serde_json::{Value, json};
use veil_console::token::{ConsoleKey, ConsoleRole, TokenKind};
use veil_pki::{LocalPki, Role};
use veil_privacy_ledger::{AuditorReport, SqliteLedger};

use crate::support;
use crate::support::seeded::{contains, forbidden_forms, seed_data, single_node_job};
use crate::support::webdriver::{Browser, Driver, install_chromedriver};

const ROUNDS: u32 = 6;
const NODE_ID: &str = "partner-console-test";

fn screenshot_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Reads a value from the page, retrying while the page reloads itself.
async fn read(browser: &Browser<'_>, script: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match browser.execute(script, json!([])).await {
            Ok(value) => return value,
            Err(error) => assert!(
                Instant::now() < deadline,
                "reading the page failed for 30 s: {error}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (30 s at most) until `script` returns `expected`, as pages reload.
async fn wait_for(browser: &Browser<'_>, script: &str, expected: Value) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = read(browser, script).await;
        if found == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "waited 30 s for {expected}, the page shows {found}: {}",
            browser.html().await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const VIEWER: &str =
    "const viewer = document.getElementById('viewer'); return viewer ? viewer.textContent : '';";
const STATE: &str =
    "const state = document.getElementById('state'); return state ? state.textContent : '';";

/// A POST from inside the page (same origin, the session cookie sent),
/// returning the status code.
async fn post_from_page(browser: &Browser<'_>, path: &str, body: &str) -> u64 {
    browser
        .execute_async(
            "const done = arguments[arguments.length - 1];
             fetch(arguments[0], {method: 'POST', body: arguments[1],
               headers: {'Content-Type': 'application/x-www-form-urlencoded'}})
               .then(response => done(response.status)).catch(error => done(String(error)));",
            json!([path, body]),
        )
        .await
        .unwrap()
        .as_u64()
        .unwrap_or_else(|| panic!("the POST to {path} did not complete"))
}

/// `job` as the text of a job file, built from the standard job's
/// template by typed edits (TOML values, not text), and checked to read
/// back as `job`.
fn job_file_text(synth: &veil_synth_data::SynthConfig, job: &veil_job::file::JobFile) -> String {
    let template = veil_job::STANDARD_JOB
        .replace(
            "{cutoff}",
            &synth.suggested_cutoff().format("%Y-%m-%d").to_string(),
        )
        .replace("{horizon}", &synth.suggested_horizon_days().to_string());
    let mut table: toml::Table = toml::from_str(&template).unwrap();
    table.insert("rounds".to_owned(), i64::from(job.rounds).into());
    table.insert(
        "min_participants".to_owned(),
        i64::from(job.min_participants).into(),
    );
    table.insert(
        "max_participants".to_owned(),
        i64::from(job.max_participants).into(),
    );
    if let (Some(toml::Value::Table(aggregation)), Some(mode)) =
        (table.get_mut("aggregation"), &job.aggregation.mode)
    {
        aggregation.insert("mode".to_owned(), mode.clone().into());
    }
    let text = toml::to_string(&table).unwrap();
    assert_eq!(
        veil_job::file::JobFile::parse(&text).unwrap().to_wire(),
        job.to_wire(),
        "the job file text reads back as the job"
    );
    text
}

/// `application/x-www-form-urlencoded` escaping of a form value.
fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (byte as char).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

fn assert_no_personal_value(page: &str, html: &str, secrets: &[String]) {
    for secret in secrets {
        for form in forbidden_forms(secret) {
            assert!(
                !contains(html.as_bytes(), &form),
                "the {page} page carries a form of a seeded personal value ({form})"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_chromium_follows_a_job_and_enforces_roles_tokens_and_csrf() {
    let chromedriver = install_chromedriver();
    let _machine = support::whole_machine().await;
    let dir = tempfile::tempdir().unwrap();
    let screenshots = screenshot_dir();
    let (seeded, synth) = seed_data(dir.path());

    // A federation over mTLS, as `coordinator ca issue` would make it.
    let pki = LocalPki::create(&dir.path().join("pki")).unwrap();
    let coordinator_files = pki.coordinator().unwrap();
    let operator_files = pki.member(Role::Operator, "operator").unwrap();
    pki.member(Role::Node, NODE_ID).unwrap();
    let state_dir = dir.path().join("coordinator.state");
    let console = ConsoleConfig::bind(
        "127.0.0.1:0".parse().unwrap(),
        ConsoleIdentity::SelfSigned {
            hosts: vec!["127.0.0.1".to_owned()],
        },
    )
    .unwrap();
    let console_url = format!("https://{}", console.local_addr().unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().unwrap().port()
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(coordinator::run(
        CoordinatorConfig {
            state_dir: Some(state_dir.clone()),
            console: Some(console),
            ..CoordinatorConfig::mtls(
                coordinator_files
                    .server(pki.revocations().unwrap())
                    .unwrap(),
            )
        },
        listener,
        async {
            let _ = stopped.await;
        },
    ));
    let nodes = support::start_nodes(vec![NodeConfig {
        node_id: NODE_ID.to_owned(),
        tls_dir: Some(pki.folder(NODE_ID)),
        insecure_dev: false,
        coordinator: address.clone(),
        data: seeded.config.clone(),
        state_dir: Some(dir.path().join("console-node.state")),
        policy: client_node::policy::NodePolicy {
            allow_plain_aggregation: true,
            ..Default::default()
        },
        privacy_audit_kit: None,
    }])
    .await;
    let mut operator =
        coordinator::operator::connect(&address, Some(&operator_files.client().unwrap()))
            .await
            .unwrap();
    let job_file = single_node_job(&synth, ROUNDS);
    let job = job_file.to_wire();
    let spec = veil_job::JobSpec::from_wire(&job).unwrap();
    let job_id = coordinator::operator::submit(&mut operator, job.clone())
        .await
        .unwrap();

    let driver = Driver::start(&chromedriver).await;
    let link = |role, name: &str| {
        login_link(
            &state_dir,
            &console_url,
            role,
            name,
            Duration::from_secs(8 * 3600),
        )
        .unwrap()
    };

    // Log-in links: used once; a tampered, an expired or a missing one is refused.
    let as_operator = driver.browser().await;
    let operator_link = link(ConsoleRole::Operator, "olivia");
    as_operator.goto(&operator_link).await;
    // The link's page moves on to the jobs by itself, logged in.
    wait_for(&as_operator, VIEWER, json!("olivia (operator)")).await;
    let cookie = as_operator
        .cookies()
        .await
        .into_iter()
        .find(|cookie| cookie["name"] == json!("veil_session"))
        .expect("a session cookie");
    assert_eq!(cookie["httpOnly"], json!(true), "{cookie}");
    assert_eq!(cookie["secure"], json!(true), "{cookie}");
    assert_eq!(cookie["sameSite"], json!("Strict"), "{cookie}");

    let intruder = driver.browser().await;
    intruder.goto(&operator_link).await;
    assert!(
        intruder.html().await.contains("already used"),
        "a link works once"
    );
    let (payload, tag) = operator_link.rsplit_once('.').unwrap();
    let flipped = if tag.starts_with('0') { "1" } else { "0" };
    intruder
        .goto(&format!("{payload}.{flipped}{}", &tag[1..]))
        .await;
    assert!(intruder.html().await.contains("signature does not verify"));
    let key =
        ConsoleKey::from_bytes(&std::fs::read(state_dir.join(CONSOLE_KEY_FILE)).unwrap()).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let expired = key
        .issue(
            TokenKind::Login,
            ConsoleRole::Operator,
            "mallory",
            now - 7200,
            Duration::from_secs(3600),
            &ring::rand::SystemRandom::new(),
        )
        .unwrap();
    intruder
        .goto(&format!("{console_url}/login?token={expired}"))
        .await;
    let refused = intruder.html().await;
    assert!(
        refused.contains("Log-in refused") && refused.contains("expired"),
        "{refused}"
    );
    intruder
        .screenshot(&screenshots.join("login-refused.png"))
        .await;
    intruder.goto(&format!("{console_url}/jobs")).await;
    assert!(intruder.html().await.contains("Not logged in"));

    let as_auditor = driver.browser().await;
    as_auditor.goto(&link(ConsoleRole::Auditor, "arthur")).await;
    wait_for(&as_auditor, VIEWER, json!("arthur (auditor)")).await;

    // The auditor's page of the job, before it starts: no cancel button,
    // and the server refuses the auditor's cancel.
    as_auditor
        .goto(&format!("{console_url}/jobs/{job_id}"))
        .await;
    let auditor_page = as_auditor.html().await;
    assert!(
        !auditor_page.contains("id=\"cancel\""),
        "no cancel for an auditor"
    );
    assert!(!auditor_page.contains("Cancel job"));
    as_auditor
        .screenshot(&screenshots.join("job-auditor.png"))
        .await;
    // Even with a CSRF token of its own making, the server refuses.
    assert_eq!(
        post_from_page(&as_auditor, &format!("/jobs/{job_id}/cancel"), "csrf=00").await,
        403
    );

    // The job runs; the operator's page follows it live to the end. The page
    // is open before the job starts, so it cannot miss the running state.
    as_operator
        .goto(&format!("{console_url}/jobs/{job_id}"))
        .await;
    // A mark on the loaded page: it survives updates made in place and is
    // gone after a reload.
    read(&as_operator, "window.loadedOnce = true; return true;").await;
    coordinator::operator::start(&mut operator, &job_id)
        .await
        .unwrap();
    let mut progress_seen = BTreeSet::new();
    let mut states_seen = BTreeSet::new();
    let mut cancel_seen = false;
    // Rounds shown, with the round rows on the page, while the first load
    // was still on screen.
    let mut in_place: BTreeMap<String, i64> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let seen = read(
            &as_operator,
            "const state = document.getElementById('state'); const rounds = document.getElementById('rounds');
             return state && rounds ? [state.textContent, rounds.textContent, !!document.getElementById('cancel'),
               window.loadedOnce === true, document.querySelectorAll('#round-table tr.round').length] : null;",
        )
        .await;
        if let Some([state, rounds, cancel, first_load, rows]) =
            seen.as_array().map(|values| values.as_slice())
        {
            let state = state.as_str().unwrap_or_default().to_owned();
            cancel_seen |= state == "running" && cancel == &json!(true);
            progress_seen.insert(rounds.as_str().unwrap_or_default().to_owned());
            if first_load == &json!(true) {
                in_place.insert(
                    rounds.as_str().unwrap_or_default().to_owned(),
                    rows.as_i64().unwrap_or_default(),
                );
            }
            states_seen.insert(state.clone());
            if state == "succeeded" {
                break;
            }
            assert!(
                matches!(state.as_str(), "pending" | "running"),
                "the job ended {state}: {}",
                as_operator.html().await
            );
        }
        assert!(
            Instant::now() < deadline,
            "the job page did not reach the job's end in 240 s; saw {progress_seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        as_operator
            .url()
            .await
            .ends_with(&format!("/jobs/{job_id}")),
        "the page moved on by itself"
    );
    assert!(states_seen.contains("running"), "{states_seen:?}");
    assert!(
        cancel_seen,
        "an operator sees the cancel button while the job runs"
    );
    assert!(
        progress_seen.len() >= 2 && progress_seen.contains(&ROUNDS.to_string()),
        "the page showed the rounds advance live: {progress_seen:?}"
    );
    // The page followed the job without reloading: its first load showed
    // rounds completing, each with its row added in place; it reloaded
    // once, at the end (the mark is gone).
    assert!(
        in_place.keys().filter(|rounds| *rounds != "0").count() >= 1,
        "no round completed while the first load was on screen: {in_place:?}"
    );
    for (rounds, rows) in &in_place {
        assert_eq!(
            rounds.parse::<i64>().ok(),
            Some(*rows),
            "rounds shown against rows on the page: {in_place:?}"
        );
    }
    assert_eq!(
        read(&as_operator, "return window.loadedOnce === true;").await,
        json!(false),
        "the finished job's page is a fresh load"
    );
    as_operator
        .screenshot(&screenshots.join("job-operator.png"))
        .await;

    // A second job, started from the console by the operator and cancelled
    // by the operator; CSRF and cross-site refusals first. It waits for a
    // second node that never comes, so it runs until cancelled.
    let mut long_job = job_file.clone();
    long_job.min_participants = 2;
    long_job.max_participants = 2;
    let long_job_text = job_file_text(&synth, &long_job);
    // The auditor has no start form, and the server refuses its start.
    as_auditor.goto(&format!("{console_url}/jobs")).await;
    assert!(!as_auditor.html().await.contains("id=\"start\""));
    assert_eq!(
        post_from_page(
            &as_auditor,
            "/jobs",
            &format!("csrf=00&job={}", percent_encode(&long_job_text))
        )
        .await,
        403
    );
    // The operator pastes the job file into the jobs page's form.
    as_operator.goto(&format!("{console_url}/jobs")).await;
    as_operator
        .screenshot(&screenshots.join("jobs-start-form.png"))
        .await;
    as_operator
        .execute(
            "document.getElementById('job-text').value = arguments[0];
             document.querySelector('#start button').click();",
            json!([long_job_text]),
        )
        .await
        .unwrap();
    wait_for(&as_operator, STATE, json!("running")).await;
    let started_url = as_operator.url().await;
    let second = started_url
        .rsplit_once("/jobs/")
        .map(|(_, job)| job.to_owned())
        .unwrap_or_else(|| panic!("the start form led to {started_url}"));
    assert_ne!(second, job_id);
    assert_eq!(
        post_from_page(&as_operator, &format!("/jobs/{second}/cancel"), "").await,
        403,
        "a same-site POST without the CSRF token"
    );
    // A page on another origin posts the cancel form: the Strict cookie stays home.
    as_operator
        .goto(&format!(
            "data:text/html,<form id=f method=post action=\"{console_url}/jobs/{second}/cancel\"></form><script>document.getElementById('f').submit()</script>"
        ))
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let html = as_operator.html().await;
        if html.contains("Not logged in") || html.contains("Refused") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the cross-site POST got no answer: {html}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    as_operator
        .goto(&format!("{console_url}/jobs/{second}"))
        .await;
    // The refused POSTs changed nothing.
    wait_for(&as_operator, STATE, json!("running")).await;
    as_operator
        .execute(
            "document.querySelector('#cancel button').click();",
            json!([]),
        )
        .await
        .unwrap();
    wait_for(&as_operator, STATE, json!("cancelled")).await;

    // Every page: a screenshot, and no seeded personal value in any form.
    let mut pages = Vec::new();
    for (name, path) in [
        ("federation", "/federation".to_owned()),
        ("jobs", "/jobs".to_owned()),
        ("job", format!("/jobs/{job_id}")),
        ("privacy", "/privacy".to_owned()),
        ("audit", "/audit".to_owned()),
        ("report", format!("/jobs/{job_id}/report")),
    ] {
        as_auditor.goto(&format!("{console_url}{path}")).await;
        as_auditor
            .screenshot(&screenshots.join(format!("{name}.png")))
            .await;
        let html = as_auditor.html().await;
        assert_no_personal_value(name, &html, &seeded.secrets);
        pages.push((name, html));
    }
    let federation = &pages[0].1;
    assert!(
        federation.contains(NODE_ID) && federation.contains("online"),
        "{federation}"
    );
    // The node's certificate expiry from the CA journal, and its version.
    assert!(
        federation.contains("expires ") && federation.contains("(in 6 days)"),
        "{federation}"
    );
    assert!(
        federation.contains(concat!("client-node ", env!("CARGO_PKG_VERSION"))),
        "{federation}"
    );

    // The privacy chart: one point per ledger charge, with the ledger's values.
    as_auditor.goto(&format!("{console_url}/privacy")).await;
    let points = read(
        &as_auditor,
        "return Array.from(document.querySelectorAll('section.chart')).filter(s => s.dataset.job === arguments[0])
           .flatMap(s => Array.from(s.querySelectorAll('.point')).map(p =>
             [s.dataset.unit, p.dataset.partner, Number(p.dataset.round), Number(p.dataset.epsilon), p.dataset.mechanism]));"
            .replace("arguments[0]", &format!("'{job_id}'"))
            .as_str(),
    )
    .await;
    let points = points.as_array().cloned().unwrap_or_default();
    // Hovering a point shows its round, mechanism and charge.
    let detail = as_auditor
        .execute(
            "const point = document.querySelector('.point');
             point.dispatchEvent(new MouseEvent('mouseover', {bubbles: true}));
             return document.getElementById('point-detail').textContent;",
            json!([]),
        )
        .await
        .unwrap();
    let detail = detail.as_str().unwrap_or_default();
    assert!(
        detail.contains("round")
            && detail.contains("this charge ε")
            && detail.contains("noise multiplier"),
        "{detail}"
    );

    // The audit log holds the log-ins, the refusals and the cancel.
    as_auditor
        .goto(&format!("{console_url}/audit?actor=console"))
        .await;
    let audit_page = as_auditor.html().await;

    as_operator.close().await;
    as_auditor.close().await;
    intruder.close().await;
    drop(driver);
    let _ = stop.send(());
    let _ = server.await;
    for node in nodes {
        node.abort();
    }

    let ledger = SqliteLedger::open(&state_dir.join("ledger.sqlite")).unwrap();
    let charges = ledger.charges_for_job(&job_id).unwrap();
    let report =
        AuditorReport::build(&charges, &[spec.privacy.job_budget(&job_id)], &[], now).unwrap();
    let expected: Vec<(String, String, u64, f64)> = report
        .series
        .iter()
        .filter(|series| series.job_id == job_id)
        .flat_map(|series| {
            series.points.iter().map(|point| {
                (
                    series.unit.name().to_owned(),
                    series.partner_id.clone(),
                    point.round,
                    point.epsilon_rdp,
                )
            })
        })
        .collect();
    assert!(!expected.is_empty(), "the job charged nothing");
    assert_eq!(
        points.len(),
        expected.len(),
        "one point per charge: {points:?} against {expected:?}"
    );
    for (shown, (unit, partner, round, epsilon)) in points.iter().zip(&expected) {
        assert_eq!(shown[0], json!(unit), "{shown}");
        assert_eq!(shown[1], json!(partner), "{shown}");
        assert_eq!(shown[2].as_u64(), Some(*round), "{shown}");
        // Both sides compose the same mechanisms in the same order with
        // the same accountant; only printing could differ, and Rust prints
        // the shortest text that reads back to the same f64.
        let shown_epsilon = shown[3].as_f64().unwrap();
        assert!(
            (shown_epsilon - epsilon).abs() <= 1e-12 * epsilon.abs().max(1.0),
            "{shown} against {epsilon}"
        );
    }

    for expected in [
        "console log-in: operator olivia",
        "console log-in: auditor arthur",
        "console/auditor/arthur",
        "an auditor may not cancel jobs",
        "console: cancelled job",
        "console: started job",
    ] {
        assert!(
            audit_page.contains(expected),
            "{expected} not in the audit page"
        );
    }
    let log = std::fs::read_to_string(state_dir.join("audit.log")).unwrap();
    for expected in [
        "console log-in",
        "this log-in link was already used",
        "the token's signature does not verify",
        "the token expired",
        "the form's CSRF token is missing or wrong",
        &format!("console: cancelled job {second}"),
        &format!("console: started job {second}"),
        "an auditor may not start jobs",
    ] {
        assert!(log.contains(expected), "{expected} not in the audit log");
    }
}
