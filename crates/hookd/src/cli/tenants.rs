//! `hookd tenants token create|revoke`: a tenant's portal token, and revoking all of a
//! tenant's tokens at once.

use std::path::Path;
use std::process::ExitCode;

use serde_json::{json, Map, Value};

use super::client::{self, Api, ClientArgs, Output};
use super::endpoints::duration_text;
use super::output::{details, text, time_and_relative};

#[derive(clap::Args, Debug)]
#[command(arg_required_else_help = true)]
pub struct TenantsArgs {
    #[command(subcommand)]
    pub command: TenantsCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum TenantsCommand {
    /// A tenant's portal tokens
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(clap::Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a token for a tenant; prints it (shown once) and its portal link
    Create(CreateArgs),
    /// Revoke every token of a tenant at once: its portal links stop working
    Revoke(TenantArg),
}

#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// The tenant (1 to 64 characters from A-Z a-z 0-9 . _ : -)
    #[arg(value_name = "TENANT")]
    pub tenant: String,
    /// How long the token is valid, e.g. 1h; at most 90 days [default: 24h]
    #[arg(long, value_name = "DURATION", value_parser = duration_text)]
    pub expires_in: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(clap::Args, Debug)]
pub struct TenantArg {
    /// The tenant
    #[arg(value_name = "TENANT")]
    pub tenant: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `hookd tenants ...`.
pub fn main(args: TenantsArgs, config_file: Option<&Path>) -> ExitCode {
    match args.command {
        TenantsCommand::Token(TokenCommand::Create(a)) => {
            client::run("tenants token create", &a.client, config_file, |api| {
                create(api, a.tenant.clone(), a.expires_in.clone(), a.client.json)
            })
        }
        TenantsCommand::Token(TokenCommand::Revoke(a)) => {
            client::run("tenants token revoke", &a.client, config_file, |api| {
                revoke(api, a.tenant.clone(), a.client.json)
            })
        }
    }
}

async fn create(
    api: Api,
    tenant: String,
    expires_in: Option<String>,
    json: bool,
) -> anyhow::Result<Output> {
    let mut body = Map::new();
    if let Some(e) = expires_in {
        body.insert("expires_in".into(), json!(e));
    }
    let answer = api
        .post(
            &["v1", "tenants", &tenant, "tokens"],
            Some(&Value::Object(body)),
        )
        .await?;
    if json {
        return Ok(answer.text.into());
    }
    let t = &answer.body;
    Ok(format!(
        "Token for tenant {tenant}, shown this once (hookd keeps only its hash):\n\n{}",
        details(&[
            ("token", text(&t["token"])),
            ("portal", text(&t["portal_url"])),
            ("expires", time_and_relative(&t["expires_at"])),
        ])
    )
    .into())
}

async fn revoke(api: Api, tenant: String, json: bool) -> anyhow::Result<Output> {
    api.delete(&["v1", "tenants", &tenant, "tokens"]).await?;
    Ok(if json {
        String::new().into()
    } else {
        format!("Every token of tenant {tenant} is revoked: its portal links no longer work.")
            .into()
    })
}
