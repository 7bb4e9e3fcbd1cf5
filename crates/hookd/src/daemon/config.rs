//! Configuration, layered: built-in defaults < TOML file < `HOOKD_*` environment < flags.
//!
//! Every setting has one name, used as the TOML key and, upper-cased behind `HOOKD_`, as
//! the environment variable. Values are read as text by every layer (a TOML number or array
//! is turned into text first), so each setting is parsed and checked in one place.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::daemon::api::browser::AllowedHosts;
use crate::daemon::retry;
use crate::duration;

/// Retention may not be shorter: it is also how long an `event_id` is remembered for
/// dedupe, and `0s` would delete every finished delivery at each run.
pub const MIN_RETENTION: Duration = Duration::from_secs(3600);
/// Nor longer (100 years): the cutoff must stay a time the database can hold.
pub const MAX_RETENTION: Duration = Duration::from_secs(100 * 365 * 86400);

/// Every setting with its default (`None`: unset unless given).
pub const SETTINGS: &[(&str, Option<&str>)] = &[
    ("database_url", Some("sqlite://hookd.db")),
    ("database_read_url", None),
    ("listen", Some("127.0.0.1:8080")),
    ("admin_token", None),
    ("allowed_hosts", None),
    ("secret_key", None),
    ("retry_schedule", Some(retry::DEFAULT_SCHEDULE)),
    ("retry_jitter", Some("0")),
    ("request_timeout", Some("10s")),
    ("allow_private_targets", Some("false")),
    ("allow_targets", Some("")),
    ("https_only", Some("false")),
    ("egress_proxy", None),
    ("otlp_endpoint", None),
    ("otlp_protocol", Some("http/protobuf")),
    ("concurrency", Some("512")),
    ("claim_batch", Some("512")),
    ("endpoint_concurrency", Some("64")),
    ("retry_concurrency", Some("0")),
    ("poll_interval", Some("100ms")),
    ("wake_gap", Some("2ms")),
    ("lease_duration", Some("90s")),
    ("rescue_schedule", Some("*/5 * * * * *")),
    ("heartbeat_interval", Some("2s")),
    ("heartbeat_timeout", Some("6s")),
    ("shutdown_timeout", Some("15s")),
    ("max_payload_bytes", Some("262144")),
    ("max_response_bytes", Some("4096")),
    ("gauge_schedule", Some("*/5 * * * * *")),
    ("disable_after", Some("5days")),
    ("retention_period", Some("30days")),
    ("retention_schedule", Some("0 */5 * * * *")),
    ("retention_batch", Some("1000")),
    ("log_format", Some("text")),
    ("log_level", Some("info")),
];

