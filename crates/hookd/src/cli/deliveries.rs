//! `hookd deliveries list|show`: the delivery log, and one delivery with its attempts.

use std::path::Path;
use std::process::ExitCode;

use comfy_table::{Cell, Color};
use serde_json::{json, Map, Value};

use super::client::{self, Api, ClientArgs, Output};
use super::output::{self, cut, details, first_line, millis, relative, state_cell, text};
use crate::cli::output::describe;

#[derive(clap::Args, Debug)]
#[command(arg_required_else_help = true)]
pub struct DeliveriesArgs {
    #[command(subcommand)]
    pub command: DeliveriesCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum DeliveriesCommand {
    /// The delivery log, newest first: id, event, endpoint, type, state, attempts, next
    /// attempt, last outcome
    List(ListArgs),
    /// One delivery with its attempt log and payload
    Show(ShowArgs),
}

/// Which deliveries: shared by `deliveries list` and the bulk `resend`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct FilterArgs {
    /// Only deliveries in this state. `failed` = given up after its whole retry schedule; one
    /// still being retried is `pending` (attempts made, a last error), so right after an
    /// outage it is `--state pending --endpoint ID` that finds the deliveries waiting to retry
    #[arg(long, value_name = "STATE", value_parser = ["pending", "in_flight", "succeeded", "failed"])]
    pub state: Option<String>,
    /// Only deliveries to this endpoint (ep_...)
    #[arg(long, value_name = "ID")]
    pub endpoint: Option<String>,
    /// Only deliveries of this event (its event id)
    #[arg(long, value_name = "ID")]
    pub event: Option<String>,
    /// Only deliveries of this event type (exact match)
    #[arg(long = "event-type", value_name = "TYPE")]
    pub event_type: Option<String>,
    /// Only deliveries created at or after this time: RFC 3339 (2026-11-22T07:00:00Z) or a
    /// duration ago (1h)
    #[arg(long, value_name = "TIME", value_parser = instant_text)]
    pub since: Option<String>,
    /// Only deliveries created before this time: RFC 3339 or a duration ago
    #[arg(long, value_name = "TIME", value_parser = instant_text)]
    pub until: Option<String>,
    /// Only deliveries of this tenant
    #[arg(long, value_name = "TENANT")]
    pub tenant: Option<String>,
}

impl FilterArgs {
    /// The filter's fields, named as the API names them.
    fn fields(&self) -> Vec<(&'static str, String)> {
        [
            ("state", &self.state),
            ("endpoint_id", &self.endpoint),
            ("event_id", &self.event),
            ("event_type", &self.event_type),
            ("since", &self.since),
            ("until", &self.until),
            ("tenant_id", &self.tenant),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k, v)))
        .collect()
    }

    /// The filter as a JSON body for `POST /v1/deliveries/resend`.
    pub fn body(&self) -> Value {
        let map: Map<String, Value> = self
            .fields()
            .into_iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        Value::Object(map)
    }
}

