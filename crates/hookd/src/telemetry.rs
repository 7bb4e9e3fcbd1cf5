//! Logs through `tracing` on stderr: readable text, one JSON object per line with
//! `HOOKD_LOG_FORMAT=json`. `RUST_LOG` overrides `HOOKD_LOG_LEVEL`. Text is coloured only
//! when stderr is a terminal and `NO_COLOR` is not set, so a log file or a journal gets no
//! escape codes.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::daemon::config::LogFormat;

pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(format!("{level},tokio_cron_scheduler=warn")))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
