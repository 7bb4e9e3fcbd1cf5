//! The `hookd` command.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use hookd::{telemetry, Application, Config};

/// A reliable outbound webhook dispatcher.
#[derive(Parser)]
#[command(name = "hookd", version, about, long_about = None, arg_required_else_help = true)]
struct Cli {
    /// A TOML file of settings (see docs/configuration.md).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply migrations, then run the dispatcher, the admin API, /metrics and health checks.
    Serve(ServeArgs),
    /// Apply pending database migrations and exit.
    Migrate(DatabaseArgs),
    /// Run a local webhook receiver for development: print, verify and answer requests.
    Listen(hookd::listen::ListenArgs),
    /// Send a sample event to one endpoint through the admin API and show the outcome.
    SendTest(hookd::cli::send_test::SendTestArgs),
    /// List, register, show, disable, enable, rotate the secret of and delete endpoints.
    Endpoints(hookd::cli::endpoints::EndpointsArgs),
    /// The delivery log, and one delivery with its attempts.
    Deliveries(hookd::cli::deliveries::DeliveriesArgs),
    /// Resend one delivery, or every delivery matching a filter (a durable job, followed).
    Resend(hookd::cli::resend::ResendArgs),
    /// Tenants' portal tokens: create one (with its portal link), revoke them all.
    Tenants(hookd::cli::tenants::TenantsArgs),
}

#[derive(Args)]
struct DatabaseArgs {
    /// sqlite://REL/PATH, sqlite:///ABS/PATH or postgres://... [env: HOOKD_DATABASE_URL]
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    database: DatabaseArgs,
    /// Address of the admin API, /metrics and health checks [env: HOOKD_LISTEN]
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Require `Authorization: Bearer TOKEN` on /v1 [env: HOOKD_ADMIN_TOKEN]
    #[arg(long, value_name = "TOKEN")]
    admin_token: Option<String>,
    /// Delays before each retry, e.g. 1m,5m,10m; empty for none [env: HOOKD_RETRY_SCHEDULE]
    #[arg(long, value_name = "LIST")]
    retry_schedule: Option<String>,
    /// Whole-request timeout of one attempt, e.g. 10s [env: HOOKD_REQUEST_TIMEOUT]
    #[arg(long, value_name = "DURATION")]
    request_timeout: Option<String>,
    /// Allow loopback/private/link-local destinations [env: HOOKD_ALLOW_PRIVATE_TARGETS]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    allow_private_targets: Option<String>,
    /// Attempts in flight at once [env: HOOKD_CONCURRENCY]
    #[arg(long, value_name = "N")]
    concurrency: Option<String>,
    /// Outbox and due-queue poll interval, e.g. 100ms [env: HOOKD_POLL_INTERVAL]
    #[arg(long, value_name = "DURATION")]
    poll_interval: Option<String>,
    /// text or json [env: HOOKD_LOG_FORMAT]
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<String>,
}

impl ServeArgs {
    fn flags(self) -> Vec<(&'static str, Option<String>)> {
        vec![
            ("database_url", self.database.database_url),
            ("listen", self.listen),
            ("admin_token", self.admin_token),
            ("retry_schedule", self.retry_schedule),
            ("request_timeout", self.request_timeout),
            ("allow_private_targets", self.allow_private_targets),
            ("concurrency", self.concurrency),
            ("poll_interval", self.poll_interval),
            ("log_format", self.log_format),
        ]
    }
}

fn main() -> ExitCode {
    // First, before any SQLite connection can open.
    let sqlite_on_mimalloc = hookd::allocator::use_for_sqlite();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            // `hookd` or `hookd deliveries` alone asks what there is: the help, as `--help`
            // prints it (stdout, exit 0), rather than a usage error.
            let help = e.render();
            if std::io::stdout().is_terminal() {
                print!("{}", help.ansi());
            } else {
                print!("{help}");
            }
            return ExitCode::SUCCESS;
        }
        Err(e) => e.exit(),
    };
    let (flags, serve) = match cli.command {
        Command::Serve(args) => (args.flags(), true),
        Command::Migrate(args) => (vec![("database_url", args.database_url)], false),
        Command::Listen(args) => return hookd::listen::main(args),
        Command::SendTest(args) => return hookd::cli::send_test::main(args, cli.config.as_deref()),
        Command::Endpoints(args) => {
            return hookd::cli::endpoints::main(args, cli.config.as_deref())
        }
        Command::Deliveries(args) => {
            return hookd::cli::deliveries::main(args, cli.config.as_deref())
        }
        Command::Resend(args) => return hookd::cli::resend::main(args, cli.config.as_deref()),
        Command::Tenants(args) => return hookd::cli::tenants::main(args, cli.config.as_deref()),
    };
    let config = match Config::load(cli.config.as_deref(), flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hookd: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(config.log_format, &config.log_level);
    if !sqlite_on_mimalloc {
        tracing::warn!("SQLite was initialized early: it keeps the C library's malloc");
    }
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let result = runtime.block_on(async {
        if serve {
            serve_until_signal(config).await
        } else {
            migrate(config).await
        }
    });
    // After a failure, tasks may be left running (an attempt waiting for its receiver, a
    // blocking DNS lookup): the exit does not wait for them.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("hookd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve_until_signal(config: Config) -> anyhow::Result<()> {
    #[cfg(all(feature = "fault-injection", unix))]
    if let Some(fault) = config.fault.clone() {
        tracing::warn!(
            task = fault.task.as_str(),
            "fault injection armed: the task fails at SIGUSR1"
        );
        tokio::spawn(fault.trip_on_sigusr1());
    }
    let open = config.admin_token.is_none().then_some(config.listen);
    let app = Application::build(config).await?;
    if let Some(listen) = open {
        tracing::warn!(
            %listen,
            "no HOOKD_ADMIN_TOKEN: the admin API is open to every process on this machine (web pages are kept out); set a token where other users or programs share it"
        );
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    app.run_until_stopped(shutdown).await
}

async fn migrate(config: Config) -> anyhow::Result<()> {
    let store = hookd::daemon::app::connect(&config.database_url).await?;
    store.migrate().await?;
    tracing::info!(database = store.backend(), "migrations applied");
    Ok(())
}

/// Cancels `shutdown` on SIGTERM or SIGINT.
async fn cancel_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("signal received");
    shutdown.cancel();
}
