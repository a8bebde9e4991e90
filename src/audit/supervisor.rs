//! The exec-audit supervisor: serves the seccomp listener of a sandbox and
//! writes one record per exec attempt, failing closed.
//!
//! For every `execve`/`execveat` notification the supervisor seizes the
//! calling thread with ptrace (`PTRACE_O_TRACEEXEC | PTRACE_O_EXITKILL`)
//! and lets the syscall continue. What the record says is taken at the
//! `PTRACE_EVENT_EXEC` stop, from what the kernel actually loaded
//! (`/proc/PID/exe` and `cwd`, ids from the task's pidfd and the
//! container's pid namespace, argv and environment from the new program's
//! initial stack), before the new program's first instruction: a thread
//! rewriting argv after the notification cannot make the record lie. Only then is the task released; if the record cannot be
//! written, the task is killed before it runs and the sandbox is stopped.
//! An attempt that fails (no exec stop follows: the thread's next attempt
//! or its exit comes first) is recorded from the arguments read at the
//! notification, marked `"result": "failed"`.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::ptrace;
use nix::sys::signal::{kill, Signal};
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::log::AuditLog;
use super::record::{Body, Exec};
use crate::reaper;
use crate::sys;

/// argv kept in a record; a longer one is cut and hashed whole.
const ARGV_LIMIT: usize = 64 * 1024;
/// Environment values recorded (names are always recorded).
const ENV_VALUES: [&str; 2] = ["PATH", "TERM"];

/// How the supervised step ended.
pub struct Outcome {
    pub exit_code: i32,
    /// Why the audit failed, when it did: the step was stopped.
    pub audit_failure: Option<String>,
}

/// An exec attempt between its notification and its outcome.
struct Attempt {
    path: Option<String>,
    argv: Vec<String>,
}

/// How the supervisor relates to the container's init.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The init's parent (`step`, `run`): forward signals, end with the
    /// init's exit status.
    Parent,
    /// Left running by `create`: not the init's parent (the engine's
    /// monitor is); traces the init for its whole life, forwards no
    /// signal, serves until no task uses the filter any more.
    Detached,
}

/// What the supervisor finds out about a container from its init's pid
/// alone, before it serves it. A foreground `run` finds it while the init
/// still makes its mounts: after the init's word that it is ready, these
/// reads were on the way to its first exec (~0.1 ms).
pub struct Watch {
    init: Pid,
    /// A container without a pid namespace of its own (the host's, or a
    /// pod's joined by path) does not die with its init: then every task
    /// of the container stays traced, new ones attached at their fork
    /// (PTRACE_O_TRACEFORK and friends), so PTRACE_O_EXITKILL kills them
    /// all when the supervisor dies. (Costs a ptrace stop per fork, so
    /// only there.)
    trace_all: bool,
    /// The init is in cgroups of its own ([`own_cgroup`]).
    same_cpu: bool,
    views: Views,
}

impl Watch {
    pub fn of(init: Pid) -> Watch {
        Watch {
            init,
            trace_all: !leads_pid_namespace(init),
            same_cpu: own_cgroup(init),
            views: Views::open(init),
        }
    }
}

/// Serve `listener` (and, from `control`, a unix socket in the
/// container's state directory, the listeners of `exec`'d processes).
pub fn run(
    listener: OwnedFd,
    control: Option<UnixListener>,
    watch: Watch,
    sfd: &SignalFd,
    log: &mut AuditLog,
    mode: Mode,
) -> Outcome {
    serve(
        listener,
        control,
        watch,
        sfd,
        log,
        mode == Mode::Detached,
        &mut |_| {},
    )
}

/// [`run`] detached, calling `traced` once it traces the init (true) or
/// has failed to (false): from then on its death kills the container.
pub fn run_detached(
    listener: OwnedFd,
    control: Option<UnixListener>,
    watch: Watch,
    sfd: &SignalFd,
    log: &mut AuditLog,
    traced: &mut dyn FnMut(bool),
) -> Outcome {
    serve(listener, control, watch, sfd, log, true, traced)
}

/// `exec`: give the listener of a new process to the container's
/// supervisor through its control socket; Ok once the supervisor has it.
pub fn hand_over(
    socket: &std::path::Path,
    listener: &OwnedFd,
    secrets: &[(String, String)],
) -> Result<(), String> {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    let what = |e: String| format!("audit supervisor {}: {e}", socket.display());
    let mut stream = UnixStream::connect(socket).map_err(|e| what(e.to_string()))?;
    crate::sync::send_with_fd(stream.as_raw_fd(), b"L", listener.as_raw_fd())
        .map_err(|e| what(e.to_string()))?;
    // Then the exec'd process's own secrets (credential-named variables):
    // a u32 length and JSON; the supervisor redacts them from every record.
    let json = serde_json::to_vec(secrets).map_err(|e| what(e.to_string()))?;
    stream
        .write_all(&(json.len() as u32).to_le_bytes())
        .and_then(|()| stream.write_all(&json))
        .map_err(|e| what(e.to_string()))?;
    let mut ack = [0u8; 1];
    match stream.read(&mut ack) {
        Ok(1) if ack[0] == b'K' => Ok(()),
        Ok(_) => Err(what("refused the listener (the audit has failed)".into())),
        Err(e) => Err(what(e.to_string())),
    }
}

