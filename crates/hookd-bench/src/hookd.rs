//! hookd as a separate process: find or build the release binary, start `hookd serve`
//! against a database, wait for `/readyz`, register endpoints through the admin API, read
//! `/metrics` and `/proc`, and stop it with SIGTERM.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use serde::Serialize;
use tokio::process::{Child, Command};

/// How long a starting hookd may take to answer `/readyz`.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stopping hookd may take before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The workspace root: this crate lives at `crates/hookd-bench`.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from("."))
}

/// The hookd binary to run: `given`, else `target/release/hookd` (built first when missing
/// or when `build` is set).
pub fn binary(given: Option<&Path>, build: bool) -> anyhow::Result<PathBuf> {
    if let Some(path) = given {
        if !path.is_file() {
            bail!("--hookd {}: no such file", path.display());
        }
        return Ok(path.to_path_buf());
    }
    let root = workspace_root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let path = target.join("release").join("hookd");
    if build || !path.is_file() {
        eprintln!("building hookd: cargo build --release -p hookd");
        let status =
            std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .args(["build", "--release", "-p", "hookd"])
                .current_dir(&root)
                .status()
                .context("cannot run cargo to build hookd")?;
        if !status.success() {
            bail!("cargo build --release -p hookd failed");
        }
    }
    if !path.is_file() {
        bail!("{} is missing after the build", path.display());
    }
    Ok(path)
}

/// A free port on 127.0.0.1 (bound and released: another process could take it in
/// between, which start() reports).
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// What /proc says about a process.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ProcStats {
    /// Peak resident set size (VmHWM), bytes.
    pub peak_rss_bytes: u64,
    /// utime + stime, seconds.
    pub cpu_secs: f64,
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// CPU seconds (utime + stime) of `pid` ("self" for this process).
pub fn cpu_secs(pid: &str) -> Option<f64> {
    stat_cpu(&format!("/proc/{pid}/stat")).map(|(_, secs)| secs)
}

/// The command name and utime+stime seconds in a `/proc/.../stat` file.
fn stat_cpu(path: &str) -> Option<(String, f64)> {
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let close = stat.rfind(')')?;
    let name = stat[stat.find('(')? + 1..close].to_string();
    let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
    // Field 3 (state) is fields[0]; utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((name, (utime + stime) as f64 / clock_ticks()))
}

/// Each thread of `pid` so far: its name, its CPU seconds, and the seconds it was ready to
/// run but waited for a CPU (`/proc/.../schedstat`, absent on a kernel without it).
pub type Threads = BTreeMap<u64, (String, f64, Option<f64>)>;

/// Seconds a thread has waited on a run queue, from its `schedstat` file.
fn schedstat_wait(path: &str) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    let ns: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
    Some(ns as f64 / 1e9)
}

/// CPU and run-queue seconds so far of each thread of `pid`.
pub fn thread_cpu(pid: u32) -> Threads {
    let mut threads = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return threads;
    };
    for task in tasks.flatten() {
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        if let Some((name, cpu)) = stat_cpu(&format!("/proc/{pid}/task/{tid}/stat")) {
            let waited = schedstat_wait(&format!("/proc/{pid}/task/{tid}/schedstat"));
            threads.insert(tid, (name, cpu, waited));
        }
    }
    threads
}

/// hookd's CPU during a window, by kind of thread, in seconds. A thread that ended within
/// the window is missing (its time is still in the process's total).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct ThreadCpu {
    /// tokio's workers: HTTP, signing, the async side of the database driver.
    pub runtime: f64,
    /// The busiest SQLite worker thread: the writer connection's.
    pub sqlite_writer: f64,
    /// The other SQLite worker threads (readers).
    pub sqlite_other: f64,
    /// How long the writer's thread was ready to run but waited for a CPU: time during
    /// which the one write connection was held and nothing ran on it.
    pub sqlite_writer_waiting: Option<f64>,
}

