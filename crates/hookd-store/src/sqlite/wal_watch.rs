//! SQLite's wake-up: a commit, by a producer or by hookd itself, writes the database's
//! write-ahead log (`<db>-wal`), and inotify (through `notify`) says so at once. The write
//! comes before the commit can be read (the writer may still be syncing the log), so a
//! write is a wake-up only once the database's `data_version` has moved: read at once,
//! then after 1, 2, 4 ... 512 ms; a write that commits nothing within that (a checkpoint)
//! wakes nobody. The watch tells only that the outbox may have new rows: the reader that
//! looks finds nothing after hookd's own commits, and writes nothing then, so the watch
//! never feeds itself.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use notify::{EventKind, RecursiveMode, Watcher};
use sqlx::SqliteConnection;
use tokio::sync::Notify;

use crate::{Result, StoreError, WakeSource};

/// Changes of one WAL file. Every burst of writes between two waits is one wake-up.
pub(super) struct WalWatch {
    wal: PathBuf,
    /// Dropping it ends the watch.
    _watcher: notify::RecommendedWatcher,
    changed: Arc<Notify>,
    /// The file was removed or the watch failed: the next wait watches anew.
    broken: Arc<AtomicBool>,
    /// A connection of its own, for `PRAGMA data_version`, which moves when another
    /// connection commits.
    conn: SqliteConnection,
    version: i64,
}

/// How long a write may take to become a commit that can be read, at most: the checks of
/// `data_version` after a write, at 1, 2, 4 ... ms.
const COMMIT_CHECKS: u32 = 10;

impl WalWatch {
    /// Watches `<db>-wal`, which exists while any connection has the database open in WAL
    /// mode (hookd's own do).
    pub(super) async fn start(db: &Path, mut conn: SqliteConnection) -> Result<WalWatch> {
        let version = data_version(&mut conn).await?;
        let mut name = db.as_os_str().to_owned();
        name.push("-wal");
        let wal = PathBuf::from(name);
        let changed = Arc::new(Notify::new());
        let broken = Arc::new(AtomicBool::new(false));
        let watcher = WalWatch::start_watching(&wal, &changed, &broken)?;
        Ok(WalWatch {
            wal,
            _watcher: watcher,
            changed,
            broken,
            conn,
            version,
        })
    }

    /// Watches `wal`: a write notifies `changed`; a removal or a failure sets `broken` too.
    fn start_watching(
        wal: &Path,
        changed: &Arc<Notify>,
        broken: &Arc<AtomicBool>,
    ) -> Result<notify::RecommendedWatcher> {
        let (on_change, on_break) = (changed.clone(), broken.clone());
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                match event.map(|e| e.kind) {
                    Ok(EventKind::Modify(_) | EventKind::Create(_)) => on_change.notify_one(),
                    Ok(EventKind::Remove(_)) | Err(_) => {
                        on_break.store(true, Ordering::Relaxed);
                        on_change.notify_one();
                    }
                    Ok(_) => {}
                }
            })
            .map_err(|e| watch_failed(wal, e))?;
        watcher
            .watch(wal, RecursiveMode::NonRecursive)
            .map_err(|e| watch_failed(wal, e))?;
        Ok(watcher)
    }
}

async fn data_version(conn: &mut SqliteConnection) -> Result<i64> {
    Ok(sqlx::query_scalar("PRAGMA data_version")
        .fetch_one(conn)
        .await?)
}

fn watch_failed(wal: &Path, e: notify::Error) -> StoreError {
    StoreError::Watch(format!("{}: {e}", wal.display()))
}

#[async_trait]
impl WakeSource for WalWatch {
    async fn wait(&mut self) -> Result<()> {
        if self.broken.load(Ordering::Relaxed) {
            let watcher = WalWatch::start_watching(&self.wal, &self.changed, &self.broken)?;
            self.broken.store(false, Ordering::Relaxed);
            self._watcher = watcher;
        }
        loop {
            // `notify_one` keeps one permit: writes since the last wait wake this one at
            // once, however many they were.
            self.changed.notified().await;
            if self.broken.load(Ordering::Relaxed) {
                return Err(StoreError::Watch(format!(
                    "{}: removed, or its watch failed",
                    self.wal.display()
                )));
            }
            let mut pause = Duration::from_millis(1);
            for _ in 0..COMMIT_CHECKS {
                let version = data_version(&mut self.conn).await?;
                if version != self.version {
                    self.version = version;
                    return Ok(());
                }
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
        }
    }

    fn outbox_only(&self) -> bool {
        true
    }
}