/// The daemon's configuration, checked. Its `Debug` hides the admin token, the secret key
/// and the database password.
#[derive(Clone)]
pub struct Config {
    /// `sqlite://REL/PATH`, `sqlite:///ABS/PATH` or `postgres://...`.
    pub database_url: String,
    /// PostgreSQL: a streaming replica the delivery log, lists and gauges are read from.
    pub database_read_url: Option<String>,
    /// Admin API, `/metrics`, `/healthz`, `/readyz`.
    pub listen: SocketAddr,
    /// When set, every `/v1` call needs `Authorization: Bearer <token>`.
    pub admin_token: Option<String>,
    /// The `Host` names the HTTP server answers to; `None`: the default for `listen` (see
    /// [`Config::allowed_hosts`]).
    pub allowed_hosts: Option<AllowedHosts>,
    /// Base64 of 32 bytes: encrypts endpoint secrets and bearer tokens at rest.
    pub secret_key: Option<String>,
    /// Delay before each retry; N entries = N retries = N+1 attempts.
    pub retry_schedule: Vec<Duration>,
    /// Each retry's delay is drawn uniformly within ± this fraction of its step (0 to 1;
    /// 0 keeps the ladder exact), so that deliveries that failed together do not all
    /// retry in the same second.
    pub retry_jitter: f64,
    /// Whole-request timeout of one attempt, unless the endpoint sets its own.
    pub request_timeout: Duration,
    /// Allow loopback/private/link-local destinations (tests and local development).
    pub allow_private_targets: bool,
    /// Private ranges allowed all the same, e.g. `10.20.0.0/16,fd00::/8`.
    pub allow_targets: Vec<ipnet::IpNet>,
    /// Refuse `http://` endpoint URLs.
    pub https_only: bool,
    /// Every delivery goes through this proxy (`http://`, `socks5://` or `socks5h://`),
    /// typically an SSRF-filtering one such as Smokescreen. The usual proxy variables
    /// (`HTTP_PROXY`...) are never used for deliveries.
    pub egress_proxy: Option<url::Url>,
    /// An OTLP/HTTP collector (`http://127.0.0.1:4318`): a span of every attempt is exported
    /// there. `None`: no export (attempts still send a `traceparent`).
    pub otlp_endpoint: Option<url::Url>,
    /// `http/protobuf` or `http/json`.
    pub otlp_protocol: crate::daemon::otlp::Encoding,
    /// Attempts in flight at once, across all endpoints, counting each until its result is
    /// written. 512 by default: eight endpoints that hang for the whole timeout at their
    /// `endpoint_concurrency` (64) before the pool is full, and about 2,500 attempts/s at
    /// 200 ms each.
    pub concurrency: usize,
    /// Attempts one endpoint may have in flight at once, so that one that hangs for the
    /// whole timeout holds at most this much of the pool.
    pub endpoint_concurrency: usize,
    /// Retries that may be in flight at once; the rest of the pool stays free for first
    /// attempts. `0`: three quarters of `concurrency`.
    pub retry_concurrency: usize,
    /// Deliveries claimed per database round trip.
    pub claim_batch: u32,
    /// How often the outbox and the due queue are polled when nothing wakes the dispatcher.
    pub poll_interval: Duration,
    /// The least time between the starts of two outbox reads woken by producers' commits
    /// (NOTIFY, or SQLite's WAL watch). Longer: fewer, larger ingests under a stream of
    /// single-row commits, for more commit-to-receipt latency.
    pub wake_gap: Duration,
    /// How long a claim is valid; an attempt is cut short 5 s before its lease ends, and a
    /// lease that expires (the process died) is returned to pending by the rescuer.
    pub lease_duration: Duration,
    /// When expired leases are looked for: a cron expression with seconds
    /// (`*/5 * * * * *`: every 5 seconds).
    pub rescue_schedule: String,
    /// How often this instance writes its heartbeat and looks for instances whose
    /// heartbeat stopped, to take their leases back (PostgreSQL).
    pub heartbeat_interval: Duration,
    /// How old an instance's heartbeat may be before its leases are taken back.
    pub heartbeat_timeout: Duration,
    /// How long shutdown waits for attempts in flight before releasing them.
    pub shutdown_timeout: Duration,
    /// A larger event payload is not sent: its deliveries end `failed`.
    pub max_payload_bytes: usize,
    /// How much of a response body is kept in the attempt log.
    pub max_response_bytes: usize,
    /// When the backlog gauges are refreshed from the database (cron, with seconds).
    pub gauge_schedule: String,
    /// An endpoint failing with no success for this long is disabled (`0s`: never).
    pub disable_after: Duration,
    /// Finished deliveries (with their attempts) and events older than this are deleted.
    /// It is also how long an `event_id` is remembered for dedupe.
    pub retention_period: Duration,
    /// When retention runs: a cron expression with seconds (`0 */5 * * * *`).
    pub retention_schedule: String,
    /// Rows deleted per retention transaction.
    pub retention_batch: u32,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// A `tracing` filter such as `info` or `hookd=debug`.
    pub log_level: String,
    /// Test seam: an essential task that fails when tripped (`HOOKD_TEST_FAULT`).
    #[cfg(feature = "fault-injection")]
    #[doc(hidden)]
    pub fault: Option<crate::daemon::fault::Fault>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// A configuration error, naming the setting and where its value came from.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

/// A value and the layer it came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Given {
    value: String,
    from: String,
}

/// Settings given as text, by name, each remembering its source.
#[derive(Debug, Default, Clone)]
pub struct Layers(BTreeMap<String, Given>);

impl Layers {
    /// Starts from the built-in defaults.
    pub fn defaults() -> Layers {
        let mut layers = Layers::default();
        for (name, default) in SETTINGS {
            if let Some(value) = default {
                layers.set(name, value, "default");
            }
        }
        layers
    }

    fn set(&mut self, name: &str, value: &str, from: &str) {
        self.0.insert(
            name.to_string(),
            Given {
                value: value.to_string(),
                from: from.to_string(),
            },
        );
    }

    fn known(name: &str) -> bool {
        SETTINGS.iter().any(|(n, _)| *n == name)
    }