/// Most secret bytes one hand-over may carry.
const MAX_HANDOVER_SECRETS: usize = 1 << 20;

/// Take one listener and the exec'd process's secrets (see [`hand_over`])
/// from a control connection, answering `K` (kept) or `N` (refused: the
/// audit already failed, or the message is malformed).
fn accept_listener(
    control: &UnixListener,
    accept: bool,
) -> Option<(OwnedFd, Vec<(String, String)>)> {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    let (mut stream, _) = control.accept().ok()?;
    let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(2)));
    let mut buf = [0u8; 1];
    let (_, got) = crate::sync::recv_with_fd(stream.as_raw_fd(), &mut buf).ok()?;
    let mut len = [0u8; 4];
    let secrets = stream.read_exact(&mut len).ok().and_then(|()| {
        let n = u32::from_le_bytes(len) as usize;
        if n > MAX_HANDOVER_SECRETS {
            return None;
        }
        let mut json = vec![0u8; n];
        stream.read_exact(&mut json).ok()?;
        serde_json::from_slice::<Vec<(String, String)>>(&json).ok()
    });
    let kept = accept && got.is_some() && secrets.is_some();
    let _ = stream.write_all(if kept { b"K" } else { b"N" });
    match (kept, got, secrets) {
        (true, Some(fd), Some(secrets)) => Some((fd, secrets)),
        _ => None,
    }
}

fn serve(
    listener: OwnedFd,
    control: Option<UnixListener>,
    watch: Watch,
    sfd: &SignalFd,
    log: &mut AuditLog,
    detached: bool,
    traced: &mut dyn FnMut(bool),
) -> Outcome {
    if let Some(c) = &control {
        let _ = c.set_nonblocking(true);
    }
    let Watch {
        init,
        trace_all,
        same_cpu,
        views,
    } = watch;
    if same_cpu {
        sync_wakeups(&listener);
    }
    let mut s = Supervisor {
        listeners: vec![listener],
        log,
        init,
        anchor: None,
        trace_all,
        pending: HashMap::new(),
        traced: HashSet::new(),
        failure: None,
        maps: None,
        views,
    };
    if detached || trace_all {
        // Not the init's parent, the supervisor traces it for the
        // container's whole life instead, with PTRACE_O_EXITKILL: if the
        // supervisor dies, the kernel kills the init, and with it the pid
        // namespace. (Without that, no later exec could run anyway: nobody
        // answers the notifications.)
        match ptrace::seize(init, s.options()) {
            Ok(()) => {
                s.anchor = Some(init);
                s.traced.insert(init.as_raw());
                if detached {
                    traced(true);
                }
            }
            Err(e) => {
                s.fail(format!("cannot trace the container's init {init}: {e}"));
                if detached {
                    traced(false);
                }
            }
        }
    }
    let mut exit_code = None;
    while exit_code.is_none() && !(detached && s.listeners.is_empty() && s.traced.is_empty()) {
        let mut fds = vec![PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        if let Some(c) = &control {
            fds.push(PollFd::new(c.as_fd(), PollFlags::POLLIN));
        }
        let first_listener = fds.len();
        for l in &s.listeners {
            fds.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
        }
        // Wake when unsigned records are due for a checkpoint (within 5 s,
        // and before their sealing epoch ends), even if nothing else comes.
        let timeout = s
            .log
            .due_in()
            .map(|d| {
                let ms = d.as_millis().min(60_000) as u16;
                PollTimeout::from(ms.saturating_add(u16::from(d.subsec_micros() % 1000 != 0)))
            })
            .unwrap_or(PollTimeout::NONE);
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => break,
        }
        let sig_ready = fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLIN));
        let control_ready = control.is_some()
            && fds[1]
                .revents()
                .is_some_and(|r| r.contains(PollFlags::POLLIN));
        let ready: Vec<Option<PollFlags>> =
            fds[first_listener..].iter().map(|f| f.revents()).collect();
        drop(fds);
        let mut gone = Vec::new();
        for (i, r) in ready.into_iter().enumerate() {
            let Some(r) = r else { continue };
            if r.contains(PollFlags::POLLIN) {
                s.on_notification(i);
            } else if r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) {
                // No task uses this filter any more.
                gone.push(i);
            }
        }
        for i in gone.into_iter().rev() {
            s.listeners.remove(i);
        }
        if control_ready {
            if let Some(c) = &control {
                // An exec'd process's listener; refused once the audit has
                // failed (its exec then fails: nobody serves its filter).
                if let Some((l, secrets)) = accept_listener(c, s.failure.is_none()) {
                    for (name, value) in &secrets {
                        s.log.add_secret(name, value);
                    }
                    if same_cpu {
                        sync_wakeups(&l);
                    }
                    s.listeners.push(l);
                }
            }
        }
        let mut child_event = false;
        if sig_ready {
            if let Ok(Some(info)) = sfd.read_signal() {
                if let Ok(sig) = Signal::try_from(info.ssi_signo as i32) {
                    if sig == Signal::SIGCHLD {
                        child_event = true;
                    } else if !detached
                        && reaper::should_forward(info.ssi_code, info.ssi_pid, false)
                    {
                        let _ = kill(init, sig);
                    }
                }
            }
        }
        // Exec stops, signal stops and exits all raise SIGCHLD: wait only
        // then (one wait4 less per notification).
        if child_event {
            let init_code = s.reap();
            // Detached, the init's exit is its monitor's to report; the
            // supervisor goes on while any task still uses the filter.
            if !detached {
                exit_code = init_code;
            }
        }
        if s.failure.is_none() {
            if let Err(e) = s.log.tick() {
                s.fail(e.to_string());
            }
        }
    }
    Outcome {
        exit_code: exit_code.unwrap_or(125),
        audit_failure: s.failure,
    }
}