impl ThreadCpu {
    /// The difference between two [`thread_cpu`] readings of one process.
    pub fn between(before: &Threads, after: &Threads) -> ThreadCpu {
        let mut cpu = ThreadCpu::default();
        let mut sqlite = Vec::new();
        for (tid, (name, secs, waited)) in after {
            let (secs_before, waited_before) = before
                .get(tid)
                .map_or((0.0, Some(0.0)), |(_, s, w)| (*s, *w));
            let spent = secs - secs_before;
            if name.starts_with("tokio-rt") {
                cpu.runtime += spent;
            } else if name.starts_with("sqlx-sqlite") {
                sqlite.push((spent, waited.zip(waited_before).map(|(a, b)| a - b)));
            }
        }
        sqlite.sort_by(|a, b| b.0.total_cmp(&a.0));
        if let Some((spent, waited)) = sqlite.first() {
            cpu.sqlite_writer = *spent;
            cpu.sqlite_writer_waiting = *waited;
        }
        cpu.sqlite_other = sqlite.iter().skip(1).map(|(spent, _)| spent).sum();
        cpu
    }

    pub fn add(&mut self, other: ThreadCpu) {
        self.runtime += other.runtime;
        self.sqlite_writer += other.sqlite_writer;
        self.sqlite_other += other.sqlite_other;
        self.sqlite_writer_waiting = match (self.sqlite_writer_waiting, other.sqlite_writer_waiting)
        {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
    }
}

/// Peak RSS (VmHWM) of `pid` in bytes.
pub fn peak_rss(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Resident set size now (VmRSS) of `pid` in bytes.
pub fn rss(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Jiffies of the whole machine, from /proc/stat.
#[derive(Debug, Clone, Copy, Default)]
pub struct MachineJiffies {
    /// Everything but idle and iowait; steal included.
    pub busy: u64,
    /// Time the hypervisor gave this machine's CPUs to someone else.
    pub steal: u64,
}

pub fn machine_jiffies() -> Option<MachineJiffies> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest counted in user already)
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Some(MachineJiffies {
        busy: total - idle,
        steal: v.get(7).copied().unwrap_or(0),
    })
}

pub fn jiffies_to_secs(j: u64) -> f64 {
    j as f64 / clock_ticks()
}

/// One running `hookd serve`.
pub struct Hookd {
    child: Child,
    pub pid: u32,
    pub base_url: String,
    pub log: PathBuf,
}

impl Hookd {
    /// Starts `hookd serve` on a free port and waits until `/readyz` answers 200. The port
    /// is free when chosen, and another process (a test beside the bench) may take it
    /// before hookd binds it: then hookd is started again on another.
    pub async fn start(
        binary: &Path,
        database_url: &str,
        log: PathBuf,
        http: &reqwest::Client,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Hookd> {
        let mut tries = 0;
        loop {
            let port = free_port()?;
            let log_file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .with_context(|| format!("cannot open {}", log.display()))?;
            let child = Command::new(binary)
                .arg("serve")
                .env_remove("RUST_LOG")
                .env("HOOKD_DATABASE_URL", database_url)
                .env("HOOKD_LISTEN", format!("127.0.0.1:{port}"))
                .env("HOOKD_ALLOW_PRIVATE_TARGETS", "true")
                .env("HOOKD_RETRY_SCHEDULE", "100ms,200ms")
                .env("HOOKD_LOG_LEVEL", "warn")
                .env("NO_COLOR", "1")
                .env_remove("HOOKD_ADMIN_TOKEN")
                .env_remove("HOOKD_CONCURRENCY")
                .env_remove("HOOKD_POLL_INTERVAL")
                .envs(env.iter().copied())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log_file)
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("cannot start {}", binary.display()))?;
            let pid = child.id().ok_or_else(|| anyhow!("hookd exited at once"))?;
            let mut hookd = Hookd {
                child,
                pid,
                base_url: format!("http://127.0.0.1:{port}"),
                log: log.clone(),
            };
            match hookd.wait_ready(http).await {
                Err(e) if tries < 3 && format!("{e:#}").contains("Address already in use") => {
                    tries += 1
                }
                ready => return ready.map(|()| hookd),
            }
        }
    }

