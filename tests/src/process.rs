//! `hookd serve` as a child process: started with a configuration in `HOOKD_*` variables,
//! waited for until `/readyz` answers, killed with SIGKILL, stopped with SIGTERM, restarted.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

use reqwest::StatusCode;
use serde_json::Value;
use tokio::process::{Child, Command};

/// `target/<profile>/hookd`, found from the test executable (`target/<profile>/deps/<test>`),
/// or `HOOKD_BIN`.
pub fn hookd_bin() -> PathBuf {
    if let Ok(path) = std::env::var("HOOKD_BIN") {
        return PathBuf::from(path);
    }
    let bin = profile_dir().join("hookd");
    if !bin.is_file() {
        panic!(
            "{} not found: run `cargo build -p hookd` first (cargo test --workspace builds it)",
            bin.display()
        );
    }
    static CHECKED: std::sync::Once = std::sync::Once::new();
    CHECKED.call_once(|| warn_if_stale(&bin));
    bin
}

/// `target/<profile>`: the test executable lives in its `deps/`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    exe.parent()
        .and_then(Path::parent)
        .expect("the test executable is in target/<profile>/deps")
        .to_path_buf()
}

/// `cargo test -p hookd-fault-tests` does not rebuild the daemon: say so when its sources
/// are newer than the binary.
fn warn_if_stale(bin: &Path) {
    let Ok(built) = bin.metadata().and_then(|m| m.modified()) else {
        return;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let newest = ["crates/hookd/src", "crates/hookd-store/src", "migrations"]
        .iter()
        .filter_map(|d| newest_file(&root.join(d), 4))
        .max();
    if let Some(newest) = newest {
        if newest > built {
            eprintln!(
                "warning: {} is older than the daemon's sources: run `cargo build -p hookd`",
                bin.display()
            );
        }
    }
}

fn newest_file(dir: &Path, depth: u32) -> Option<SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let time = if path.is_dir() && depth > 0 {
            newest_file(&path, depth - 1)
        } else {
            entry.metadata().and_then(|m| m.modified()).ok()
        };
        newest = newest.max(time);
    }
    newest
}

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
}

/// One `hookd serve` process (restartable). Killed when dropped.
pub struct Hookd {
    pub name: String,
    options: Options,
    child: Option<Child>,
    pub port: u16,
    logs: PathBuf,
    log: PathBuf,
    starts: u32,
    http: reqwest::Client,
}

