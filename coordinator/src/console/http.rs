//! The console's HTTP plumbing: responses with the security headers every
//! page carries, small forms and query strings, the same-origin check for
//! writes, and the server-sent event stream of one job.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use tokio::sync::broadcast;
use tokio_stream::wrappers::ReceiverStream;
use veil_console::pages::{JobSummary, RoundRow, live_update, progress_key};
use veil_federation::EventKind;

use crate::state::Shared;

use super::gather;

/// Every response body: whole pages and event streams alike.
pub(super) type Body = BoxBody<Bytes, Infallible>;

/// Largest form body a write may carry.
pub(super) const MAX_FORM_BYTES: usize = 4096;
/// Largest start form: a job file, percent-encoded (job files are a few KiB).
pub(super) const MAX_JOB_FORM_BYTES: usize = 256 * 1024;
/// A comment line keeps idle event streams open through proxies.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// An event stream ends after this long; the browser reconnects by itself.
const STREAM_DEADLINE: Duration = Duration::from_secs(3600);

/// A header value, when the text is a valid one.
pub(super) fn header_value(text: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(text).ok()
}

/// Responses, each with the console's security headers.
pub(super) mod reply {
    use super::*;

    fn with_headers(status: StatusCode, content_type: &str, body: Body) -> Response<Body> {
        let mut response = Response::new(body);
        *response.status_mut() = status;
        let headers = response.headers_mut();
        for (name, value) in [
            (header::CONTENT_TYPE, content_type),
            // Pages hold data for the logged-in person only.
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            // The log-in link's token never leaves for another site in a Referer;
            // same-origin, not no-referrer, so that browsers still send `Origin`
            // on this console's own form posts (no-referrer makes it "null").
            (header::REFERRER_POLICY, "same-origin"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 connect-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; \
                 base-uri 'none'",
            ),
            (header::STRICT_TRANSPORT_SECURITY, "max-age=31536000"),
        ] {
            if let Some(value) = header_value(value) {
                headers.insert(name, value);
            }
        }
        response
    }

    /// A whole HTML page.
    pub(in crate::console) fn html(status: StatusCode, page: String) -> Response<Body> {
        with_headers(
            status,
            "text/html; charset=utf-8",
            Full::new(Bytes::from(page)).boxed(),
        )
    }

    /// Plain text, for errors outside a page.
    pub(in crate::console) fn text(status: StatusCode, text: &str) -> Response<Body> {
        with_headers(
            status,
            "text/plain; charset=utf-8",
            Full::new(Bytes::from(format!("{text}\n"))).boxed(),
        )
    }

    /// No such page.
    pub(in crate::console) fn not_found() -> Response<Body> {
        text(StatusCode::NOT_FOUND, "not found")
    }

    /// A file to save.
    pub(in crate::console) fn download(bytes: Bytes, file_name: &str) -> Response<Body> {
        let mut response = with_headers(
            StatusCode::OK,
            "application/octet-stream",
            Full::new(bytes).boxed(),
        );
        if let Some(value) = header_value(&format!("attachment; filename=\"{file_name}\"")) {
            response
                .headers_mut()
                .insert(header::CONTENT_DISPOSITION, value);
        }
        response
    }

    /// An event stream.
    pub(in crate::console) fn events(body: Body) -> Response<Body> {
        with_headers(StatusCode::OK, "text/event-stream", body)
    }
}

/// A redirect after a write or to the start page.
pub(super) fn see_other(location: &str) -> Response<Body> {
    let mut response = reply::text(StatusCode::SEE_OTHER, "see other");
    if let Some(value) = header_value(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// `application/x-www-form-urlencoded` fields, from a body or a query.
#[derive(Debug, Default)]
pub(super) struct Form {
    fields: Vec<(String, String)>,
}

impl Form {
    /// Parses `a=1&b=x+y`; malformed escapes are kept as they are.
    pub(super) fn parse(text: &str) -> Self {
        let fields = text
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                (percent_decode(name), percent_decode(value))
            })
            .collect();
        Self { fields }
    }

    /// The first value of `name`.
    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(field, _)| field == name)
            .map(|(_, value)| value.as_str())
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            b'+' => decoded.push(b' '),
            b'%' if at + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[at + 1..at + 3])
                    .ok()
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                {
                    Some(byte) => {
                        decoded.push(byte);
                        at += 2;
                    }
                    None => decoded.push(b'%'),
                }
            }
            byte => decoded.push(byte),
        }
        at += 1;
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// Reads a form body of at most `limit` bytes, or the refusal to send.
pub(super) async fn read_form(
    request: Request<Incoming>,
    limit: usize,
) -> Result<Form, Response<Body>> {
    let bytes = super::collect_limited(request.into_body(), limit)
        .await
        .ok_or_else(|| {
            reply::text(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the form is too large or did not arrive in time",
            )
        })?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| reply::text(StatusCode::BAD_REQUEST, "the form is not UTF-8"))?;
    Ok(Form::parse(text))
}

