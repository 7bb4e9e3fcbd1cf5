//! `hookd endpoints ...`: list, register, show, disable, enable, rotate the secret of, and
//! delete endpoints.

use std::path::Path;
use std::process::ExitCode;

use anyhow::anyhow;
use comfy_table::{Cell, Color};
use reqwest::Method;
use serde_json::{json, Map, Value};

use super::client::{self, Answer, Api, ApiFailure, ClientArgs, Output};
use super::output::{self, details, relative, text, time_and_relative};

#[derive(clap::Args, Debug)]
#[command(arg_required_else_help = true)]
pub struct EndpointsArgs {
    #[command(subcommand)]
    pub command: EndpointsCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum EndpointsCommand {
    /// List endpoints: id, URL, event types, signature scheme, status, ordering
    List(ListArgs),
    /// Register an endpoint; prints it with its signing secret
    Add(AddArgs),
    /// Show one endpoint, its secrets included
    Show(IdArgs),
    /// Disable an endpoint: no new deliveries, its pending ones parked
    Disable(IdArgs),
    /// Enable an endpoint again: its parked deliveries are due at once
    Enable(IdArgs),
    /// Give an endpoint a new signing secret; the old one keeps signing for a grace period
    RotateSecret(RotateArgs),
    /// Delete an endpoint; its delivery history stays readable
    Delete(IdArgs),
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// Only this tenant's endpoints
    #[arg(long, value_name = "TENANT")]
    pub tenant: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(clap::Args, Debug)]
pub struct IdArgs {
    /// The endpoint's id (ep_...)
    #[arg(value_name = "ID")]
    pub id: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(clap::Args, Debug)]
pub struct AddArgs {
    /// The receiver's URL (http or https). The admin API's address is --api-url here
    #[arg(long, value_name = "URL")]
    pub url: String,
    /// Event types to deliver: a name, a prefix such as payment.*, or * (repeat the flag for
    /// more) [default: *]
    #[arg(long = "event-type", value_name = "TYPE")]
    pub event_types: Vec<String>,
    /// How requests are signed [default: standard]
    #[arg(long, value_name = "SCHEME", value_parser = ["standard", "toss", "none"])]
    pub scheme: Option<String>,
    /// The signing secret [default: a new whsec_... secret]
    #[arg(long, value_name = "SECRET")]
    pub secret: Option<String>,
    /// Send `Authorization: Bearer TOKEN` to the receiver
    #[arg(long, value_name = "TOKEN")]
    pub bearer_token: Option<String>,
    /// Delays before each retry, e.g. 1m,5m; "" for no automatic retry [default: hookd's
    /// HOOKD_RETRY_SCHEDULE]
    #[arg(long, value_name = "LIST", value_parser = schedule_text)]
    pub retry_schedule: Option<String>,
    /// Whole-request timeout of one attempt, e.g. 10s [default: hookd's HOOKD_REQUEST_TIMEOUT]
    #[arg(long, value_name = "DURATION", value_parser = duration_text)]
    pub timeout: Option<String>,
    /// A static header sent with every request (repeat the flag for more)
    #[arg(long = "header", value_name = "NAME=VALUE", value_parser = header)]
    pub headers: Vec<(String, String)>,
    /// A description for people
    #[arg(long, value_name = "TEXT")]
    pub description: Option<String>,
    /// The tenant it belongs to, for good [default: none, the provider-wide tenant]
    #[arg(long, value_name = "TENANT")]
    pub tenant: Option<String>,
    /// Deliver strictly in insertion order, one at a time
    #[arg(long)]
    pub ordered: bool,
    /// Deliveries per second at most, across every instance, e.g. 20 or 0.5 [default:
    /// unlimited]
    #[arg(long, value_name = "PER_SECOND")]
    pub rate_limit: Option<f64>,
    /// Register it disabled: no deliveries until `hookd endpoints enable`
    #[arg(long)]
    pub disabled: bool,
    /// Base URL of hookd's admin API (--url on the other commands) [default: http:// +
    /// HOOKD_LISTEN, i.e. http://127.0.0.1:8080]
    #[arg(long = "api-url", value_name = "URL", value_parser = client::parse_base_url)]
    pub api_url: Option<String>,
    /// Admin token [default: HOOKD_ADMIN_TOKEN]
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Print the API's JSON answer as is, for scripts
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct RotateArgs {
    /// The endpoint's id (ep_...)
    #[arg(value_name = "ID")]
    pub id: String,
    /// How long the old secret keeps signing beside the new one; 0s retires it at once
    /// [default: 24h]
    #[arg(long, value_name = "DURATION", value_parser = duration_text)]
    pub grace: Option<String>,
    /// The new secret [default: a new whsec_... secret]
    #[arg(long, value_name = "SECRET")]
    pub secret: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// A duration as hookd reads it (`10s`, `1m`), checked here so a typo exits 2.
pub fn duration_text(text: &str) -> Result<String, String> {
    crate::duration::parse_duration(text)?;
    Ok(text.trim().to_string())
}

/// A comma-separated list of durations, or empty.
fn schedule_text(text: &str) -> Result<String, String> {
    crate::duration::parse_schedule(text)?;
    Ok(text.trim().to_string())
}

fn header(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_string(), value.to_string()))
        }
        _ => Err(format!("{text:?} is not NAME=VALUE")),
    }
}

