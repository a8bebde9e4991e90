//! Bench helper for `bench/exec_ladder.py`: what each part of the exec
//! audit costs, one rung at a time. Runs `CMD` (no namespaces, no other
//! filter) under the exec-audit seccomp filter and a supervisor that does
//! only the work of its rung:
//!
//! - `none`: no filter (the baseline);
//! - `notify`: every exec notified, answered CONTINUE;
//! - `seize`: plus the race-free half: the task seized at its notification
//!   and released at its `PTRACE_EVENT_EXEC` stop (the second stop);
//! - `links`: plus `/proc/PID/cwd` and `exe` read at the exec stop;
//! - `ids`: plus the parent pid and real ids (`PIDFD_GET_INFO`);
//! - `memory`: plus the attempt's path and argv read at the notification and
//!   the new program's initial stack at the exec stop;
//! - `full`: buildcell's own supervisor and audit log (the record written,
//!   hash-chained, before the task goes on), to the file `$LADDER_LOG`.
//!
//! Usage (as root): `exec_ladder RUNG -- CMD [ARG...]`; exits with CMD's
//! status. CMD runs as pid 1 of a new pid namespace.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use buildcell::audit::log::AuditLog;
use buildcell::audit::record::Start;
use buildcell::audit::supervisor;
use buildcell::sys;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::ptrace;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

const RUNGS: [&str; 7] = ["none", "notify", "seize", "links", "ids", "memory", "full"];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rung = args.first().map(String::as_str).unwrap_or_default();
    let Some(level) = RUNGS.iter().position(|r| *r == rung) else {
        eprintln!(
            "exec_ladder: rung {rung:?} is not one of {RUNGS:?}; usage: exec_ladder RUNG -- CMD..."
        );
        std::process::exit(2);
    };
    if args.get(1).map(String::as_str) != Some("--") || args.len() < 3 {
        eprintln!("exec_ladder: usage: exec_ladder RUNG -- CMD...");
        std::process::exit(2);
    }
    let cmd: Vec<CString> = args[2..]
        .iter()
        .map(|a| CString::new(a.as_str()))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| die("CMD", e));
    // Everything that can fail on the caller's account (the log, root)
    // before the command starts.
    let log = (RUNGS[level] == "full").then(open_log);
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    mask.thread_block()
        .unwrap_or_else(|e| die("block SIGCHLD", e));
    let sfd =
        SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC).unwrap_or_else(|e| die("signalfd", e));
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .unwrap_or_else(|e| die("socketpair", e));
    // The command runs as pid 1 of a pid namespace of its own, as in a
    // container (without one, buildcell's supervisor traces every task of
    // the command from its fork, which costs more stops).
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWPID)
        .unwrap_or_else(|e| die("unshare(CLONE_NEWPID) (run as root)", e));
    // SAFETY: single-threaded here; the child only installs its filter,
    // sends the listener and execs.
    match unsafe { fork() }.unwrap_or_else(|e| die("fork", e)) {
        ForkResult::Child => {
            drop(ours);
            let _ = mask.thread_unblock();
            if level > 0 {
                let prog = buildcell::seccomp::exec_notify_program();
                let sent = nix::sys::prctl::set_no_new_privs()
                    .map_err(|e| e.to_string())
                    .and_then(|()| sys::seccomp_install_listener(&prog).map_err(|e| e.to_string()))
                    .and_then(|l| {
                        buildcell::sync::send_with_fd(theirs.as_raw_fd(), b"L", l.as_raw_fd())
                            .map_err(|e| e.to_string())
                    });
                if let Err(e) = sent {
                    die("the exec filter", e);
                }
            }
            let err = nix::unistd::execvp(&cmd[0], &cmd).unwrap_err();
            eprintln!("exec_ladder: {:?}: {err}", cmd[0]);
            std::process::exit(127);
        }
        ForkResult::Parent { child } => {
            drop(theirs);
            let listener = (level > 0).then(|| {
                let mut b = [0u8; 1];
                match buildcell::sync::recv_with_fd(ours.as_raw_fd(), &mut b) {
                    Ok((_, Some(fd))) => fd,
                    // The child said why on stderr; it has exited.
                    _ => die("the command's listener", "none came"),
                }
            });
            let code = match (log, listener) {
                (Some(log), Some(l)) => full(log, l, child, &sfd),
                (_, l) => ladder(level, l, child, &sfd),
            };
            std::process::exit(code);
        }
    }
}

/// One line on stderr, exit 2.
fn die(what: &str, e: impl std::fmt::Display) -> ! {
    eprintln!("exec_ladder: {what}: {e}");
    std::process::exit(2)
}

