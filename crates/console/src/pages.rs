//! The console's pages, rendered from plain data: the server gathers the
//! structs, these functions only print them, escaping every string. Each
//! page is a whole document with the same navigation; the job page
//! subscribes to its job's server-sent events with a few lines of plain
//! JavaScript and reloads when the job moves on.

use std::fmt::Write as _;

use crate::html::escape;
use crate::token::ConsoleRole;

/// Who is looking, shown on every page and deciding which actions appear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Viewer {
    /// The person's name.
    pub name: String,
    /// Their role.
    pub role: ConsoleRole,
    /// The session's CSRF token, printed into write forms (operators only).
    pub csrf_token: String,
}

/// One member of the federation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its certificate name (a node's id).
    pub name: String,
    /// `coordinator`, `node`, `operator` or `auditor`.
    pub role: String,
    /// Certificate serial.
    pub serial: String,
    /// When the certificate expires, as text (UTC).
    pub certificate_expires: String,
    /// Why it was revoked, if it was.
    pub revoked: Option<String>,
    /// For nodes: seconds since last heard from, and whether that is live.
    pub activity: Option<(u64, bool)>,
}

/// A job in the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSummary {
    /// Job id.
    pub id: String,
    /// `pending`, `running`, `succeeded`, `failed` or `cancelled`.
    pub state: String,
    /// Rounds completed.
    pub completed_rounds: u32,
    /// Rounds planned.
    pub total_rounds: u32,
    /// The round and phase under way, as text.
    pub current: Option<String>,
    /// Why it failed, if it did.
    pub failure: Option<String>,
}

/// One completed round on the job page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundRow {
    /// Round number.
    pub round: u32,
    /// Nodes whose training update is in the aggregate.
    pub contributors: Vec<String>,
    /// Invited nodes that did not reply in time.
    pub dropped: Vec<String>,
    /// Nodes that declined, with the code.
    pub declined: Vec<(String, String)>,
    /// The secure-aggregation guarantee the round had.
    pub secure_guarantee: Option<String>,
    /// Why the round released no update, if it did not.
    pub abandoned: Option<String>,
}

/// The job page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobPage {
    /// The job as in the list.
    pub summary: JobSummary,
    /// The job's specification, as text (the job file's fields).
    pub spec: Vec<(String, String)>,
    /// Completed rounds, in order.
    pub rounds: Vec<RoundRow>,
}

/// One audit entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    /// Sequence number.
    pub seq: u64,
    /// When (UTC text).
    pub time: String,
    /// Who.
    pub actor: String,
    /// The entry kind (`round_committed`, ...).
    pub kind: String,
    /// The job it concerns, if any.
    pub job: Option<String>,
    /// A one-line summary.
    pub summary: String,
}

/// The audit page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditPage {
    /// `Ok(entries verified)` or why the log does not verify.
    pub verification: Result<u64, String>,
    /// The filter applied: kind and job, empty for all.
    pub filter_kind: String,
    /// The job filter.
    pub filter_job: String,
    /// The entries that pass the filter, newest first.
    pub entries: Vec<AuditRow>,
}

/// One ε chart on the privacy page: an SVG drawn by `veil-ledger`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivacyChart {
    /// The job.
    pub job: String,
    /// `customer` or `partner`.
    pub unit: String,
    /// The SVG, already escaped by its renderer (`AuditorReport::render_svg`).
    pub svg: String,
}

const STYLE: &str = "body{font-family:sans-serif;margin:0;color:#111}\
header{background:#0b3d5c;color:#fff;padding:.5rem 1rem;display:flex;flex-wrap:wrap;gap:1rem;align-items:center}\
header a{color:#fff}nav a{margin-right:1rem}main{padding:1rem;max-width:1200px}\
table{border-collapse:collapse;width:100%}th,td{border:1px solid #999;padding:.25rem .5rem;text-align:left}\
.state{font-weight:bold}.revoked{text-decoration:line-through}a:focus,button:focus{outline:3px solid #E69F00}\
svg{max-width:100%;height:auto}";

