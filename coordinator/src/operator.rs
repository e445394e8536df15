//! The operator's client side: submit a job file, start, watch with a
//! progress bar, fetch and export the model.

use std::io::{IsTerminal, Write};
use std::path::Path;
use veil_pki::ClientTls;

use anyhow::{Context, bail};
use tonic::transport::Channel;
use veil_behaviour_features::Scaling;
use veil_job::JobSpec;
use veil_job::export::ExportedModel;
use veil_job::file::JobFile;
use veil_wire::MAX_MESSAGE_BYTES;
use veil_wire::chunking::VectorAssembler;
use veil_wire::v1::operator_service_client::OperatorServiceClient;
use veil_wire::v1::{self, job_event};

/// An operator connection.
pub type OperatorClient = OperatorServiceClient<Channel>;

/// How long connecting to the coordinator may take.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Connects to the coordinator at `address` (`http://host:port`).
pub async fn connect(address: &str, tls: Option<&ClientTls>) -> anyhow::Result<OperatorClient> {
    let mut endpoint = Channel::from_shared(address.to_owned())
        .with_context(|| format!("'{address}' is not a valid coordinator address"))?;
    if let Some(tls) = tls {
        endpoint = endpoint
            .tls_config(tls.tonic_config())
            .context("operator TLS settings")?;
    }
    // Every wait has a deadline: an unreachable address fails by name.
    let channel = endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .connect()
        .await
        .map_err(|error| {
            let causes = format!("{error:?}");
            let hint = veil_pki::scheme_mismatch_hint(address, &causes)
                .map_or_else(String::new, |hint| format!(" ({hint})"));
            anyhow::anyhow!("cannot reach the coordinator at {address}{hint}: {causes}")
        })?;
    let mut client = OperatorServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    // HTTP/2 over the wrong scheme fails only at the first call, as a bare
    // protocol error: probe once (the empty job id is refused by any
    // coordinator that answers) so the mistake is named here.
    let probe = tokio::time::timeout(
        CONNECT_TIMEOUT,
        client.get_job_status(v1::JobRef {
            job_id: String::new(),
        }),
    )
    .await
    .map_err(|_| {
        anyhow::anyhow!("the coordinator at {address} did not answer within {CONNECT_TIMEOUT:?}")
    })?;
    if let Err(status) = probe {
        let causes = format!("{status:?}");
        if let Some(hint) = veil_pki::scheme_mismatch_hint(address, &causes) {
            bail!(
                "cannot talk to the coordinator at {address} ({hint}): {}",
                status.message()
            );
        }
        if status.code() == tonic::Code::Unavailable {
            bail!(
                "cannot reach the coordinator at {address}: {}",
                status.message()
            );
        }
    }
    Ok(client)
}

/// Reads and validates a job file, returning its wire spec.
pub fn read_job_file(path: &Path) -> anyhow::Result<v1::JobSpec> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read job file {}", path.display()))?;
    let file = JobFile::parse(&text).with_context(|| format!("job file {}", path.display()))?;
    let wire = file.to_wire();
    JobSpec::from_wire(&wire).with_context(|| format!("job file {}", path.display()))?;
    Ok(wire)
}

/// Submits a job; returns its id.
pub async fn submit(client: &mut OperatorClient, spec: v1::JobSpec) -> anyhow::Result<String> {
    let response = client
        .submit_job(v1::SubmitJobRequest { spec: Some(spec) })
        .await
        .map_err(|status| anyhow::anyhow!("job refused: {}", status.message()))?;
    Ok(response.into_inner().job_id)
}

/// What the job plans to spend per partner, for the operator: one line per
/// protected unit, e.g. `planned customer-level ε per partner: 2.995 of its
/// budget 3.5 (δ = 0.00001, 12 rounds and the final evaluation)`.
pub fn planned_epsilon_lines(spec: &v1::JobSpec) -> anyhow::Result<Vec<String>> {
    let spec = JobSpec::from_wire(spec).context("the job spec is invalid")?;
    let planned = veil_job::planned_spend(&spec).context("the job's privacy cannot be planned")?;
    Ok(planned
        .iter()
        .map(|spend| {
            let unit = spend.unit.name();
            format!(
                "planned {unit}-level ε per partner: {:.3} of its budget {} (δ = {}, {} rounds and the final evaluation)",
                spend.epsilon, spend.budget, spec.privacy.delta, spec.rounds
            )
        })
        .collect())
}

