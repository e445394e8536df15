//! The rendered page: every section and chart present, all text escaped, no
//! script or external asset, and JSON of the same input.

mod common;

use common::{BINARY_REPORT_CHARTS, HOSTILE, binary_input, regression_input};
use veil_report::{render_html, render_json};

#[test]
fn a_binary_job_report_has_every_section_and_chart() {
    let html = render_html(&binary_input());
    for section in [
        "job",
        "privacy",
        "rounds",
        "evaluation",
        "segments",
        "rules",
        "lifetime-value",
    ] {
        assert!(
            html.contains(&format!(r#"<section id="{section}">"#)),
            "section {section}"
        );
    }
    for chart in BINARY_REPORT_CHARTS {
        let marker = format!(r#"data-chart="{chart}""#);
        assert_eq!(html.matches(&marker).count(), 1, "chart {chart}");
        let svg = html
            .split(&marker)
            .nth(1)
            .unwrap()
            .split("</svg>")
            .next()
            .unwrap();
        assert!(
            svg.contains(&format!(r#"<title id="{chart}-title">"#)),
            "{chart} has a title"
        );
        assert!(
            svg.contains(&format!(r#"<desc id="{chart}-desc">"#)),
            "{chart} has a description"
        );
        assert!(svg.contains(r#"class="series"#), "{chart} draws its data");
    }
    // Every rule estimate carries its interval.
    assert!(
        html.contains("2.40 (2.10 – 2.75)"),
        "the lift with its interval"
    );
    assert!(
        html.contains("0.520 (0.470 – 0.580)"),
        "the confidence with its interval"
    );
    // Evaluation charts under noise carry interval bands.
    assert!(html.matches(r#"class="band""#).count() >= 4);
    assert!(
        html.matches(r#"class="error-bar""#).count() == 10,
        "one whisker per decile"
    );
    for heading in [
        "Top 1%",
        "Top 5%",
        "Top 10%",
        "Top 20%",
        "AUC",
        "Brier score",
        "Cumulative lift",
    ] {
        assert!(html.contains(heading), "{heading}");
    }
    assert!(html.contains(r#"<th scope="col">"#) && html.contains(r#"<th scope="row">"#));
}

#[test]
fn all_text_is_escaped_and_nothing_external_or_executable_is_on_the_page() {
    let html = render_html(&binary_input());
    assert!(!html.contains(HOSTILE), "raw hostile text reached the page");
    assert!(
        !html.to_lowercase().contains("<script"),
        "no script element"
    );
    assert!(
        html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;quoted&quot;")
    );
    for external in ["src=", "href=", "url(", "@import"] {
        assert!(!html.contains(external), "{external} would load something");
    }
    // The only URL is the SVG namespace, which is a name, not a fetch.
    let urls = html.matches("http").count();
    assert_eq!(
        urls,
        html.matches("http://www.w3.org/2000/svg").count() + html.matches("http-equiv").count()
    );
    assert!(
        html.contains("default-src 'none'"),
        "the page forbids loading anything"
    );
    assert!(
        !html.contains("NaN") && !html.contains(">inf") && !html.contains("-inf"),
        "non-finite numbers are shown as dashes"
    );
}

#[test]
fn a_regression_report_draws_the_binned_curve_and_leaves_out_empty_sections() {
    let html = render_html(&regression_input());
    assert!(html.contains(r#"data-chart="actual-versus-predicted""#));
    assert!(html.contains("Root mean squared error") && html.contains("R²"));
    for absent in ["rounds", "segments", "rules", "lifetime-value"] {
        assert!(
            !html.contains(&format!(r#"<section id="{absent}">"#)),
            "{absent}"
        );
    }
    assert!(html.contains("No privacy spending is recorded"));
}

#[test]
fn the_json_holds_the_same_content() {
    let input = binary_input();
    let json: serde_json::Value = serde_json::from_str(&render_json(&input).unwrap()).unwrap();
    assert_eq!(json["job"]["job_id"], input.job.job_id);
    assert_eq!(json["evaluation"]["kind"], "binary");
    assert_eq!(
        json["evaluation"]["top_percents"].as_array().unwrap().len(),
        4
    );
    assert_eq!(json["evaluation"]["deciles"].as_array().unwrap().len(), 10);
    assert!(
        json["evaluation"]["auc"]["lower"].as_f64().unwrap()
            <= json["evaluation"]["auc"]["value"].as_f64().unwrap()
    );
    assert_eq!(json["segments"][0]["segments"].as_array().unwrap().len(), 4);
    assert_eq!(json["privacy"].as_array().unwrap().len(), 6);
}
