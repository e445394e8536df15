//! A scrape of a `/metrics` endpoint over plain HTTP/1.1, and a strict parser
//! of the text exposition format (OpenMetrics flavour, as `prometheus-client`
//! writes it): every sample must belong to a family declared by `# TYPE`,
//! every line must parse, label values must be properly quoted and escaped,
//! and the exposition must end with `# EOF`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The sample name (a family name plus a suffix such as `_total`).
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// A parsed exposition.
#[derive(Debug, Clone, Default)]
pub struct Exposition {
    /// Family name → declared type.
    pub families: BTreeMap<String, String>,
    /// Every sample, in order.
    pub samples: Vec<Sample>,
}

impl Exposition {
    /// The value of the one sample named `name` whose labels include
    /// `labels`; `None` when there is none, a panic when there are several.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let matching: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|sample| {
                sample.name == name
                    && labels.iter().all(|(key, value)| {
                        sample.labels.get(*key).map(String::as_str) == Some(value)
                    })
            })
            .collect();
        assert!(
            matching.len() <= 1,
            "{name} {labels:?} matches {} samples",
            matching.len()
        );
        matching.first().map(|sample| sample.value)
    }

    /// Every label value of every sample, except histogram bucket bounds
    /// (`le`), which must be numbers.
    pub fn label_values(&self) -> BTreeSet<String> {
        let mut values = BTreeSet::new();
        for sample in &self.samples {
            for (key, value) in &sample.labels {
                if key == "le" {
                    assert!(
                        value == "+Inf" || value.parse::<f64>().is_ok(),
                        "bucket bound {value:?} of {}",
                        sample.name
                    );
                } else {
                    values.insert(value.clone());
                }
            }
        }
        values
    }
}

/// GETs `http://address/metrics` and returns the body, failing by name on
/// anything but a 200 with the OpenMetrics content type.
pub async fn scrape(address: SocketAddr) -> String {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(address).await?;
        stream
            .write_all(
                format!("GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .unwrap_or_else(|_| panic!("scraping {address} took over 10 s"))
        .unwrap_or_else(|error| panic!("scraping {address}: {error}"));
    let response = String::from_utf8(response).expect("the exposition is UTF-8");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in {response:?}"));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{head}"
    );
    body.to_owned()
}

/// Parses `text`, failing with the line number and the reason.
pub fn parse(text: &str) -> Result<Exposition, String> {
    let mut exposition = Exposition::default();
    let mut ended = false;
    for (index, line) in text.lines().enumerate() {
        let fail = |reason: &str| Err(format!("line {}: {reason}: {line:?}", index + 1));
        if ended {
            return fail("content after # EOF");
        }
        if line == "# EOF" {
            ended = true;
            continue;
        }
        if let Some(comment) = line.strip_prefix("# ") {
            let mut parts = comment.splitn(3, ' ');
            let (Some(keyword), Some(name)) = (parts.next(), parts.next()) else {
                return fail("a comment needs a keyword and a name");
            };
            if !is_metric_name(name) {
                return fail("invalid metric name");
            }
            match keyword {
                "TYPE" => {
                    let kind = parts.next().unwrap_or_default();
                    if !matches!(
                        kind,
                        "counter" | "gauge" | "histogram" | "summary" | "info" | "unknown"
                    ) {
                        return fail("unknown type");
                    }
                    if exposition
                        .families
                        .insert(name.to_owned(), kind.to_owned())
                        .is_some()
                    {
                        return fail("family declared twice");
                    }
                }
                "HELP" | "UNIT" => {}
                _ => return fail("unknown comment keyword"),
            }
            continue;
        }
        let sample = match parse_sample(line) {
            Ok(sample) => sample,
            Err(reason) => return fail(&reason),
        };
        let family = family_of(&sample.name, &exposition.families);
        let Some(kind) = family.and_then(|family| exposition.families.get(family)) else {
            return fail("sample of no declared family");
        };
        if kind == "counter" && sample.value < 0.0 {
            return fail("negative counter");
        }
        exposition.samples.push(sample);
    }
    if !ended {
        return Err("no # EOF at the end".to_owned());
    }
    Ok(exposition)
}

fn family_of<'a>(name: &'a str, families: &BTreeMap<String, String>) -> Option<&'a str> {
    if families.contains_key(name) {
        return Some(name);
    }
    ["_total", "_created", "_bucket", "_count", "_sum", "_info"]
        .iter()
        .filter_map(|suffix| name.strip_suffix(suffix))
        .find(|family| families.contains_key(*family))
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_' || first == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("a sample needs a value")?;
    let name = &line[..name_end];
    if !is_metric_name(name) {
        return Err("invalid sample name".to_owned());
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after_brace) = rest.strip_prefix('{') {
        rest = after_brace;
        loop {
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let equals = rest.find('=').ok_or("a label needs '='")?;
            let key = &rest[..equals];
            if !is_metric_name(key) || key.contains(':') {
                return Err(format!("invalid label name {key:?}"));
            }
            let quoted = rest[equals + 1..]
                .strip_prefix('"')
                .ok_or("a label value must be quoted")?;
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let consumed = loop {
                match chars.next() {
                    Some((_, '\\')) => match chars.next() {
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        Some((_, 'n')) => value.push('\n'),
                        _ => return Err("invalid escape in a label value".to_owned()),
                    },
                    Some((at, '"')) => break at + 1,
                    Some((_, '\n')) | None => return Err("unterminated label value".to_owned()),
                    Some((_, other)) => value.push(other),
                }
            };
            if labels.insert(key.to_owned(), value).is_some() {
                return Err(format!("label {key:?} repeated"));
            }
            rest = &quoted[consumed..];
            if let Some(after) = rest.strip_prefix(',') {
                rest = after;
            } else if !rest.starts_with('}') {
                return Err("labels must be separated by ','".to_owned());
            }
        }
    }
    let value_text = rest
        .strip_prefix(' ')
        .ok_or("a single space must precede the value")?;
    let mut fields = value_text.split(' ');
    let value = fields.next().ok_or("no value")?;
    // An optional timestamp, then nothing; prometheus-client writes none,
    // and exemplars are not used by Veil.
    if let Some(timestamp) = fields.next() {
        timestamp
            .parse::<f64>()
            .map_err(|_| format!("invalid timestamp {timestamp:?}"))?;
    }
    if fields.next().is_some() {
        return Err("unexpected text after the value".to_owned());
    }
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        other => other
            .parse::<f64>()
            .map_err(|_| format!("invalid value {other:?}"))?,
    };
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}