/// A whole page around `body`.
fn layout(title: &str, viewer: &Viewer, body: &str) -> String {
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{title} · Veil console</title><style>{STYLE}</style></head><body>\
<header><strong>Veil console</strong><nav aria-label=\"main\">\
<a href=\"/federation\">Federation</a><a href=\"/jobs\">Jobs</a>\
<a href=\"/privacy\">Privacy</a><a href=\"/audit\">Audit</a></nav>\
<span id=\"viewer\">{name} ({role})</span></header>\
<main><h1>{title}</h1>{body}</main></body></html>",
        title = escape(title),
        name = escape(&viewer.name),
        role = viewer.role.as_str(),
    )
}

/// Members with role, certificate expiry, revocation and activity.
pub fn federation(viewer: &Viewer, members: &[Member]) -> String {
    let mut body = String::from(
        "<table id=\"members\"><thead><tr><th>Name</th><th>Role</th><th>Serial</th>\
<th>Certificate expires</th><th>Revocation</th><th>Activity</th></tr></thead><tbody>",
    );
    for member in members {
        let revocation = match &member.revoked {
            Some(reason) => format!("revoked: {}", escape(reason)),
            None => "valid".to_owned(),
        };
        let activity = match member.activity {
            Some((seconds, true)) => format!("online, last seen {seconds} s ago"),
            Some((seconds, false)) => format!("offline, last seen {seconds} s ago"),
            None => "—".to_owned(),
        };
        let _ = write!(
            body,
            "<tr{class}><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{revocation}</td><td>{activity}</td></tr>",
            escape(&member.name),
            escape(&member.role),
            escape(&member.serial),
            escape(&member.certificate_expires),
            class = if member.revoked.is_some() {
                " class=\"revoked\""
            } else {
                ""
            },
        );
    }
    body.push_str("</tbody></table>");
    layout("Federation", viewer, &body)
}

/// The job list.
pub fn jobs(viewer: &Viewer, jobs: &[JobSummary]) -> String {
    let mut body = String::from(
        "<table id=\"jobs\"><thead><tr><th>Job</th><th>State</th><th>Rounds</th>\
<th>Now</th></tr></thead><tbody>",
    );
    for job in jobs {
        let _ = write!(
            body,
            "<tr><td><a href=\"/jobs/{id}\">{id}</a></td><td class=\"state\">{}</td><td>{} / {}</td><td>{}</td></tr>",
            escape(&job.state),
            job.completed_rounds,
            job.total_rounds,
            escape(job.current.as_deref().unwrap_or("")),
            id = escape(&job.id),
        );
    }
    body.push_str("</tbody></table>");
    layout("Jobs", viewer, &body)
}

/// One job: progress (live through `/jobs/{id}/events`), the cancel button
/// for operators only, the specification and the rounds.
pub fn job(viewer: &Viewer, page: &JobPage) -> String {
    let job = &page.summary;
    let id = escape(&job.id);
    let mut body = format!(
        "<p>State: <span id=\"state\" class=\"state\">{}</span>. \
Rounds: <span id=\"rounds\">{}</span> of {}. <span id=\"current\">{}</span></p>\
<progress id=\"progress\" max=\"{}\" value=\"{}\" aria-label=\"rounds completed\"></progress>",
        escape(&job.state),
        job.completed_rounds,
        job.total_rounds,
        escape(job.current.as_deref().unwrap_or("")),
        job.total_rounds.max(1),
        job.completed_rounds,
    );
    if let Some(failure) = &job.failure {
        let _ = write!(body, "<p id=\"failure\">Failure: {}</p>", escape(failure));
    }
    let running = matches!(job.state.as_str(), "pending" | "running");
    if viewer.role.may_write() && running {
        let _ = write!(
            body,
            "<form id=\"cancel\" method=\"post\" action=\"/jobs/{id}/cancel\">\
<input type=\"hidden\" name=\"csrf\" value=\"{}\"><button type=\"submit\">Cancel job</button></form>",
            escape(&viewer.csrf_token)
        );
    }
    body.push_str("<h2>Rounds</h2><table id=\"round-table\"><thead><tr><th>Round</th><th>Contributors</th><th>Dropped</th><th>Declined</th><th>Secure aggregation</th><th>Note</th></tr></thead><tbody>");
    for round in &page.rounds {
        let declined: Vec<String> = round
            .declined
            .iter()
            .map(|(node, code)| format!("{} ({})", escape(node), escape(code)))
            .collect();
        let _ = write!(
            body,
            "<tr class=\"round\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            round.round,
            escape(&round.contributors.join(", ")),
            escape(&round.dropped.join(", ")),
            declined.join(", "),
            escape(round.secure_guarantee.as_deref().unwrap_or("plain")),
            escape(round.abandoned.as_deref().unwrap_or("")),
        );
    }
    body.push_str("</tbody></table><h2>Specification</h2><table id=\"spec\"><tbody>");
    for (field, value) in &page.spec {
        let _ = write!(
            body,
            "<tr><th scope=\"row\">{}</th><td>{}</td></tr>",
            escape(field),
            escape(value)
        );
    }
    body.push_str("</tbody></table>");
    if running {
        // Server-sent events from the same stream `coordinator watch` reads;
        // the page re-renders on each, so there is one renderer.
        let _ = write!(
            body,
            "<script>const events=new EventSource('/jobs/{}/events');\
events.onmessage=()=>{{events.close();location.reload();}};</script>",
            escape(&job.id)
        );
    }
    layout(&format!("Job {}", job.id), viewer, &body)
}

