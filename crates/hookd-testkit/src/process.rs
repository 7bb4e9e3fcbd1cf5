//! The `hookd` binary as a child process: [`Spec`] says how to run it (arguments,
//! environment, where its port goes, what answers once it is ready); [`Process`] is one
//! running, restartable, killed with SIGKILL or stopped with SIGTERM, its stdout and stderr
//! kept in files; [`Spec::output`] runs a command to its end.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

use tokio::process::{Child, Command};

use crate::Api;

/// `target/<profile>`: the test executable lives in its `deps/`.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    exe.parent()
        .and_then(Path::parent)
        .expect("the test executable is in target/<profile>/deps")
        .to_path_buf()
}

/// The `hookd` binary: `HOOKD_BIN`, or `target/<profile>/hookd` next to the test
/// executable's `deps/`. hookd's own tests have `env!("CARGO_BIN_EXE_hookd")` instead;
/// other crates' tests need `cargo build -p hookd` first (`cargo test --workspace` does it).
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

/// `cargo test -p <another crate>` does not rebuild the daemon: say so when its sources
/// are newer than the binary.
fn warn_if_stale(bin: &Path) {
    let Ok(built) = bin.metadata().and_then(|m| m.modified()) else {
        return;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let newest = [
        "crates/hookd/src",
        "crates/hookd-store/src",
        "crates/hookd-verify/src",
        "migrations",
    ]
    .iter()
    .filter_map(|d| newest_file(&root.join(d), 4))
    .max();
    if newest.is_some_and(|newest| newest > built) {
        eprintln!(
            "warning: {} is older than the daemon's sources: run `cargo build -p hookd`",
            bin.display()
        );
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

/// A port nothing listens on right now. The process may lose it to another before it
/// binds: [`Spec::start`] then tries another.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Where the chosen port is given to the process.
#[derive(Debug, Clone)]
enum PortIn {
    /// `NAME=127.0.0.1:PORT`.
    Env(String),
    /// `FLAG PORT` after the other arguments.
    Arg(String),
}

/// How to run one child process. Nothing of the test's own environment that configures
/// hookd leaks in: `HOOKD_*`, `RUST_LOG` and `FAKETIME*` are removed, then [`Spec::env`]
/// sets what the test wants.
#[derive(Debug, Clone)]
pub struct Spec {
    name: String,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    remove: Vec<String>,
    port: Option<PortIn>,
    ready: Option<String>,
    logs: Option<PathBuf>,
}

/// What a command that ran to its end left.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Panics (showing everything) unless the exit code is 0.
    pub fn assert_ok(&self) {
        assert_eq!(self.code(), Some(0), "{self:?}");
    }

    /// Panics unless the exit code is `code` and stderr contains `text`.
    pub fn assert_fails(&self, code: i32, text: &str) {
        assert_eq!(self.code(), Some(code), "{self:?}");
        assert!(
            self.stderr.contains(text),
            "stderr lacks {text:?}: {self:?}"
        );
    }
}

impl Spec {
    pub fn new(program: impl AsRef<Path>) -> Spec {
        Spec {
            name: "hookd".into(),
            program: program.as_ref().to_path_buf(),
            args: Vec::new(),
            env: Vec::new(),
            remove: Vec::new(),
            port: None,
            ready: None,
            logs: None,
        }
    }

    /// What messages and log files call it (default `hookd`).
    pub fn name(mut self, name: &str) -> Spec {
        self.name = name.to_string();
        self
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Spec {
        self.args.push(arg.into());
        self
    }

    pub fn args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Spec {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets (or overrides) one variable.
    pub fn env(mut self, name: &str, value: impl Into<String>) -> Spec {
        self.env.retain(|(k, _)| k != name);
        self.remove.retain(|k| k != name);
        self.env.push((name.to_string(), value.into()));
        self
    }

    /// Sets (or overrides) each variable.
    pub fn envs<K: AsRef<str>, V: Into<String>>(
        mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Spec {
        for (k, v) in vars {
            self = self.env(k.as_ref(), v);
        }
        self
    }

    /// Removes a variable the test's environment may have (one not removed anyway).
    pub fn env_remove(mut self, name: &str) -> Spec {
        self.env.retain(|(k, _)| k != name);
        self.remove.push(name.to_string());
        self
    }

    /// Listens on a free port given as `name=127.0.0.1:PORT` (`HOOKD_LISTEN`).
    pub fn port_env(mut self, name: &str) -> Spec {
        self.port = Some(PortIn::Env(name.to_string()));
        self
    }

    /// Listens on a free port given as `flag PORT` after the other arguments (`--port`).
    pub fn port_arg(mut self, flag: &str) -> Spec {
        self.port = Some(PortIn::Arg(flag.to_string()));
        self
    }

    /// [`Spec::start`] returns once `GET http://127.0.0.1:PORT{path}` answers 2xx.
    pub fn ready_at(mut self, path: &str) -> Spec {
        self.ready = Some(path.to_string());
        self
    }

    /// Keeps stdout and stderr in `dir` as `<name>-<start>.out` and `<name>-<start>.log`
    /// (default: a temporary directory that goes with the [`Process`]).
    pub fn logs_in(mut self, dir: &Path) -> Spec {
        self.logs = Some(dir.to_path_buf());
        self
    }

    fn command(&self, port: Option<u16>) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args);
        for (key, _) in std::env::vars() {
            if key.starts_with("HOOKD_") || key == "RUST_LOG" || key.starts_with("FAKETIME") {
                cmd.env_remove(&key);
            }
        }
        for key in &self.remove {
            cmd.env_remove(key);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        match (&self.port, port) {
            (Some(PortIn::Env(name)), Some(port)) => {
                cmd.env(name, format!("127.0.0.1:{port}"));
            }
            (Some(PortIn::Arg(flag)), Some(port)) => {
                cmd.arg(flag).arg(port.to_string());
            }
            _ => {}
        }
        cmd.stdin(Stdio::null()).kill_on_drop(true);
        cmd
    }

    /// Runs the command to its end (2 minutes at most) and returns what it printed.
    pub async fn output(&self) -> Output {
        let mut cmd = self.command(None);
        let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
            .await
            .unwrap_or_else(|_| panic!("{} {:?} did not finish", self.name, self.args))
            .unwrap_or_else(|e| panic!("run {}: {e}", self.program.display()));
        Output {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Starts the process and, with [`Spec::ready_at`], waits until it is ready.
    pub async fn start(self) -> Process {
        let (logs, temp) = match &self.logs {
            Some(dir) => (dir.clone(), None),
            None => {
                let temp = tempfile::tempdir().expect("temporary log directory");
                (temp.path().to_path_buf(), Some(temp))
            }
        };
        let mut process = Process {
            spec: self,
            child: None,
            port: 0,
            logs,
            starts: 0,
            _temp: temp,
            api: Api::new(""),
        };
        process.spawn().await;
        process
    }
}

/// One child process (restartable). Killed when dropped.
pub struct Process {
    spec: Spec,
    child: Option<Child>,
    port: u16,
    logs: PathBuf,
    starts: u32,
    _temp: Option<tempfile::TempDir>,
    /// Its `base` follows the port.
    api: Api,
}

impl Process {
    fn stdout_path(&self) -> PathBuf {
        self.logs
            .join(format!("{}-{}.out", self.spec.name, self.starts))
    }

    /// The current run's stderr file (hookd's log).
    pub fn log_path(&self) -> PathBuf {
        self.logs
            .join(format!("{}-{}.log", self.spec.name, self.starts))
    }

    async fn spawn(&mut self) {
        assert!(
            self.child.is_none(),
            "{} is already running",
            self.spec.name
        );
        for _ in 0..5 {
            self.starts += 1;
            let port = self.spec.port.as_ref().map(|_| free_port());
            self.port = port.unwrap_or(0);
            self.api.base = self.base();
            let stdout = std::fs::File::create(self.stdout_path()).expect("stdout file");
            let stderr = std::fs::File::create(self.log_path()).expect("log file");
            let child = self
                .spec
                .command(port)
                .stdout(stdout)
                .stderr(stderr)
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {}: {e}", self.spec.program.display()));
            self.child = Some(child);
            match self.wait_ready().await {
                Ok(()) => return,
                Err(exit) => {
                    self.child = None;
                    let log = self.log_tail(20);
                    if port.is_some() && log.contains("cannot listen") {
                        continue; // the port was taken meanwhile: another one
                    }
                    panic!(
                        "{} exited before it was ready ({exit}):\n{log}",
                        self.spec.name
                    );
                }
            }
        }
        panic!("{} could not find a free port", self.spec.name);
    }

    /// Ok once the readiness URL answers 2xx (at once without one); Err(exit status) if the
    /// process ended first.
    async fn wait_ready(&mut self) -> Result<(), ExitStatus> {
        let Some(path) = &self.spec.ready else {
            return Ok(());
        };
        let url = self.url(path);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let child = self.child.as_mut().expect("started");
            if let Some(status) = child.try_wait().expect("child status") {
                return Err(status);
            }
            let answer = self
                .api
                .http
                .get(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if answer.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                panic!(
                    "{} not ready within 60 s:\n{}",
                    self.spec.name,
                    self.log_tail(20)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The port it listens on (0 without [`Spec::port_env`] or [`Spec::port_arg`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base())
    }

    /// Its admin API (`hookd serve`).
    pub fn api(&self) -> &Api {
        &self.api
    }

    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .and_then(Child::id)
            .unwrap_or_else(|| panic!("{} is not running", self.spec.name))
    }

    /// `kill -9`, and waits for the process to be gone.
    pub async fn kill9(&mut self) {
        let mut child = self
            .child
            .take()
            .unwrap_or_else(|| panic!("{} is not running", self.spec.name));
        child.start_kill().expect("SIGKILL");
        tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .expect("a killed process ends")
            .expect("wait");
    }

    /// Starts the same process again (on a fresh port).
    pub async fn restart(&mut self) {
        self.spawn().await;
    }

    /// Sends `signal` (`TERM`, `INT`, `USR1`...) to the process.
    pub fn signal(&self, signal: &str) {
        let pid = self.pid();
        let sent = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -{signal} {pid}");
    }

    /// SIGTERM, then waits up to `within` for the process to exit; returns its status.
    pub async fn terminate(&mut self, within: Duration) -> ExitStatus {
        self.signal("TERM");
        self.wait_exit(within).await
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
                    self.spec.name,
                    self.log_tail(30)
                );
            }
        }
    }

    /// Panics (with the log) unless the process is still running.
    pub fn assert_running(&mut self) {
        let child = self
            .child
            .as_mut()
            .unwrap_or_else(|| panic!("{} was stopped", self.spec.name));
        if let Some(status) = child.try_wait().expect("child status") {
            panic!("{} died ({status}):\n{}", self.spec.name, self.log_tail(30));
        }
    }

    /// Everything the current run wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The complete lines the current run wrote to stdout so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        let text = std::fs::read_to_string(self.stdout_path()).unwrap_or_default();
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        complete.lines().map(str::to_string).collect()
    }

    /// The last `n` lines of the current run's stderr.
    pub fn log_tail(&self, n: usize) -> String {
        let text = self.stderr();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}