    async fn wait_ready(&mut self, http: &reqwest::Client) -> anyhow::Result<()> {
        let started = Instant::now();
        let url = format!("{}/readyz", self.base_url);
        while started.elapsed() < READY_TIMEOUT {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "hookd exited during start-up ({status}); its log:\n{}",
                    self.log_tail()
                );
            }
            if let Ok(r) = http.get(&url).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!(
            "hookd did not become ready within {READY_TIMEOUT:?}; its log:\n{}",
            self.log_tail()
        )
    }

    /// Whether it is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn stats(&self) -> ProcStats {
        let pid = self.pid.to_string();
        ProcStats {
            peak_rss_bytes: peak_rss(&pid).unwrap_or(0),
            cpu_secs: cpu_secs(&pid).unwrap_or(0.0),
        }
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Lines of its log at WARN or ERROR level.
    pub fn log_warnings(&self) -> (u64, Option<String>) {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut count = 0;
        let mut first = None;
        for line in text.lines().map(strip_ansi) {
            if line.contains(" WARN ") || line.contains(" ERROR ") {
                count += 1;
                if first.is_none() {
                    first = Some(line);
                }
            }
        }
        (count, first)
    }

    /// SIGTERM, then SIGKILL after STOP_TIMEOUT. Returns whether it exited 0 by itself.
    pub async fn stop(mut self) -> bool {
        if !self.alive() {
            return false;
        }
        // SAFETY: kill(2) on the pid of our own child, which has not been reaped.
        unsafe {
            libc::kill(self.pid as libc::pid_t, libc::SIGTERM);
        }
        match tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await {
            Ok(Ok(status)) => status.success(),
            _ => {
                let _ = self.child.kill().await;
                false
            }
        }
    }

    /// Registers an endpoint; returns its id.
    pub async fn register_endpoint(
        &self,
        http: &reqwest::Client,
        url: &str,
        secret: &str,
    ) -> anyhow::Result<String> {
        self.register(http, serde_json::json!({ "url": url, "secret": secret }))
            .await
    }

    /// Registers the endpoint `body` describes (`POST /v1/endpoints`); returns its id.
    pub async fn register(
        &self,
        http: &reqwest::Client,
        body: serde_json::Value,
    ) -> anyhow::Result<String> {
        let response = http
            .post(format!("{}/v1/endpoints", self.base_url))
            .json(&body)
            .send()
            .await
            .context("POST /v1/endpoints")?;
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        if status.as_u16() != 201 {
            bail!("POST /v1/endpoints answered {status}: {body}");
        }
        body["id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("POST /v1/endpoints answered no id: {body}"))
    }

    /// Its Prometheus metrics, as `name{labels}` -> value.
    pub async fn metrics(&self, http: &reqwest::Client) -> BTreeMap<String, f64> {
        let Ok(response) = http.get(format!("{}/metrics", self.base_url)).send().await else {
            return BTreeMap::new();
        };
        parse_metrics(&response.text().await.unwrap_or_default())
    }
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Sums a metric over several instances' scrapes.
pub fn metric_sum(scrapes: &[BTreeMap<String, f64>], name: &str) -> f64 {
    scrapes.iter().filter_map(|m| m.get(name)).sum()
}

/// A Prometheus text exposition as series -> value.
pub fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_proc() {
        assert!(cpu_secs("self").is_some());
        assert!(peak_rss("self").unwrap() > 0);
        let m = machine_jiffies().unwrap();
        assert!(m.steal <= m.busy);
        let threads = thread_cpu(std::process::id());
        assert!(!threads.is_empty());
        let before: Threads = [
            (1, ("tokio-rt-worker".to_string(), 1.0, Some(0.5))),
            (2, ("sqlx-sqlite-worker".to_string(), 0.5, Some(0.25))),
        ]
        .into();
        let after: Threads = [
            (1, ("tokio-rt-worker".to_string(), 3.0, Some(0.75))),
            (2, ("sqlx-sqlite-worker".to_string(), 0.75, Some(1.0))),
            (3, ("sqlx-sqlite-worker".to_string(), 4.0, Some(1.5))),
            (4, ("hookd".to_string(), 9.0, None)),
        ]
        .into();
        let cpu = ThreadCpu::between(&before, &after);
        assert_eq!(
            (
                cpu.runtime,
                cpu.sqlite_writer,
                cpu.sqlite_other,
                cpu.sqlite_writer_waiting
            ),
            (2.0, 4.0, 0.25, Some(1.5))
        );
        assert_eq!(strip_ansi("\u{1b}[33m WARN\u{1b}[0m x"), " WARN x");
    }
}