/// `hookd endpoints ...`.
pub fn main(args: EndpointsArgs, config_file: Option<&Path>) -> ExitCode {
    match args.command {
        EndpointsCommand::List(a) => client::run("endpoints list", &a.client, config_file, |api| {
            list(api, a.tenant.clone(), a.client.json)
        }),
        EndpointsCommand::Add(a) => {
            let c = ClientArgs {
                url: a.api_url.clone(),
                token: a.token.clone(),
                json: a.json,
            };
            client::run("endpoints add", &c, config_file, |api| add(api, a))
        }
        EndpointsCommand::Show(a) => client::run("endpoints show", &a.client, config_file, |api| {
            show(api, a.id.clone(), a.client.json)
        }),
        EndpointsCommand::Disable(a) => {
            client::run("endpoints disable", &a.client, config_file, |api| {
                set_enabled(api, a.id.clone(), false, a.client.json)
            })
        }
        EndpointsCommand::Enable(a) => {
            client::run("endpoints enable", &a.client, config_file, |api| {
                set_enabled(api, a.id.clone(), true, a.client.json)
            })
        }
        EndpointsCommand::RotateSecret(a) => {
            client::run("endpoints rotate-secret", &a.client, config_file, |api| {
                rotate(
                    api,
                    a.id.clone(),
                    a.grace.clone(),
                    a.secret.clone(),
                    a.client.json,
                )
            })
        }
        EndpointsCommand::Delete(a) => {
            client::run("endpoints delete", &a.client, config_file, |api| {
                delete(api, a.id.clone(), a.client.json)
            })
        }
    }
}

async fn list(api: Api, tenant: Option<String>, json: bool) -> anyhow::Result<Output> {
    let query: Vec<(&str, String)> = tenant.into_iter().map(|t| ("tenant_id", t)).collect();
    let page = api.list(&["v1", "endpoints"], &query, None).await?;
    if json {
        return Ok(page.to_json().into());
    }
    let endpoints = page.items()?;
    if endpoints.is_empty() {
        return Ok(
            "No endpoints. Register one with `hookd endpoints add --url URL`."
                .to_string()
                .into(),
        );
    }
    let mut t = output::table(&["ID", "URL", "EVENT TYPES", "SCHEME", "STATUS", "ORDERED"]);
    for e in &endpoints {
        t.add_row(vec![
            Cell::new(text(&e["id"])),
            Cell::new(text(&e["url"])),
            Cell::new(event_types(e)),
            Cell::new(text(&e["signature_scheme"])),
            status_cell(e),
            Cell::new(yes_no(&e["ordered"])),
        ]);
    }
    Ok(output::render(&t).into())
}

async fn add(api: Api, a: AddArgs) -> anyhow::Result<Output> {
    let mut body = Map::new();
    body.insert("url".into(), json!(a.url));
    if !a.event_types.is_empty() {
        body.insert("event_types".into(), json!(a.event_types));
    }
    let optional = [
        ("signature_scheme", a.scheme),
        ("secret", a.secret),
        ("bearer_token", a.bearer_token),
        ("timeout", a.timeout),
        ("description", a.description),
        ("tenant_id", a.tenant),
    ];
    for (field, value) in optional {
        if let Some(v) = value {
            body.insert(field.into(), json!(v));
        }
    }
    if let Some(schedule) = a.retry_schedule {
        let delays: Vec<&str> = if schedule.is_empty() {
            Vec::new()
        } else {
            schedule.split(',').map(str::trim).collect()
        };
        body.insert("retry_schedule".into(), json!(delays));
    }
    if !a.headers.is_empty() {
        let headers: Map<String, Value> = a
            .headers
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
        body.insert("headers".into(), Value::Object(headers));
    }
    if a.ordered {
        body.insert("ordered".into(), json!(true));
    }
    if let Some(rate) = a.rate_limit {
        body.insert("rate_limit".into(), json!(rate));
    }
    if a.disabled {
        body.insert("enabled".into(), json!(false));
    }
    let answer = api
        .post(&["v1", "endpoints"], Some(&Value::Object(body)))
        .await?;
    if a.json {
        return Ok(answer.text.into());
    }
    let e = &answer.body;
    Ok(format!(
        "Registered endpoint {}. Receivers verify its requests with the secret below.\n\n{}",
        text(&e["id"]),
        endpoint_details(e)
    )
    .into())
}

