//! The Grafana dashboard (`docs/grafana/veil.json`) reads only metrics the
//! coordinator and the node export, and every exported family is in
//! `docs/metrics.md`: the dashboard and the documentation cannot drift from
//! the code unnoticed.

use std::collections::BTreeSet;
use std::path::PathBuf;

use veil_metrics::{
    CoordinatorMetrics, DeclineLabels, EpsilonLabels, JobLabels, LimitLabels, NodeMetrics,
    PhaseLabels, PiiLabels, Registry, encode,
};

fn repository_file(path: &str) -> String {
    let full = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|error| panic!("{}: {error}", full.display()))
}

/// `(family, type)` of every family both binaries register, from the
/// `# TYPE` lines of their expositions. A family without samples is not
/// exposed, so each gets one; the destructuring names every field, so a
/// new metric does not compile here until it gets its sample too.
fn exported_families() -> Vec<(String, String)> {
    let mut registry = Registry::default();
    let coordinator = CoordinatorMetrics::register(&mut registry);
    let node = NodeMetrics::register(&mut registry);
    let CoordinatorMetrics {
        rounds_started,
        rounds_committed,
        rounds_failed,
        rounds_refused,
        phase_duration,
        received_bytes,
        sent_bytes,
        connected_nodes,
        registered_nodes,
        secure_dropouts,
        secure_recoveries,
        secure_failed_attempts,
        declines,
        replies_rejected,
        epsilon_spent,
        epsilon_budget,
        ledger_write,
        audit_write,
        requests_limited,
    } = &coordinator;
    let job = JobLabels::new("job-1");
    let phase = PhaseLabels::new("train");
    let epsilon = EpsilonLabels {
        job: "job-1".to_owned(),
        partner: "bank-a".to_owned(),
        unit: "customer".to_owned(),
    };
    for family in [
        rounds_started,
        rounds_committed,
        rounds_failed,
        rounds_refused,
    ] {
        family.get_or_create(&job).inc();
    }
    for family in [
        secure_dropouts,
        secure_recoveries,
        secure_failed_attempts,
        declines,
        replies_rejected,
    ] {
        family.get_or_create(&phase).inc();
    }
    phase_duration.get_or_create(&phase).observe(1.0);
    received_bytes.inc();
    sent_bytes.inc();
    connected_nodes.set(1);
    registered_nodes.set(1);
    epsilon_spent.get_or_create(&epsilon).set(0.5);
    epsilon_budget.get_or_create(&epsilon).set(1.0);
    ledger_write.observe(0.001);
    audit_write.observe(0.001);
    requests_limited
        .get_or_create(&LimitLabels::new("rate"))
        .inc();
    let NodeMetrics {
        rounds_joined,
        declines,
        releases_sent,
        results_refused,
        rows_accepted,
        rows_rejected,
        pii_redacted,
        records_suppressed,
        columns_pseudonymised,
        k_achieved,
    } = &node;
    let source = NodeMetrics::source("transactions");
    rounds_joined.get_or_create(&job).inc();
    declines
        .get_or_create(&DeclineLabels {
            phase: "train".to_owned(),
            code: "privacy-cap-exceeded".to_owned(),
        })
        .inc();
    releases_sent.get_or_create(&phase).inc();
    results_refused.get_or_create(&phase).inc();
    for family in [rows_accepted, rows_rejected, records_suppressed] {
        family.get_or_create(&source).inc();
    }
    pii_redacted
        .get_or_create(&PiiLabels {
            source: "transactions".to_owned(),
            kind: "email".to_owned(),
        })
        .inc();
    columns_pseudonymised.get_or_create(&source).set(1);
    k_achieved.get_or_create(&source).set(5);
    let exposition = encode(&registry).unwrap();
    exposition
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .map(|rest| {
            let (name, kind) = rest.split_once(' ').unwrap();
            (name.to_owned(), kind.to_owned())
        })
        .collect()
}

/// The series names a family's samples carry, as PromQL sees them.
fn series_names(family: &str, kind: &str) -> Vec<String> {
    match kind {
        "counter" => vec![format!("{family}_total")],
        "histogram" => ["_bucket", "_sum", "_count"]
            .iter()
            .map(|suffix| format!("{family}{suffix}"))
            .collect(),
        _ => vec![family.to_owned()],
    }
}

/// Every `veil_…` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut at = 0;
    while let Some(found) = text[at..].find("veil_") {
        let start = at + found;
        let preceded_by_name =
            start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        if !preceded_by_name {
            names.insert(text[start..end].to_owned());
        }
        at = end;
    }
    names
}

/// Every PromQL expression in the dashboard: panel targets and variable queries.
fn expressions(value: &serde_json::Value, found: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(fields) => {
            for (name, field) in fields {
                match (name.as_str(), field) {
                    ("expr" | "query" | "definition", serde_json::Value::String(text)) => {
                        found.push(text.clone())
                    }
                    _ => expressions(field, found),
                }
            }
        }
        serde_json::Value::Array(values) => {
            for value in values {
                expressions(value, found);
            }
        }
        _ => {}
    }
}

#[test]
fn the_dashboard_reads_only_exported_metrics() {
    let exported: BTreeSet<String> = exported_families()
        .iter()
        .flat_map(|(family, kind)| series_names(family, kind))
        .collect();
    let dashboard: serde_json::Value =
        serde_json::from_str(&repository_file("docs/grafana/veil.json")).unwrap();
    let mut queries = Vec::new();
    expressions(&dashboard, &mut queries);
    assert!(queries.len() >= 20, "{queries:?}");
    assert_eq!(exported_families().len(), 29, "every family is exposed");
    let referenced: BTreeSet<String> = queries
        .iter()
        .flat_map(|query| metric_names(query))
        .collect();
    let unknown: Vec<&String> = referenced.difference(&exported).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard reads metrics nothing exports: {unknown:?}"
    );
    // And it shows every family: a new metric gets a panel.
    let unshown: Vec<(String, String)> = exported_families()
        .into_iter()
        .filter(|(family, kind)| {
            !series_names(family, kind)
                .iter()
                .any(|series| referenced.contains(series))
        })
        .collect();
    assert!(
        unshown.is_empty(),
        "exported but not on the dashboard: {unshown:?}"
    );
}

#[test]
fn every_exported_metric_is_documented() {
    let documented = metric_names(&repository_file("docs/metrics.md"));
    let undocumented: Vec<String> = exported_families()
        .iter()
        .filter(|(family, kind)| {
            !series_names(family, kind)
                .iter()
                .chain(std::iter::once(family))
                .any(|name| documented.contains(name))
        })
        .map(|(family, _)| family.clone())
        .collect();
    assert!(
        undocumented.is_empty(),
        "exported but not in docs/metrics.md: {undocumented:?}"
    );
}

#[test]
fn metric_names_are_found_whole_and_only_as_names() {
    assert_eq!(
        metric_names("rate(veil_a_total[5m]) / veil_b_bucket{job=\"x\"} + xveil_c"),
        BTreeSet::from(["veil_a_total".to_owned(), "veil_b_bucket".to_owned()])
    );
}
