//! A partner's own commands, run as the real `client-node` binary on
//! generated data: folders the node writes to are created (owner-only)
//! instead of costing an exit after the load; `train-local` and `evaluate`
//! measure what the federation gains without a coordinator; and `score`
//! refuses a cutoff a day off the model's unless told it is meant.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use client_node::config::NodeConfig;

use crate::support;

fn client_node(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_client-node"))
        .args(args)
        .output()
        .expect("the client-node binary runs")
}

fn text(output: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn path(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

struct Partner {
    _dir: tempfile::TempDir,
    root: PathBuf,
    config: PathBuf,
    job: PathBuf,
    cutoff: chrono::NaiveDate,
    rejects_folder: PathBuf,
}

/// One partner's generated data and a node config whose rejects file and
/// state folder are in folders that do not exist yet.
fn partner() -> Partner {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    let synth = veil_synth_data::SynthConfig::demo(1, 17);
    let files = veil_synth_data::write_partner_files(&synth, &root).unwrap();
    let rejects_folder = root.join("not-yet").join("rejects");
    let mut source = veil_behaviour_features::CsvSource::new(files[0].clone());
    source.rejects_path = Some(rejects_folder.join("partner.rejects.csv"));
    let config = NodeConfig {
        node_id: "partner-0".to_owned(),
        coordinator: "http://127.0.0.1:1".to_owned(),
        data: source.into(),
        state_dir: Some(root.join("not-yet").join("state")),
        policy: Default::default(),
        tls_dir: None,
        insecure_dev: true,
        privacy_audit_kit: None,
    };
    let config_path = root.join("node.toml");
    std::fs::write(&config_path, config.to_toml().unwrap()).unwrap();
    let cutoff = synth.suggested_cutoff();
    let job = root.join("job.toml");
    std::fs::write(
        &job,
        veil_job::STANDARD_JOB
            .replace("{cutoff}", &cutoff.format("%Y-%m-%d").to_string())
            .replace("{horizon}", &synth.suggested_horizon_days().to_string()),
    )
    .unwrap();
    Partner {
        _dir: dir,
        root,
        config: config_path,
        job,
        cutoff,
        rejects_folder,
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_partner_trains_alone_evaluates_and_scores_only_at_the_models_cutoff() {
    let _machine = support::share_of_machine_blocking();
    let partner = partner();
    let model = partner.root.join("local.veil");

    let trained = client_node(&[
        "train-local",
        "--config",
        path(&partner.config),
        "--job",
        path(&partner.job),
        "--out",
        path(&model),
    ]);
    assert!(trained.status.success(), "{}", text(&trained));
    // The rejects file's folder did not exist: it was made, owner-only.
    assert!(
        partner.rejects_folder.join("partner.rejects.csv").is_file(),
        "{}",
        text(&trained)
    );
    assert_eq!(mode(&partner.rejects_folder) & 0o077, 0);

    let evaluated = client_node(&[
        "evaluate",
        "--config",
        path(&partner.config),
        "--model",
        path(&model),
    ]);
    assert!(evaluated.status.success(), "{}", text(&evaluated));
    let report = String::from_utf8_lossy(&evaluated.stdout).into_owned();
    let auc: f64 = report
        .lines()
        .find_map(|line| line.strip_prefix("auc"))
        .unwrap_or_else(|| panic!("no auc line: {report}"))
        .trim()
        .parse()
        .unwrap();
    // A model trained on ~1000 customers of the demo data ranks churners
    // well above chance; 0.6 leaves room for a small partner.
    assert!((0.6..=1.0).contains(&auc), "{report}");

    // A cutoff one day after the model's: the usual mistake, refused by name.
    let scores = partner.root.join("scores").join("today.csv");
    let next_day = (partner.cutoff + chrono::Days::new(1))
        .format("%Y-%m-%d")
        .to_string();
    let refused = client_node(&[
        "score",
        "--config",
        path(&partner.config),
        "--model",
        path(&model),
        "--cutoff",
        &next_day,
        "--out",
        path(&scores),
    ]);
    assert!(!refused.status.success(), "{}", text(&refused));
    let message = String::from_utf8_lossy(&refused.stderr);
    for expected in [next_day.as_str(), "1 day(s) apart", "--different-cutoff"] {
        assert!(
            message.contains(expected),
            "{expected:?}: {}",
            text(&refused)
        );
    }
    assert!(!scores.exists());

    // Without --cutoff the model's own is used, and the output's new folder is made.
    let scored = client_node(&[
        "score",
        "--config",
        path(&partner.config),
        "--model",
        path(&model),
        "--out",
        path(&scores),
    ]);
    assert!(scored.status.success(), "{}", text(&scored));
    let cutoff = partner.cutoff.format("%Y-%m-%d").to_string();
    assert!(
        String::from_utf8_lossy(&scored.stdout).contains(&format!("as of {cutoff}")),
        "{}",
        text(&scored)
    );
    assert!(scores.is_file());

    // On purpose, another date is allowed.
    let meant = client_node(&[
        "score",
        "--config",
        path(&partner.config),
        "--model",
        path(&model),
        "--cutoff",
        &next_day,
        "--different-cutoff",
        "--out",
        path(&scores),
    ]);
    assert!(meant.status.success(), "{}", text(&meant));
}

#[test]
fn the_same_job_trained_alone_twice_gives_the_same_model() {
    let _machine = support::share_of_machine_blocking();
    let partner = partner();
    let first = partner.root.join("first.veil");
    let second = partner.root.join("second.veil");
    for out in [&first, &second] {
        let trained = client_node(&[
            "train-local",
            "--config",
            path(&partner.config),
            "--job",
            path(&partner.job),
            "--out",
            path(out),
        ]);
        assert!(trained.status.success(), "{}", text(&trained));
    }
    let first = veil_job::export::ExportedModel::read(&first).unwrap();
    let second = veil_job::export::ExportedModel::read(&second).unwrap();
    assert_eq!(first.parameters, second.parameters);
}
