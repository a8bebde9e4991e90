//! OCI hooks: programs the bundle names, run at fixed points of the
//! lifecycle with the container's state as JSON on stdin.
//!
//! | hook | run by | namespaces | failure |
//! |---|---|---|---|
//! | prestart, createRuntime | `create`, once the container's namespaces exist | runtime's | create fails, nothing is left |
//! | createContainer | `create`, once the container is set up | container's | create fails, nothing is left |
//! | startContainer | `start`, before the user process runs | container's | start fails, the container is killed |
//! | poststart | `start`, after the user process was let go | runtime's | a warning |
//! | poststop | `delete`, after the container is gone | runtime's | a warning |
//!
//! buildcell mounts inside the container after `pivot_root`, so
//! createContainer hooks run when the container is fully set up (runc runs
//! them just before its pivot_root); their binary is opened in the
//! runtime's namespaces and executed in the container's.

use std::io::{Read, Seek, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use oci_spec::runtime::Hook;

/// Where a hook's program runs.
#[derive(Clone, Copy)]
pub enum Place {
    /// The runtime's own namespaces.
    Runtime,
    /// The namespaces of the process with this pid (the container's init);
    /// `open_in_runtime`: the binary is opened before entering them.
    Container { init: i32, open_in_runtime: bool },
}

/// Run `hooks` (of kind `kind`, for messages) one after the other; the
/// first failure stops the list and is returned as one line.
pub fn run_all(kind: &str, hooks: &[Hook], state: &str, place: Place) -> Result<(), String> {
    for (i, h) in hooks.iter().enumerate() {
        run_one(h, state, place)
            .map_err(|e| format!("hooks.{kind}[{i}] {}: {e}", h.path().display()))?;
    }
    Ok(())
}

fn cstring(s: &str) -> Result<std::ffi::CString, String> {
    std::ffi::CString::new(s).map_err(|_| format!("{s:?} contains a NUL byte"))
}

fn run_one(h: &Hook, state: &str, place: Place) -> Result<(), String> {
    let path = h.path().display().to_string();
    let argv: Vec<String> = match h.args() {
        Some(a) if !a.is_empty() => a.clone(),
        _ => vec![path.clone()],
    };
    let argv = argv
        .iter()
        .map(|a| cstring(a))
        .collect::<Result<Vec<_>, _>>()?;
    let env = h
        .env()
        .iter()
        .flatten()
        .map(|e| cstring(e))
        .collect::<Result<Vec<_>, _>>()?;
    let cpath = cstring(&path)?;
    let timeout = match h.timeout() {
        Some(t) if t <= 0 => return Err(format!("timeout {t} must be positive")),
        Some(t) => Some(Duration::from_secs(t as u64)),
        None => None,
    };
    // The binary of a createContainer hook is opened here, in the
    // runtime's mount namespace.
    let binary: Option<OwnedFd> = match place {
        Place::Container {
            open_in_runtime: true,
            ..
        } => Some(
            std::fs::File::open(&path)
                .map_err(|e| format!("cannot open: {e}"))?
                .into(),
        ),
        _ => None,
    };
    let (stdin_r, stdin_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let output = nix::sys::memfd::memfd_create(
        c"buildcell-hook-output",
        nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
    )
    .map_err(|e| format!("memfd: {e}"))?;
    let pid = match crate::sys::clone_fork(0).map_err(|e| e.to_string())? {
        None => {
            // The hook process: stdin the state, stdout/stderr captured.
            let _ = nix::unistd::dup2(stdin_r.as_raw_fd(), 0);
            let _ = nix::unistd::dup2(output.as_raw_fd(), 1);
            let _ = nix::unistd::dup2(output.as_raw_fd(), 2);
            if let Place::Container { init, .. } = place {
                match crate::namespaces::enter_all_of(init) {
                    Err(e) => {
                        let _ = writeln!(std::io::stderr(), "{e}");
                        crate::sys::exit_now(127);
                    }
                    // In the container's user namespace (one buildcell
                    // added), as its root: the host's root is not mapped
                    // there, and files it made would be nobody's (EOVERFLOW).
                    Ok(true) => {
                        let _ = nix::unistd::setresgid(0.into(), 0.into(), 0.into());
                        let _ = nix::unistd::setresuid(0.into(), 0.into(), 0.into());
                    }
                    Ok(false) => {}
                }
            }
            crate::process::reset_signals();
            let e = match &binary {
                Some(fd) => nix::unistd::fexecve(fd.as_raw_fd(), &argv, &env).unwrap_err(),
                None => nix::unistd::execve(&cpath, &argv, &env).unwrap_err(),
            };
            let _ = writeln!(std::io::stderr(), "cannot execute: {}", e.desc());
            crate::sys::exit_now(127)
        }
        Some(pid) => Pid::from_raw(pid),
    };
    drop(stdin_r);
    drop(binary);
    // A hook that does not read its stdin must not block us: the state is
    // small (one pipe buffer) and the write end is closed right after.
    let mut w = std::fs::File::from(stdin_w);
    let _ = w.write_all(state.as_bytes());
    drop(w);
    let status = wait_with_timeout(pid, timeout);
    let mut out = String::new();
    let mut f = std::fs::File::from(output);
    let _ = f.rewind();
    let _ = f.take(4096).read_to_string(&mut out);
    let out = out.trim().replace('\n', "; ");
    let said = if out.is_empty() {
        String::new()
    } else {
        format!(" ({out})")
    };
    match status {
        Some(WaitStatus::Exited(_, 0)) => Ok(()),
        Some(WaitStatus::Exited(_, c)) => Err(format!("exited with status {c}{said}")),
        Some(WaitStatus::Signaled(_, s, _)) => Err(format!("killed by {s}{said}")),
        Some(_) => Err(format!("ended abnormally{said}")),
        None => Err(format!(
            "timed out after {} s and was killed{said}",
            timeout.map(|t| t.as_secs()).unwrap_or(0)
        )),
    }
}

/// Wait for `pid`; past `timeout` kill it and return None.
fn wait_with_timeout(pid: Pid, timeout: Option<Duration>) -> Option<WaitStatus> {
    let start = Instant::now();
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(s) => return Some(s),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return Some(WaitStatus::Exited(pid, 127)),
        }
        if timeout.is_some_and(|t| start.elapsed() >= t) {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}
