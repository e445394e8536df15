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
    /// The certificate's dates as text (UTC), from the CA's journal: when
    /// it expires (or expired) and when it was issued.
    pub certificate: String,
    /// Whether the certificate has expired (also said in `certificate`, in
    /// words, so the page does not rely on its colour).
    pub certificate_expired: bool,
    /// Why it was revoked, if it was.
    pub revoked: Option<String>,
    /// For nodes: seconds since last heard from, and whether that is live.
    pub activity: Option<(u64, bool)>,
    /// For nodes: the software version it announced when it registered.
    pub software_version: Option<String>,
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
    /// The actor filter.
    pub filter_actor: String,
    /// The entries that pass the filter, newest first.
    pub entries: Vec<AuditRow>,
}

/// One charge on an ε chart: a point a person can hover or focus.
#[derive(Debug, Clone, PartialEq)]
pub struct EpsilonPoint {
    /// The round charged.
    pub round: u64,
    /// Which release of the round (`round`, `evaluation`, ...).
    pub release: String,
    /// The partner's cumulative ε after this charge (RDP, at the job's δ),
    /// as `veil-ledger report` plots it.
    pub epsilon: f64,
    /// This charge's own ε.
    pub charge: f64,
    /// The noise mechanism and its parameters, as text.
    pub mechanism: String,
}

/// One partner's line on an ε chart.
#[derive(Debug, Clone, PartialEq)]
pub struct EpsilonLine {
    /// The partner (its node id).
    pub partner: String,
    /// Its charges in ledger order (by round); for a long job an evenly
    /// spaced selection of them that always ends with the last.
    pub points: Vec<EpsilonPoint>,
    /// How many charges the ledger holds for the partner: more than the
    /// points when they are a selection.
    pub charges: usize,
}

/// One ε chart on the privacy page: a job in one privacy unit.
#[derive(Debug, Clone, PartialEq)]
pub struct PrivacyChart {
    /// The job.
    pub job: String,
    /// `customer` or `partner`.
    pub unit: String,
    /// The job's budget in that unit, drawn as a dashed line.
    pub budget: Option<f64>,
    /// One line per partner.
    pub lines: Vec<EpsilonLine>,
}

/// One partner's spending in one calendar year across jobs: the scope of
/// its own yearly cap, which its node holds (the coordinator does not know
/// the cap, only the node's declines when it would be exceeded).
#[derive(Debug, Clone, PartialEq)]
pub struct YearSpend {
    /// The calendar year (UTC).
    pub year: i32,
    /// The partner (its node id).
    pub partner: String,
    /// The partner's dataset the charges used (caps are per dataset).
    pub dataset: String,
    /// `customer` or `partner`.
    pub unit: String,
    /// ε of every charge of the year composed (RDP, at `delta`).
    pub epsilon: f64,
    /// The δ `epsilon` is at: the smallest δ charged.
    pub delta: f64,
    /// Jobs that charged the partner in the year.
    pub jobs: usize,
    /// Charges in the year.
    pub charges: usize,
    /// Phases the partner's node declined in the year because its own cap
    /// would have been exceeded.
    pub cap_declines: usize,
}

/// The privacy page.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PrivacyPage {
    /// One chart per job and unit.
    pub charts: Vec<PrivacyChart>,
    /// Per partner and calendar year, newest first.
    pub years: Vec<YearSpend>,
    /// Refused rounds and vetoes.
    pub refusals: Vec<Refusal>,
}

/// A round refused for a partner's budget, or a node's veto, from the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The job.
    pub job: String,
    /// The round.
    pub round: u64,
    /// The partner or node.
    pub partner: String,
    /// `budget refused` or `veto`, and the reason.
    pub reason: String,
}

const STYLE: &str = "body{font-family:sans-serif;margin:0;color:#111}\
header{background:#0b3d5c;color:#fff;padding:.5rem 1rem;display:flex;flex-wrap:wrap;gap:1rem;align-items:center}\
header a{color:#fff}nav a{margin-right:1rem}main{padding:1rem;max-width:1200px}\
table{border-collapse:collapse;width:100%}th,td{border:1px solid #999;padding:.25rem .5rem;text-align:left}\
.state{font-weight:bold}.revoked{text-decoration:line-through}.expired td{background:#fde8e0}a:focus,button:focus{outline:3px solid #E69F00}\
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