/// One line per partner and privacy unit: the ε the job has spent so far
/// in the coordinator's ledger, against its whole plan and its budget.
pub fn spend_lines(status: &v1::JobStatus) -> Vec<String> {
    if status.privacy.is_empty() {
        return vec!["privacy spent: nothing charged yet".to_owned()];
    }
    status
        .privacy
        .iter()
        .map(|spend| {
            format!(
                "privacy spent: {} {}-level ε {:.3} of {:.3} planned (budget {})",
                spend.partner,
                spend.unit,
                spend.epsilon_spent,
                spend.epsilon_planned,
                spend.epsilon_budget
            )
        })
        .collect()
}

/// Starts a submitted job.
pub async fn start(client: &mut OperatorClient, job_id: &str) -> anyhow::Result<v1::JobStatus> {
    Ok(client
        .start_job(v1::JobRef {
            job_id: job_id.to_owned(),
        })
        .await
        .map_err(|status| anyhow::anyhow!("cannot start {job_id}: {}", status.message()))?
        .into_inner())
}

/// Cancels a job.
pub async fn cancel(client: &mut OperatorClient, job_id: &str) -> anyhow::Result<()> {
    client
        .cancel_job(v1::JobRef {
            job_id: job_id.to_owned(),
        })
        .await
        .map_err(|status| anyhow::anyhow!("cannot cancel {job_id}: {}", status.message()))?;
    Ok(())
}

/// A job's current status.
pub async fn status(client: &mut OperatorClient, job_id: &str) -> anyhow::Result<v1::JobStatus> {
    Ok(client
        .get_job_status(v1::JobRef {
            job_id: job_id.to_owned(),
        })
        .await
        .map_err(|status| anyhow::anyhow!("{job_id}: {}", status.message()))?
        .into_inner())
}

/// `coordinator status`'s text: state and progress, the failure reason if any, and ε spent per
/// partner against its plan and budget.
pub fn status_text(status: &v1::JobStatus) -> String {
    let state = v1::JobState::try_from(status.state).map_or("unknown".to_owned(), |state| {
        state.as_str_name().to_lowercase()
    });
    let mut lines = vec![format!(
        "{} ({}): {}  {}",
        status.job_id,
        status.job_name,
        state.trim_start_matches("job_state_"),
        progress_line(status)
    )];
    if !status.failure_reason.is_empty() {
        lines.push(format!("reason: {}", status.failure_reason));
    }
    lines.extend(spend_lines(status));
    lines.join("\n")
}

/// The end of a watch: ε spent per partner on standard error, then the outcome; a job that did
/// not succeed is an error naming its reason.
pub fn report_end(status: &v1::JobStatus) -> anyhow::Result<()> {
    for line in spend_lines(status) {
        eprintln!("{line}");
    }
    match v1::JobState::try_from(status.state) {
        Ok(v1::JobState::Succeeded) => {
            println!("{} succeeded: {}", status.job_id, progress_line(status));
            Ok(())
        }
        _ => bail!(
            "{} ended unsuccessfully: {}",
            status.job_id,
            status.failure_reason
        ),
    }
}