/// Per-partner ε over rounds, one chart per job and unit.
pub fn privacy(viewer: &Viewer, charts: &[PrivacyChart]) -> String {
    let mut body = String::new();
    if charts.is_empty() {
        body.push_str("<p>No charges recorded yet.</p>");
    }
    for chart in charts {
        let _ = write!(
            body,
            "<section class=\"chart\" data-job=\"{}\" data-unit=\"{}\"><h2>Job {} — {} level</h2>{}</section>",
            escape(&chart.job),
            escape(&chart.unit),
            escape(&chart.job),
            escape(&chart.unit),
            chart.svg
        );
    }
    layout("Privacy", viewer, &body)
}

/// The audit log's verification state and its entries, filtered.
pub fn audit(viewer: &Viewer, page: &AuditPage) -> String {
    let mut body = match &page.verification {
        Ok(verified) => format!(
            "<p id=\"verification\">Verified: {verified} entries, hash chain intact, every signature valid.</p>"
        ),
        Err(reason) => format!(
            "<p id=\"verification\"><strong>Does NOT verify:</strong> {}</p>",
            escape(reason)
        ),
    };
    let _ = write!(
        body,
        "<form method=\"get\" action=\"/audit\"><label>Kind <input name=\"kind\" value=\"{}\"></label> \
<label>Job <input name=\"job\" value=\"{}\"></label> <button type=\"submit\">Filter</button></form>\
<table id=\"entries\"><thead><tr><th>#</th><th>Time</th><th>Actor</th><th>Kind</th><th>Job</th><th>Summary</th></tr></thead><tbody>",
        escape(&page.filter_kind),
        escape(&page.filter_job),
    );
    for entry in &page.entries {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            entry.seq,
            escape(&entry.time),
            escape(&entry.actor),
            escape(&entry.kind),
            escape(entry.job.as_deref().unwrap_or("")),
            escape(&entry.summary),
        );
    }
    body.push_str("</tbody></table>");
    layout("Audit", viewer, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &str = "<img src=x onerror=alert(1)>\"'&";

    fn viewer(role: ConsoleRole) -> Viewer {
        Viewer {
            name: "ada".to_owned(),
            role,
            csrf_token: "c0ffee".to_owned(),
        }
    }

    fn running_job() -> JobPage {
        JobPage {
            summary: JobSummary {
                id: "job-1".to_owned(),
                state: "running".to_owned(),
                completed_rounds: 1,
                total_rounds: 3,
                current: Some("round 2 train".to_owned()),
                failure: None,
            },
            spec: vec![("rounds".to_owned(), "3".to_owned())],
            rounds: vec![RoundRow {
                round: 1,
                contributors: vec!["bank-a".to_owned(), "shop-b".to_owned()],
                dropped: vec![],
                declined: vec![("shop-c".to_owned(), "privacy-cap-exceeded".to_owned())],
                secure_guarantee: Some("tolerates 1 dropout".to_owned()),
                abandoned: None,
            }],
        }
    }

    #[test]
    fn only_an_operator_sees_the_cancel_form_with_its_csrf_token() {
        let operator = job(&viewer(ConsoleRole::Operator), &running_job());
        assert!(
            operator.contains("action=\"/jobs/job-1/cancel\""),
            "{operator}"
        );
        assert!(operator.contains("name=\"csrf\" value=\"c0ffee\""));
        let auditor = job(&viewer(ConsoleRole::Auditor), &running_job());
        assert!(!auditor.contains("/cancel"), "{auditor}");
        assert!(!auditor.contains("c0ffee"));
        // Both follow the job live while it runs.
        assert!(auditor.contains("new EventSource('/jobs/job-1/events')"));
        assert!(auditor.contains("shop-c (privacy-cap-exceeded)"));
    }

    #[test]
    fn a_finished_job_has_no_cancel_and_no_event_stream() {
        let mut page = running_job();
        page.summary.state = "succeeded".to_owned();
        let html = job(&viewer(ConsoleRole::Operator), &page);
        assert!(!html.contains("/cancel"));
        assert!(!html.contains("EventSource"));
    }

    /// Every string from outside is escaped on every page.
    #[test]
    fn no_page_prints_markup_from_its_data() {
        let viewer = Viewer {
            name: HOSTILE.to_owned(),
            role: ConsoleRole::Operator,
            csrf_token: HOSTILE.to_owned(),
        };
        let summary = JobSummary {
            id: HOSTILE.to_owned(),
            state: "running".to_owned(),
            completed_rounds: 0,
            total_rounds: 1,
            current: Some(HOSTILE.to_owned()),
            failure: Some(HOSTILE.to_owned()),
        };
        let pages = [
            federation(
                &viewer,
                &[Member {
                    name: HOSTILE.to_owned(),
                    role: HOSTILE.to_owned(),
                    serial: HOSTILE.to_owned(),
                    certificate_expires: HOSTILE.to_owned(),
                    revoked: Some(HOSTILE.to_owned()),
                    activity: Some((3, true)),
                }],
            ),
            jobs(&viewer, std::slice::from_ref(&summary)),
            job(
                &viewer,
                &JobPage {
                    summary,
                    spec: vec![(HOSTILE.to_owned(), HOSTILE.to_owned())],
                    rounds: vec![RoundRow {
                        round: 1,
                        contributors: vec![HOSTILE.to_owned()],
                        dropped: vec![HOSTILE.to_owned()],
                        declined: vec![(HOSTILE.to_owned(), HOSTILE.to_owned())],
                        secure_guarantee: Some(HOSTILE.to_owned()),
                        abandoned: Some(HOSTILE.to_owned()),
                    }],
                },
            ),
            privacy(
                &viewer,
                &[PrivacyChart {
                    job: HOSTILE.to_owned(),
                    unit: HOSTILE.to_owned(),
                    svg: String::new(),
                }],
            ),
            audit(
                &viewer,
                &AuditPage {
                    verification: Err(HOSTILE.to_owned()),
                    filter_kind: HOSTILE.to_owned(),
                    filter_job: HOSTILE.to_owned(),
                    entries: vec![AuditRow {
                        seq: 1,
                        time: HOSTILE.to_owned(),
                        actor: HOSTILE.to_owned(),
                        kind: HOSTILE.to_owned(),
                        job: Some(HOSTILE.to_owned()),
                        summary: HOSTILE.to_owned(),
                    }],
                },
            ),
        ];
        for page in pages {
            assert!(!page.contains("<img"), "{page}");
            assert!(!page.contains("\"'&\""), "{page}");
            assert!(page.contains("&lt;img src=x onerror=alert(1)&gt;&quot;&#39;&amp;"));
        }
    }

    #[test]
    fn the_audit_page_says_whether_the_log_verifies() {
        let page = |verification| AuditPage {
            verification,
            filter_kind: String::new(),
            filter_job: String::new(),
            entries: Vec::new(),
        };
        let viewer = viewer(ConsoleRole::Auditor);
        assert!(audit(&viewer, &page(Ok(42))).contains("Verified: 42 entries"));
        assert!(
            audit(&viewer, &page(Err("entry 7 altered".to_owned())))
                .contains("Does NOT verify:</strong> entry 7 altered")
        );
    }
}