/// A page outside a session (the log-in result, a refusal): no navigation,
/// and, after a log-in, an automatic move to `continue_to`.
pub fn notice(title: &str, text: &str, continue_to: Option<&str>) -> String {
    let (refresh, link) = match continue_to {
        Some(target) => (
            format!(
                "<meta http-equiv=\"refresh\" content=\"0;url={}\">",
                escape(target)
            ),
            format!("<p><a href=\"{0}\">Continue</a></p>", escape(target)),
        ),
        None => (String::new(), String::new()),
    };
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">{refresh}\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{title} · Veil console</title><style>{STYLE}</style></head><body>\
<header><strong>Veil console</strong></header><main><h1>{title}</h1><p id=\"notice\">{text}</p>{link}</main></body></html>",
        title = escape(title),
        text = escape(text),
    )
}

/// Members with role, certificate expiry, revocation, activity and
/// software version.
pub fn federation(viewer: &Viewer, members: &[Member]) -> String {
    let mut body = String::from(
        "<table id=\"members\"><thead><tr><th>Name</th><th>Role</th><th>Serial</th>\
<th>Certificate</th><th>Revocation</th><th>Activity</th><th>Software</th></tr></thead><tbody>",
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
        let mut classes = Vec::new();
        if member.revoked.is_some() {
            classes.push("revoked");
        }
        if member.certificate_expired {
            classes.push("expired");
        }
        let _ = write!(
            body,
            "<tr{class}><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{revocation}</td><td>{activity}</td><td>{}</td></tr>",
            escape(&member.name),
            escape(&member.role),
            escape(&member.serial),
            escape(&member.certificate),
            escape(member.software_version.as_deref().unwrap_or("—")),
            class = if classes.is_empty() {
                String::new()
            } else {
                format!(" class=\"{}\"", classes.join(" "))
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
    if viewer.role.may_write() {
        // The job file is posted as text; choosing a file only fills the
        // text box (read by the browser), so what is sent can be reviewed.
        let _ = write!(
            body,
            "<h2>Start a job</h2><form id=\"start\" method=\"post\" action=\"/jobs\">\
<input type=\"hidden\" name=\"csrf\" value=\"{}\">\
<p><label for=\"job-file\">Job file (TOML), as for <code>coordinator submit</code>:</label> \
<input type=\"file\" id=\"job-file\" accept=\".toml,text/plain\"></p>\
<p><textarea id=\"job-text\" name=\"job\" rows=\"16\" cols=\"80\" required \
aria-label=\"job file text\" spellcheck=\"false\"></textarea></p>\
<p><button type=\"submit\">Submit and start</button></p></form>\
<script>document.getElementById('job-file').addEventListener('change',(event)=>{{\
const file=event.target.files[0];if(file){{file.text().then((text)=>{{document.getElementById('job-text').value=text;}});}}}});</script>",
            escape(&viewer.csrf_token)
        );
    }
    layout("Jobs", viewer, &body)
}

/// What the job page shows of a job's progress, in one line: the console's
/// event stream sends a [`live_update`] when it changes.
pub fn progress_key(job: &JobSummary) -> String {
    format!(
        "{} {}/{} {}",
        job.state,
        job.completed_rounds,
        job.total_rounds,
        job.current.as_deref().unwrap_or("")
    )
}

/// One job: progress (live through `/jobs/{id}/events`), the cancel button
/// for operators only, the downloads, the specification and the rounds.
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
        body.push_str(&round_row(round));
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
    let _ = write!(
        body,
        "<h2>Downloads</h2><ul id=\"downloads\"><li><a href=\"/jobs/{id}/report\">Report (HTML)</a></li>{}</ul>",
        if job.state == "succeeded" {
            format!("<li><a href=\"/jobs/{id}/model\">Model (JSON)</a></li>")
        } else {
            String::new()
        }
    );
    if running {
        // Server-sent events from the same stream `coordinator watch` reads
        // ([`live_update`]): the page updates its progress in place and adds
        // the rows of rounds completed since it was rendered (replacing a
        // row of the same round), then reloads once when the job ends. The
        // rows come rendered by [`round_row`], so there is one renderer. The
        // script reads its inputs from escaped attributes and sets text
        // through `textContent`: nothing from outside is ever written into
        // script text.
        let _ = write!(
            body,
            "<div id=\"live\" hidden data-events=\"/jobs/{id}/events?after={}\"></div>\
<script>const live=document.getElementById('live');\
const events=new EventSource(live.dataset.events);\
events.onmessage=(message)=>{{const update=JSON.parse(message.data);\
if(update.finished){{events.close();location.reload();return;}}\
document.getElementById('state').textContent=update.state;\
document.getElementById('rounds').textContent=update.completed;\
document.getElementById('current').textContent=update.current;\
document.getElementById('progress').value=update.completed;\
if(update.rows){{const rows=document.createElement('template');rows.innerHTML=update.rows;\
const table=document.querySelector('#round-table tbody');\
for(const row of Array.from(rows.content.querySelectorAll('tr'))){{\
for(const old of table.querySelectorAll('tr')){{if(old.dataset.round===row.dataset.round){{old.remove();}}}}\
table.appendChild(row);}}}}}};</script>",
            job.completed_rounds,
        );
    }
    layout(&format!("Job {}", job.id), viewer, &body)
}

/// One row of the job page's round table; also what [`live_update`] sends
/// for a round completed while the page is open.
pub fn round_row(round: &RoundRow) -> String {
    let declined: Vec<String> = round
        .declined
        .iter()
        .map(|(node, code)| format!("{} ({})", escape(node), escape(code)))
        .collect();
    format!(
        "<tr class=\"round\" data-round=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        round.round,
        round.round,
        escape(&round.contributors.join(", ")),
        escape(&round.dropped.join(", ")),
        declined.join(", "),
        escape(round.secure_guarantee.as_deref().unwrap_or("plain")),
        escape(round.abandoned.as_deref().unwrap_or("")),
    )
}

/// One event of a job page's live stream, as JSON: the job's progress, the
/// rows of the rounds completed since the last event (rendered by
/// [`round_row`]), and whether the job has ended (the page then reloads to
/// show its downloads and drop its cancel button).
pub fn live_update(job: &JobSummary, new_rounds: &[RoundRow]) -> String {
    let rows: String = new_rounds.iter().map(round_row).collect();
    serde_json::json!({
        "state": job.state,
        "completed": job.completed_rounds,
        "current": job.current.as_deref().unwrap_or(""),
        "rows": rows,
        "finished": !matches!(job.state.as_str(), "pending" | "running"),
    })
    .to_string()
}

/// Colour-blind-safe palette (Okabe–Ito), cycled; each line also has its
/// own marker shape, so colour is never the only difference.
const PALETTE: [&str; 8] = [
    "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000",
];

const CHART_WIDTH: f64 = 720.0;
const CHART_HEIGHT: f64 = 400.0;
const CHART_LEFT: f64 = 70.0;
const CHART_RIGHT: f64 = 170.0;
const CHART_TOP: f64 = 30.0;
const CHART_BOTTOM: f64 = 50.0;

/// A number with `DIGITS` decimals, as `{:.DIGITS$}` prints it but by
/// integer formatting, which is several times faster: a long job's chart
/// prints some 60,000 such numbers. Rounds half away from zero on the binary
/// value, so on an exact tie the last digit can differ from `{:.N}`'s, which
/// neither a pixel coordinate nor a four-decimal ε shows. Values that are
/// not finite or too large for the integer go through `{:.N}`.
struct Fixed<const DIGITS: u32>(f64);

impl<const DIGITS: u32> std::fmt::Display for Fixed<DIGITS> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = 10_u64.pow(DIGITS);
        let scaled = (self.0 * unit as f64).round();
        if !scaled.is_finite() || scaled.abs() >= 1e15 {
            return write!(formatter, "{:.*}", DIGITS as usize, self.0);
        }
        let sign = if scaled < 0.0 { "-" } else { "" };
        let magnitude = scaled.abs() as u64;
        write!(
            formatter,
            "{sign}{}.{:0width$}",
            magnitude / unit,
            magnitude % unit,
            width = DIGITS as usize
        )
    }
}