struct Supervisor<'a> {
    listeners: Vec<OwnedFd>,
    log: &'a mut AuditLog,
    init: Pid,
    /// The init, traced for the container's life (detached supervisor).
    anchor: Option<Pid>,
    /// Every task stays traced (a container without its own pid namespace).
    trace_all: bool,
    pending: HashMap<i32, Attempt>,
    traced: HashSet<i32>,
    failure: Option<String>,
    /// The sandbox's uid and gid maps, read once (one user namespace).
    maps: Option<(String, String)>,
    views: Views,
}

/// What a record's facts about a task are read through, opened once: the
/// host's `/proc` (`O_PATH`; a task's files are named relative to it, so no
/// `/proc/PID` is opened per record) and the container's pid namespace
/// (the pid inside, asked of the kernel instead of parsed from `status`).
struct Views {
    proc: Option<fs::File>,
    pidns: Option<fs::File>,
}

impl Views {
    fn open(init: Pid) -> Views {
        use std::os::unix::fs::OpenOptionsExt;
        Views {
            proc: fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
                .open("/proc")
                .ok(),
            pidns: fs::File::open(format!("/proc/{init}/ns/pid")).ok(),
        }
    }
}

impl Supervisor<'_> {
    fn options(&self) -> ptrace::Options {
        let o = ptrace::Options::PTRACE_O_TRACEEXEC | ptrace::Options::PTRACE_O_EXITKILL;
        if self.trace_all {
            o | ptrace::Options::PTRACE_O_TRACEFORK
                | ptrace::Options::PTRACE_O_TRACEVFORK
                | ptrace::Options::PTRACE_O_TRACECLONE
        } else {
            o
        }
    }

    fn on_notification(&mut self, i: usize) {
        if i >= self.listeners.len() {
            return;
        }
        let listener = self.listeners.swap_remove(i);
        self.handle_notification(&listener);
        self.listeners.push(listener);
        let last = self.listeners.len() - 1;
        self.listeners.swap(i, last);
    }

    fn handle_notification(&mut self, listener: &OwnedFd) {
        let n = match sys::notif_recv(listener.as_fd()) {
            Ok(n) => n,
            // The task died or was interrupted before we read it.
            Err(_) => return,
        };
        let tid = n.pid as i32;
        let answer = |error| sys::notif_send(listener.as_fd(), n.id, error);
        if self.failure.is_some() {
            let _ = answer(Some(libc::EPERM));
            return;
        }
        // A new attempt of a thread with one pending: the earlier one failed.
        if let Some(prev) = self.pending.remove(&tid) {
            self.record_failed(tid, prev);
        }
        let attempt = read_attempt(tid, &n.data);
        if !sys::notif_id_valid(listener.as_fd(), n.id) {
            return;
        }
        let pid = Pid::from_raw(tid);
        match ptrace::seize(pid, self.options()) {
            Ok(()) => {
                self.traced.insert(tid);
            }
            Err(Errno::EPERM) if self.traced.contains(&tid) => {}
            Err(Errno::ESRCH) => return,
            Err(e) => {
                // Already traced by someone else, or not traceable: the
                // record could not be made authoritative, so no exec.
                self.fail(format!("cannot trace pid {tid} for its exec record: {e}"));
                let _ = answer(Some(libc::EPERM));
                return;
            }
        }
        self.pending.insert(tid, attempt);
        if answer(None).is_err() {
            // The task went away; its exit is reaped below.
        }
    }

    /// Reap and handle every wait event; `Some(code)` once init exited.
    fn reap(&mut self) -> Option<i32> {
        let mut init_code = None;
        loop {
            let status = match waitpid(None, Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(s) => s,
            };
            match status {
                WaitStatus::PtraceEvent(pid, _, ev) if ev == libc::PTRACE_EVENT_EXEC => {
                    self.on_exec(pid)
                }
                WaitStatus::PtraceEvent(pid, _, ev)
                    if ev == libc::PTRACE_EVENT_STOP && !self.traced.contains(&pid.as_raw()) =>
                {
                    // A new task attached at its fork (trace_all): its
                    // first stop; it runs on, traced.
                    self.traced.insert(pid.as_raw());
                    let _ = ptrace::cont(pid, None);
                }
                WaitStatus::PtraceEvent(pid, sig, ev) if ev == libc::PTRACE_EVENT_STOP => {
                    // A group-stop (kill -STOP from outside) of a task we
                    // trace stays a stop; anything else goes on.
                    let stop = matches!(
                        sig,
                        Signal::SIGSTOP | Signal::SIGTSTP | Signal::SIGTTIN | Signal::SIGTTOU
                    );
                    if !(stop && sys::ptrace_listen(pid.as_raw()).is_ok()) {
                        let _ = ptrace::cont(pid, None);
                    }
                }
                WaitStatus::PtraceEvent(pid, _, _) => {
                    let _ = ptrace::cont(pid, None);
                }
                WaitStatus::Stopped(pid, sig) => {
                    // A signal for a traced task: deliver it.
                    let _ = ptrace::cont(pid, sig);
                }
                WaitStatus::Exited(pid, _) | WaitStatus::Signaled(pid, _, _) => {
                    let raw = pid.as_raw();
                    self.traced.remove(&raw);
                    if let Some(prev) = self.pending.remove(&raw) {
                        self.record_failed(raw, prev);
                    }
                    if pid == self.init {
                        init_code = reaper::exit_code(status);
                    }
                }
                _ => {}
            }
        }
        init_code
    }

    /// The exec stop: record what the kernel loaded, then release the task
    /// (or kill it when the record cannot be written).
    fn on_exec(&mut self, pid: Pid) {
        // The thread that called exec (another than the leader, when a
        // thread did): asked only when it could be another thread.
        let former = if self.pending.len() == 1 && self.pending.contains_key(&pid.as_raw()) {
            pid.as_raw()
        } else {
            ptrace::getevent(pid)
                .map(|t| t as i32)
                .unwrap_or(pid.as_raw())
        };
        let attempt = self
            .pending
            .remove(&former)
            .or_else(|| self.pending.remove(&pid.as_raw()));
        self.traced.remove(&former);
        self.traced.remove(&pid.as_raw());
        let maps = self.maps.get_or_insert_with(|| {
            let read = |f: &str| sys::read_proc(format!("/proc/{pid}/{f}")).unwrap_or_default();
            (read("uid_map"), read("gid_map"))
        });
        let mut rec = read_loaded(pid.as_raw(), maps, &self.views);
        rec.path = attempt.and_then(|a| a.path);
        rec.result = "ok".into();
        if self.failure.is_none() {
            match self.log.append(Body::Exec(rec)) {
                Ok(_) => {
                    self.release(pid);
                    return;
                }
                Err(e) => self.fail(e.to_string()),
            }
        }
        let _ = kill(pid, Signal::SIGKILL);
        self.release(pid);
    }

    /// Let a task go on after its exec stop: detached, except the init of
    /// a detached supervisor's container and every task of a container
    /// without its own pid namespace, which stay traced.
    fn release(&mut self, pid: Pid) {
        if Some(pid) == self.anchor || self.trace_all {
            self.traced.insert(pid.as_raw());
            let _ = ptrace::cont(pid, None);
        } else {
            let _ = ptrace::detach(pid, None);
        }
    }

    fn record_failed(&mut self, tid: i32, a: Attempt) {
        if self.failure.is_some() {
            return;
        }
        let mut rec = Exec {
            pid: tid,
            path: a.path,
            result: "failed".into(),
            ..Default::default()
        };
        set_argv(&mut rec, a.argv);
        if let Err(e) = self.log.append(Body::Exec(rec)) {
            self.fail(e.to_string());
        }
    }

    /// The audit failed: refuse every later exec and stop the sandbox.
    fn fail(&mut self, why: String) {
        if self.failure.is_none() {
            self.failure = Some(why);
            let _ = kill(self.init, Signal::SIGKILL);
        }
    }
}