/// A port nothing listens on right now (hookd retries with another if it was taken since).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Hookd {
    /// Starts the process and waits until `/readyz` answers 200.
    pub async fn start(name: &str, options: Options, logs: &Path) -> Hookd {
        let mut hookd = Hookd {
            name: name.to_string(),
            options,
            child: None,
            port: 0,
            logs: logs.to_path_buf(),
            log: PathBuf::new(),
            starts: 0,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("HTTP client"),
        };
        hookd.spawn().await;
        hookd
    }

    async fn spawn(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        for _ in 0..5 {
            self.starts += 1;
            self.port = free_port();
            self.log = self.logs.join(format!("{}-{}.log", self.name, self.starts));
            let log = std::fs::File::create(&self.log).expect("log file");
            let mut cmd = Command::new(hookd_bin());
            cmd.arg("serve");
            // Nothing from the test's own environment leaks in (a token, RUST_LOG...).
            for (key, _) in std::env::vars() {
                if key.starts_with("HOOKD_") || key == "RUST_LOG" || key.starts_with("FAKETIME") {
                    cmd.env_remove(&key);
                }
            }
            cmd.envs(self.options.env.iter().map(|(k, v)| (k, v)))
                .env("HOOKD_LISTEN", format!("127.0.0.1:{}", self.port))
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(log))
                .kill_on_drop(true);
            if let Some((lib, offset)) = &self.options.faketime {
                cmd.env("LD_PRELOAD", lib)
                    .env("FAKETIME", offset)
                    .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
                    .env("FAKETIME_NO_CACHE", "1");
            }
            let child = cmd.spawn().expect("spawn hookd");
            self.child = Some(child);
            match self.wait_ready().await {
                Ok(()) => return,
                Err(exit) => {
                    self.child = None;
                    let log = self.log_tail(20);
                    if log.contains("cannot listen") {
                        continue; // the port was taken meanwhile: another one
                    }
                    panic!("{} exited before it was ready ({exit}):\n{log}", self.name);
                }
            }
        }
        panic!("{} could not find a free port", self.name);
    }

    /// Ok once `/readyz` answers 200; Err(exit status) if the process ended first.
    async fn wait_ready(&mut self) -> Result<(), ExitStatus> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let url = format!("{}/readyz", self.base());
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .expect("started")
                .try_wait()
                .expect("child status")
            {
                return Err(status);
            }
            let ready = self
                .http
                .get(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .map(|r| r.status() == StatusCode::OK)
                .unwrap_or(false);
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                panic!(
                    "{} not ready within 60 s:\n{}",
                    self.name,
                    self.log_tail(20)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .and_then(Child::id)
            .unwrap_or_else(|| panic!("{} is not running", self.name))
    }

    /// `kill -9`, and waits for the process to be gone.
    pub async fn kill9(&mut self) {
        let mut child = self
            .child
            .take()
            .unwrap_or_else(|| panic!("{} is not running", self.name));
        child.start_kill().expect("SIGKILL");
        tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .expect("a killed process ends")
            .expect("wait");
    }

    /// Starts the same configuration again (on a fresh port).
    pub async fn restart(&mut self) {
        self.spawn().await;
    }

    /// SIGTERM, then waits up to `within` for the process to exit; returns its status.
    pub async fn terminate(&mut self, within: Duration) -> ExitStatus {
        let pid = self.pid();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {pid}");
        let mut child = self.child.take().expect("running");
        match tokio::time::timeout(within, child.wait()).await {
            Ok(status) => status.expect("wait"),
            Err(_) => {
                let _ = child.start_kill();
                panic!(
                    "{} did not exit within {within:?} of SIGTERM:\n{}",
                    self.name,
                    self.log_tail(30)
                );
            }
        }
    }

    /// Sends `signal` (`USR1`, `TERM`...) to the process.
    pub fn signal(&self, signal: &str) {
        let pid = self.pid();
        let sent = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -{signal} {pid}");
    }

    /// Waits up to `within` for the process to exit by itself; returns its status.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        match tokio::time::timeout(within, child.wait()).await {
            Ok(status) => status.expect("wait"),
            Err(_) => {
                let _ = child.start_kill();
                panic!(
                    "{} still ran {within:?} later:\n{}",
                    self.name,
                    self.log_tail(30)
                );
            }
        }
    }

    /// `GET /readyz`: its status and body, or `None` when nothing answers.
    pub async fn readyz(&self) -> Option<(StatusCode, Value)> {
        let resp = self
            .http
            .get(format!("{}/readyz", self.base()))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        let status = resp.status();
        Some((status, resp.json().await.ok()?))
    }

    /// Panics (with the log) unless the process is still running.
    pub fn assert_running(&mut self) {
        let child = self
            .child
            .as_mut()
            .unwrap_or_else(|| panic!("{} was stopped", self.name));
        if let Some(status) = child.try_wait().expect("child status") {
            panic!("{} died ({status}):\n{}", self.name, self.log_tail(30));
        }
    }

    /// The last `n` lines of the current process's log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The current log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Calls the admin API; returns the status and the JSON body (`Null` when empty).
    pub async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base()));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("admin API reachable");
        let status = resp.status();
        let text = resp.text().await.expect("admin API body");
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    pub async fn get(&self, path: &str) -> Value {
        let (status, body) = self.api(reqwest::Method::GET, path, None).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }

    /// Registers an endpoint; returns its id.
    pub async fn endpoint(&self, body: Value) -> String {
        let (status, ep) = self
            .api(reqwest::Method::POST, "/v1/endpoints", Some(body))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{ep}");
        ep["id"].as_str().expect("endpoint id").to_string()
    }

    /// Every delivery matching `query` (e.g. `state=failed`), following `next_cursor`.
    pub async fn deliveries(&self, query: &str) -> Vec<Value> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..10_000 {
            let mut path = format!("/v1/deliveries?limit=1000&{query}");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let page = self.get(&path).await;
            all.extend(page["data"].as_array().expect("data").iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return all,
            }
        }
        panic!("more than 10,000 pages of deliveries");
    }
}
