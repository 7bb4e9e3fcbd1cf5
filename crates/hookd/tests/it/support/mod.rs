//! A hookd running in the test process against a real database, and helpers to drive it.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use hookd::{Application, Config};
use hookd_store::Store;
use hookd_testkit::{wait_until, Api, Spec, TestDb};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

pub const WAIT: Duration = Duration::from_secs(20);

/// The configuration tests start from: port 0, private targets allowed, a millisecond
/// retry ladder, fast polling and rescue.
pub fn test_config(db: &TestDb) -> Config {
    test_config_for(&db.url)
}

/// The same, for a database that is not a [`TestDb`].
pub fn test_config_for(database_url: &str) -> Config {
    let mut c = Config::defaults();
    c.database_url = database_url.to_string();
    c.listen = "127.0.0.1:0".parse().unwrap();
    c.allow_private_targets = true;
    c.retry_schedule = vec![Duration::from_millis(50), Duration::from_millis(100)];
    c.request_timeout = Duration::from_secs(2);
    c.poll_interval = Duration::from_millis(20);
    c.lease_duration = Duration::from_secs(10);
    c.rescue_schedule = "* * * * * *".into(); // every second: the scheduler's resolution
    c.gauge_schedule = "* * * * * *".into();
    c.shutdown_timeout = Duration::from_secs(5);
    c
}

/// hookd in the test process; its admin API ([`Api`]: `base`, `http`, `call`, `get`,
/// `post`, `endpoint`, `event`, `deliveries`, `readyz`) through `Deref`.
pub struct TestApp {
    api: Api,
    pub store: Arc<dyn Store>,
    pub metrics: hookd::daemon::metrics::Metrics,
    shutdown: CancellationToken,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl std::ops::Deref for TestApp {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

impl TestApp {
    pub async fn spawn(db: &TestDb) -> TestApp {
        Self::spawn_with(test_config(db)).await
    }

    pub async fn spawn_with(config: Config) -> TestApp {
        let app = Application::build(config).await.expect("build hookd");
        let api = Api::new(format!("http://127.0.0.1:{}", app.port()));
        let store = app.store();
        let metrics = app.metrics();
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(app.run_until_stopped(shutdown.clone()));
        TestApp {
            api,
            store,
            metrics,
            shutdown,
            handle: Some(handle),
        }
    }

    /// Shuts down as SIGTERM would, and checks the shutdown was clean.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        let handle = self.handle.take().unwrap();
        tokio::time::timeout(WAIT, handle)
            .await
            .expect("shutdown in time")
            .expect("no panic")
            .expect("clean shutdown");
    }

    /// Waits up to `within` for hookd to stop by itself (nothing cancels it); returns what
    /// `run_until_stopped` returned.
    pub async fn stops_by_itself(mut self, within: Duration) -> anyhow::Result<()> {
        let handle = self.handle.take().unwrap();
        tokio::time::timeout(within, handle)
            .await
            .unwrap_or_else(|_| panic!("hookd still runs {within:?} later"))
            .expect("run_until_stopped does not panic")
    }

    /// Waits until delivery `id` is in `state`, and returns it with its attempt log.
    pub async fn wait_for_state(&self, id: i64, state: &str) -> Value {
        wait_until(
            WAIT,
            &format!("delivery {id} to be {state}"),
            || async move {
                let (_, d) = self.get(&format!("/v1/deliveries/{id}")).await;
                (d["state"] == state).then_some(d)
            },
        )
        .await
    }

    /// Waits until every delivery is finished; returns them.
    pub async fn wait_all_finished(&self, expected: usize) -> Vec<Value> {
        wait_until(
            WAIT,
            &format!("{expected} finished deliveries"),
            || async move {
                let all = self.deliveries("").await;
                let done = all
                    .iter()
                    .filter(|d| d["state"] == "succeeded" || d["state"] == "failed")
                    .count();
                (all.len() == expected && done == expected).then_some(all)
            },
        )
        .await
    }
}

pub fn id(v: &Value) -> i64 {
    v["id"].as_i64().expect("numeric id")
}

pub fn standard_endpoint(url: &str) -> Value {
    json!({ "url": url, "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" })
}

/// `hookd serve` on `db` as a child process, on a free port, ready once `/readyz` answers:
/// add the test's settings, then [`Spec::start`].
pub fn serve(db: &TestDb) -> Spec {
    Spec::new(env!("CARGO_BIN_EXE_hookd"))
        .arg("serve")
        .env("HOOKD_DATABASE_URL", &db.url)
        .port_env("HOOKD_LISTEN")
        .ready_at("/readyz")
}