/// Whether a write comes from a page of this console: browsers send
/// `Origin` on every POST, and it must name the host the request was sent
/// to. A request without `Origin` (not a browser) still needs the CSRF token.
pub(super) fn same_origin<T>(request: &Request<T>) -> bool {
    let Some(origin) = request.headers().get(header::ORIGIN) else {
        return true;
    };
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|host| host.to_str().ok());
    match (origin.to_str().ok(), host) {
        (Some(origin), Some(host)) => origin == format!("https://{host}"),
        _ => false,
    }
}

/// A job's live progress as server-sent events ([`live_update`]), for a
/// job page that shows the first `after` completed rounds: one event at
/// once, then one whenever the progress or the completed rounds change,
/// until the job ends. Each open page costs a read of the engine's summary
/// and of the rounds it has not seen per event, never a page render.
pub(super) fn job_events(shared: &Arc<Shared>, job: &str, after: usize) -> Response<Body> {
    // Subscribe before reading, so no change falls in between.
    let mut events = shared.events.subscribe();
    let Some((first, first_rows)) = gather::job_progress(shared, job, after) else {
        return reply::not_found();
    };
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(16);
    let shared = Arc::clone(shared);
    let job = job.to_owned();
    tokio::spawn(async move {
        let frame = |summary: &JobSummary, rows: &[RoundRow]| {
            Ok(Frame::data(Bytes::from(format!(
                "data: {}\n\n",
                live_update(summary, rows)
            ))))
        };
        let finished = |state: &str| !matches!(state, "pending" | "running");
        let mut shown = progress_key(&first);
        let mut known = after.max(first.completed_rounds as usize);
        if sender.send(frame(&first, &first_rows)).await.is_err() || finished(&first.state) {
            return;
        }
        let deadline = tokio::time::Instant::now() + STREAM_DEADLINE;
        loop {
            let received = tokio::select! {
                received = events.recv() => received,
                () = tokio::time::sleep(KEEPALIVE) => {
                    if sender.send(Ok(Frame::data(Bytes::from_static(b": keep-alive\n\n")))).await.is_err() {
                        return;
                    }
                    continue;
                }
                () = tokio::time::sleep_until(deadline) => return,
            };
            match received {
                Ok(event) if event.job != job => continue,
                Ok(event)
                    if matches!(
                        event.kind,
                        EventKind::SecureStepOpened { .. } | EventKind::ReplyRejected { .. }
                    ) =>
                {
                    continue;
                }
                // Skipped events are summarised by the status read next.
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            }
            let Some((summary, rows)) = gather::job_progress(&shared, &job, known) else {
                return;
            };
            let key = progress_key(&summary);
            if key != shown || !rows.is_empty() {
                shown = key;
                known = known.max(summary.completed_rounds as usize);
                if sender.send(frame(&summary, &rows)).await.is_err() {
                    return;
                }
            }
            if finished(&summary.state) {
                return;
            }
        }
    });
    reply::events(StreamBody::new(ReceiverStream::new(receiver)).boxed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode_plus_and_percent_escapes_and_keep_malformed_ones() {
        let form = Form::parse("kind=round_committed&job=job%2D1&actor=a+b&bad=%zz%4&empty=");
        assert_eq!(form.get("kind"), Some("round_committed"));
        assert_eq!(form.get("job"), Some("job-1"));
        assert_eq!(form.get("actor"), Some("a b"));
        assert_eq!(form.get("bad"), Some("%zz%4"));
        assert_eq!(form.get("empty"), Some(""));
        assert_eq!(form.get("missing"), None);
        assert_eq!(Form::parse("%").get("%"), Some(""));
    }

    #[test]
    fn a_post_from_another_origin_is_not_same_origin() {
        let request = |origin: Option<&str>| {
            let mut builder = Request::builder().header(header::HOST, "console.example:8443");
            if let Some(origin) = origin {
                builder = builder.header(header::ORIGIN, origin);
            }
            builder.body(()).unwrap()
        };
        assert!(same_origin(&request(Some("https://console.example:8443"))));
        assert!(same_origin(&request(None)));
        assert!(!same_origin(&request(Some("https://evil.example"))));
        assert!(!same_origin(&request(Some("null"))));
    }
}
