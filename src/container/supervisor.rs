//! The container's audit log and its supervisor process: the log opened
//! with the bundle's secrets redacted, the supervisor started (detached for
//! `create`) and handed each seccomp listener over its control socket.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use oci_spec::runtime::Spec;

use crate::audit::{self, log::AuditLog};
use crate::error::Error;
use crate::fault;
use crate::spec::{self, LaunchPlan};
use crate::userns::IdMapPlan;

use super::bundle::Bundle;
use super::{usage, CONTROL_SOCKET};

/// What the audit log of a bundle's container must never show: the content
/// of every file bound under /run/secrets (how buildah, BuildKit and
/// Kubernetes pass build and pod secrets), and the values of environment
/// variables named like credentials. Each is replaced by
/// `<redacted:NAME>` in every record.
pub(super) fn bundle_redactor(
    spec: &Spec,
    plan: &LaunchPlan,
    profile: &crate::policy::Profile,
) -> audit::redact::Redactor {
    let mut r = audit::redact::Redactor::default();
    for m in &plan.mounts {
        let spec::MountKind::Bind { source, dir, .. } = &m.kind else {
            continue;
        };
        if *dir || !m.destination.starts_with(crate::mounts::SECRETS_DIR) {
            continue;
        }
        let small =
            std::fs::metadata(source).is_ok_and(|md| md.is_file() && md.len() <= 512 * 1024);
        if let (true, Ok(value)) = (small, std::fs::read(source)) {
            let name = m
                .destination
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            r.add(&name, &String::from_utf8_lossy(&value));
        }
    }
    for e in spec.process().iter().flat_map(|p| p.env().iter().flatten()) {
        if let Some((name, value)) = e.split_once('=') {
            if audit::redact::is_secret_name(name) || profile.redacts_env(name) {
                r.add(name, value);
            }
        }
    }
    r
}

/// Create the audit log of an engine's container.
pub(super) fn open_container_log(
    id: &str,
    bundle: &Bundle,
    idmap: &Option<IdMapPlan>,
    annotations: &BTreeMap<String, String>,
    policy: &crate::policy::Evaluation,
) -> Result<AuditLog, Error> {
    let dir = audit::ensure_log_dir().map_err(usage)?;
    let short: String = id.chars().take(64).collect();
    let path = dir.join(format!(
        "{short}-{}-{}.log",
        audit::record::now().replace(':', ""),
        std::process::id()
    ));
    let key_path = audit::default_key_path();
    let key = if key_path.exists() {
        Some(audit::keys::load_signing(&key_path).map_err(|e| usage(format!("audit key: {e}")))?)
    } else {
        None
    };
    let (uid_map, gid_map) = match idmap {
        Some(m) => m.map_text(),
        None => {
            let read = |f: &str| {
                crate::sys::read_proc(format!("/proc/self/{f}"))
                    .map(|s| {
                        s.lines()
                            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
                            .collect::<Vec<_>>()
                            .join("; ")
                    })
                    .unwrap_or_default()
            };
            (read("uid_map"), read("gid_map"))
        }
    };
    let start = audit::record::Start {
        buildcell_version: env!("CARGO_PKG_VERSION").into(),
        container_id: id.into(),
        bundle: Some(bundle.dir.display().to_string()),
        config_sha256: bundle.sha256.clone(),
        profile: Some(policy.loaded.profile.name.clone()),
        profile_sha256: Some(policy.loaded.sha256.clone()),
        uid_map,
        gid_map,
        annotations: annotations.clone(),
        host: nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default(),
        ..Default::default()
    };
    AuditLog::create(
        &path,
        start,
        key,
        Default::default(),
        audit::DEFAULT_AUDIT_LIMIT,
    )
    .map_err(|e| usage(e.to_string()))
}

/// The audit supervisor of a created container, started before the
/// container exists: a new session, stdio on /dev/null (the engine's pipes
/// must see EOF when the container ends), no fd but the log, the control
/// socket and the hand-off socket. It is forked before `create` enters any
/// namespace the bundle names by path, so it never lives in the
/// container's pid or network namespace.
pub(super) struct SupervisorHandle {
    pub(super) pid: i32,
    handoff: std::os::unix::net::UnixStream,
    /// Until `create` succeeds: on drop, wait for the supervisor to end
    /// its log and exit (SIGKILL after 5 s), so that a failed `create`
    /// leaves no process behind.
    pub(super) reap: bool,
}

impl Drop for SupervisorHandle {
    fn drop(&mut self) {
        use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
        if !self.reap {
            return;
        }
        let _ = self.handoff.shutdown(std::net::Shutdown::Both);
        let pid = Pid::from_raw(self.pid);
        for _ in 0..500 {
            match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                _ => return,
            }
        }
        let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
        let _ = waitpid(pid, None);
    }
}

