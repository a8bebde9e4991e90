//! The append-only audit log writer.
//!
//! Every record is one `write(2)` of one line. A short or failed write is
//! undone (the file is truncated back to the last whole record) and the log
//! is then *failed*: every later append is refused, so the caller refuses
//! the exec it was about to allow. Records are synced (`fdatasync`) at each
//! checkpoint and at the end; a failed sync also fails the log.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::keys::{AuditSigner, KeyError};
use super::record::{Body, Checkpoint, End, Record, Start, GENESIS};
use super::redact::Redactor;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("audit log {path}: {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        source: std::io::Error,
    },
    #[error("audit log {path}: an earlier write failed ({cause}); no further record can be written, so nothing more may run")]
    Failed { path: PathBuf, cause: String },
    #[error("audit log {path}: size limit of {limit} bytes reached; raise it or shorten the step")]
    Full { path: PathBuf, limit: u64 },
    #[error("audit log {path}: cannot sign a checkpoint: {source}")]
    Key { path: PathBuf, source: KeyError },
}

/// When signed checkpoints are written: after `every_records` records, and
/// `every` after the last checkpoint (the supervisor's timer calls
/// [`AuditLog::tick`], so records are signed within `every` even when
/// nothing follows them). With a sealing key also at the end of the epoch
/// of the oldest unsigned record: the verifier refuses a record sealed in a
/// later epoch than the next one (see `fss::SEAL_GRACE_SECS`).
#[derive(Debug, Clone, Copy)]
pub struct CheckpointPolicy {
    pub every_records: u64,
    pub every: Duration,
}

impl Default for CheckpointPolicy {
    fn default() -> Self {
        CheckpointPolicy {
            every_records: 256,
            every: Duration::from_secs(5),
        }
    }
}

pub struct AuditLog {
    file: File,
    path: PathBuf,
    container: String,
    key: Option<AuditSigner>,
    /// Epoch of the oldest record not yet covered by a checkpoint (sealed
    /// logs), or 0; `None` when every record is covered.
    unsigned: Option<u64>,
    policy: CheckpointPolicy,
    max_bytes: u64,
    /// Bytes of whole records in the file.
    len: u64,
    seq: u64,
    prev: String,
    execs: u64,
    since_checkpoint: u64,
    last_checkpoint: Instant,
    failed: Option<String>,
    redact: Redactor,
    first_hash: Option<String>,
    /// `audit.sync = "record"`: fdatasync after every record.
    sync_each: bool,
}

impl AuditLog {
    /// `audit.sync = "record"`: every record is synced to disk before the
    /// exec it describes goes on (default: at each checkpoint and the end).
    pub fn sync_every_record(&mut self, on: bool) {
        self.sync_each = on;
    }

    /// Create a new log (refused if `path` exists) and write its start
    /// record.
    pub fn create(
        path: &Path,
        start: Start,
        key: Option<AuditSigner>,
        policy: CheckpointPolicy,
        max_bytes: u64,
    ) -> Result<AuditLog, LogError> {
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
            .map_err(|source| LogError::Io {
                path: path.into(),
                op: "create",
                source,
            })?;
        let key_id = key.as_ref().map(AuditSigner::key_id);
        let mut start = start;
        start.key_id = key_id;
        let mut log = AuditLog {
            file,
            path: path.into(),
            container: start.container_id.clone(),
            key,
            unsigned: None,
            policy,
            max_bytes,
            len: 0,
            seq: 0,
            prev: GENESIS.into(),
            execs: 0,
            since_checkpoint: 0,
            last_checkpoint: Instant::now(),
            failed: None,
            redact: Redactor::default(),
            first_hash: None,
            sync_each: false,
        };
        log.append(Body::Start(start))?;
        log.first_hash = Some(log.prev.clone());
        // The index learns of the log at once, so deleting it later, even
        // before its end, is detected.
        let index = super::index::path_for(path);
        super::index::append(&index, "start", path, &log.container, &log.prev, None).map_err(
            |source| LogError::Io {
                path: index.clone(),
                op: "append to index",
                source,
            },
        )?;
        Ok(log)
    }

