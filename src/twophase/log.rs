//! The decision log: a two-phase commit's decision to commit, durable on local disk before
//! the first COMMIT PREPARED, so a pooler that dies between two shards' COMMIT PREPARED
//! commits the rest when it starts again (and never rolls back what a shard committed).
//!
//! One line per event, appended: `commit <gid>` (written and fsync'd before any shard is
//! told to commit) and `done <gid>` (every shard committed; not fsync'd: a lost `done`
//! only makes the resolver look for the gid again and find nothing). A line cut short by
//! a crash has no newline and is ignored: its fsync never returned, so no shard was told
//! to commit that transaction, and rolling it back is right. At open the file is
//! rewritten with only the decisions still pending (written to a temporary file, fsync'd,
//! renamed over the log, the directory fsync'd), and again while running once it grows.
//!
//! Group commit: decisions made at the same time share one fsync. Each is appended (in
//! order, under a lock) and numbered; the first to need an fsync syncs everything
//! appended so far while the others wait, and each returns once an fsync that began after
//! its line was written has completed.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// The open log.
pub struct DecisionLog {
    path: PathBuf,
    file: Mutex<Appender>,
    synced: Mutex<Synced>,
    /// Signalled when an fsync completes.
    fsynced: Condvar,
}

/// The file appended to, and how many lines were appended to it (and its predecessors).
struct Appender {
    file: Arc<File>,
    written: u64,
}

/// Where fsyncs stand.
#[derive(Default)]
struct Synced {
    /// Lines up to this number are on disk.
    through: u64,
    /// An fsync is running.
    running: bool,
}

