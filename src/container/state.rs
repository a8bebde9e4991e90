//! Where a container's state lives between two calls of the runtime, and
//! how a call finds it again by id alone.
//!
//! One directory per container under the state root (`--root`, else
//! `/run/buildcell` as root, `$XDG_RUNTIME_DIR/buildcell` rootless):
//! `state.json` (what `state` prints plus buildcell's own fields) and
//! `exec.fifo` while the container is `created`. Calls on one id are
//! serialised by an exclusive `flock` on the container's directory.

use std::fs;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("container {0} does not exist")]
    NotFound(String),
    #[error("container {0} already exists; choose another id or delete it first")]
    Exists(String),
    #[error("invalid container id {0:?}: use 1-1024 of A-Z a-z 0-9 _ + - . starting with a letter or digit (no `/`, no `..`)")]
    BadId(String),
    #[error("state of container {id}: {path}: {source}")]
    Io {
        id: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state of container {id}: {path}: not a state file buildcell wrote ({source})")]
    Corrupt {
        id: String,
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// The state root to use when `--root` is not given, like runc: a
/// rootless caller (not uid 0, or uid 0 inside a user namespace such as
/// rootless podman's, with `XDG_RUNTIME_DIR` set) keeps state under its
/// runtime dir.
pub fn default_root() -> PathBuf {
    let xdg = std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty());
    let rootless = !nix::unistd::geteuid().is_root() || !crate::userns::in_initial_userns();
    match (rootless, xdg) {
        (true, Some(dir)) => PathBuf::from(dir).join("buildcell"),
        _ => PathBuf::from("/run/buildcell"),
    }
}

/// Check a container id: it names a directory, so no `/`, no `..`.
pub fn check_id(id: &str) -> Result<(), StateError> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+-.".contains(c))
        && id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && !id.contains("..");
    if ok {
        Ok(())
    } else {
        Err(StateError::BadId(id.into()))
    }
}

/// Container status as the OCI runtime spec names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        };
        f.pad(s)
    }
}

/// What is saved in `state.json`. `oci` is exactly what `state` prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Saved {
    pub oci: OciState,
    /// Start time of the init (field 22 of /proc/PID/stat): a recycled pid
    /// is not taken for the container.
    pub init_start_time: u64,
    /// The cgroup, as the cgroups module saved it (None: no cgroup).
    #[serde(default)]
    pub cgroup: Option<serde_json::Value>,
    /// The audit log of this container and its supervisor's pid.
    #[serde(default)]
    pub audit_log: Option<PathBuf>,
    #[serde(default)]
    pub supervisor_pid: Option<i32>,
    /// The bundle's config.json as it was at create (hooks, process).
    #[serde(default)]
    pub config_sha256: String,
    /// The host id range of the user namespace buildcell added (released
    /// at `delete`).
    #[serde(default)]
    pub userns: Option<crate::idpool::Slot>,
    /// The work directory of the container's own overlayfs instance
    /// (removed at `delete`).
    #[serde(default)]
    pub overlay_workdir: Option<PathBuf>,
    /// The detached audit supervisor's start time (with `supervisor_pid`:
    /// `delete` waits for that process, never for a reused pid).
    #[serde(default)]
    pub supervisor_start_time: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OciState {
    pub oci_version: String,
    pub id: String,
    pub pid: i32,
    pub status: Status,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    pub owner: String,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub annotations: std::collections::BTreeMap<String, String>,
}

/// One container's directory, locked for the duration of a call.
pub struct ContainerDir {
    pub id: String,
    pub dir: PathBuf,
    _lock: OwnedFd,
    /// False for [`ContainerDir::peek`]: another call holds the lock.
    pub locked: bool,
}

fn io(id: &str, path: &Path) -> impl FnOnce(std::io::Error) -> StateError {
    let (id, path) = (id.to_string(), path.to_path_buf());
    move |source| StateError::Io { id, path, source }
}

fn lock_dir(id: &str, dir: &Path) -> Result<OwnedFd, StateError> {
    let f = fs::File::open(dir).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => StateError::NotFound(id.into()),
        _ => io(id, dir)(e),
    })?;
    let fd: OwnedFd = f.into();
    loop {
        #[allow(deprecated)]
        match nix::fcntl::flock(fd.as_raw_fd(), nix::fcntl::FlockArg::LockExclusive) {
            Ok(()) => break,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(io(id, dir)(std::io::Error::from(e))),
        }
    }
    Ok(fd)
}