    /// The log's file descriptor (kept open across the supervisor's fork).
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.file)
    }

    /// Secrets to keep out of every exec record from now on.
    pub fn set_redactor(&mut self, redact: Redactor) {
        self.redact = redact;
    }

    /// One more secret to redact from every later record (an `exec`'d
    /// process's credential-named variables).
    pub fn add_secret(&mut self, name: &str, value: &str) {
        self.redact.add(name, value);
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append one record; writes a signed checkpoint after it when the
    /// policy says so. Returns the record's seq.
    pub fn append(&mut self, mut body: Body) -> Result<u64, LogError> {
        if let Body::Exec(e) = &mut body {
            self.redact.exec(e);
            self.execs += 1;
        }
        // The epoch before the record's time is read: the record is then
        // sealed no later than the end of its own epoch.
        let epoch = self
            .key
            .as_ref()
            .and_then(AuditSigner::sealer)
            .map_or(0, |s| s.epoch_now());
        let seq = self.write(body)?;
        if self.sync_each {
            self.sync()?;
        }
        self.since_checkpoint += 1;
        self.unsigned.get_or_insert(epoch);
        if self.key.is_some()
            && (self.since_checkpoint >= self.policy.every_records
                || self.due_in() == Some(Duration::ZERO))
        {
            self.checkpoint()?;
        }
        Ok(seq)
    }

    /// How long until unsigned records must be signed; `None` when there
    /// is nothing to sign.
    pub fn due_in(&self) -> Option<Duration> {
        let key = self.key.as_ref()?;
        let epoch = self.unsigned?;
        let mut left = self
            .policy
            .every
            .saturating_sub(self.last_checkpoint.elapsed());
        if let Some(s) = key.sealer() {
            if s.epoch_now() > epoch {
                return Some(Duration::ZERO);
            }
            left = left.min(s.until_epoch_end());
        }
        Some(left)
    }

    /// Sign the unsigned records if they are due (the supervisor's timer).
    pub fn tick(&mut self) -> Result<(), LogError> {
        if self.due_in() == Some(Duration::ZERO) {
            self.checkpoint()?;
        }
        Ok(())
    }

    /// Write a signed checkpoint over the chain head and sync the file.
    pub fn checkpoint(&mut self) -> Result<(), LogError> {
        if let Some(key) = &self.key {
            if let Some(cause) = &self.failed {
                return Err(LogError::Failed {
                    path: self.path.clone(),
                    cause: cause.clone(),
                });
            }
            let cp: Checkpoint = match key.checkpoint(&self.container, self.seq, &self.prev) {
                Ok(cp) => cp,
                Err(source) => {
                    self.failed = Some(format!("signing: {source}"));
                    return Err(LogError::Key {
                        path: self.path.clone(),
                        source,
                    });
                }
            };
            self.write(Body::Checkpoint(cp))?;
        }
        self.sync()?;
        self.unsigned = None;
        self.since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
        Ok(())
    }

    /// The end record, a final checkpoint, and a sync; a failure here fails
    /// the step.
    pub fn finish(mut self, exit_status: Option<i32>) -> Result<(), LogError> {
        let end = End {
            exit_status,
            records: self.seq + 1,
            execs: self.execs,
        };
        self.write(Body::End(end))?;
        self.checkpoint()?;
        let index = super::index::path_for(&self.path);
        super::index::append(
            &index,
            "end",
            &self.path,
            &self.container,
            &self.prev,
            Some(self.seq),
        )
        .map_err(|source| LogError::Io {
            path: index.clone(),
            op: "append to index",
            source,
        })
    }

    fn write(&mut self, body: Body) -> Result<u64, LogError> {
        if let Some(cause) = &self.failed {
            return Err(LogError::Failed {
                path: self.path.clone(),
                cause: cause.clone(),
            });
        }
        let record = Record {
            seq: self.seq,
            time: super::record::now(),
            body,
            prev: self.prev.clone(),
        };
        let mut line = serde_json::to_vec(&record).map_err(|e| LogError::Io {
            path: self.path.clone(),
            op: "encode",
            source: std::io::Error::other(e),
        })?;
        if self.len + line.len() as u64 + 1 > self.max_bytes {
            self.failed = Some(format!("size limit {} reached", self.max_bytes));
            return Err(LogError::Full {
                path: self.path.clone(),
                limit: self.max_bytes,
            });
        }
        let hash = super::sha256_hex(&line);
        line.push(b'\n');
        match self.file.write(&line) {
            Ok(n) if n == line.len() => {}
            Ok(n) => {
                return Err(self.undo(
                    "short write",
                    std::io::Error::other(format!("{n} of {} bytes written", line.len())),
                ))
            }
            Err(e) => return Err(self.undo("write", e)),
        }
        self.len += line.len() as u64;
        self.prev = hash;
        let seq = self.seq;
        self.seq += 1;
        Ok(seq)
    }

    /// Truncate back to the last whole record and mark the log failed.
    fn undo(&mut self, op: &'static str, source: std::io::Error) -> LogError {
        let _ = self.file.set_len(self.len);
        self.failed = Some(format!("{op}: {source}"));
        LogError::Io {
            path: self.path.clone(),
            op,
            source,
        }
    }

    fn sync(&mut self) -> Result<(), LogError> {
        if let Err(source) = self.file.sync_data() {
            self.failed = Some(format!("fdatasync: {source}"));
            return Err(LogError::Io {
                path: self.path.clone(),
                op: "fdatasync",
                source,
            });
        }
        Ok(())
    }
}