async fn show(api: Api, id: String, json: bool) -> anyhow::Result<Output> {
    let answer = api.get(&["v1", "endpoints", &id], &[]).await?;
    if json {
        return Ok(answer.text.into());
    }
    Ok(endpoint_details(&answer.body).into())
}

async fn set_enabled(api: Api, id: String, enabled: bool, json: bool) -> anyhow::Result<Output> {
    let answer = change(
        &api,
        &id,
        Method::PATCH,
        &[],
        Some(&json!({ "enabled": enabled })),
    )
    .await?;
    if json {
        return Ok(answer.text.into());
    }
    let e = &answer.body;
    Ok(if enabled {
        format!(
            "Endpoint {id} enabled; deliveries parked while it was disabled are due now.\n\n{}",
            endpoint_details(e)
        )
    } else {
        format!(
            "Endpoint {id} disabled ({}); it gets no new deliveries and its pending ones are parked until `hookd endpoints enable {id}`.\n\n{}",
            text(&e["disabled_reason"]),
            endpoint_details(e)
        )
    }
    .into())
}

async fn rotate(
    api: Api,
    id: String,
    grace: Option<String>,
    secret: Option<String>,
    json: bool,
) -> anyhow::Result<Output> {
    let mut body = Map::new();
    if let Some(g) = grace {
        body.insert("grace".into(), json!(g));
    }
    if let Some(s) = secret {
        body.insert("secret".into(), json!(s));
    }
    let answer = change(
        &api,
        &id,
        Method::POST,
        &["rotate-secret"],
        Some(&Value::Object(body)),
    )
    .await?;
    if json {
        return Ok(answer.text.into());
    }
    let e = &answer.body;
    let previous = match e["previous_secret_expires_at"].as_str() {
        Some(_) => format!(
            "keeps signing beside the new one until {}",
            time_and_relative(&e["previous_secret_expires_at"])
        ),
        None => "retired at once".to_string(),
    };
    Ok(format!(
        "Rotated the secret of endpoint {id}.\n\n{}",
        details(&[
            ("new secret", text(&e["secret"])),
            ("previous secret", previous),
        ])
    )
    .into())
}

async fn delete(api: Api, id: String, json: bool) -> anyhow::Result<Output> {
    change(&api, &id, Method::DELETE, &[], None).await?;
    // The API answers 204 with no body; scripts still get one JSON line.
    Ok(if json {
        json!({ "id": id, "deleted": true }).to_string()
    } else {
        format!(
            "Deleted endpoint {id}. Its delivery history stays readable: hookd deliveries list --endpoint {id}"
        )
    }
    .into())
}

/// Changes an endpoint as it was just read: reads it for its `ETag`, then makes the call
/// under `If-Match`, so that a change someone made in between is not overwritten (the API
/// answers 412 and nothing is changed).
async fn change(
    api: &Api,
    id: &str,
    method: Method,
    tail: &[&str],
    body: Option<&Value>,
) -> anyhow::Result<Answer> {
    let read = api.get(&["v1", "endpoints", id], &[]).await?;
    let mut segments = vec!["v1", "endpoints", id];
    segments.extend_from_slice(tail);
    api.call_if(method, &segments, &[], body, read.etag.as_deref())
        .await
        .map_err(|e| match e.downcast_ref::<ApiFailure>() {
            Some(failure) if failure.status == 412 => {
                anyhow!("endpoint {id} changed since it was read; run the command again")
            }
            _ => e,
        })
}

fn event_types(e: &Value) -> String {
    match e["event_types"].as_array() {
        Some(types) => types.iter().map(text).collect::<Vec<_>>().join(", "),
        None => "-".to_string(),
    }
}

fn yes_no(v: &Value) -> &'static str {
    if v.as_bool() == Some(true) {
        "yes"
    } else {
        "no"
    }
}