/// Notifications and their answers switch CPUs no more than they must
/// (see [`sys::notif_set_sync_wakeup`]). A kernel before 6.6 refuses the
/// flag; the audit is the same without it, only slower.
fn sync_wakeups(listener: &OwnedFd) {
    let _ = sys::notif_set_sync_wakeup(listener.as_fd());
}

/// Whether the container's init is in other cgroups than the supervisor
/// (a container with a cgroup of its own): then same-CPU hand-overs
/// ([`sync_wakeups`]) pay. Measured with 2,000 execs against crun, in
/// alternating runs on a 2-vCPU VM (bench/NOTES.md): with a cgroup of its
/// own, 1.52x -> 1.38x (95-160 us less per exec); in the supervisor's own
/// cgroup (rootless without a delegated cgroup), 1.68x -> 1.84x, worse.
fn own_cgroup(init: Pid) -> bool {
    let read = |p: &str| sys::read_proc(format!("/proc/{p}/cgroup")).ok();
    match (read("self"), read(&init.to_string())) {
        (Some(mine), Some(its)) => mine != its,
        _ => false,
    }
}

/// Whether `pid` is pid 1 of its pid namespace (the last `NSpid` field
/// of its status is 1). Unreadable counts as no.
fn leads_pid_namespace(pid: Pid) -> bool {
    sys::read_proc(format!("/proc/{pid}/status")).is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("NSpid:"))
            .and_then(|v| v.split_whitespace().last())
            == Some("1")
    })
}

