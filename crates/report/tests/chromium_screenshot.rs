//! The report renders in a real browser: headless Chromium (Debian's
//! `chromium`, installed by `scripts/install-chromium`) takes a screenshot
//! and dumps the DOM of a full report. The test checks the screenshot is a
//! 1280×2400 PNG that is not blank, the DOM holds every chart's drawn paths,
//! and the page logged nothing to the console (no error, no blocked load).
//! A control page that breaks the Content-Security-Policy must be caught by
//! the same console check, so the check cannot pass vacuously.
//!
//! The screenshot and the page are kept under `target/tmp/` for a human to look at.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{BINARY_REPORT_CHARTS, binary_input};
use veil_report::render_html;

const WIDTH: u32 = 1280;
const HEIGHT: u32 = 2400;
/// Installing chromium with apt-get on a cold machine downloads ~100 MB.
const INSTALL_DEADLINE: Duration = Duration::from_secs(15 * 60);
/// One headless page load and screenshot takes a few seconds.
const CHROMIUM_DEADLINE: Duration = Duration::from_secs(60);

/// Runs `command` to completion or kills it at `deadline`, with its output.
fn run_with_deadline(mut command: Command, deadline: Duration, what: &str) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("{what}: could not start: {error}"));
    let drain = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {deadline:?}; killed");
        }
        thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// Chromium, installed by the project's script if missing. Fails (never
/// skips) when it cannot be installed.
fn chromium() -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/install-chromium");
    let output = run_with_deadline(
        Command::new(&script),
        INSTALL_DEADLINE,
        "scripts/install-chromium",
    );
    assert!(
        output.status.success(),
        "scripts/install-chromium could not install Debian's chromium, which this test needs \
         (exit {:?}):\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    let path = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    assert!(
        path.is_file(),
        "scripts/install-chromium printed {path:?}, which is not a file"
    );
    path
}

/// Headless Chromium on `page` with `arguments`; its own profile folder so
/// parallel runs do not share a lock.
fn headless(
    chromium: &Path,
    profile: &Path,
    page: &Path,
    arguments: &[&str],
    what: &str,
) -> Output {
    let mut command = Command::new(chromium);
    command
        .args([
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .args(["--enable-logging=stderr", "--v=0"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--window-size={WIDTH},{HEIGHT}"))
        .args(arguments)
        .arg(format!("file://{}", page.display()));
    let output = run_with_deadline(command, CHROMIUM_DEADLINE, what);
    assert!(
        output.status.success(),
        "{what}: chromium exited with {:?}:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Messages the page wrote to the console (Chromium logs them as `:CONSOLE`
/// lines on stderr: script errors, `console.*` calls and blocked loads).
fn console_messages(stderr: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter(|line| line.contains(":CONSOLE"))
        .map(str::to_owned)
        .collect()
}

/// Width, height and the number of distinct colours of an RGB(A) PNG, and
/// the share of pixels that are not white.
fn inspect_png(path: &Path) -> (u32, u32, usize, f64) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    let channels = info.color_type.samples();
    assert!(
        channels >= 3,
        "screenshot is {:?}, expected RGB",
        info.color_type
    );
    let pixels = &pixels[..info.buffer_size()];
    let mut colours = std::collections::HashSet::new();
    let mut not_white = 0usize;
    for pixel in pixels.chunks(channels) {
        let rgb = (pixel[0], pixel[1], pixel[2]);
        colours.insert(rgb);
        if rgb != (255, 255, 255) {
            not_white += 1;
        }
    }
    let total = (info.width * info.height) as f64;
    (
        info.width,
        info.height,
        colours.len(),
        not_white as f64 / total,
    )
}

#[test]
fn the_report_renders_in_headless_chromium_with_its_charts_and_no_console_messages() {
    let chromium = chromium();
    let scratch = tempfile::tempdir().unwrap();
    let page = scratch.path().join("report.html");
    std::fs::write(&page, render_html(&binary_input())).unwrap();

    let screenshot = scratch.path().join("report.png");
    let shot = headless(
        &chromium,
        &scratch.path().join("profile-shot"),
        &page,
        &[&format!("--screenshot={}", screenshot.display())],
        "screenshot",
    );
    let dump = headless(
        &chromium,
        &scratch.path().join("profile-dom"),
        &page,
        &["--dump-dom"],
        "dump-dom",
    );

    // Keep the artefacts under target/tmp for a human to look at.
    let artefacts = Path::new(env!("CARGO_TARGET_TMPDIR")).join("veil-report");
    std::fs::create_dir_all(&artefacts).unwrap();
    std::fs::copy(&page, artefacts.join("report.html")).unwrap();
    assert!(screenshot.is_file(), "chromium wrote no screenshot");
    std::fs::copy(&screenshot, artefacts.join("report-screenshot.png")).unwrap();
    eprintln!(
        "screenshot kept at {}",
        artefacts.join("report-screenshot.png").display()
    );

    let (width, height, colours, ink) = inspect_png(&screenshot);
    assert_eq!((width, height), (WIDTH, HEIGHT), "screenshot size");
    assert!(
        colours > 50,
        "screenshot has only {colours} colours: blank or unstyled"
    );
    assert!(
        ink > 0.03,
        "only {:.1}% of the screenshot is not white",
        100.0 * ink
    );

    let dom = String::from_utf8_lossy(&dump.stdout);
    for chart in BINARY_REPORT_CHARTS {
        let marker = format!(r#"data-chart="{chart}""#);
        let svg = dom
            .split(&marker)
            .nth(1)
            .unwrap_or_else(|| panic!("chart {chart} is not in the rendered DOM"))
            .split("</svg>")
            .next()
            .unwrap_or_default();
        let drawn = svg.matches(r#"class="series"#).count();
        assert!(drawn >= 1, "chart {chart} has no drawn series in the DOM");
        assert!(
            svg.contains(" d=\"M") || svg.contains("<circle"),
            "chart {chart} has no path data"
        );
    }
    assert!(
        dom.matches(r#"class="band""#).count() >= 4,
        "interval bands are drawn"
    );

    for output in [&shot, &dump] {
        let messages = console_messages(&output.stderr);
        assert!(
            messages.is_empty(),
            "the report logged to the console:\n{}",
            messages.join("\n")
        );
    }

    // The control: a page that tries to load an image and run a script is
    // blocked by the same policy, and the console check sees it.
    let control = scratch.path().join("control.html");
    let broken = render_html(&binary_input()).replace(
        "</main>",
        r#"<img alt="" src="https://example.invalid/x.png"><script>console.error("control")</script></main>"#,
    );
    std::fs::write(&control, broken).unwrap();
    let control_output = headless(
        &chromium,
        &scratch.path().join("profile-control"),
        &control,
        &["--dump-dom"],
        "control page",
    );
    let caught = console_messages(&control_output.stderr);
    assert!(
        caught.len() >= 2 && caught.iter().any(|m| m.contains("Content Security Policy")),
        "the console check missed the control page's blocked load and script: {caught:?}"
    );
}