/// `enabled`, `enabled, failing since 5m ago`, `enabled, secrets unreadable` or
/// `disabled: <reason>`.
fn status(e: &Value) -> String {
    if e["enabled"].as_bool() == Some(false) {
        return match e["disabled_reason"].as_str() {
            Some(reason) => format!("disabled: {reason}"),
            None => "disabled".to_string(),
        };
    }
    if e["unreadable"].is_string() {
        return "enabled, secrets unreadable".to_string();
    }
    match e["failing_since"].as_str() {
        Some(_) => format!("enabled, failing since {}", relative(&e["failing_since"])),
        None => "enabled".to_string(),
    }
}

fn status_cell(e: &Value) -> Cell {
    let colour = if e["enabled"].as_bool() == Some(false) || e["unreadable"].is_string() {
        Color::Red
    } else if e["failing_since"].is_string() {
        Color::Yellow
    } else {
        Color::Green
    };
    Cell::new(status(e)).fg(colour)
}

/// One endpoint, field by field, secrets included when the API gave them.
fn endpoint_details(e: &Value) -> String {
    let mut rows: Vec<(&str, String)> = vec![("id", text(&e["id"])), ("url", text(&e["url"]))];
    if e["description"].is_string() {
        rows.push(("description", text(&e["description"])));
    }
    if e["tenant_id"].is_string() {
        rows.push(("tenant", text(&e["tenant_id"])));
    }
    rows.push(("event types", event_types(e)));
    rows.push(("status", status(e)));
    if e["unreadable"].is_string() {
        rows.push(("unreadable", text(&e["unreadable"])));
    }
    if e["disabled_at"].is_string() {
        rows.push(("disabled at", time_and_relative(&e["disabled_at"])));
    }
    rows.push(("ordered", yes_no(&e["ordered"]).to_string()));
    if e["rate_limit"].is_number() {
        rows.push(("rate limit", format!("{}/s", e["rate_limit"])));
    }
    rows.push(("signature scheme", text(&e["signature_scheme"])));
    if e["secret"].is_string() {
        rows.push(("secret", text(&e["secret"])));
    }
    if e["previous_secret_expires_at"].is_string() {
        rows.push((
            "previous secret",
            format!(
                "still signs until {}",
                time_and_relative(&e["previous_secret_expires_at"])
            ),
        ));
    }
    let bearer = match (&e["bearer_token"], e["has_bearer_token"].as_bool()) {
        (Value::String(t), _) => t.clone(),
        (_, Some(true)) => "set".to_string(),
        _ => "none".to_string(),
    };
    rows.push(("bearer token", bearer));
    let schedule = match e["retry_schedule"].as_array() {
        None => "hookd's global schedule".to_string(),
        Some(s) if s.is_empty() => "none (manual resend only)".to_string(),
        Some(s) => s.iter().map(text).collect::<Vec<_>>().join(", "),
    };
    rows.push(("retry schedule", schedule));
    rows.push((
        "timeout",
        match e["timeout"].as_str() {
            Some(t) => t.to_string(),
            None => "hookd's global timeout".to_string(),
        },
    ));
    let headers = match e["headers"].as_object() {
        Some(h) if !h.is_empty() => h
            .iter()
            .map(|(k, v)| format!("{k}: {}", text(v)))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => "none".to_string(),
    };
    rows.push(("headers", headers));
    rows.push(("last success", time_and_relative(&e["last_success_at"])));
    if e["failing_since"].is_string() {
        rows.push(("failing since", time_and_relative(&e["failing_since"])));
    }
    rows.push(("created", text(&e["created_at"])));
    rows.push(("updated", text(&e["updated_at"])));
    details(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_name_value() {
        assert_eq!(
            header("X-Tenant=acme=1").unwrap(),
            ("X-Tenant".to_string(), "acme=1".to_string())
        );
        assert!(header("X-Tenant").is_err());
        assert!(header("=x").is_err());
    }

    #[test]
    fn statuses() {
        assert_eq!(status(&json!({"enabled": true})), "enabled");
        assert_eq!(
            status(&json!({"enabled": false, "disabled_reason": "disabled by an operator"})),
            "disabled: disabled by an operator"
        );
        assert!(
            status(&json!({"enabled": true, "failing_since": "2020-01-01T00:00:00.000Z"}))
                .starts_with("enabled, failing since ")
        );
        assert_eq!(
            status(
                &json!({"enabled": true, "failing_since": "2020-01-01T00:00:00.000Z", "unreadable": "why"})
            ),
            "enabled, secrets unreadable"
        );
    }

    #[test]
    fn flags_are_checked_locally() {
        assert!(duration_text("soon").is_err());
        assert_eq!(duration_text(" 10s ").unwrap(), "10s");
        assert_eq!(schedule_text("").unwrap(), "");
        assert!(schedule_text("1m,x").is_err());
    }
}
