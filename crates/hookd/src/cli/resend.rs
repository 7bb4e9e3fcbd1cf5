//! `hookd resend`: one delivery now, or a durable bulk resend of every delivery matching a
//! filter, followed with a progress bar until it is done.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::anyhow;
use indicatif::{ProgressBar, ProgressStyle};

use super::client::{self, Answer, Api, ClientArgs, Output};
use super::deliveries::FilterArgs;
use super::output::{relative, text};

/// How often a bulk resend's progress is read.
const POLL: Duration = Duration::from_millis(250);
/// The exit code after Ctrl-C (128 + SIGINT), as shells expect.
const INTERRUPTED: u8 = 130;

/// Resend one delivery (`hookd resend 42`), or every delivery matching a filter
/// (`hookd resend --state failed --since 1h`).
#[derive(clap::Args, Debug)]
#[command(group(
    clap::ArgGroup::new("which")
        .required(true)
        .multiple(true)
        .args(["id", "state", "endpoint", "event", "event_type", "since", "until", "tenant", "all", "job"])
))]
pub struct ResendArgs {
    /// The delivery to resend: one attempt now, whatever its state
    #[arg(
        value_name = "DELIVERY_ID",
        conflicts_with_all = ["state", "endpoint", "event", "event_type", "since", "until", "tenant", "all", "job", "no_wait"]
    )]
    pub id: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten, next_help_heading = "Bulk resend (a durable job in hookd)")]
    pub filter: FilterArgs,
    /// Bulk: every delivery, succeeded ones included
    #[arg(long, conflicts_with_all = ["state", "endpoint", "event", "event_type", "since", "until", "tenant", "job"])]
    pub all: bool,
    /// Bulk: start the job and exit without following it
    #[arg(long)]
    pub no_wait: bool,
    /// Follow a bulk resend started earlier (rsj_...)
    #[arg(long, value_name = "JOB_ID", conflicts_with_all = ["state", "endpoint", "event", "event_type", "since", "until", "tenant", "no_wait"])]
    pub job: Option<String>,
}

/// `hookd resend`.
pub fn main(args: ResendArgs, config_file: Option<&Path>) -> ExitCode {
    client::run("resend", &args.client, config_file, |api| {
        resend(api, &args)
    })
}

async fn resend(api: Api, a: &ResendArgs) -> anyhow::Result<Output> {
    let json = a.client.json;
    if let Some(id) = &a.id {
        return one(&api, id, json).await;
    }
    let (job_id, matched) = match &a.job {
        Some(job) => (job.clone(), None),
        None => {
            let started = api
                .post(&["v1", "deliveries", "resend"], Some(&a.filter.body()))
                .await?;
            let job_id = started.body["job_id"]
                .as_str()
                .ok_or_else(|| anyhow!("unexpected answer from hookd: {}", started.text))?
                .to_string();
            if a.no_wait {
                return Ok(if json {
                    started.text.into()
                } else {
                    format!(
                        "Resend job {job_id} started: {} deliveries matched. Follow it with `hookd resend --job {job_id}`.",
                        text(&started.body["matched"])
                    )
                    .into()
                });
            }
            (job_id, started.body["matched"].as_u64())
        }
    };
    follow(&api, &job_id, matched, json).await
}

async fn one(api: &Api, id: &str, json: bool) -> anyhow::Result<Output> {
    let answer = api.post(&["v1", "deliveries", id, "resend"], None).await?;
    if json {
        return Ok(answer.text.into());
    }
    let d = &answer.body;
    let state = text(&d["state"]);
    let when = match d["next_attempt_at"].as_str() {
        Some(_) => format!(", next attempt {}", relative(&d["next_attempt_at"])),
        None => String::new(),
    };
    Ok(format!(
        "Delivery {id} resent: now {state}{when} (attempts so far: {}). See it with `hookd deliveries show {id}`.",
        text(&d["attempts"])
    )
    .into())
}

/// Follows a bulk resend until it is done, with a progress bar on a terminal. Ctrl-C stops
/// following, not the job. `matched` sizes the bar before the first poll.
async fn follow(
    api: &Api,
    job_id: &str,
    matched: Option<u64>,
    json: bool,
) -> anyhow::Result<Output> {
    let bar = if json {
        ProgressBar::hidden()
    } else {
        // Drawn on stderr, and only when it is a terminal.
        let bar = ProgressBar::new(matched.unwrap_or(0));
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} resending {pos}/{len} [{wide_bar}] {elapsed} {msg}",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        bar.set_message(job_id.to_string());
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    };
    let interrupt = interrupted();
    tokio::pin!(interrupt);
    let mut latest: Option<Answer> = None;
    loop {
        let poll = async {
            let job = api.get(&["v1", "resend-jobs", job_id], &[]).await?;
            let done = job.body["state"] == "done";
            if !done {
                tokio::time::sleep(POLL).await;
            }
            anyhow::Ok((job, done))
        };
        tokio::select! {
            _ = &mut interrupt => {
                bar.finish_and_clear();
                let (resent, matched) = match &latest {
                    Some(job) => (text(&job.body["resent"]), text(&job.body["matched"])),
                    None => ("?".to_string(), "?".to_string()),
                };
                eprintln!(
                    "Stopped following resend job {job_id} ({resent} of {matched} resent so far); \
                     the job keeps running in hookd. Follow it again with `hookd resend --job {job_id}`."
                );
                let text = match (json, latest) {
                    (true, Some(job)) => job.text,
                    _ => String::new(),
                };
                return Ok(Output { text, note: None, code: INTERRUPTED });
            }
            polled = poll => {
                let (job, done) = match polled {
                    Ok(p) => p,
                    Err(e) => {
                        bar.finish_and_clear();
                        return Err(e);
                    }
                };
                bar.set_length(job.body["matched"].as_u64().unwrap_or(0));
                bar.set_position(job.body["resent"].as_u64().unwrap_or(0));
                if done {
                    bar.finish_and_clear();
                    return Ok(if json {
                        job.text.into()
                    } else {
                        let b = &job.body;
                        format!(
                            "Resend job {job_id} done: {} of {} matched deliveries resent.",
                            text(&b["resent"]),
                            text(&b["matched"])
                        )
                        .into()
                    });
                }
                latest = Some(job);
            }
        }
    }
}

/// Resolves on Ctrl-C (SIGINT), which then no longer ends the process.
async fn interrupted() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut sigint) = signal(SignalKind::interrupt()) {
            sigint.recv().await;
            return;
        }
    }
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}