impl ContainerDir {
    /// Create the directory of a new container (fails if the id exists),
    /// locked.
    pub fn create(root: &Path, id: &str) -> Result<ContainerDir, StateError> {
        check_id(id)?;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .map_err(io(id, root))?;
        let dir = root.join(id);
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(StateError::Exists(id.into()))
            }
            Err(e) => return Err(io(id, &dir)(e)),
        }
        let lock = lock_dir(id, &dir)?;
        Ok(ContainerDir {
            id: id.into(),
            dir,
            _lock: lock,
            locked: true,
        })
    }

    /// Open and lock an existing container's directory.
    pub fn open(root: &Path, id: &str) -> Result<ContainerDir, StateError> {
        check_id(id)?;
        let dir = root.join(id);
        let lock = lock_dir(id, &dir)?;
        // Deleted while we waited for the lock.
        if !dir.join("state.json").exists() {
            return Err(StateError::NotFound(id.into()));
        }
        Ok(ContainerDir {
            id: id.into(),
            dir,
            _lock: lock,
            locked: true,
        })
    }

    /// The directory of a container whose `create` died before it wrote
    /// any state (its lock is free, it has no `state.json`): what `delete
    /// --force` removes. None when there is no such directory, or when it
    /// is not the one locked (removed and made again by another `create`).
    pub fn open_leftover(root: &Path, id: &str) -> Result<Option<ContainerDir>, StateError> {
        use std::os::unix::fs::MetadataExt;
        check_id(id)?;
        let dir = root.join(id);
        let lock = match lock_dir(id, &dir) {
            Ok(l) => l,
            Err(StateError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let locked = nix::sys::stat::fstat(lock.as_raw_fd())
            .map_err(|e| io(id, &dir)(std::io::Error::from(e)))?;
        let same = fs::symlink_metadata(&dir)
            .is_ok_and(|m| m.ino() == locked.st_ino as u64 && m.dev() == locked.st_dev as u64);
        if !same {
            return Ok(None);
        }
        Ok(Some(ContainerDir {
            id: id.into(),
            dir,
            _lock: lock,
            locked: true,
        }))
    }

    /// Open without waiting: locked when the lock is free; otherwise (a
    /// `create` or `delete` under way) unlocked, to be read only.
    pub fn peek(root: &Path, id: &str) -> Result<ContainerDir, StateError> {
        check_id(id)?;
        let dir = root.join(id);
        let fd: OwnedFd = fs::File::open(&dir)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => StateError::NotFound(id.into()),
                _ => io(id, &dir)(e),
            })?
            .into();
        #[allow(deprecated)]
        let locked =
            match nix::fcntl::flock(fd.as_raw_fd(), nix::fcntl::FlockArg::LockExclusiveNonblock) {
                Ok(()) => true,
                Err(nix::errno::Errno::EWOULDBLOCK) => false,
                Err(e) => return Err(io(id, &dir)(std::io::Error::from(e))),
            };
        if !dir.join("state.json").exists() {
            return Err(StateError::NotFound(id.into()));
        }
        Ok(ContainerDir {
            id: id.into(),
            dir,
            _lock: fd,
            locked,
        })
    }

    pub fn fifo(&self) -> PathBuf {
        self.dir.join("exec.fifo")
    }

    pub fn state_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    pub fn load(&self) -> Result<Saved, StateError> {
        let path = self.state_path();
        let data = fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => StateError::NotFound(self.id.clone()),
            _ => io(&self.id, &path)(e),
        })?;
        serde_json::from_slice(&data).map_err(|source| StateError::Corrupt {
            id: self.id.clone(),
            path,
            source,
        })
    }

    /// Replace state.json atomically: a new file, exchanged with the old
    /// one (`renameat2(RENAME_EXCHANGE)`), which is then unlinked; the
    /// first save is a plain rename. A rename over an existing file would
    /// make ext4 (where /run is not a tmpfs) write the new file's data out
    /// first, its `auto_da_alloc` heuristic: 0.2-0.3 ms a save, six saves a
    /// `run`. Readers see the old state or the new one, never a part. The
    /// state is not synced either way: after a power loss it may be empty,
    /// which `state` reports as corrupt and `delete --force` removes.
    pub fn save(&self, saved: &Saved) -> Result<(), StateError> {
        use nix::fcntl::{renameat2, RenameFlags};
        let path = self.state_path();
        let tmp = self.dir.join("state.json.tmp");
        let data = serde_json::to_vec(saved).map_err(|source| StateError::Corrupt {
            id: self.id.clone(),
            path: path.clone(),
            source,
        })?;
        // A temporary file left by a save that died half-way goes first:
        // truncating it would cost the same flush.
        let _ = fs::remove_file(&tmp);
        let mut f = fs::File::create_new(&tmp).map_err(io(&self.id, &tmp))?;
        f.write_all(&data).map_err(io(&self.id, &tmp))?;
        drop(f);
        match renameat2(None, &tmp, None, &path, RenameFlags::RENAME_EXCHANGE) {
            Ok(()) => {
                // The old state, now under the temporary name (a leftover
                // goes at the next save or with the directory).
                let _ = fs::remove_file(&tmp);
                Ok(())
            }
            // No state.json yet (the first save), or a file system
            // without the exchange.
            Err(nix::errno::Errno::ENOENT | nix::errno::Errno::EINVAL) => {
                fs::rename(&tmp, &path).map_err(io(&self.id, &path))
            }
            Err(e) => Err(io(&self.id, &path)(e.into())),
        }
    }

    /// Remove the directory and everything in it.
    pub fn remove(self) -> Result<(), StateError> {
        fs::remove_dir_all(&self.dir).map_err(io(&self.id, &self.dir))
    }
}