    /// Lays a TOML file over the current values. Unknown keys are an error.
    pub fn toml_file(mut self, path: &Path) -> Result<Layers, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
        let from = format!("config file {}", path.display());
        let table: toml::Table = text
            .parse()
            .map_err(|e| ConfigError(format!("{from} is not valid TOML: {e}")))?;
        for (key, value) in table {
            if !Self::known(&key) {
                return Err(ConfigError(format!("{from}: unknown setting {key:?}")));
            }
            let text = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::Array(items) => items
                    .iter()
                    .map(|v| match v {
                        toml::Value::String(s) => Ok(s.clone()),
                        other => Err(ConfigError(format!(
                            "{from}: {key} must list strings, found {other}"
                        ))),
                    })
                    .collect::<Result<Vec<_>, _>>()?
                    .join(","),
                other => {
                    return Err(ConfigError(format!(
                        "{from}: {key} has an unsupported value {other}"
                    )))
                }
            };
            self.set(&key, &text, &from);
        }
        Ok(self)
    }

    /// Lays `HOOKD_<NAME>` variables over the current values. A variable that is set but
    /// empty counts as given (`HOOKD_RETRY_SCHEDULE=` means no retries).
    pub fn env(mut self, vars: impl IntoIterator<Item = (String, String)>) -> Layers {
        for (var, value) in vars {
            let Some(name) = var.strip_prefix("HOOKD_") else {
                continue;
            };
            let name = name.to_ascii_lowercase();
            if Self::known(&name) {
                self.set(&name, &value, &format!("environment variable {var}"));
            }
        }
        self
    }

    /// Lays command-line flags over the current values.
    pub fn flags<'a>(
        mut self,
        flags: impl IntoIterator<Item = (&'a str, Option<String>)>,
    ) -> Layers {
        for (name, value) in flags {
            if let Some(value) = value {
                self.set(name, &value, &format!("flag --{}", name.replace('_', "-")));
            }
        }
        self
    }

    fn get(&self, name: &str) -> Option<&Given> {
        self.0.get(name)
    }

    fn parse<T>(
        &self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        let given = self
            .get(name)
            .ok_or_else(|| ConfigError(format!("{name} is required")))?;
        parse(given.value.trim())
            .map_err(|e| ConfigError(format!("{name} (from {}): {e}", given.from)))
    }

    /// Checks every value and builds the configuration.
    pub fn build(&self) -> Result<Config, ConfigError> {
        let duration = |name: &str| self.parse(name, duration::parse_duration);
        let positive = |name: &str| -> Result<Duration, ConfigError> {
            self.parse(name, |s| {
                let d = duration::parse_duration(s)?;
                if d.is_zero() {
                    Err("must be more than zero".into())
                } else {
                    Ok(d)
                }
            })
        };
        let number = |name: &str, min: u64, max: u64| -> Result<u64, ConfigError> {
            self.parse(name, |s| {
                let n: u64 = s
                    .parse()
                    .map_err(|_| format!("{s:?} is not a whole number"))?;
                if (min..=max).contains(&n) {
                    Ok(n)
                } else {
                    Err(format!("must be between {min} and {max}"))
                }
            })
        };
        let config = Config {
            database_url: self.parse("database_url", |s| {
                if s.starts_with("sqlite:")
                    || s.starts_with("postgres://")
                    || s.starts_with("postgresql://")
                {
                    Ok(s.to_string())
                } else {
                    Err(format!("{s:?} is neither sqlite://PATH nor postgres://..."))
                }
            })?,
            database_read_url: match self.get("database_read_url") {
                Some(g) if !g.value.trim().is_empty() => {
                    Some(self.parse("database_read_url", |s| {
                        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
                            Ok(s.to_string())
                        } else {
                            Err("a read replica is a postgres://... URL".to_string())
                        }
                    })?)
                }
                _ => None,
            },
            listen: self.parse("listen", |s| {
                s.parse()
                    .map_err(|_| format!("{s:?} is not an address such as 127.0.0.1:8080"))
            })?,
            admin_token: match self.get("admin_token") {
                Some(g) if !g.value.is_empty() => Some(g.value.clone()),
                _ => None,
            },
            allowed_hosts: match self.get("allowed_hosts") {
                Some(g) if !g.value.trim().is_empty() => {
                    Some(self.parse("allowed_hosts", AllowedHosts::parse)?)
                }
                _ => None,
            },
            secret_key: match self.get("secret_key") {
                Some(g) if !g.value.is_empty() => {
                    crate::daemon::sealing::AesGcmSealer::from_base64(&g.value)
                        .map_err(|e| ConfigError(format!("secret_key (from {}): {e}", g.from)))?;
                    Some(g.value.clone())
                }
                _ => None,
            },
            retry_schedule: self.parse("retry_schedule", duration::parse_schedule)?,
            retry_jitter: self.parse("retry_jitter", retry::parse_jitter)?,
            request_timeout: positive("request_timeout")?,
            allow_private_targets: self.parse("allow_private_targets", parse_bool)?,
            allow_targets: self.parse("allow_targets", crate::daemon::ssrf::parse_ranges)?,
            https_only: self.parse("https_only", parse_bool)?,
            egress_proxy: match self.get("egress_proxy") {
                Some(g) if !g.value.trim().is_empty() => {
                    Some(self.parse("egress_proxy", parse_egress_proxy)?)
                }
                _ => None,
            },
            otlp_endpoint: match self.get("otlp_endpoint") {
                Some(g) if !g.value.trim().is_empty() => {
                    Some(self.parse("otlp_endpoint", parse_otlp_endpoint)?)
                }
                _ => None,
            },
            otlp_protocol: self.parse("otlp_protocol", crate::daemon::otlp::Encoding::parse)?,
            concurrency: number("concurrency", 1, 10_000)? as usize,
            claim_batch: number("claim_batch", 1, 10_000)? as u32,
            endpoint_concurrency: number("endpoint_concurrency", 1, 10_000)? as usize,
            retry_concurrency: number("retry_concurrency", 0, 10_000)? as usize,
            poll_interval: positive("poll_interval")?,
            wake_gap: duration("wake_gap")?,
            lease_duration: positive("lease_duration")?,
            rescue_schedule: self.parse("rescue_schedule", check_cron)?,
            heartbeat_interval: positive("heartbeat_interval")?,
            heartbeat_timeout: positive("heartbeat_timeout")?,
            shutdown_timeout: duration("shutdown_timeout")?,
            max_payload_bytes: number("max_payload_bytes", 1, 64 * 1024 * 1024)? as usize,
            max_response_bytes: number("max_response_bytes", 0, 1024 * 1024)? as usize,
            gauge_schedule: self.parse("gauge_schedule", check_cron)?,
            disable_after: duration("disable_after")?,
            retention_period: self.parse("retention_period", |s| {
                let d = duration::parse_duration(s)?;
                if d < MIN_RETENTION {
                    Err(format!(
                        "must be at least {}: it is also how long an event_id is remembered for dedupe, and a shorter one deletes finished deliveries before anyone can look at them",
                        duration::format_duration(MIN_RETENTION)
                    ))
                } else if d > MAX_RETENTION {
                    Err(format!(
                        "must be at most {}",
                        duration::format_duration(MAX_RETENTION)
                    ))
                } else {
                    Ok(d)
                }
            })?,
            retention_schedule: self.parse("retention_schedule", check_cron)?,
            retention_batch: number("retention_batch", 1, 100_000)? as u32,
            log_format: self.parse("log_format", |s| match s {
                "text" => Ok(LogFormat::Text),
                "json" => Ok(LogFormat::Json),
                _ => Err(format!("{s:?} is neither text nor json")),
            })?,
            log_level: self.parse("log_level", |s| Ok(s.to_string()))?,
            #[cfg(feature = "fault-injection")]
            fault: None,
        };
        if config.database_read_url.is_some() && config.database_url.starts_with("sqlite:") {
            return Err(ConfigError(
                "database_read_url needs a PostgreSQL database_url: SQLite has no replica".into(),
            ));
        }
        if config.heartbeat_timeout < config.heartbeat_interval * 2 {
            return Err(ConfigError(format!(
                "heartbeat_timeout ({}) must be at least twice heartbeat_interval ({})",
                duration::format_duration(config.heartbeat_timeout),
                duration::format_duration(config.heartbeat_interval)
            )));
        }
        if config.lease_duration <= config.request_timeout {
            return Err(ConfigError(format!(
                "lease_duration ({}) must be longer than request_timeout ({})",
                duration::format_duration(config.lease_duration),
                duration::format_duration(config.request_timeout)
            )));
        }
        Ok(config)
    }
}

