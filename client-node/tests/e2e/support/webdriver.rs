//! A minimal WebDriver client for the console's browser tests: Debian's
//! `chromedriver` (installed by `scripts/install-chromedriver`, which the
//! tests call) driving headless Chromium, spoken to over plain HTTP/1.1 on
//! 127.0.0.1 with serde_json, so no WebDriver crate is needed. Every call has
//! a deadline.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Longest any one WebDriver command may take (page loads included).
const COMMAND_DEADLINE: Duration = Duration::from_secs(60);

/// Installs chromium and chromedriver with the project's script; returns
/// chromedriver's path.
pub fn install_chromedriver() -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/install-chromedriver");
    let output = std::process::Command::new(&script)
        .output()
        .unwrap_or_else(|error| panic!("running {}: {error}", script.display()));
    assert!(
        output.status.success(),
        "scripts/install-chromedriver could not install Debian's chromium-driver, which the \
         console's browser tests need:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let path = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    assert!(path.exists(), "{} is not there", path.display());
    path
}

/// A running chromedriver, killed when dropped.
pub struct Driver {
    port: u16,
    _process: tokio::process::Child,
}

impl Driver {
    /// Starts chromedriver on a free port and waits (with a deadline) until
    /// it answers.
    pub async fn start(chromedriver: &Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|address| address.port())
            .unwrap();
        let process = tokio::process::Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| panic!("starting {}: {error}", chromedriver.display()));
        let driver = Self {
            port,
            _process: process,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(status) = driver.request("GET", "/status", None).await
                && status["value"]["ready"] == json!(true)
            {
                return driver;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not become ready in 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// One WebDriver command: HTTP/1.1 with `Connection: close`, the whole
    /// response read to its end.
    async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, String> {
        let exchange = async {
            let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .map_err(|error| error.to_string())?;
            let body = body.map(Value::to_string).unwrap_or_default();
            let request = format!(
                "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                self.port,
                body.len()
            );
            stream
                .write_all(request.as_bytes())
                .await
                .map_err(|error| error.to_string())?;
            // chromedriver keeps the connection open whatever the request
            // says: read the head, then exactly the body it announces.
            let (head, body) = read_response(&mut stream).await?;
            let value: Value =
                serde_json::from_str(&body).map_err(|error| format!("{error}: {body}"))?;
            if head.starts_with("HTTP/1.1 200") {
                Ok(value)
            } else {
                Err(value["value"].to_string())
            }
        };
        tokio::time::timeout(COMMAND_DEADLINE, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "{method} {path}: no answer in {COMMAND_DEADLINE:?}"
                ))
            })
    }

    /// A new headless browser (its own profile, so its own cookies) at
    /// 1280×800 that accepts the console's self-signed certificate.
    pub async fn browser(&self) -> Browser<'_> {
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,800"]
            }
        }}});
        let created = self
            .request("POST", "/session", Some(&capabilities))
            .await
            .unwrap_or_else(|error| panic!("no browser session: {error}"));
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {created}"))
            .to_owned();
        Browser {
            driver: self,
            session,
        }
    }
}

/// One HTTP/1.1 response: its head, and its body (by `Content-Length`, or
/// chunked, or to the end of the stream).
async fn read_response(stream: &mut tokio::net::TcpStream) -> Result<(String, String), String> {
    let mut received = Vec::new();
    let mut buffer = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(at) = received.windows(4).position(|window| window == b"\r\n\r\n") {
            break at;
        }
        let read = stream
            .read(&mut buffer)
            .await
            .map_err(|error| error.to_string())?;
        if read == 0 {
            return Err(format!(
                "the connection closed before the response head: {}",
                String::from_utf8_lossy(&received)
            ));
        }
        received.extend_from_slice(&buffer[..read]);
    };
    let head = String::from_utf8_lossy(&received[..head_end]).into_owned();
    let mut body = received[head_end + 4..].to_vec();
    let lower = head.to_ascii_lowercase();
    let length = lower.lines().find_map(|line| {
        line.strip_prefix("content-length:")
            .and_then(|value| value.trim().parse::<usize>().ok())
    });
    let chunked =
        lower.contains("transfer-encoding: chunked") || lower.contains("transfer-encoding:chunked");
    loop {
        let complete = match length {
            Some(length) => body.len() >= length,
            None if chunked => body.ends_with(b"0\r\n\r\n"),
            None => false,
        };
        if complete {
            break;
        }
        let read = stream
            .read(&mut buffer)
            .await
            .map_err(|error| error.to_string())?;
        if read == 0 {
            break;
        }
        body.extend_from_slice(&buffer[..read]);
    }
    let body = String::from_utf8_lossy(&body).into_owned();
    Ok((head, if chunked { dechunk(&body) } else { body }))
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    out
}

/// One browser session.
pub struct Browser<'driver> {
    driver: &'driver Driver,
    session: String,
}

impl Browser<'_> {
    async fn command(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        self.driver
            .request(
                method,
                &format!("/session/{}{path}", self.session),
                body.as_ref(),
            )
            .await
            .map(|value| value["value"].clone())
    }

    /// Navigates and waits for the page to load.
    pub async fn goto(&self, url: &str) {
        self.command("POST", "/url", Some(json!({ "url": url })))
            .await
            .unwrap_or_else(|error| panic!("navigating to {url}: {error}"));
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page.
    pub async fn execute(&self, script: &str, args: Value) -> Result<Value, String> {
        self.command(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    /// Runs an async `script` whose last argument is the callback to call
    /// with the result.
    pub async fn execute_async(&self, script: &str, args: Value) -> Result<Value, String> {
        self.command(
            "POST",
            "/execute/async",
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    /// The page's HTML as the browser holds it now.
    pub async fn html(&self) -> String {
        self.execute("return document.documentElement.outerHTML;", json!([]))
            .await
            .unwrap_or_else(|error| panic!("reading the page: {error}"))
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The current URL.
    pub async fn url(&self) -> String {
        self.command("GET", "/url", None)
            .await
            .unwrap_or_default()
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Every cookie the browser holds for the page, HttpOnly ones included.
    pub async fn cookies(&self) -> Vec<Value> {
        self.command("GET", "/cookie", None)
            .await
            .ok()
            .and_then(|value| value.as_array().cloned())
            .unwrap_or_default()
    }

    /// Saves a PNG screenshot of the page to `path`.
    pub async fn screenshot(&self, path: &Path) {
        let encoded = self
            .command("GET", "/screenshot", None)
            .await
            .unwrap_or_else(|error| panic!("screenshot: {error}"));
        let bytes = base64_decode(encoded.as_str().unwrap_or_default());
        assert!(bytes.starts_with(b"\x89PNG"), "the screenshot is not a PNG");
        std::fs::write(path, bytes).unwrap();
    }

    /// Closes the browser.
    pub async fn close(self) {
        let _ = self.command("DELETE", "", None).await;
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |byte: u8| match byte {
        b'A'..=b'Z' => Some(byte - b'A'),
        b'a'..=b'z' => Some(byte - b'a' + 26),
        b'0'..=b'9' => Some(byte - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut buffer = 0u32;
    let mut bits = 0;
    for sextet in text.bytes().filter_map(value) {
        buffer = (buffer << 6) | u32::from(sextet);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    out
}