/// Follows a job until it ends, reporting through `on_update`; returns the
/// final status.
pub async fn watch(
    client: &mut OperatorClient,
    job_id: &str,
    mut on_update: impl FnMut(WatchUpdate<'_>),
) -> anyhow::Result<v1::JobStatus> {
    let mut stream = client
        .watch_job(v1::JobRef {
            job_id: job_id.to_owned(),
        })
        .await
        .map_err(|status| anyhow::anyhow!("cannot watch {job_id}: {}", status.message()))?
        .into_inner();
    let mut last = None;
    while let Some(event) = stream
        .message()
        .await
        .map_err(|status| anyhow::anyhow!("watching {job_id}: {}", status.message()))?
    {
        match event.kind {
            Some(job_event::Kind::Status(status)) => {
                on_update(WatchUpdate::Status(&status));
                last = Some(status);
            }
            Some(job_event::Kind::Message(message)) => on_update(WatchUpdate::Message(&message)),
            None => {}
        }
    }
    last.context("the watch stream ended without a status")
}

/// One thing a watch reports.
#[derive(Debug)]
pub enum WatchUpdate<'a> {
    /// The job's status after a change.
    Status(&'a v1::JobStatus),
    /// A line describing what happened.
    Message(&'a str),
}

/// A progress bar on one terminal line, e.g. `[#####-----] 5/10 rounds  AUC 0.8123`.
pub fn progress_line(status: &v1::JobStatus) -> String {
    const WIDTH: u32 = 30;
    let total = status.total_rounds.max(1);
    let filled = (status.completed_rounds.min(total) * WIDTH) / total;
    let bar: String = (0..WIDTH)
        .map(|i| if i < filled { '#' } else { '-' })
        .collect();
    let metric = status
        .history
        .last()
        .map(|m| {
            if !m.eval_auc.is_nan() {
                format!("  AUC {:.4}", m.eval_auc)
            } else if !m.eval_rmse.is_nan() {
                format!("  RMSE {:.4}", m.eval_rmse)
            } else {
                String::new()
            }
        })
        .unwrap_or_default();
    format!(
        "[{bar}] {}/{} rounds{metric}",
        status.completed_rounds, status.total_rounds
    )
}

/// Prints `watch` updates on standard error: a live progress bar redrawn in
/// place on a terminal; otherwise (a log file, CI) one plain line per
/// message and per change of progress, without escape codes.
pub fn progress_printer() -> impl FnMut(WatchUpdate<'_>) {
    let terminal = std::io::stderr().is_terminal();
    let mut last_status: Option<String> = None;
    move |update| {
        let text = if terminal {
            Some(terminal_progress(update))
        } else {
            plain_progress(update, &mut last_status)
        };
        if let Some(text) = text {
            let mut stderr = std::io::stderr();
            let _ = write!(stderr, "{text}");
            let _ = stderr.flush();
        }
    }
}

/// The bar redrawn over the current line; messages above it.
fn terminal_progress(update: WatchUpdate<'_>) -> String {
    match update {
        WatchUpdate::Status(status) => format!("\r{}", progress_line(status)),
        WatchUpdate::Message(message) => format!("\r\x1b[2K  {message}\n"),
    }
}

/// One line per message, and a status line only when it says something new.
fn plain_progress(update: WatchUpdate<'_>, last_status: &mut Option<String>) -> Option<String> {
    match update {
        WatchUpdate::Status(status) => {
            let line = progress_line(status);
            if last_status.as_deref() == Some(line.as_str()) {
                return None;
            }
            *last_status = Some(line.clone());
            Some(format!("{line}\n"))
        }
        WatchUpdate::Message(message) => Some(format!("  {message}\n")),
    }
}

/// Downloads a finished job's model with its spec and scaling.
pub async fn fetch_model(
    client: &mut OperatorClient,
    job_id: &str,
) -> anyhow::Result<ExportedModel> {
    let job = v1::JobRef {
        job_id: job_id.to_owned(),
    };
    let info = client
        .fetch_model_info(job.clone())
        .await
        .map_err(|status| {
            anyhow::anyhow!("cannot fetch the model of {job_id}: {}", status.message())
        })?
        .into_inner();
    let spec_wire = info
        .spec
        .as_ref()
        .context("the coordinator sent no job spec")?;
    let spec = JobSpec::from_wire(spec_wire).context("the coordinator sent an invalid job spec")?;
    let mut stream = client
        .fetch_model(job)
        .await
        .map_err(|status| {
            anyhow::anyhow!("cannot fetch the model of {job_id}: {}", status.message())
        })?
        .into_inner();
    // A trained model's architecture, or an analysis' result length.
    let expected = spec.plan().parameter_count as u64;
    if info.parameter_count != expected {
        bail!(
            "the coordinator announced {} parameters, the job's plan has {expected}",
            info.parameter_count
        );
    }
    let mut assembler = VectorAssembler::new(expected, expected)?;
    while let Some(chunk) = stream.message().await? {
        assembler.push(chunk.offset, &chunk.values)?;
    }
    let scaling = info.scaling.context("the coordinator sent no scaling")?;
    Ok(ExportedModel {
        job_id: job_id.to_owned(),
        spec,
        scaling: Scaling {
            mean: scaling.mean,
            std: scaling.std,
        },
        parameters: assembler.finish()?,
        final_metrics: info.final_metrics,
    })
}

/// Every global model of a finished job, from the initial one (version 0)
/// to the final one: what the coordinator saw round by round, as an
/// auditor's white-box privacy test reads it.
pub async fn fetch_model_history(
    client: &mut OperatorClient,
    job_id: &str,
) -> anyhow::Result<Vec<Vec<f32>>> {
    let info = client
        .fetch_model_info(v1::JobRef {
            job_id: job_id.to_owned(),
        })
        .await
        .map_err(|status| {
            anyhow::anyhow!("cannot fetch the model of {job_id}: {}", status.message())
        })?
        .into_inner();
    let expected = info.parameter_count;
    let mut history = Vec::with_capacity(info.model_version as usize + 1);
    for model_version in 0..=info.model_version {
        let mut stream = client
            .fetch_model_checkpoint(v1::ModelCheckpointRef {
                job_id: job_id.to_owned(),
                model_version,
            })
            .await
            .map_err(|status| {
                anyhow::anyhow!(
                    "cannot fetch model version {model_version} of {job_id}: {}",
                    status.message()
                )
            })?
            .into_inner();
        let mut assembler = VectorAssembler::new(expected, expected)?;
        while let Some(chunk) = stream.message().await? {
            assembler.push(chunk.offset, &chunk.values)?;
        }
        history.push(
            assembler
                .finish()
                .with_context(|| format!("model version {model_version} of {job_id}"))?,
        );
    }
    Ok(history)
}

#[cfg(test)]
mod planned_tests {
    use super::*;

    #[test]
    fn the_plan_names_unit_epsilon_budget_and_rounds() {
        let text = "name = \"plan\"\nrounds = 3\nmin_participants = 3\nmax_participants = 3\n\n[task]\nkind = \"churn\"\ncutoff = \"2024-09-30\"\nhorizon_days = 90\n\n[model]\nkind = \"logistic_regression\"\n\n[training]\nlocal_epochs = 1\nbatch_size = 32\nlearning_rate = 0.05\noptimizer = \"sgd\"\n\n[privacy]\ncustomers = \"dp-sgd\"\npartners = \"off\"\ncustomer_epsilon = 50\n";
        let wire = JobFile::parse(text).unwrap().to_wire();
        let lines = planned_epsilon_lines(&wire).unwrap();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with("planned customer-level ε per partner: ")
                && lines[0]
                    .contains("of its budget 50 (δ = 0.00001, 3 rounds and the final evaluation)"),
            "{lines:?}"
        );
    }
}

#[cfg(test)]
mod progress_tests {
    use super::*;

    #[test]
    fn spend_lines_name_partner_unit_spent_planned_and_budget() {
        let mut status = v1::JobStatus::default();
        assert_eq!(spend_lines(&status), ["privacy spent: nothing charged yet"]);
        status.privacy.push(v1::PartnerSpend {
            partner: "partner-1".to_owned(),
            unit: "customer".to_owned(),
            epsilon_spent: 1.23456,
            epsilon_planned: 2.995,
            epsilon_budget: 3.5,
        });
        assert_eq!(
            spend_lines(&status),
            ["privacy spent: partner-1 customer-level ε 1.235 of 2.995 planned (budget 3.5)"]
        );
    }

    #[test]
    fn without_a_terminal_each_event_is_one_plain_line_and_repeats_are_dropped() {
        let status = v1::JobStatus {
            total_rounds: 4,
            completed_rounds: 1,
            ..Default::default()
        };
        let mut last = None;
        let first = plain_progress(WatchUpdate::Status(&status), &mut last).unwrap();
        assert!(first.ends_with('\n') && !first.contains('\r') && !first.contains('\x1b'));
        assert_eq!(first.matches('\n').count(), 1);
        assert_eq!(
            plain_progress(WatchUpdate::Status(&status), &mut last),
            None
        );
        assert_eq!(
            plain_progress(
                WatchUpdate::Message("round 2 train: 3 participants"),
                &mut last
            ),
            Some("  round 2 train: 3 participants\n".to_owned())
        );
        let next = v1::JobStatus {
            completed_rounds: 2,
            ..status.clone()
        };
        assert!(plain_progress(WatchUpdate::Status(&next), &mut last).is_some());
        // On a terminal the bar is redrawn in place.
        assert!(terminal_progress(WatchUpdate::Status(&next)).starts_with('\r'));
    }
}