fn set_argv(rec: &mut Exec, argv: Vec<String>) {
    let total: usize = argv.iter().map(|a| a.len() + 1).sum();
    if total <= ARGV_LIMIT {
        rec.argv = argv;
        return;
    }
    rec.argv_truncated_sha256 = Some(super::sha256_hex(argv.join("\0").as_bytes()));
    let mut used = 0;
    for a in argv {
        if used + a.len() + 1 > ARGV_LIMIT {
            rec.argv.push("<truncated>".into());
            break;
        }
        used += a.len() + 1;
        rec.argv.push(a);
    }
}

/// The record of a loaded program, at the exec stop: `/proc/PID/cwd` and
/// `exe`; the parent pid and real ids from `PIDFD_GET_INFO` and the pid
/// inside from the container's pid namespace (`/proc/PID/status` where the
/// kernel has neither: before 6.13); argv and environment from the initial
/// stack.
fn read_loaded(pid: i32, maps: &(String, String), views: &Views) -> Exec {
    let mut rec = Exec {
        pid,
        ..Default::default()
    };
    let files = views.proc.as_ref().map(|proc| ProcFiles { proc, pid });
    if let Some(f) = &files {
        rec.cwd = f.link("cwd");
        rec.resolved = f.link("exe");
    }
    let asked = views.pidns.as_ref().and_then(|ns| {
        let ids = sys::task_ids(pid).ok()?;
        Some((ids, sys::pid_in_namespace(ns.as_fd(), pid).ok()?))
    });
    match asked {
        Some((ids, inside)) => {
            rec.ppid = Some(ids.ppid);
            rec.host_uid = Some(ids.uid);
            rec.host_gid = Some(ids.gid);
            rec.pid_inside = Some(inside);
        }
        None => {
            if let Some(status) = files.as_ref().and_then(|f| f.read("status")) {
                read_status(&status, &mut rec);
            }
        }
    }
    rec.uid = rec.host_uid.and_then(|u| inside_id(&maps.0, u));
    rec.gid = rec.host_gid.and_then(|g| inside_id(&maps.1, g));
    let (argv, env) = read_initial_stack(pid).unwrap_or_else(|| {
        let read = |f: &str| {
            files
                .as_ref()
                .and_then(|d| d.read(f))
                .map(|d| split_nul(&d))
                .unwrap_or_default()
        };
        (read("cmdline"), read("environ"))
    });
    set_argv(&mut rec, argv);
    for kv in env {
        let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
        if ENV_VALUES.contains(&k) {
            rec.env.insert(k.to_string(), v.to_string());
        }
        rec.env_names.push(k.to_string());
    }
    rec
}

/// A task's files in the host's `/proc`, named relative to the `/proc`
/// opened once ([`Views`]).
struct ProcFiles<'a> {
    proc: &'a fs::File,
    pid: i32,
}

impl ProcFiles<'_> {
    /// The target of a symbolic link (`cwd`, `exe`).
    fn link(&self, name: &str) -> Option<String> {
        use std::os::fd::AsRawFd;
        nix::fcntl::readlinkat(
            Some(self.proc.as_raw_fd()),
            format!("{}/{name}", self.pid).as_str(),
        )
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
    }

    /// A file whole, with plain reads (no statx for a size hint: /proc
    /// files report size 0 anyway). A read shorter than the buffer is the
    /// end: /proc/PID/status is generated whole at the first read.
    fn read(&self, name: &str) -> Option<Vec<u8>> {
        use std::io::Read;
        let fd = sys::openat2(
            self.proc.as_fd(),
            std::path::Path::new(&format!("{}/{name}", self.pid)),
            libc::O_RDONLY,
            0,
        )
        .ok()?;
        let mut f = fs::File::from(fd);
        let mut out = Vec::with_capacity(4096);
        let mut buf = [0u8; 4096];
        loop {
            match f.read(&mut buf) {
                Ok(0) => return Some(out),
                Ok(n) => {
                    out.extend_from_slice(&buf[..n]);
                    if n < buf.len() {
                        return Some(out);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return if out.is_empty() { None } else { Some(out) },
            }
        }
    }
}

/// The parent pid, the real uid and gid on the host and the pid inside
/// (the last `NSpid` field) from a `/proc/PID/status`. The lines come in
/// the kernel's fixed order, `NSpid` after the others: reading stops there.
fn read_status(status: &[u8], rec: &mut Exec) {
    for line in status.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let mut fields = line[colon + 1..]
            .split(u8::is_ascii_whitespace)
            .filter(|f| !f.is_empty())
            .map(|f| std::str::from_utf8(f).ok()?.parse::<i64>().ok());
        match &line[..colon] {
            b"PPid" => rec.ppid = fields.next().flatten().and_then(|v| i32::try_from(v).ok()),
            b"Uid" => rec.host_uid = fields.next().flatten().and_then(|v| u32::try_from(v).ok()),
            b"Gid" => rec.host_gid = fields.next().flatten().and_then(|v| u32::try_from(v).ok()),
            b"NSpid" => {
                rec.pid_inside = fields
                    .next_back()
                    .flatten()
                    .and_then(|v| i32::try_from(v).ok());
                return;
            }
            _ => {}
        }
    }
}

/// Map a host id to the id inside, through a `/proc/PID/{uid,gid}_map`.
fn inside_id(map: &str, host: u32) -> Option<u32> {
    map.lines().find_map(|l| {
        let f: Vec<u64> = l
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        let (inside, outside, count) = (*f.first()?, *f.get(1)?, *f.get(2)?);
        let h = u64::from(host);
        (h >= outside && h < outside + count).then(|| (inside + h - outside) as u32)
    })
}