impl DecisionLog {
    /// Opens (creating) the log at `path`: the gids decided commit and not yet done.
    pub fn open(path: &Path) -> io::Result<(DecisionLog, BTreeSet<String>)> {
        let mut text = String::new();
        match File::open(path) {
            Ok(mut file) => {
                file.read_to_string(&mut text)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let pending = pending(&text);
        let file = rewrite(path, &pending)?;
        let log = DecisionLog {
            path: path.to_path_buf(),
            file: Mutex::new(Appender {
                file: Arc::new(file),
                written: 0,
            }),
            synced: Mutex::default(),
            fsynced: Condvar::new(),
        };
        Ok((log, pending))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Rewrites the log with only the decisions still pending once it is longer than
    /// `limit` bytes (a long-running pooler appends two lines per transaction). Appends
    /// wait meanwhile: every decision made so far is in the file read.
    pub fn compact_if_larger(&self, limit: u64) -> io::Result<()> {
        let mut appender = lock(&self.file)?;
        if appender.file.metadata()?.len() <= limit {
            return Ok(());
        }
        // Every line appended so far is in the rewritten file, which is on disk.
        let text = std::fs::read_to_string(&self.path)?;
        appender.file = Arc::new(rewrite(&self.path, &pending(&text))?);
        Ok(())
    }

    /// Records the decision to commit `gid`, on disk when this returns.
    pub fn commit(&self, gid: &str) -> io::Result<()> {
        self.append(&format!("commit {gid}\n"), true)
    }

    /// Records that every shard committed `gid`.
    pub fn done(&self, gid: &str) -> io::Result<()> {
        self.append(&format!("done {gid}\n"), false)
    }

    fn append(&self, line: &str, durable: bool) -> io::Result<()> {
        let number = {
            let mut appender = lock(&self.file)?;
            (&*appender.file).write_all(line.as_bytes())?;
            appender.written += 1;
            appender.written
        };
        if durable {
            self.sync_through(number)?;
        }
        Ok(())
    }

    /// Returns once line `number` is on disk: syncs (everything appended so far) unless
    /// an fsync that covers it is running or done, in which case it waits for that one.
    fn sync_through(&self, number: u64) -> io::Result<()> {
        let mut synced = lock(&self.synced)?;
        loop {
            if synced.through >= number {
                return Ok(());
            }
            if !synced.running {
                break;
            }
            synced = self
                .fsynced
                .wait(synced)
                .map_err(|_| io::Error::other("the decision log's lock is poisoned"))?;
        }
        synced.running = true;
        drop(synced);
        let (file, covered) = {
            let appender = lock(&self.file)?;
            (appender.file.clone(), appender.written)
        };
        let result = file.sync_data();
        let mut synced = lock(&self.synced)?;
        synced.running = false;
        if result.is_ok() {
            synced.through = synced.through.max(covered);
        }
        self.fsynced.notify_all();
        result
    }
}

fn lock<T>(mutex: &Mutex<T>) -> io::Result<MutexGuard<'_, T>> {
    mutex
        .lock()
        .map_err(|_| io::Error::other("the decision log's lock is poisoned"))
}

/// The gids with a complete `commit` line and no `done` line after it.
fn pending(text: &str) -> BTreeSet<String> {
    let mut pending = BTreeSet::new();
    let complete = match text.rfind('\n') {
        Some(end) => &text[..=end],
        None => "",
    };
    for line in complete.lines() {
        match line.split_once(' ') {
            Some(("commit", gid)) => {
                pending.insert(gid.to_string());
            }
            Some(("done", gid)) => {
                pending.remove(gid);
            }
            _ => {}
        }
    }
    pending
}

/// Replaces the log at `path` with the `pending` decisions (a temporary file, fsync'd,
/// renamed over it, the directory fsync'd); the new file, open for appending.
fn rewrite(path: &Path, pending: &BTreeSet<String>) -> io::Result<File> {
    let fresh = path.with_extension("compacting");
    {
        let mut file = File::create(&fresh)?;
        for gid in pending {
            writeln!(file, "commit {gid}")?;
        }
        file.sync_all()?;
    }
    std::fs::rename(&fresh, path)?;
    sync_dir(path)?;
    OpenOptions::new().append(true).open(path)
}

/// fsyncs the directory holding `path`, so a rename or a new file survives a crash.
fn sync_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_decisions_survive_a_reopen_and_a_torn_last_line_is_ignored() {
        assert_eq!(
            pending("commit a\ncommit b\ndone a\ncommit c"),
            BTreeSet::from(["b".to_string()])
        );
        let dir = std::env::temp_dir().join(format!("pgcat-2pc-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("decisions.log");
        let _ = std::fs::remove_file(&path);
        let (log, pending) = DecisionLog::open(&path).expect("open");
        assert!(pending.is_empty());
        log.commit("g1").expect("commit");
        log.commit("g2").expect("commit");
        log.done("g1").expect("done");
        drop(log);
        let (log, pending) = DecisionLog::open(&path).expect("reopen");
        assert_eq!(pending, BTreeSet::from(["g2".to_string()]));
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "commit g2\n");
        // Compacted while open, past a size: appends go on in the new file.
        log.commit("g3").expect("commit");
        log.done("g2").expect("done");
        log.compact_if_larger(1 << 20).expect("small: kept");
        assert_eq!(
            std::fs::read_to_string(&path)
                .expect("read")
                .lines()
                .count(),
            3
        );
        log.compact_if_larger(0).expect("compact");
        log.commit("g4").expect("commit");
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "commit g3\ncommit g4\n"
        );
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn decisions_made_at_once_share_fsyncs_and_all_reach_the_disk() {
        let dir = std::env::temp_dir().join(format!("pgcat-2pc-group-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("decisions.log");
        let _ = std::fs::remove_file(&path);
        let (log, _) = DecisionLog::open(&path).expect("open");
        let log = std::sync::Arc::new(log);
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        log.commit(&format!("g{t}_{i}")).expect("commit");
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("thread");
        }
        assert_eq!(lock(&log.synced).expect("lock").through, 400);
        drop(log);
        let (_, pending) = DecisionLog::open(&path).expect("reopen");
        assert_eq!(pending.len(), 400);
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