impl SupervisorHandle {
    /// Give the supervisor the init's listener and pid, and wait (up to
    /// 10 s) until it traces the init: a supervisor that dies before
    /// would leave an init nobody stops (its execs fail, unaudited none).
    pub(super) fn give(&self, listener: &OwnedFd, init: Pid) -> Result<(), Error> {
        use std::io::Read;
        crate::sync::send_with_fd(
            self.handoff.as_raw_fd(),
            &init.as_raw().to_ne_bytes(),
            listener.as_raw_fd(),
        )
        .map_err(|e| usage(format!("hand the listener to the audit supervisor: {e}")))?;
        let _ = self
            .handoff
            .set_read_timeout(Some(std::time::Duration::from_secs(10)));
        let mut word = [0u8; 1];
        match (&self.handoff).read(&mut word) {
            Ok(1) if word[0] == b'1' => Ok(()),
            Ok(1) => Err(usage(
                "the audit supervisor cannot trace the container's init; nothing runs unaudited",
            )),
            Ok(_) => Err(usage(
                "the audit supervisor exited before it traced the container's init",
            )),
            Err(e) => Err(usage(format!(
                "the audit supervisor did not trace the container's init: {e}"
            ))),
        }
    }
}

pub(super) fn start_supervisor(
    control: std::os::unix::net::UnixListener,
    mut log: AuditLog,
    failure_note: PathBuf,
) -> Result<SupervisorHandle, Error> {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()
        .map_err(|e| usage(format!("start the audit supervisor: {e}")))?;
    match crate::sys::clone_fork(0) {
        Err(e) => Err(usage(format!("start the audit supervisor: {e}"))),
        Ok(Some(pid)) => Ok(SupervisorHandle {
            pid,
            handoff: ours,
            reap: true,
        }),
        Ok(None) => {
            drop(ours);
            let _ = nix::unistd::setsid();
            if let Ok(null) = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
            {
                for fd in 0..3 {
                    let _ = nix::unistd::dup2(null.as_raw_fd(), fd);
                }
            }
            close_all_but(&[theirs.as_raw_fd(), control.as_raw_fd(), log.raw_fd()]);
            let code = match receive_listener(&theirs) {
                // `create` failed before the container existed: the log
                // ends with no exec.
                None => 0,
                Some((listener, init)) => {
                    fault::point("supervisor:started");
                    crate::sys::trim_heap();
                    // `create` waits for this word: once the init is
                    // traced, the supervisor's death kills the container.
                    let mut theirs = Some(theirs);
                    let mut traced = |ok: bool| {
                        if let Some(s) = theirs.take() {
                            let _ =
                                std::io::Write::write_all(&mut &s, if ok { b"1" } else { b"0" });
                        }
                    };
                    match crate::reaper::signal_fd() {
                        Ok(signals) => {
                            let out = audit::supervisor::run_detached(
                                listener,
                                Some(control),
                                audit::supervisor::Watch::of(init),
                                &signals,
                                &mut log,
                                &mut traced,
                            );
                            if let Some(why) = &out.audit_failure {
                                let _ = std::fs::write(
                                    &failure_note,
                                    format!("audit: {why}; the container was stopped"),
                                );
                            }
                            i32::from(out.audit_failure.is_some())
                        }
                        Err(_) => {
                            let _ = nix::sys::signal::kill(init, Signal::SIGKILL);
                            1
                        }
                    }
                }
            };
            let _ = log.finish(None);
            crate::sys::exit_now(code)
        }
    }
}

/// The supervisor's side of the hand-off: the listener and the init's pid,
/// or None when `create` gave up.
pub(super) fn receive_listener(s: &std::os::unix::net::UnixStream) -> Option<(OwnedFd, Pid)> {
    let mut buf = [0u8; 4];
    let (n, fd) = crate::sync::recv_with_fd(s.as_raw_fd(), &mut buf).ok()?;
    if n != 4 {
        return None;
    }
    Some((fd?, Pid::from_raw(i32::from_ne_bytes(buf))))
}

/// A unix socket path in `dir` short enough for `sun_path` (108 bytes),
/// whatever the length of `dir`: reached through an fd of the directory.
/// Keep the returned file open while the path is used.
pub(super) fn short_socket_path(dir: &Path, name: &str) -> Result<(std::fs::File, PathBuf), Error> {
    let f = std::fs::File::open(dir).map_err(|e| usage(format!("{}: {e}", dir.display())))?;
    let path = PathBuf::from(format!("/proc/self/fd/{}/{name}", f.as_raw_fd()));
    Ok((f, path))
}

pub(super) fn bind_control(dir: &Path) -> Result<std::os::unix::net::UnixListener, Error> {
    let (_dirfd, path) = short_socket_path(dir, CONTROL_SOCKET)?;
    let l = std::os::unix::net::UnixListener::bind(&path).map_err(|e| {
        usage(format!(
            "audit control socket {}: {e}",
            dir.join(CONTROL_SOCKET).display()
        ))
    })?;
    // Only the container's owner may hand listeners over.
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(
        dir.join(CONTROL_SOCKET),
        std::fs::Permissions::from_mode(0o600),
    );
    Ok(l)
}

/// Close every fd above stdio except `keep`.
pub(super) fn close_all_but(keep: &[i32]) {
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .collect();
    for fd in fds {
        if fd > 2 && !keep.contains(&fd) {
            let _ = nix::unistd::close(fd);
        }
    }
}