fn split_nul(data: &[u8]) -> Vec<String> {
    let data = data.strip_suffix(&[0]).unwrap_or(data);
    if data.is_empty() {
        return Vec::new();
    }
    data.split(|b| *b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

const AUDIT_ARCH_I386: u32 = 0x4000_0003;

/// Read ranges `(addr, len)` of another task's memory in one system call
/// (`process_vm_readv`), into one buffer, the ranges back to back. The
/// kernel stops at the first page that cannot be read: the second value
/// is how many bytes were read, so a range ending in or after it was cut.
fn read_remote_ranges(pid: i32, ranges: &[(u64, usize)]) -> (Vec<u8>, usize) {
    use nix::sys::uio::{process_vm_readv, RemoteIoVec};
    let total = ranges.iter().map(|r| r.1).sum();
    let mut out = vec![0u8; total];
    // Split at page boundaries: process_vm_readv stops at the first remote
    // range that faults, so a read running off the end of a mapping still
    // returns the pages before it.
    let mut remote = Vec::with_capacity(ranges.len() + 1);
    for &(addr, len) in ranges {
        let (mut at, end) = (addr, addr.saturating_add(len as u64));
        while at < end {
            let next = ((at | 0xfff) + 1).min(end);
            remote.push(RemoteIoVec {
                base: at as usize,
                len: (next - at) as usize,
            });
            at = next;
        }
    }
    // The kernel takes at most IOV_MAX (1024) ranges in one call.
    remote.truncate(1024);
    let n = if remote.is_empty() {
        0
    } else {
        let mut local = [std::io::IoSliceMut::new(&mut out)];
        process_vm_readv(Pid::from_raw(pid), &mut local, &remote).unwrap_or(0)
    };
    (out, n)
}

/// Read up to `len` bytes of another task's memory at `addr`, stopping
/// early at the first unmapped page. Empty when nothing could be read.
fn read_remote(pid: i32, addr: u64, len: usize) -> Vec<u8> {
    let (mut out, n) = read_remote_ranges(pid, &[(addr, len)]);
    out.truncate(n);
    out
}

fn pointer(chunk: &[u8]) -> u64 {
    match chunk.len() {
        4 => u64::from(u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]])),
        _ => u64::from_ne_bytes([
            chunk[0], chunk[1], chunk[2], chunk[3], chunk[4], chunk[5], chunk[6], chunk[7],
        ]),
    }
}

/// The first read of a string at `addr`: 256 bytes (most strings are
/// shorter), never across a page boundary, at most `max`.
fn first_chunk(addr: u64, max: usize) -> usize {
    (0x1000 - (addr & 0xfff) as usize).min(256).min(max)
}

/// The string at the start of `got`, if it ends there (a NUL).
fn cstr_in(got: &[u8]) -> Option<String> {
    let end = got.iter().position(|b| *b == 0)?;
    Some(String::from_utf8_lossy(&got[..end]).into_owned())
}

/// A NUL-terminated string of another task, at most `max` bytes (cut
/// there); `None` when its first byte cannot be read. Read a chunk at a
/// time (see [`first_chunk`]).
fn read_remote_cstr(pid: i32, addr: u64, max: usize) -> Option<String> {
    if addr == 0 {
        return None;
    }
    let mut out = Vec::new();
    while out.len() < max {
        let at = addr + out.len() as u64;
        let got = read_remote(pid, at, first_chunk(at, max - out.len()));
        if got.is_empty() {
            break;
        }
        if let Some(end) = got.iter().position(|b| *b == 0) {
            out.extend_from_slice(&got[..end]);
            return Some(String::from_utf8_lossy(&out).into_owned());
        }
        out.extend_from_slice(&got);
    }
    (!out.is_empty()).then(|| String::from_utf8_lossy(&out).into_owned())
}

/// The strings at `addrs` (an argv), each as [`read_remote_cstr`] reads
/// it, up to the first that cannot be read or until `limit` bytes: the
/// first chunks of all of them in one system call, then one by one only
/// those longer than their first chunk. A string already read (`known`:
/// its address and value, such as the exec's path, often argv[0]) is not
/// read again.
fn read_remote_cstrs(
    pid: i32,
    addrs: &[u64],
    limit: usize,
    known: Option<(u64, &str)>,
) -> Vec<String> {
    let known = known.filter(|(a, _)| *a != 0);
    let ranges: Vec<(u64, usize)> = addrs
        .iter()
        .map(|&a| match known {
            Some((k, _)) if k == a => (a, 0),
            _ => (a, first_chunk(a, limit)),
        })
        .collect();
    let (buf, n) = read_remote_ranges(pid, &ranges);
    let mut out = Vec::with_capacity(addrs.len());
    let (mut off, mut used) = (0, 0);
    for &(addr, len) in &ranges {
        if used > limit {
            break;
        }
        let got = &buf[off.min(n)..(off + len).min(n)];
        off += len;
        let again = match known {
            Some((k, v)) if k == addr => Some(v.to_string()),
            _ => cstr_in(got),
        };
        let Some(s) = again.or_else(|| read_remote_cstr(pid, addr, limit)) else {
            break;
        };
        used += s.len() + 1;
        out.push(s);
    }
    out
}

