//! The user process: its environment, its signals and the `execve` that
//! starts it, with the PATH search done against the container's environment
//! (not buildcell's).

use std::ffi::CString;

use nix::errno::Errno;
use nix::sys::signal::{SigSet, Signal};

/// Why the command could not be started, with the exit status buildcell
/// reports for it (126 cannot execute, 127 not found, as shells do).
#[derive(Debug)]
pub struct ExecFailure {
    pub exit_code: i32,
    pub message: String,
}

/// Give the process default signal handling: nothing blocked, nothing
/// ignored (Rust ignores SIGPIPE in buildcell itself; a build step must not
/// inherit that).
pub fn reset_signals() {
    for sig in Signal::iterator() {
        if matches!(sig, Signal::SIGKILL | Signal::SIGSTOP) {
            continue;
        }
        // SIG_DFL for a valid signal cannot fail in a way that matters here.
        let _ = crate::sys::default_signal(sig);
    }
    let _ = SigSet::all().thread_unblock();
}

fn cstring(s: &str, what: &str) -> Result<CString, ExecFailure> {
    CString::new(s).map_err(|_| ExecFailure {
        exit_code: 125,
        message: format!("{what} contains a NUL byte"),
    })
}

/// Execute `args` with exactly `env`. Returns only on failure.
pub fn exec(args: &[String], env: &[String]) -> ExecFailure {
    match try_exec(args, env) {
        Ok(never) => match never {},
        Err(f) => f,
    }
}

fn try_exec(args: &[String], env: &[String]) -> Result<std::convert::Infallible, ExecFailure> {
    let Some(cmd) = args.first() else {
        return Err(ExecFailure {
            exit_code: 125,
            message: "no command given".into(),
        });
    };
    let argv = args
        .iter()
        .map(|a| cstring(a, "an argument"))
        .collect::<Result<Vec<_>, _>>()?;
    let envp = env
        .iter()
        .map(|e| cstring(e, "an environment entry"))
        .collect::<Result<Vec<_>, _>>()?;
    if cmd.contains('/') {
        let path = cstring(cmd, "the command")?;
        let errno = nix::unistd::execve(&path, &argv, &envp).unwrap_err();
        return Err(failure(cmd, errno, None));
    }
    let path_var = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(crate::spec::DEFAULT_PATH);
    // Look the command up first (as runc and execvp callers do), so that
    // one execve is made, not one per PATH entry: each attempt would be
    // an audit record.
    let mut denied = None;
    for dir in path_var.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = format!("{dir}/{cmd}");
        let Ok(meta) = std::fs::metadata(&candidate) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        if nix::unistd::access(candidate.as_str(), nix::unistd::AccessFlags::X_OK).is_err() {
            denied.get_or_insert(candidate);
            continue;
        }
        let path = cstring(&candidate, "the command")?;
        let errno = nix::unistd::execve(&path, &argv, &envp).unwrap_err();
        return Err(failure(&candidate, errno, None));
    }
    Err(match denied {
        Some(p) => failure(&p, Errno::EACCES, None),
        None => failure(cmd, Errno::ENOENT, Some(path_var)),
    })
}

fn failure(cmd: &str, errno: Errno, path: Option<&str>) -> ExecFailure {
    let (exit_code, hint) = match errno {
        Errno::ENOENT => (
            127,
            match path {
                Some(p) => format!("not found in PATH={p} inside the sandbox; give its full path or add it with --env PATH=..."),
                None => "no such file inside the sandbox".into(),
            },
        ),
        Errno::EACCES => (
            126,
            "permission denied (not executable, or on a noexec mount)".into(),
        ),
        Errno::ENOEXEC => (126, "not an executable format the kernel knows".into()),
        e => (126, e.desc().to_string()),
    };
    ExecFailure {
        exit_code,
        message: format!("cannot execute {cmd:?}: {hint}"),
    }
}

/// Apply one `process.rlimits` entry to this process.
pub fn set_rlimit(r: &crate::spec::Rlimit) -> Result<(), String> {
    crate::sys::set_rlimit(r.resource, r.soft, r.hard).map_err(|e| {
        format!(
            "resource {}: soft {} hard {}: {e}",
            r.resource, r.soft, r.hard
        )
    })
}