/// The audit log of the `full` rung, at `$LADDER_LOG` (must not exist).
fn open_log() -> AuditLog {
    let Some(path) = std::env::var_os("LADDER_LOG") else {
        die(
            "LADDER_LOG",
            "not set; name the audit log file the full rung writes",
        )
    };
    let start = Start {
        container_id: "ladder".into(),
        ..Default::default()
    };
    AuditLog::create(
        std::path::Path::new(&path),
        start,
        None,
        Default::default(),
        u64::MAX,
    )
    .unwrap_or_else(|e| die("LADDER_LOG", e))
}

/// buildcell's supervisor and log, as `step` runs them.
fn full(mut log: AuditLog, listener: OwnedFd, child: Pid, sfd: &SignalFd) -> i32 {
    let out = supervisor::run(
        listener,
        None,
        supervisor::Watch::of(child),
        sfd,
        &mut log,
        supervisor::Mode::Parent,
    );
    if let Err(e) = log.finish(Some(out.exit_code)) {
        die("end the audit log", e);
    }
    out.exit_code
}

/// The lower rungs: as much of the supervisor's work as `level` asks for.
fn ladder(level: usize, mut listener: Option<OwnedFd>, child: Pid, sfd: &SignalFd) -> i32 {
    let (seize, links, ids, memory) = (level >= 2, level >= 3, level >= 4, level >= 5);
    let proc = std::fs::File::open("/proc").unwrap_or_else(|e| die("/proc", e));
    let mut sink = 0usize;
    loop {
        let mut fds = vec![PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        if let Some(l) = &listener {
            fds.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
        }
        let _ = poll(&mut fds, PollTimeout::NONE);
        let sig = fds[0].any().unwrap_or(false);
        let heard = fds.get(1).and_then(|f| f.revents());
        drop(fds);
        if let Some(r) = heard {
            if r.contains(PollFlags::POLLIN) {
                let l = listener.as_ref().expect("listener polled");
                if let Ok(n) = sys::notif_recv(l.as_fd()) {
                    let pid = n.pid as i32;
                    if memory {
                        sink += read_memory(pid, n.data.args[0], 4096);
                        sink += read_memory(pid, n.data.args[1], 512);
                        let _ = sys::notif_id_valid(l.as_fd(), n.id);
                    }
                    if seize {
                        let _ = ptrace::seize(
                            Pid::from_raw(pid),
                            ptrace::Options::PTRACE_O_TRACEEXEC
                                | ptrace::Options::PTRACE_O_EXITKILL,
                        );
                    }
                    let _ = sys::notif_send(l.as_fd(), n.id, None);
                }
            } else if r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) {
                // No task uses the filter any more.
                listener = None;
            }
        }
        if !sig {
            continue;
        }
        let _ = sfd.read_signal();
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL)) {
                Ok(WaitStatus::PtraceEvent(pid, _, ev)) if ev == libc::PTRACE_EVENT_EXEC => {
                    if links {
                        for name in ["cwd", "exe"] {
                            let p = format!("{pid}/{name}");
                            sink += nix::fcntl::readlinkat(Some(proc.as_raw_fd()), p.as_str())
                                .map(|t| t.len())
                                .unwrap_or(0);
                        }
                    }
                    if ids {
                        sink += sys::task_ids(pid.as_raw())
                            .map(|t| t.uid as usize)
                            .unwrap_or(0);
                    }
                    if memory {
                        if let Ok(regs) = ptrace::getregs(pid) {
                            sink += read_memory(pid.as_raw(), regs.rsp, 16 * 1024);
                        }
                    }
                    let _ = ptrace::detach(pid, None);
                }
                Ok(WaitStatus::Exited(pid, code)) if pid == child => {
                    std::hint::black_box(sink);
                    return code;
                }
                Ok(WaitStatus::Signaled(pid, sig, _)) if pid == child => return 128 + sig as i32,
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(WaitStatus::Stopped(pid, sig)) => {
                    let _ = ptrace::cont(pid, sig);
                }
                Ok(WaitStatus::PtraceEvent(pid, _, _)) => {
                    let _ = ptrace::cont(pid, None);
                }
                Ok(_) => {}
            }
        }
    }
}

/// Read up to `len` bytes of `pid`'s memory at `addr` (what the record's
/// reads cost; the bytes are not used).
fn read_memory(pid: i32, addr: u64, len: usize) -> usize {
    use nix::sys::uio::{process_vm_readv, RemoteIoVec};
    if addr == 0 {
        return 0;
    }
    let mut buf = vec![0u8; len];
    // One piece per page: an unmapped page ends the read there.
    let (mut at, end, mut remote) = (addr as usize, addr as usize + len, Vec::new());
    while at < end {
        let next = ((at | 0xfff) + 1).min(end);
        remote.push(RemoteIoVec {
            base: at,
            len: next - at,
        });
        at = next;
    }
    let mut local = [std::io::IoSliceMut::new(&mut buf)];
    process_vm_readv(Pid::from_raw(pid), &mut local, &remote).unwrap_or(0)
}