/// Path and argv of an exec attempt, read from the task's memory at the
/// notification (used only for attempts that fail, i.e. never run): the
/// path and the argv pointer array in one system call, the strings in
/// another.
fn read_attempt(tid: i32, data: &sys::SeccompData) -> Attempt {
    // execve(path, argv, envp) / execveat(dirfd, path, argv, envp, flags)
    let execveat = (data.arch == AUDIT_ARCH_I386 && data.nr == 358)
        || (data.arch != AUDIT_ARCH_I386 && data.nr == 322);
    let (path_ptr, argv_ptr) = if execveat {
        (data.args[1], data.args[2])
    } else {
        (data.args[0], data.args[1])
    };
    // The pointer array (64 pointers, then up to 512 when longer), then
    // each string. i386 callers pass an array of 32-bit pointers.
    let width = if data.arch == AUDIT_ARCH_I386 { 4 } else { 8 };
    let path_len = if path_ptr == 0 {
        0
    } else {
        first_chunk(path_ptr, 4096)
    };
    let ptrs_len = if argv_ptr == 0 { 0 } else { 64 * width };
    let (buf, n) = read_remote_ranges(tid, &[(path_ptr, path_len), (argv_ptr, ptrs_len)]);
    let path = match cstr_in(&buf[..path_len.min(n)]) {
        Some(p) => Some(p),
        None => read_remote_cstr(tid, path_ptr, 4096),
    };
    let mut ptrs = if n >= path_len + ptrs_len {
        buf[path_len..].to_vec()
    } else if argv_ptr == 0 {
        Vec::new()
    } else {
        read_remote(tid, argv_ptr, ptrs_len)
    };
    if ptrs.len() == 64 * width && ptrs.chunks_exact(width).all(|c| pointer(c) != 0) {
        ptrs.extend(read_remote(tid, argv_ptr + ptrs.len() as u64, 448 * width));
    }
    let addrs: Vec<u64> = ptrs[..ptrs.len() - ptrs.len() % width]
        .chunks_exact(width)
        .map(pointer)
        .take_while(|p| *p != 0)
        .collect();
    // A path cut at 4 KiB is read again as an argument, in full.
    let known = path
        .as_deref()
        .filter(|p| p.len() < 4096)
        .map(|p| (path_ptr, p));
    let argv = read_remote_cstrs(tid, &addrs, ARGV_LIMIT, known);
    Attempt { path, argv }
}