/// `--since`/`--until`: an RFC 3339 time or a duration ago, checked here so a typo exits 2.
fn instant_text(text: &str) -> Result<String, String> {
    let text = text.trim();
    if chrono::DateTime::parse_from_rfc3339(text).is_ok() || humantime::parse_duration(text).is_ok()
    {
        Ok(text.to_string())
    } else {
        Err(format!(
            "{text:?} is neither an RFC 3339 time (2026-11-22T07:00:00Z) nor a duration ago (1h)"
        ))
    }
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// The most deliveries to show, newest first (pages are followed up to it)
    #[arg(long, value_name = "N", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: u32,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(clap::Args, Debug)]
pub struct ShowArgs {
    /// The delivery's id (a number)
    #[arg(value_name = "ID")]
    pub id: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `hookd deliveries ...`.
pub fn main(args: DeliveriesArgs, config_file: Option<&Path>) -> ExitCode {
    match args.command {
        DeliveriesCommand::List(a) => {
            client::run("deliveries list", &a.client, config_file, |api| {
                list(api, &a)
            })
        }
        DeliveriesCommand::Show(a) => {
            client::run("deliveries show", &a.client, config_file, |api| {
                show(api, &a)
            })
        }
    }
}

async fn list(api: Api, a: &ListArgs) -> anyhow::Result<Output> {
    let page = api
        .list(
            &["v1", "deliveries"],
            &a.filter.fields(),
            Some(a.limit as usize),
        )
        .await?;
    if a.client.json {
        return Ok(page.to_json().into());
    }
    let deliveries = page.items()?;
    if deliveries.is_empty() {
        return Ok("No deliveries match.".to_string().into());
    }
    let mut t = output::table(&[
        "ID",
        "EVENT",
        "ENDPOINT",
        "TYPE",
        "STATE",
        "ATTEMPTS",
        "NEXT ATTEMPT",
        "LAST",
    ]);
    for d in &deliveries {
        t.add_row(vec![
            Cell::new(text(&d["id"])),
            Cell::new(text(&d["event_id"])),
            Cell::new(text(&d["endpoint_id"])),
            Cell::new(text(&d["event_type"])),
            state_cell(d["state"].as_str().unwrap_or("?")),
            Cell::new(text(&d["attempts"])),
            Cell::new(next_attempt(d)),
            Cell::new(cut(&last(d), 60)),
        ]);
    }
    let note = (page.next_cursor.is_some() && deliveries.len() >= a.limit as usize).then(|| {
        format!(
            "(the newest {} shown; there may be more: raise --limit or narrow the filter)",
            deliveries.len()
        )
    });
    Ok(Output {
        text: output::render(&t),
        note,
        code: 0,
    })
}

async fn show(api: Api, a: &ShowArgs) -> anyhow::Result<Output> {
    let answer = api.get(&["v1", "deliveries", &a.id], &[]).await?;
    if a.client.json {
        return Ok(answer.text.into());
    }
    let d = &answer.body;
    let mut rows: Vec<(&str, String)> = vec![
        ("id", text(&d["id"])),
        ("event", text(&d["event_id"])),
        ("endpoint", text(&d["endpoint_id"])),
        ("event type", text(&d["event_type"])),
        ("state", text(&d["state"])),
        ("attempts", text(&d["attempts"])),
        ("next attempt", next_attempt(d)),
        ("last", last(d)),
        ("created", text(&d["created_at"])),
    ];
    if d["finished_at"].is_string() {
        rows.push(("finished", text(&d["finished_at"])));
    }
    // The payload exactly as stored (parsing it would reorder its keys).
    let payload = serde_json::from_str::<RawPayload>(&answer.text)
        .ok()
        .and_then(|p| p.payload)
        .map(|p| cut(p.get(), 200))
        .unwrap_or_else(|| "-".to_string());
    rows.push(("payload", payload));
    let mut out = details(&rows);
    let attempts = d["attempt_log"].as_array().cloned().unwrap_or_default();
    if attempts.is_empty() {
        out.push_str("\nNo attempts yet.");
        return Ok(out.into());
    }
    let mut t = output::table(&[
        "ATTEMPT", "TRIGGER", "STARTED", "DURATION", "STATUS", "OUTCOME", "ERROR", "RESPONSE",
    ]);
    for at in &attempts {
        let outcome = at["outcome"].as_str().unwrap_or("?");
        let outcome_cell = Cell::new(outcome).fg(if outcome == "success" {
            Color::Green
        } else {
            Color::Red
        });
        t.add_row(vec![
            Cell::new(text(&at["attempt"])),
            Cell::new(text(&at["trigger"])),
            Cell::new(text(&at["started_at"])),
            Cell::new(millis(&at["duration_ms"])),
            Cell::new(text(&at["status_code"])),
            outcome_cell,
            Cell::new(cut(&text(&at["error"]), 60)),
            Cell::new(match at["response_body"].as_str() {
                Some(body) => first_line(body, 60),
                None => "-".to_string(),
            }),
        ]);
    }
    out.push_str("\nAttempts:\n");
    out.push_str(&output::render(&t));
    Ok(out.into())
}

#[derive(serde::Deserialize)]
struct RawPayload {
    payload: Option<Box<serde_json::value::RawValue>>,
}

/// When the next attempt is due: `in 4m 59s`, `now`, `waiting` (pending but not scheduled:
/// its endpoint is disabled, or it queues behind an earlier delivery to an ordered
/// endpoint), or `-` once finished.
fn next_attempt(d: &Value) -> String {
    match (&d["next_attempt_at"], d["state"].as_str()) {
        (Value::String(_), _) => relative(&d["next_attempt_at"]),
        (_, Some("pending")) => "waiting".to_string(),
        _ => "-".to_string(),
    }
}

/// The last attempt's status and error, or `-` before the first.
fn last(d: &Value) -> String {
    if d["last_status_code"].is_null() && d["last_error"].is_null() {
        "-".to_string()
    } else {
        describe(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_use_the_api_names() {
        let f = FilterArgs {
            state: Some("failed".into()),
            endpoint: Some("ep_1".into()),
            since: Some("1h".into()),
            ..FilterArgs::default()
        };
        assert_eq!(
            f.body(),
            json!({"state": "failed", "endpoint_id": "ep_1", "since": "1h"})
        );
        assert_eq!(FilterArgs::default().body(), json!({}));
    }

    #[test]
    fn instants_are_checked_locally() {
        assert!(instant_text("1h").is_ok());
        assert!(instant_text("2026-11-22T07:00:00Z").is_ok());
        assert!(instant_text("yesterday").is_err());
    }

    #[test]
    fn next_attempts() {
        assert_eq!(
            next_attempt(&json!({"state": "pending", "next_attempt_at": null})),
            "waiting"
        );
        assert_eq!(
            next_attempt(&json!({"state": "failed", "next_attempt_at": null})),
            "-"
        );
    }
}
