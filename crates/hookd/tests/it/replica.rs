//! A real streaming replica (`database_read_url`): a PostgreSQL primary and its standby,
//! started here as two clusters of their own (`initdb`, `pg_basebackup`), so that the
//! machine's server is left as it was. The delivery log is read from the replica (a paused
//! replay shows it), delivery never depends on it, and when it goes away reads fall back to
//! the primary.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use hookd_testkit::{wait_until, Receiver};
use serde_json::json;

use crate::support::{test_config_for, TestApp, WAIT};

/// A primary and its streaming replica, each on a free port, in a directory of their own;
/// stopped and removed when dropped. Runs the server binaries as the `postgres` user, as
/// PostgreSQL refuses to run as root.
struct Clusters {
    dir: PathBuf,
    bin: PathBuf,
    primary_port: u16,
    replica_port: u16,
}

/// The server binaries: `pg_config --bindir`, else the newest under /usr/lib/postgresql.
fn server_bin() -> PathBuf {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return dir;
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL's server binaries under /usr/lib/postgresql")
        .filter_map(|e| Some(e.ok()?.path().join("bin")))
        .filter(|b| b.join("initdb").exists())
        .collect();
    found.sort();
    found.pop().expect("initdb in /usr/lib/postgresql/*/bin")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `script` with bash as the `postgres` user (as is when not root), panicking with its
/// output when it fails.
fn as_postgres(script: &str) {
    let mut command = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", "bash", "-ec", script]);
        c
    } else {
        let mut c = Command::new("bash");
        c.args(["-ec", script]);
        c
    };
    let out = command.output().expect("bash runs");
    assert!(
        out.status.success(),
        "{script}\nfailed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl Clusters {
    fn start() -> Clusters {
        let dir = std::env::temp_dir().join(format!("hookd-replica-{}", free_port()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let clusters = Clusters {
            dir,
            bin: server_bin(),
            primary_port: free_port(),
            replica_port: free_port(),
        };
        let (dir, bin) = (clusters.dir.display(), clusters.bin.display());
        let (p1, p2) = (clusters.primary_port, clusters.replica_port);
        if is_root() {
            let chown = Command::new("chown")
                .args(["postgres:postgres", &dir.to_string()])
                .status();
            assert!(chown.is_ok_and(|s| s.success()), "chown {dir} to postgres");
        }
        // initdb's pg_hba.conf with `-A trust` lets local replication connections in.
        as_postgres(&format!(
            "{bin}/initdb -D {dir}/primary -U postgres -A trust --no-sync >{dir}/initdb.log
             {bin}/pg_ctl -D {dir}/primary -l {dir}/primary.log -w start \
                -o '-p {p1} -k {dir} -c listen_addresses=127.0.0.1 -c fsync=off'
             {bin}/pg_basebackup -h 127.0.0.1 -p {p1} -U postgres -D {dir}/replica -R -X stream --no-sync
             {bin}/pg_ctl -D {dir}/replica -l {dir}/replica.log -w start \
                -o '-p {p2} -k {dir} -c listen_addresses=127.0.0.1'"
        ));
        clusters
    }

    fn url(port: u16) -> String {
        format!("postgres://postgres@127.0.0.1:{port}/postgres")
    }

    fn pg_ctl(&self, data: &str, action: &str) {
        let (dir, bin) = (self.dir.display(), self.bin.display());
        as_postgres(&format!(
            "{bin}/pg_ctl -D {dir}/{data} -m immediate -w {action} >/dev/null"
        ));
    }
}

impl Drop for Clusters {
    fn drop(&mut self) {
        let (dir, bin) = (self.dir.display(), self.bin.display());
        for data in ["replica", "primary"] {
            let stop = format!("{bin}/pg_ctl -D {dir}/{data} -m immediate stop >/dev/null 2>&1");
            let _ = if is_root() {
                Command::new("runuser")
                    .args(["-u", "postgres", "--", "bash", "-c", &stop])
                    .status()
            } else {
                Command::new("bash").args(["-c", &stop]).status()
            };
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Succeeded deliveries in the log, as the API shows it.
async fn logged(app: &TestApp) -> usize {
    app.deliveries("state=succeeded").await.len()
}

async fn send(app: &TestApp, from: usize, n: usize) {
    for i in from..from + n {
        app.event(json!({ "event_type": "purchase", "event_id": format!("e-{i}"), "payload": {} }))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_is_read_from_the_replica_and_delivery_never_needs_it() {
    let clusters = Clusters::start();
    let primary = Clusters::url(clusters.primary_port);
    let replica = Clusters::url(clusters.replica_port);
    let mut config = test_config_for(&primary);
    config.database_read_url = Some(replica.clone());
    let app = TestApp::spawn_with(config).await;
    let receiver = Receiver::ok().await;
    app.endpoint(json!({ "url": receiver.url() })).await;

    send(&app, 0, 20).await;
    receiver.wait_for(20, WAIT).await;
    wait_until(WAIT, "the replica to show 20 delivered", || async {
        (logged(&app).await == 20).then_some(())
    })
    .await;

    // With the replica's replay paused, delivery goes on and the log stays as the replica
    // has it: it is read there.
    let on_replica = connect(&replica).await;
    sqlx::query("SELECT pg_wal_replay_pause()")
        .execute(&on_replica)
        .await
        .expect("pause the replay");
    let on_primary = connect(&primary).await;
    send(&app, 20, 10).await;
    receiver.wait_for(30, WAIT).await;
    wait_until(
        WAIT,
        "the last deliveries recorded on the primary",
        || async {
            let done: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM hookd_deliveries WHERE state = 'succeeded'",
            )
            .fetch_one(&on_primary)
            .await
            .unwrap();
            (done == 30).then_some(())
        },
    )
    .await;
    // The primary has 30: a log of 20 can only come from the paused replica. Waited for,
    // not read once: a replica that failed a read earlier (its schema not yet replayed at
    // start) is passed over for a few seconds, and meanwhile the log comes from the primary.
    wait_until(
        WAIT,
        "the log read from the paused replica (20)",
        || async { (logged(&app).await == 20).then_some(()) },
    )
    .await;
    sqlx::query("SELECT pg_wal_replay_resume()")
        .execute(&on_replica)
        .await
        .expect("resume the replay");
    on_replica.close().await;
    wait_until(WAIT, "the replica to catch up", || async {
        (logged(&app).await == 30).then_some(())
    })
    .await;

    // The replica goes away: reads fall back to the primary, delivery never notices.
    clusters.pg_ctl("replica", "stop");
    send(&app, 30, 10).await;
    receiver.wait_for(40, WAIT).await;
    wait_until(WAIT, "the log read from the primary", || async {
        (logged(&app).await == 40).then_some(())
    })
    .await;
    let (status, _) = app.get("/metrics").await;
    assert_eq!(status, 200);
    app.stop().await;
}

async fn connect(url: &str) -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        .expect("connect")
}
