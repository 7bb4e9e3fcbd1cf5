//! `hookd serve` as the suite runs it: [`Options`] is the suite's configuration in
//! `HOOKD_*` variables (and a faked clock); [`Options::start`] starts a
//! [`hookd_testkit::Process`] with it, logging into the scenario's [`log_dir`].

use std::path::{Path, PathBuf};

use hookd_testkit::{hookd_bin, profile_dir, Process, Spec};

/// `target/<profile>/fault-logs`.
pub fn log_root() -> Option<PathBuf> {
    let dir = profile_dir().join("fault-logs");
    std::fs::create_dir_all(&dir).ok()?;
    Some(dir)
}

/// Where a scenario's hookd logs go: `target/<profile>/fault-logs/<scenario>/`, emptied first.
pub fn log_dir(scenario: &str) -> PathBuf {
    let dir = profile_dir().join("fault-logs").join(scenario);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("log directory");
    dir
}

/// How to run one hookd instance.
#[derive(Debug, Clone)]
pub struct Options {
    /// `HOOKD_*` settings; the suite's defaults come first, later entries win.
    pub env: Vec<(String, String)>,
    /// Run under libfaketime with this offset of the process clock (`-1h`, `+1h`).
    pub faketime: Option<(PathBuf, String)>,
}

impl Options {
    /// The suite's configuration: private targets allowed, a millisecond retry ladder, a
    /// lease of 3 s (so a killed process's deliveries come back quickly) above a 1 s
    /// request timeout, the rescuer every second, fast polling, warnings only.
    pub fn new(database_url: &str) -> Options {
        let env = [
            ("HOOKD_DATABASE_URL", database_url),
            ("HOOKD_ALLOW_PRIVATE_TARGETS", "true"),
            ("HOOKD_RETRY_SCHEDULE", "100ms,200ms,400ms"),
            ("HOOKD_LEASE_DURATION", "3s"),
            ("HOOKD_REQUEST_TIMEOUT", "1s"),
            ("HOOKD_RESCUE_SCHEDULE", "* * * * * *"),
            ("HOOKD_POLL_INTERVAL", "20ms"),
            ("HOOKD_LOG_LEVEL", "warn"),
        ];
        Options {
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            faketime: None,
        }
    }

    /// Sets (or overrides) one `HOOKD_*` variable.
    pub fn set(mut self, name: &str, value: &str) -> Options {
        self.env.retain(|(k, _)| k != name);
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    /// Fakes the process clock by `offset` (libfaketime syntax: `-1h`, `+1h`) with the
    /// library at `lib`. The monotonic clock stays real, so timers and timeouts do too.
    pub fn faketime(mut self, lib: &Path, offset: &str) -> Options {
        self.faketime = Some((lib.to_path_buf(), offset.to_string()));
        self
    }

    /// Starts `hookd serve` as `name` (restartable, killed when dropped), its logs in
    /// `logs`, and waits until `/readyz` answers.
    pub async fn start(self, name: &str, logs: &Path) -> Process {
        let mut spec = Spec::new(hookd_bin())
            .name(name)
            .arg("serve")
            .envs(self.env)
            .env("NO_COLOR", "1")
            .port_env("HOOKD_LISTEN")
            .ready_at("/readyz")
            .logs_in(logs);
        if let Some((lib, offset)) = self.faketime {
            spec = spec
                .env("LD_PRELOAD", lib.display().to_string())
                .env("FAKETIME", offset)
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
                .env("FAKETIME_NO_CACHE", "1");
        }
        spec.start().await
    }
}