/// One chart as inline SVG: a line per partner and a focusable point per
/// charge whose `data-` attributes carry the round, release, cumulative ε,
/// the charge and the mechanism (what the hover shows, and what tests read
/// back), and the budget as a dashed line.
fn chart_svg(svg: &mut String, chart: &PrivacyChart) {
    let max_round = chart
        .lines
        .iter()
        .flat_map(|line| line.points.iter().map(|point| point.round))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let max_epsilon = chart
        .lines
        .iter()
        .flat_map(|line| line.points.iter().map(|point| point.epsilon))
        .chain(chart.budget)
        .filter(|epsilon| epsilon.is_finite())
        .fold(0.0_f64, f64::max);
    let y_top = if max_epsilon > 0.0 {
        max_epsilon * 1.1
    } else {
        1.0
    };
    let plot_width = CHART_WIDTH - CHART_LEFT - CHART_RIGHT;
    let plot_height = CHART_HEIGHT - CHART_TOP - CHART_BOTTOM;
    let x_of = |round: f64| CHART_LEFT + round / max_round * plot_width;
    let y_of = |epsilon: f64| {
        let epsilon = if epsilon.is_finite() { epsilon } else { y_top };
        CHART_TOP + plot_height - epsilon.clamp(0.0, y_top) / y_top * plot_height
    };
    let _ = write!(
        svg,
        "<svg class=\"epsilon-chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{CHART_WIDTH}\" height=\"{CHART_HEIGHT}\" viewBox=\"0 0 {CHART_WIDTH} {CHART_HEIGHT}\" \
role=\"img\" aria-label=\"cumulative epsilon per partner over rounds\" font-family=\"sans-serif\" font-size=\"12\">\
<line x1=\"{CHART_LEFT}\" y1=\"{b:.1}\" x2=\"{r:.1}\" y2=\"{b:.1}\" stroke=\"black\"/>\
<line x1=\"{CHART_LEFT}\" y1=\"{CHART_TOP}\" x2=\"{CHART_LEFT}\" y2=\"{b:.1}\" stroke=\"black\"/>\
<text x=\"{mid:.1}\" y=\"{xl:.1}\" text-anchor=\"middle\">round</text>\
<text x=\"16\" y=\"{ym:.1}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {ym:.1})\">cumulative ε</text>",
        b = CHART_TOP + plot_height,
        r = CHART_LEFT + plot_width,
        mid = CHART_LEFT + plot_width / 2.0,
        xl = CHART_HEIGHT - 12.0,
        ym = CHART_TOP + plot_height / 2.0,
    );
    for tick in 0..=4u32 {
        let fraction = f64::from(tick) / 4.0;
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{:.0}</text>\
<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{:.2}</text>",
            x_of(fraction * max_round),
            CHART_TOP + plot_height + 16.0,
            fraction * max_round,
            CHART_LEFT - 6.0,
            y_of(fraction * y_top) + 4.0,
            fraction * y_top,
        );
    }
    if let Some(budget) = chart.budget.filter(|budget| budget.is_finite()) {
        let _ = write!(
            svg,
            "<line class=\"budget\" data-epsilon=\"{budget}\" x1=\"{CHART_LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" \
stroke=\"#D55E00\" stroke-dasharray=\"6 4\"/><text x=\"{:.1}\" y=\"{:.1}\">job budget ε={budget:.2}</text>",
            CHART_LEFT + plot_width,
            CHART_LEFT + plot_width + 6.0,
            y_of(budget) + 4.0,
            y = y_of(budget),
        );
    }
    for (index, line) in chart.lines.iter().enumerate() {
        let colour = PALETTE[index % PALETTE.len()];
        let partner = escape(&line.partner);
        let _ = write!(
            svg,
            "<g class=\"series\" data-partner=\"{partner}\"><polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{},{}",
            Fixed::<1>(x_of(0.0)),
            Fixed::<1>(y_of(0.0)),
        );
        for point in &line.points {
            let _ = write!(
                svg,
                " {},{}",
                Fixed::<1>(x_of(point.round as f64)),
                Fixed::<1>(y_of(point.epsilon))
            );
        }
        svg.push_str("\"/>");
        // A line's points mostly share their release and mechanism texts:
        // each is escaped when it changes.
        let (mut release, mut mechanism) = (("", String::new()), ("", String::new()));
        for point in &line.points {
            let (x, y) = (x_of(point.round as f64), y_of(point.epsilon));
            if release.0 != point.release {
                release = (&point.release, escape(&point.release));
            }
            if mechanism.0 != point.mechanism {
                mechanism = (&point.mechanism, escape(&point.mechanism));
            }
            let (release, mechanism) = (&release.1, &mechanism.1);
            // The title is the hover text and the accessible name; the page's
            // script shows it for the focused point too. The values are also
            // in `data-` attributes, exact, for scripts and tests.
            let _ = write!(
                svg,
                "<g class=\"point\" tabindex=\"0\" data-partner=\"{partner}\" data-round=\"{}\" data-release=\"{release}\" \
data-epsilon=\"{}\" data-charge=\"{}\" data-mechanism=\"{mechanism}\"><title>{partner} round {} ({release}): \
cumulative ε {}, this charge ε {}, {mechanism}</title>",
                point.round,
                point.epsilon,
                point.charge,
                point.round,
                Fixed::<4>(point.epsilon),
                Fixed::<4>(point.charge),
            );
            // Squares for odd lines, circles for even: shape tells lines apart too.
            let _ = if index % 2 == 0 {
                write!(
                    svg,
                    "<circle cx=\"{}\" cy=\"{}\" r=\"4\" fill=\"{colour}\"/></g>",
                    Fixed::<1>(x),
                    Fixed::<1>(y)
                )
            } else {
                write!(
                    svg,
                    "<rect x=\"{}\" y=\"{}\" width=\"8\" height=\"8\" fill=\"{colour}\"/></g>",
                    Fixed::<1>(x - 4.0),
                    Fixed::<1>(y - 4.0)
                )
            };
        }
        let legend_y = CHART_TOP + 14.0 + 18.0 * index as f64;
        let _ = write!(
            svg,
            "</g><line x1=\"{:.1}\" y1=\"{legend_y:.1}\" x2=\"{:.1}\" y2=\"{legend_y:.1}\" stroke=\"{colour}\" stroke-width=\"2\"/>\
<text x=\"{:.1}\" y=\"{:.1}\">{partner}</text>",
            CHART_LEFT + plot_width + 6.0,
            CHART_LEFT + plot_width + 26.0,
            CHART_LEFT + plot_width + 30.0,
            legend_y + 4.0,
        );
    }
    svg.push_str("</svg>");
}