/// argv and environment of a task stopped at its exec stop, from the new
/// program's initial stack (argc, the argv and envp pointer arrays and
/// their strings, all written there by the kernel, the program not yet
/// started): a register read and one memory read instead of opening
/// `/proc/PID/cmdline` and `/proc/PID/environ`. `None` when the stack
/// does not fit the read window (a very large environment, say): the
/// caller then reads the /proc files.
fn read_initial_stack(pid: i32) -> Option<(Vec<String>, Vec<String>)> {
    const WINDOW: usize = 16 * 1024;
    let regs = ptrace::getregs(Pid::from_raw(pid)).ok()?;
    // A 32-bit program starts with the 32-bit user code segment.
    let width = if regs.cs == 0x23 { 4 } else { 8 };
    let sp = regs.rsp;
    // From the stack pointer to the top of the stack (the read stops at
    // the end of the mapping).
    let stack = read_remote(pid, sp, WINDOW);
    let word = |i: usize| -> Option<u64> { stack.get(i * width..(i + 1) * width).map(pointer) };
    let string = |addr: u64| -> Option<String> {
        let off = usize::try_from(addr.checked_sub(sp)?).ok()?;
        let rest = stack.get(off..)?;
        let end = rest.iter().position(|b| *b == 0)?;
        Some(String::from_utf8_lossy(&rest[..end]).into_owned())
    };
    let argc = usize::try_from(word(0)?).ok()?;
    if argc > WINDOW / width {
        return None;
    }
    let mut argv = Vec::with_capacity(argc);
    for i in 0..argc {
        argv.push(string(word(1 + i)?)?);
    }
    if word(1 + argc)? != 0 {
        return None;
    }
    let mut env = Vec::new();
    let mut i = 2 + argc;
    loop {
        match word(i)? {
            0 => break,
            p => env.push(string(p)?),
        }
        i += 1;
    }
    Some((argv, env))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ids a record takes from `PIDFD_GET_INFO` and the pid namespace
    /// are those `/proc/PID/status` gives (the fallback before 6.13), for a
    /// real child process.
    #[test]
    fn ids_asked_of_the_kernel_match_status() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        // The parent may run on before the exec has set up the new
        // program's argv (its close-on-exec pipe closes earlier).
        for _ in 0..200 {
            if fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty()) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let me = Pid::from_raw(std::process::id() as i32);
        let views = Views::open(me);
        let maps = ("0 0 4294967295".to_string(), "0 0 4294967295".to_string());
        let rec = read_loaded(pid, &maps, &views);
        let status = fs::read(format!("/proc/{pid}/status")).unwrap();
        let mut want = Exec::default();
        read_status(&status, &mut want);
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(rec.ppid, Some(std::process::id() as i32));
        assert_eq!(
            (rec.ppid, rec.host_uid, rec.host_gid, rec.pid_inside),
            (want.ppid, want.host_uid, want.host_gid, want.pid_inside)
        );
        assert_eq!(rec.pid_inside, Some(pid), "same pid namespace");
        assert_eq!(rec.uid, rec.host_uid);
        assert!(
            rec.resolved
                .as_deref()
                .is_some_and(|e| e.ends_with("/sleep")),
            "{rec:?}"
        );
        assert_eq!(
            rec.cwd,
            std::env::current_dir()
                .ok()
                .map(|d| d.display().to_string())
        );
        assert_eq!(rec.argv, ["sleep", "30"]);
    }

    /// On this kernel (6.13 or later) the ids come from the kernel, not
    /// from parsing status.
    #[test]
    fn pidfd_info_and_pid_namespace_answer_on_this_kernel() {
        let release = nix::sys::utsname::uname().unwrap();
        let release = release.release().to_string_lossy().into_owned();
        let mut v = release
            .split(|c: char| !c.is_ascii_digit())
            .map(|n| n.parse::<u32>().unwrap_or(0));
        let (major, minor) = (v.next().unwrap_or(0), v.next().unwrap_or(0));
        let me = std::process::id() as i32;
        let ids = sys::task_ids(me);
        let ns = fs::File::open("/proc/self/ns/pid").unwrap();
        let inside = sys::pid_in_namespace(ns.as_fd(), me);
        if (major, minor) >= (6, 13) {
            let ids = ids.unwrap_or_else(|e| panic!("{}: {}", e.call, e.errno));
            assert_eq!(ids.ppid, nix::unistd::getppid().as_raw());
            assert_eq!(ids.uid, nix::unistd::getuid().as_raw());
            assert_eq!(ids.gid, nix::unistd::getgid().as_raw());
            assert_eq!(
                inside.unwrap_or_else(|e| panic!("{}: {}", e.call, e.errno)),
                me
            );
        } else {
            assert!(ids.is_err() || inside.is_err(), "kernel {release}");
        }
    }

    #[test]
    fn status_gives_parent_ids_and_the_pid_inside() {
        let status = b"Name:\ttrue\nUmask:\t0022\nState:\tt (tracing stop)\nTgid:\t4242\n\
            Ngid:\t0\nPid:\t4242\nPPid:\t4241\nTracerPid:\t77\nUid:\t1879048192\t1879048192\t1879048192\t1879048192\n\
            Gid:\t1879048193\t1879048193\t1879048193\t1879048193\nFDSize:\t64\nGroups:\t\n\
            NStgid:\t4242\t3\nNSpid:\t4242\t3\nNSpgid:\t4240\t1\nVmPeak:\t   1 kB\n";
        let mut rec = Exec::default();
        read_status(status, &mut rec);
        assert_eq!(rec.ppid, Some(4241));
        assert_eq!(rec.host_uid, Some(1_879_048_192));
        assert_eq!(rec.host_gid, Some(1_879_048_193));
        assert_eq!(rec.pid_inside, Some(3));
        // Hostile or cut: no panic, nothing invented.
        let mut rec = Exec::default();
        read_status(b"PPid:\nUid:\tx\nNSpid:\t-1 99999999999\n:\n", &mut rec);
        assert_eq!((rec.ppid, rec.host_uid, rec.pid_inside), (None, None, None));
    }

    /// The remote reads on this process's own memory (process_vm_readv of
    /// itself): strings shorter and longer than a chunk, one across a page
    /// boundary, a known string not read again, and an unreadable one.
    #[test]
    fn argv_strings_are_read_in_one_pass_and_whole() {
        let me = std::process::id() as i32;
        let short = b"/bin/true\0".to_vec();
        let long: Vec<u8> = std::iter::repeat_n(b'x', 5000).chain([0]).collect();
        // A string that starts 3 bytes before a page boundary.
        let page = vec![b'p'; 3 * 4096];
        let base = page.as_ptr() as u64;
        let cross = ((base | 0xfff) + 1) - 3;
        let mut page = page;
        let at = (cross - base) as usize;
        page[at..at + 9].copy_from_slice(b"crossing\0");
        let addrs = [
            short.as_ptr() as u64,
            long.as_ptr() as u64,
            base + at as u64,
        ];
        let got = read_remote_cstrs(me, &addrs, ARGV_LIMIT, None);
        assert_eq!(got, ["/bin/true", &"x".repeat(5000), "crossing"]);
        // The known string is taken as given (here deliberately different
        // from memory, to see it was not read).
        let got = read_remote_cstrs(me, &addrs[..1], ARGV_LIMIT, Some((addrs[0], "known")));
        assert_eq!(got, ["known"]);
        // An unreadable pointer ends the list there.
        let got = read_remote_cstrs(me, &[addrs[0], 8, addrs[2]], ARGV_LIMIT, None);
        assert_eq!(got, ["/bin/true"]);
        // The limit cuts the list once exceeded.
        let got = read_remote_cstrs(me, &[addrs[1], addrs[0]], 100, None);
        assert_eq!(got, ["x".repeat(100)]);
    }
}