/// A cron expression with a seconds field, checked at start rather than at its first run.
fn check_cron(s: &str) -> Result<String, String> {
    tokio_cron_scheduler::Job::new_async(s, |_, _| Box::pin(async {}))
        .map(|_| s.to_string())
        .map_err(|_| {
            format!("{s:?} is not a cron expression with seconds, such as \"0 */5 * * * *\"")
        })
}

/// An OTLP/HTTP collector's URL: `http://` or `https://` with a host.
fn parse_otlp_endpoint(s: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(s.trim())
        .map_err(|e| format!("not a URL such as http://127.0.0.1:4318 ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err("an OTLP/HTTP endpoint is http:// or https:// with a host".into());
    }
    Ok(url)
}

/// An egress proxy: `http://`, `socks5://` (names resolved by hookd, through its guard) or
/// `socks5h://` (names resolved by the proxy), with a host and nothing after the port. The
/// value is never echoed: it may carry the proxy's password.
fn parse_egress_proxy(s: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(s)
        .map_err(|e| format!("not a proxy URL such as http://127.0.0.1:4750 ({e})"))?;
    if !matches!(url.scheme(), "http" | "socks5" | "socks5h") {
        return Err(format!(
            "the proxy must be http://, socks5:// or socks5h://, not {}://",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("the proxy URL has no host".into());
    }
    if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
        return Err(
            "the proxy URL must be scheme://[user:password@]host:port, with no path".into(),
        );
    }
    Ok(url)
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" | "" => Ok(false),
        _ => Err(format!("{s:?} is neither true nor false")),
    }
}

impl Config {
    /// The `Host` names the HTTP server answers to: `allowed_hosts`, or by default the names
    /// of loopback on a loopback listen address and every host on any other.
    pub fn allowed_hosts(&self) -> AllowedHosts {
        self.allowed_hosts
            .clone()
            .unwrap_or_else(|| AllowedHosts::default_for(self.listen))
    }

    /// Retries allowed in flight: `retry_concurrency`, or three quarters of the pool.
    pub fn retry_concurrency(&self) -> usize {
        match self.retry_concurrency {
            0 => (self.concurrency * 3 / 4).max(1),
            n => n.min(self.concurrency),
        }
    }

    /// Which destinations may be sent to.
    pub fn target_policy(&self) -> crate::daemon::ssrf::TargetPolicy {
        crate::daemon::ssrf::TargetPolicy {
            allow_private: self.allow_private_targets,
            allowed: self.allow_targets.clone(),
            https_only: self.https_only,
        }
    }

    /// Defaults < `file` < the process environment < `flags`.
    pub fn load<'a>(
        file: Option<&Path>,
        flags: impl IntoIterator<Item = (&'a str, Option<String>)>,
    ) -> Result<Config, ConfigError> {
        let mut layers = Layers::defaults();
        if let Some(path) = file {
            layers = layers.toml_file(path)?;
        }
        let config = layers.env(std::env::vars()).flags(flags).build()?;
        #[cfg(feature = "fault-injection")]
        let config = Config {
            fault: crate::daemon::fault::Fault::from_env().map_err(ConfigError)?,
            ..config
        };
        Ok(config)
    }

    /// The built-in defaults, for tests and embedding.
    pub fn defaults() -> Config {
        Layers::defaults().build().expect("defaults are valid")
    }
}

/// Every field, with the secrets shown only as set (`"***"`). Written out field by field
/// so that a new field cannot be added without deciding whether it is a secret.
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Config {
            database_url,
            database_read_url,
            listen,
            admin_token,
            allowed_hosts,
            secret_key,
            retry_schedule,
            retry_jitter,
            request_timeout,
            allow_private_targets,
            allow_targets,
            https_only,
            egress_proxy,
            otlp_endpoint,
            otlp_protocol,
            concurrency,
            endpoint_concurrency,
            retry_concurrency,
            claim_batch,
            poll_interval,
            wake_gap,
            lease_duration,
            rescue_schedule,
            heartbeat_interval,
            heartbeat_timeout,
            shutdown_timeout,
            max_payload_bytes,
            max_response_bytes,
            gauge_schedule,
            disable_after,
            retention_period,
            retention_schedule,
            retention_batch,
            log_format,
            log_level,
            #[cfg(feature = "fault-injection")]
            fault,
        } = self;
        let hidden = |s: &Option<String>| s.as_ref().map(|_| "***");
        let mut shown = f.debug_struct("Config");
        shown
            .field("database_url", &crate::daemon::redact::redact(database_url))
            .field(
                "database_read_url",
                &database_read_url
                    .as_deref()
                    .map(crate::daemon::redact::redact),
            )
            .field("listen", listen)
            .field("admin_token", &hidden(admin_token))
            .field("allowed_hosts", allowed_hosts)
            .field("secret_key", &hidden(secret_key))
            .field("retry_schedule", retry_schedule)
            .field("retry_jitter", retry_jitter)
            .field("request_timeout", request_timeout)
            .field("allow_private_targets", allow_private_targets)
            .field("allow_targets", allow_targets)
            .field("https_only", https_only)
            .field(
                "egress_proxy",
                &egress_proxy
                    .as_ref()
                    .map(|u| crate::daemon::redact::redact(u.as_str())),
            )
            .field(
                "otlp_endpoint",
                &otlp_endpoint
                    .as_ref()
                    .map(|u| crate::daemon::redact::redact(u.as_str())),
            )
            .field("otlp_protocol", &otlp_protocol.as_str())
            .field("concurrency", concurrency)
            .field("endpoint_concurrency", endpoint_concurrency)
            .field("retry_concurrency", retry_concurrency)
            .field("claim_batch", claim_batch)
            .field("poll_interval", poll_interval)
            .field("wake_gap", wake_gap)
            .field("lease_duration", lease_duration)
            .field("rescue_schedule", rescue_schedule)
            .field("heartbeat_interval", heartbeat_interval)
            .field("heartbeat_timeout", heartbeat_timeout)
            .field("shutdown_timeout", shutdown_timeout)
            .field("max_payload_bytes", max_payload_bytes)
            .field("max_response_bytes", max_response_bytes)
            .field("gauge_schedule", gauge_schedule)
            .field("disable_after", disable_after)
            .field("retention_period", retention_period)
            .field("retention_schedule", retention_schedule)
            .field("retention_batch", retention_batch)
            .field("log_format", log_format)
            .field("log_level", log_level);
        #[cfg(feature = "fault-injection")]
        shown.field("fault", fault);
        shown.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_match_the_contract() {
        let c = Config::defaults();
        assert_eq!(c.database_url, "sqlite://hookd.db");
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.admin_token, None);
        assert_eq!(c.retry_schedule.len(), 7);
        assert_eq!(c.retry_schedule[6], Duration::from_secs(4 * 3600));
        assert_eq!(c.request_timeout, Duration::from_secs(10));
        assert!(!c.allow_private_targets);
    }

    #[test]
    fn layers_override_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hookd.toml");
        std::fs::write(
            &file,
            "request_timeout = \"3s\"\nretry_schedule = [\"1s\", \"2s\"]\nconcurrency = 7\nlisten = \"127.0.0.1:1\"\n",
        )
        .unwrap();
        let layers = Layers::defaults().toml_file(&file).unwrap();
        let c = layers.build().unwrap();
        assert_eq!(c.request_timeout, Duration::from_secs(3));
        assert_eq!(
            c.retry_schedule,
            [Duration::from_secs(1), Duration::from_secs(2)]
        );
        assert_eq!(c.concurrency, 7);

        let layers = layers.env(env(&[
            ("HOOKD_REQUEST_TIMEOUT", "250ms"),
            ("HOOKD_LISTEN", "127.0.0.1:2"),
            ("OTHER_LISTEN", "ignored"),
        ]));
        let c = layers.build().unwrap();
        assert_eq!(c.request_timeout, Duration::from_millis(250));
        assert_eq!(c.listen.port(), 2);
        assert_eq!(
            c.concurrency, 7,
            "the file still applies where env is silent"
        );

        let c = layers
            .flags([
                ("listen", Some("127.0.0.1:3".to_string())),
                ("admin_token", None),
                ("allowed_hosts", None),
            ])
            .build()
            .unwrap();
        assert_eq!(c.listen.port(), 3);
        assert_eq!(c.request_timeout, Duration::from_millis(250));
    }

    #[test]
    fn empty_retry_schedule_means_no_retries() {
        let c = Layers::defaults()
            .env(env(&[("HOOKD_RETRY_SCHEDULE", "")]))
            .build()
            .unwrap();
        assert!(c.retry_schedule.is_empty());
    }

    #[test]
    fn errors_name_the_setting_and_its_source() {
        let err = Layers::defaults()
            .env(env(&[("HOOKD_REQUEST_TIMEOUT", "soon")]))
            .build()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("request_timeout") && err.contains("HOOKD_REQUEST_TIMEOUT"),
            "{err}"
        );

        let bad = [
            ("HOOKD_DATABASE_URL", "mysql://x"),
            ("HOOKD_LISTEN", "eighty"),
            ("HOOKD_ALLOW_PRIVATE_TARGETS", "maybe"),
            ("HOOKD_CONCURRENCY", "0"),
            ("HOOKD_RETRY_SCHEDULE", "1m,x"),
            ("HOOKD_LOG_FORMAT", "xml"),
            ("HOOKD_LEASE_DURATION", "5s"),
            ("HOOKD_RETENTION_SCHEDULE", "every day"),
            ("HOOKD_RETENTION_PERIOD", "a month"),
        ];
        for (var, value) in bad {
            assert!(
                Layers::defaults()
                    .env(env(&[(var, value)]))
                    .build()
                    .is_err(),
                "{var}={value} must be refused"
            );
        }

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hookd.toml");
        std::fs::write(&file, "no_such_setting = 1\n").unwrap();
        let err = Layers::defaults().toml_file(&file).unwrap_err().to_string();
        assert!(err.contains("unknown setting"), "{err}");
    }

    #[test]
    fn retention_must_keep_rows_for_a_while() {
        let cases = [
            ("0s", Err("at least 1h")),
            ("0", Err("at least 1h")),
            ("59m", Err("at least 1h")),
            ("1h", Ok(Duration::from_secs(3600))),
            ("30days", Ok(Duration::from_secs(30 * 86400))),
            ("100years", Err("at most")),
            ("300000000years", Err("at most")),
            ("18446744073709551615s", Err("at most")),
        ];
        for (value, want) in cases {
            let got = Layers::defaults()
                .env(env(&[("HOOKD_RETENTION_PERIOD", value)]))
                .build()
                .map(|c| c.retention_period)
                .map_err(|e| e.to_string());
            match (got, want) {
                (Ok(d), Ok(want)) => assert_eq!(d, want, "{value}"),
                (Err(e), Err(want)) => assert!(
                    e.contains(want) && e.contains("HOOKD_RETENTION_PERIOD"),
                    "{value}: {e}"
                ),
                (got, want) => panic!("{value}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn allowed_hosts_parse_and_default() {
        let c = Config::defaults();
        assert_eq!(c.allowed_hosts, None);
        assert_eq!(c.allowed_hosts().to_string(), "localhost,127.0.0.1,[::1]");
        let c = Layers::defaults()
            .env(env(&[("HOOKD_LISTEN", "0.0.0.0:8080")]))
            .build()
            .unwrap();
        assert_eq!(c.allowed_hosts(), AllowedHosts::Any);
        let c = Layers::defaults()
            .env(env(&[("HOOKD_ALLOWED_HOSTS", "hooks.internal, localhost")]))
            .build()
            .unwrap();
        assert!(c.allowed_hosts().allows("hooks.internal:8080"));
        assert!(!c.allowed_hosts().allows("127.0.0.1:8080"));
        let c = Layers::defaults()
            .env(env(&[("HOOKD_ALLOWED_HOSTS", "")]))
            .build()
            .unwrap();
        assert_eq!(c.allowed_hosts, None, "set but empty: the default");
        let err = Layers::defaults()
            .env(env(&[("HOOKD_ALLOWED_HOSTS", "localhost:8080")]))
            .build()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("HOOKD_ALLOWED_HOSTS") && err.contains("without a port"),
            "{err}"
        );
    }

    #[test]
    fn debug_hides_secrets() {
        let c = Layers::defaults()
            .env(env(&[
                ("HOOKD_ADMIN_TOKEN", "admin-token-text"),
                (
                    "HOOKD_SECRET_KEY",
                    "c2VjcmV0LWtleS10ZXh0LXRoaXJ0eS10d28tYnl0ZXM=",
                ),
                (
                    "HOOKD_DATABASE_URL",
                    "postgres://hookd:db-password-text@db.internal/hookd",
                ),
            ]))
            .build()
            .unwrap();
        let shown = format!("{c:?}");
        for secret in [
            "admin-token-text",
            "c2VjcmV0LWtleS10ZXh0LXRoaXJ0eS10d28tYnl0ZXM=",
            "db-password-text",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("admin_token: Some(\"***\")"), "{shown}");
        assert!(shown.contains("db.internal"), "{shown}");
        let shown = format!("{:#?}", Config::defaults());
        assert!(shown.contains("admin_token: None"), "{shown}");
    }

    #[test]
    fn egress_proxy_table() {
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("http://127.0.0.1:4750", Ok("http://127.0.0.1:4750/")),
            (
                "http://smokescreen.internal:4750/",
                Ok("http://smokescreen.internal:4750/"),
            ),
            (
                "http://user:pw@proxy:3128",
                Ok("http://user:pw@proxy:3128/"),
            ),
            ("socks5://127.0.0.1:1080", Ok("socks5://127.0.0.1:1080")),
            ("socks5h://proxy:1080", Ok("socks5h://proxy:1080")),
            ("https://proxy:443", Err("not https://")),
            ("ftp://proxy:21", Err("not ftp://")),
            ("127.0.0.1:4750", Err("not a proxy URL")),
            ("proxy:4750", Err("not proxy://")),
            ("http://", Err("not a proxy URL")),
            ("http://proxy:4750/path", Err("no path")),
            ("http://proxy:4750/?q=1", Err("no path")),
            ("http://user:secret@proxy:4750/path", Err("no path")),
        ];
        for (text, want) in cases {
            let got = parse_egress_proxy(text);
            match (want, &got) {
                (Ok(url), Ok(parsed)) => assert_eq!(parsed.as_str(), *url, "{text}"),
                (Err(part), Err(message)) => {
                    assert!(message.contains(part), "{text}: {message}");
                    assert!(!message.contains("secret"), "{text}: {message}");
                }
                _ => panic!("{text}: {got:?}"),
            }
        }
        let c = Layers::defaults()
            .env(env(&[("HOOKD_EGRESS_PROXY", "socks5://127.0.0.1:1080")]))
            .build()
            .unwrap();
        assert_eq!(c.egress_proxy.unwrap().scheme(), "socks5");
        assert_eq!(Config::defaults().egress_proxy, None);
        let empty = Layers::defaults().env(env(&[("HOOKD_EGRESS_PROXY", "")]));
        assert_eq!(empty.build().unwrap().egress_proxy, None);
        let err = Layers::defaults()
            .env(env(&[("HOOKD_EGRESS_PROXY", "https://proxy:443")]))
            .build()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("egress_proxy") && err.contains("HOOKD_EGRESS_PROXY"),
            "{err}"
        );
    }

    #[test]
    fn a_read_replica_needs_postgresql() {
        let build = |pairs: &[(&str, &str)]| Layers::defaults().env(env(pairs)).build();
        let pg = "postgres://postgres@127.0.0.1/hookd";
        let replica = "postgres://postgres@replica/hookd";
        let c = build(&[
            ("HOOKD_DATABASE_URL", pg),
            ("HOOKD_DATABASE_READ_URL", replica),
        ])
        .unwrap();
        assert_eq!(c.database_read_url.as_deref(), Some(replica));
        assert_eq!(Config::defaults().database_read_url, None);
        let err = build(&[("HOOKD_DATABASE_READ_URL", replica)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("SQLite has no replica"), "{err}");
        let err = build(&[
            ("HOOKD_DATABASE_URL", pg),
            ("HOOKD_DATABASE_READ_URL", "sqlite://x.db"),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("database_read_url"), "{err}");
        let c = build(&[("HOOKD_DATABASE_URL", pg), ("HOOKD_DATABASE_READ_URL", "")]).unwrap();
        assert_eq!(c.database_read_url, None, "empty: none");
    }

    #[test]
    fn otlp_settings() {
        let build = |pairs: &[(&str, &str)]| Layers::defaults().env(env(pairs)).build();
        let c = build(&[("HOOKD_OTLP_ENDPOINT", "http://127.0.0.1:4318")]).unwrap();
        assert_eq!(c.otlp_endpoint.unwrap().as_str(), "http://127.0.0.1:4318/");
        assert_eq!(c.otlp_protocol, crate::daemon::otlp::Encoding::Protobuf);
        assert_eq!(Config::defaults().otlp_endpoint, None);
        for (name, value) in [
            ("HOOKD_OTLP_ENDPOINT", "ftp://collector"),
            ("HOOKD_OTLP_ENDPOINT", "not a url"),
            ("HOOKD_OTLP_PROTOCOL", "grpc"),
        ] {
            let err = build(&[(name, value)]).unwrap_err().to_string();
            assert!(err.contains(name), "{value}: {err}");
        }
        let c = build(&[("HOOKD_OTLP_PROTOCOL", "http/json")]).unwrap();
        assert_eq!(c.otlp_protocol, crate::daemon::otlp::Encoding::Json);
    }
}