/// Per-partner ε over rounds, one chart per job and unit, against the job's
/// budget; hovering or focusing a point shows its round, mechanism and
/// charge. Then ε per partner and calendar year across jobs (the scope of a
/// partner's own cap), and the refused rounds and vetoes with their reasons.
pub fn privacy(viewer: &Viewer, page: &PrivacyPage) -> String {
    // About 500 bytes a point: one allocation instead of a doubling series
    // of copies of a page of several megabytes.
    let points: usize = page
        .charts
        .iter()
        .flat_map(|chart| &chart.lines)
        .map(|line| line.points.len())
        .sum();
    let mut body = String::with_capacity(16 * 1024 + 500 * points + 200 * page.years.len());
    body.push_str(
        "<p>Each point is one charge in the coordinator's privacy ledger. Hover or focus a point \
(Tab moves between them) to see its round, mechanism and charge.</p>\
<p id=\"point-detail\" aria-live=\"polite\">&nbsp;</p>",
    );
    if page.charts.is_empty() {
        body.push_str("<p>No charges recorded yet.</p>");
    }
    for chart in &page.charts {
        let shown: usize = chart.lines.iter().map(|line| line.points.len()).sum();
        let charges: usize = chart.lines.iter().map(|line| line.charges).sum();
        let selection = if charges > shown {
            format!(
                "<p class=\"selection\">{shown} of {charges} charges shown, evenly spaced and each partner's last; \
every value shown is exact.</p>"
            )
        } else {
            String::new()
        };
        let _ = write!(
            body,
            "<section class=\"chart\" data-job=\"{}\" data-unit=\"{}\"><h2>Job {} — {} level</h2>{selection}",
            escape(&chart.job),
            escape(&chart.unit),
            escape(&chart.job),
            escape(&chart.unit),
        );
        chart_svg(&mut body, chart);
        body.push_str("</section>");
    }
    body.push_str(
        "<h2>Per partner and year</h2><p>ε of each partner's charges in a calendar year (UTC) across \
all jobs, per dataset and unit: the scope of the partner's own yearly cap. The cap itself is the \
partner's and lives in its node's ledger; its node declines a phase that would exceed it (counted \
here), and <code>veil-ledger reconcile</code> compares the two ledgers.</p>\
<table id=\"years\"><thead><tr><th>Year</th><th>Partner</th><th>Dataset</th><th>Unit</th>\
<th>ε (RDP)</th><th>at δ</th><th>Jobs</th><th>Charges</th><th>Declined for its cap</th></tr></thead><tbody>",
    );
    for year in &page.years {
        let _ = write!(
            body,
            "<tr class=\"year\" data-year=\"{}\" data-partner=\"{}\" data-unit=\"{}\" data-epsilon=\"{}\">\
<td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.4}</td><td>{:e}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            year.year,
            escape(&year.partner),
            escape(&year.unit),
            year.epsilon,
            year.year,
            escape(&year.partner),
            escape(&year.dataset),
            escape(&year.unit),
            year.epsilon,
            year.delta,
            year.jobs,
            year.charges,
            year.cap_declines,
        );
    }
    body.push_str(
        "</tbody></table><h2>Refused rounds and vetoes</h2><table id=\"refusals\"><thead><tr><th>Job</th><th>Round</th>\
<th>Partner</th><th>Reason</th></tr></thead><tbody>",
    );
    for refusal in &page.refusals {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&refusal.job),
            refusal.round,
            escape(&refusal.partner),
            escape(&refusal.reason)
        );
    }
    // One delegated listener: a long job has thousands of points.
    body.push_str(
        "</tbody></table><script>const detail=document.getElementById('point-detail');\
const show=(event)=>{const point=event.target.closest&&event.target.closest('.point');\
if(point){detail.textContent=point.querySelector('title').textContent;}};\
document.addEventListener('mouseover',show);document.addEventListener('focusin',show);</script>",
    );
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
<label>Job <input name=\"job\" value=\"{}\"></label> <label>Actor <input name=\"actor\" value=\"{}\"></label> \
<button type=\"submit\">Filter</button></form>\
<table id=\"entries\"><thead><tr><th>#</th><th>Time</th><th>Actor</th><th>Kind</th><th>Job</th><th>Summary</th></tr></thead><tbody>",
        escape(&page.filter_kind),
        escape(&page.filter_job),
        escape(&page.filter_actor),
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
        assert!(auditor.contains("data-events=\"/jobs/job-1/events?after=1\""));
        assert!(auditor.contains("new EventSource(live.dataset.events)"));
        assert!(auditor.contains("shop-c (privacy-cap-exceeded)"));
    }

    #[test]
    fn only_an_operator_sees_the_start_form_with_its_csrf_token() {
        let operator = jobs(&viewer(ConsoleRole::Operator), &[]);
        assert!(
            operator.contains("<form id=\"start\" method=\"post\" action=\"/jobs\">"),
            "{operator}"
        );
        assert!(operator.contains("name=\"csrf\" value=\"c0ffee\""));
        assert!(operator.contains("name=\"job\""));
        let auditor = jobs(&viewer(ConsoleRole::Auditor), &[]);
        assert!(!auditor.contains("id=\"start\""), "{auditor}");
        assert!(!auditor.contains("c0ffee"));
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
                    certificate: HOSTILE.to_owned(),
                    certificate_expired: true,
                    revoked: Some(HOSTILE.to_owned()),
                    activity: Some((3, true)),
                    software_version: Some(HOSTILE.to_owned()),
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
                &PrivacyPage {
                    charts: vec![PrivacyChart {
                        job: HOSTILE.to_owned(),
                        unit: HOSTILE.to_owned(),
                        budget: Some(1.0),
                        lines: vec![EpsilonLine {
                            partner: HOSTILE.to_owned(),
                            points: vec![EpsilonPoint {
                                round: 1,
                                release: HOSTILE.to_owned(),
                                epsilon: 0.5,
                                charge: 0.5,
                                mechanism: HOSTILE.to_owned(),
                            }],
                            charges: 1,
                        }],
                    }],
                    years: vec![YearSpend {
                        year: 2024,
                        partner: HOSTILE.to_owned(),
                        dataset: HOSTILE.to_owned(),
                        unit: HOSTILE.to_owned(),
                        epsilon: 0.5,
                        delta: 1e-5,
                        jobs: 1,
                        charges: 1,
                        cap_declines: 0,
                    }],
                    refusals: vec![Refusal {
                        job: HOSTILE.to_owned(),
                        round: 1,
                        partner: HOSTILE.to_owned(),
                        reason: HOSTILE.to_owned(),
                    }],
                },
            ),
            audit(
                &viewer,
                &AuditPage {
                    verification: Err(HOSTILE.to_owned()),
                    filter_kind: HOSTILE.to_owned(),
                    filter_job: HOSTILE.to_owned(),
                    filter_actor: HOSTILE.to_owned(),
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

    /// A live update is JSON whose rows are the page's own escaped rows,
    /// and it tells the page to reload only once the job has ended.
    #[test]
    fn a_live_update_carries_escaped_rows_and_ends_with_the_job() {
        let mut page = running_job();
        page.rounds[0].contributors = vec![HOSTILE.to_owned()];
        let update: serde_json::Value =
            serde_json::from_str(&live_update(&page.summary, &page.rounds)).unwrap();
        let rows = update["rows"].as_str().unwrap();
        assert_eq!(rows, round_row(&page.rounds[0]));
        assert!(rows.starts_with("<tr class=\"round\" data-round=\"1\">"));
        assert!(!rows.contains("<img"), "{rows}");
        assert!(job(&viewer(ConsoleRole::Operator), &page).contains(rows));
        assert_eq!(update["completed"], 1);
        assert_eq!(update["current"], "round 2 train");
        assert_eq!(update["finished"], false);
        page.summary.state = "succeeded".to_owned();
        let update: serde_json::Value =
            serde_json::from_str(&live_update(&page.summary, &[])).unwrap();
        assert_eq!(update["finished"], true);
        assert_eq!(update["rows"], "");
    }

    #[test]
    fn each_charge_is_one_focusable_point_carrying_its_values() {
        let point = |round: u64, epsilon: f64| EpsilonPoint {
            round,
            release: "round".to_owned(),
            epsilon,
            charge: 0.25,
            mechanism: "dp-sgd σ=1.1".to_owned(),
        };
        let chart = PrivacyChart {
            job: "job-1".to_owned(),
            unit: "customer".to_owned(),
            budget: Some(3.0),
            lines: vec![
                EpsilonLine {
                    partner: "bank-a".to_owned(),
                    points: vec![point(1, 0.25), point(2, 0.4375)],
                    charges: 2,
                },
                EpsilonLine {
                    partner: "shop-b".to_owned(),
                    points: vec![point(1, 0.25)],
                    charges: 1,
                },
            ],
        };
        let html = privacy(
            &viewer(ConsoleRole::Auditor),
            &PrivacyPage {
                charts: vec![chart],
                ..PrivacyPage::default()
            },
        );
        assert_eq!(html.matches("class=\"point\" tabindex=\"0\"").count(), 3);
        assert!(html.contains(
            "data-partner=\"bank-a\" data-round=\"2\" data-release=\"round\" data-epsilon=\"0.4375\" data-charge=\"0.25\" data-mechanism=\"dp-sgd σ=1.1\""
        ), "{html}");
        assert!(html.contains("class=\"budget\" data-epsilon=\"3\""));
        assert!(!html.contains("charges shown"), "every charge is shown");
        assert!(html.contains("<title>bank-a round 2 (round): cumulative ε 0.4375, this charge ε 0.2500, dp-sgd σ=1.1</title>"));
    }

    /// Fixed decimals print as `{:.N}` does, away from exact ties.
    #[test]
    fn fixed_decimals_print_as_the_standard_formatting() {
        for value in [
            0.0, 0.2501, 0.4375, 1.0, 3.14159, 12.05001, 99.99996, 123456.789, -4.2501, -0.26,
        ] {
            assert_eq!(
                Fixed::<1>(value).to_string(),
                format!("{value:.1}"),
                "{value}"
            );
            assert_eq!(
                Fixed::<4>(value).to_string(),
                format!("{value:.4}"),
                "{value}"
            );
        }
        for value in [f64::INFINITY, f64::NAN, 1e300] {
            assert_eq!(Fixed::<4>(value).to_string(), format!("{value:.4}"));
        }
        // An exact tie rounds away from zero (`{:.1}` gives 0.2).
        assert_eq!(Fixed::<1>(0.25).to_string(), "0.3");
    }

    #[test]
    fn the_audit_page_says_whether_the_log_verifies() {
        let page = |verification| AuditPage {
            verification,
            filter_kind: String::new(),
            filter_job: String::new(),
            filter_actor: String::new(),
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