/// Ids of every container under `root`, sorted.
pub fn list_ids(root: &Path) -> Vec<String> {
    let mut ids: Vec<String> = fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("state.json").exists())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|id| check_id(id).is_ok())
        .collect();
    ids.sort();
    ids
}

/// Start time of a process (clock ticks since boot), to recognise it again.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = crate::sys::read_proc(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: split after the
    // last `)`.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The process state letter (R, S, D, T, Z, ...).
pub fn proc_state(pid: i32) -> Option<char> {
    let stat = crate::sys::read_proc(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].chars().next()
}

/// Whether the container's init is still the process we started.
pub fn init_alive(saved: &Saved) -> bool {
    let pid = saved.oci.pid;
    pid > 0
        && start_time(pid) == Some(saved.init_start_time)
        && !matches!(proc_state(pid), Some('Z') | Some('X') | None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        for good in ["a", "buildah-buildah3", "0f3a", "x.y_z+1"] {
            assert!(check_id(good).is_ok(), "{good}");
        }
        for bad in ["", "../x", "a/b", "..", ".hidden", "-x", "a..b", "sp ace"] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
    }

    /// Each save replaces the whole state (the first by rename, the next
    /// by exchange), leaves no temporary file, and is not stopped by one
    /// a save that died left behind.
    #[test]
    fn saves_replace_the_state_whole() {
        let root = std::env::temp_dir().join(format!("bc-state-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let dir = ContainerDir::create(&root, "c1").unwrap();
        let mut saved = Saved {
            oci: OciState {
                oci_version: "1.2.0".into(),
                id: "c1".into(),
                pid: 0,
                status: Status::Creating,
                bundle: "/b".into(),
                rootfs: "/b/rootfs".into(),
                created: String::new(),
                owner: "0".into(),
                annotations: Default::default(),
            },
            init_start_time: 0,
            cgroup: None,
            audit_log: None,
            supervisor_pid: None,
            config_sha256: String::new(),
            userns: None,
            overlay_workdir: None,
            supervisor_start_time: None,
        };
        for pid in 1..=3 {
            saved.oci.pid = pid;
            dir.save(&saved).unwrap();
            assert_eq!(dir.load().unwrap().oci.pid, pid);
            assert!(!dir.dir.join("state.json.tmp").exists());
        }
        fs::write(dir.dir.join("state.json.tmp"), "half a sta").unwrap();
        saved.oci.status = Status::Created;
        dir.save(&saved).unwrap();
        assert!(matches!(dir.load().unwrap().oci.status, Status::Created));
        assert!(!dir.dir.join("state.json.tmp").exists());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn own_start_time_is_read() {
        let me = std::process::id() as i32;
        assert!(start_time(me).is_some());
        // Running or sleeping (other test threads), never a zombie.
        assert!(matches!(proc_state(me), Some('R' | 'S')));
    }
}
