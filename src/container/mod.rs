//! The OCI container lifecycle behind runc's command line. Each operation is
//! a short sequence over the state directory ([`mod@state`]), the launcher and
//! the audit supervisor; the CLI only parses flags and calls these.
//!
//! - `bundle.rs`: config.json read and planned under its profile;
//! - `create.rs`: `create` and `run`;
//! - `supervisor.rs`: the container's audit log and supervisor process;
//! - `exec.rs`: `exec`;
//! - here: the operations on a container that exists (`start`, `state`,
//!   `kill`, `delete`, `pause`/`resume`, `update`, `ps`, `list`) and
//!   `features`.

mod bundle;
mod create;
mod exec;
pub mod state;
mod supervisor;

pub use bundle::{bundle_plan, load_bundle, load_config, parse_config, Bundle};
pub use create::{create, passed_fds, CreateArgs, PassedFds};
pub use exec::{exec, parse_process, ExecArgs};

use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use oci_spec::runtime::Spec;

use crate::cgroups::{Cgroup, FreezerState, Resources};
use crate::error::Error;
use crate::fault;
use crate::idpool;

use state::{ContainerDir, OciState, Saved, Status};

/// The OCI runtime spec version buildcell implements.
pub const OCI_VERSION: &str = "1.2.0";

/// Where a detached supervisor that stopped its container because the
/// audit failed says why (its stdio is /dev/null): `state` shows it as the
/// annotation [`AUDIT_FAILURE_ANNOTATION`].
const AUDIT_FAILURE_FILE: &str = "audit.failure";

/// The control socket of a container's audit supervisor, where `exec`
/// hands over the listeners of new processes.
const CONTROL_SOCKET: &str = "audit.sock";

/// Write the pid file atomically (the caller may read it at any time).
fn write_pid_file(path: &Path, pid: i32) -> Result<(), Error> {
    let tmp = path.with_extension("buildcell-tmp");
    std::fs::write(&tmp, pid.to_string())
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| usage(format!("--pid-file {}: {e}", path.display())))
}

fn usage(msg: impl Into<String>) -> Error {
    Error::Usage(msg.into())
}

impl From<state::StateError> for Error {
    fn from(e: state::StateError) -> Self {
        Error::Usage(e.to_string())
    }
}

/// The state annotation naming the user namespace buildcell added and its
/// host range: `added: 0 START 65536`.
pub const USERNS_ANNOTATION: &str = "org.buildcell.userns";

/// Status of a saved container, read from the kernel now.
pub fn status_of(dir: &ContainerDir, saved: &Saved) -> Status {
    // Still `creating` once its lock is ours: the `create` that wrote it
    // died half-way. Nothing of it may run: only `delete` is left. While
    // its lock is held (`list`), the create is under way.
    if saved.oci.status == Status::Creating {
        return match dir.locked {
            true => Status::Stopped,
            false => Status::Creating,
        };
    }
    if !state::init_alive(saved) {
        return Status::Stopped;
    }
    if fifo_has_reader(&dir.fifo()) {
        return Status::Created;
    }
    if cgroup_of(saved)
        .and_then(|c| c.freezer_state().ok())
        .is_some_and(|f| f != FreezerState::Thawed)
    {
        return Status::Paused;
    }
    Status::Running
}

/// Whether an init still waits on the exec fifo: opening it for writing
/// (without writing) succeeds only while a reader holds it open. A `start`
/// that died after its byte leaves the file behind, with no reader.
fn fifo_has_reader(fifo: &Path) -> bool {
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(fifo)
        .is_ok()
}

/// The state as `state` prints it: status and pid as of now.
pub fn current(dir: &ContainerDir) -> Result<OciState, Error> {
    let saved = dir.load()?;
    let mut oci = saved.oci.clone();
    oci.status = status_of(dir, &saved);
    if oci.status == Status::Stopped {
        oci.pid = 0;
    }
    if let Ok(why) = std::fs::read_to_string(dir.dir.join(AUDIT_FAILURE_FILE)) {
        oci.annotations
            .insert(AUDIT_FAILURE_ANNOTATION.into(), why.trim().to_string());
    }
    Ok(oci)
}

/// The state a hook reads on stdin.
fn hook_state(saved: &Saved, status: Status) -> String {
    let mut oci = saved.oci.clone();
    oci.status = status;
    serde_json::to_string(&oci).unwrap_or_default()
}

/// Whether a saved container's config has a `process` to start.
fn saved_has_process(dir: &ContainerDir) -> bool {
    std::fs::read(dir.dir.join("config.json"))
        .ok()
        .and_then(|d| serde_json::from_slice::<Spec>(&d).ok())
        .is_some_and(|s| s.process().is_some())
}

/// The hooks of a saved container's config.
fn saved_hooks(dir: &ContainerDir) -> Option<oci_spec::runtime::Hooks> {
    let data = std::fs::read(dir.dir.join("config.json")).ok()?;
    let spec: Spec = serde_json::from_slice(&data).ok()?;
    spec.hooks().clone()
}

/// Say a failed hook that does not fail the operation (poststart,
/// poststop), on stderr and in --log.
fn warn(msg: &str) {
    crate::cli::warn(msg);
}

/// The annotation that says why a container runs without a cgroup.
pub const NO_CGROUP_ANNOTATION: &str = "org.buildcell.cgroup";

/// Whether buildcell runs without host root (not uid 0, or uid 0 of a
/// user namespace such as rootless podman's).
pub fn rootless() -> bool {
    !nix::unistd::geteuid().is_root() || !crate::userns::in_initial_userns()
}

/// The saved cgroup of a container, if it has one.
fn cgroup_of(saved: &Saved) -> Option<Cgroup> {
    saved
        .cgroup
        .as_ref()
        .and_then(|v| serde_json::from_value(v.clone()).ok())
}

pub const AUDIT_FAILURE_ANNOTATION: &str = "org.buildcell.audit.failure";

/// `start`: let a created container's init exec the user process.
pub fn start(root: &Path, id: &str) -> Result<i32, Error> {
    let dir = ContainerDir::open(root, id)?;
    let saved = dir.load()?;
    let status = status_of(&dir, &saved);
    if status != Status::Created {
        return Err(usage(format!(
            "cannot start container {id}: it is {status}, not created"
        )));
    }
    let fifo = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(dir.fifo())
        .map_err(|e| {
            usage(format!(
                "cannot start container {id}: its init is gone ({e})"
            ))
        })?;
    if !saved_has_process(&dir) {
        return Err(usage(format!(
            "cannot start container {id}: its config.json has no process; delete it and create it with one"
        )));
    }
    let hooks = saved_hooks(&dir).unwrap_or_default();
    let start_container = hooks.start_container().clone().unwrap_or_default();
    if let Err(e) = crate::hooks::run_all(
        "startContainer",
        &start_container,
        &hook_state(&saved, Status::Created),
        crate::hooks::Place::Container {
            init: saved.oci.pid,
            open_in_runtime: false,
        },
    ) {
        // The user process must not run after a failed startContainer.
        kill_everything(&saved);
        return Err(usage(e));
    }
    fault::point("start:before-fifo");
    nix::unistd::write(&fifo, b"0").map_err(|e| usage(format!("start {id}: write: {e}")))?;
    fault::point("start:after-fifo");
    let _ = std::fs::remove_file(dir.fifo());
    let poststart = hooks.poststart().clone().unwrap_or_default();
    if let Err(e) = crate::hooks::run_all(
        "poststart",
        &poststart,
        &hook_state(&saved, Status::Running),
        crate::hooks::Place::Runtime,
    ) {
        warn(&format!("{e} (the container keeps running)"));
    }
    Ok(0)
}

/// `state`: the OCI state JSON.
pub fn state(root: &Path, id: &str) -> Result<i32, Error> {
    let dir = ContainerDir::open(root, id)?;
    let oci = current(&dir)?;
    println!(
        "{}",
        serde_json::to_string_pretty(&oci).map_err(|e| usage(e.to_string()))?
    );
    Ok(0)
}

/// Parse a signal given as a number, `KILL` or `SIGKILL`.
pub fn parse_signal(text: &str) -> Result<Signal, Error> {
    let bad = || {
        usage(format!(
            "invalid signal {text:?}: give a number or a name such as TERM"
        ))
    };
    if let Ok(n) = text.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| bad());
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<Signal>().map_err(|_| bad())
}

/// Every process in the container: those sharing the init's pid namespace
/// (or, without a pid namespace of its own, the init alone and its
/// descendants are found through the cgroup once there is one).
pub fn container_pids(saved: &Saved) -> Vec<i32> {
    // A pid that is no longer our init may belong to anybody now.
    if !state::init_alive(saved) {
        return Vec::new();
    }
    let init = saved.oci.pid;
    let ns_of = |pid: i32| std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
    let Some(init_ns) = ns_of(init) else {
        return Vec::new();
    };
    let own_ns = ns_of(std::process::id() as i32);
    if Some(&init_ns) == own_ns.as_ref() {
        return vec![init];
    }
    let mut pids: Vec<i32> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .filter(|pid| ns_of(*pid).as_ref() == Some(&init_ns))
        .collect();
    pids.sort();
    pids
}

/// `kill [--all] ID SIGNAL`.
pub fn kill(root: &Path, id: &str, signal: &str, all: bool) -> Result<i32, Error> {
    let sig = parse_signal(signal)?;
    let dir = ContainerDir::open(root, id)?;
    let saved = dir.load()?;
    // runc: a stopped container may still be signalled with --all (its
    // cgroup may hold processes that outlived the init; none is fine).
    if status_of(&dir, &saved) == Status::Stopped && !all {
        return Err(usage(format!("container {id} is not running")));
    }
    if all {
        if let Some(cg) = cgroup_of(&saved) {
            cg.kill_all(sig).map_err(|e| usage(e.to_string()))?;
            return Ok(0);
        }
        for pid in container_pids(&saved) {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), sig);
        }
        return Ok(0);
    }
    nix::sys::signal::kill(Pid::from_raw(saved.oci.pid), sig)
        .map_err(|e| usage(format!("kill {id}: {}", e.desc())))?;
    Ok(0)
}

/// `delete [--force] ID`.
pub fn delete(root: &Path, id: &str, force: bool) -> Result<i32, Error> {
    let dir = match ContainerDir::open(root, id) {
        Ok(d) => d,
        Err(state::StateError::NotFound(_)) if force => {
            // A `create` that died before it saved anything leaves its
            // directory alone: nothing else of it exists yet.
            if let Some(d) = ContainerDir::open_leftover(root, id)? {
                d.remove()?;
            }
            return Ok(0);
        }
        Err(e) => return Err(e.into()),
    };
    let saved = match dir.load() {
        Ok(s) => s,
        Err(_) if force => {
            dir.remove()?;
            return Ok(0);
        }
        Err(e) => return Err(e.into()),
    };
    let status = status_of(&dir, &saved);
    match (status, force) {
        // Stopped: its init is gone, but a half-made container's (its
        // `create` died after the init was ready) may not be, and
        // processes without a pid namespace of their own outlive it.
        (Status::Stopped, _) | (Status::Created, _) | (_, true) => {
            // A created container was never started: deleting it is how an
            // engine gives up on it (runc kills it too). A stopped one whose
            // cgroup is empty has nothing left to kill.
            let emptied = status == Status::Stopped
                && cgroup_of(&saved).is_some_and(|cg| cg.remove_if_empty());
            if !emptied {
                kill_everything(&saved);
                wait_gone(&saved);
            }
        }
        (s, false) => {
            return Err(usage(format!(
                "cannot delete container {id}: it is {s}; stop it first or use --force"
            )))
        }
    }
    fault::point("delete:killed");
    if let Some(cg) = cgroup_of(&saved) {
        // Without a pid namespace of its own, processes may outlive the
        // init: they go with the cgroup.
        cg.kill_and_remove().map_err(|e| usage(e.to_string()))?;
    }
    fault::point("delete:cgroup-removed");
    // The supervisor ends its log once the container's last process is
    // gone: wait for it, so that nothing of the container outlives delete.
    wait_supervisor_gone(&saved);
    let poststop = saved_hooks(&dir)
        .and_then(|h| h.poststop().clone())
        .unwrap_or_default();
    let dir_path = dir.dir.clone();
    // Every process of the container is gone with its cgroup: its id range
    // may go to the next container. Released (and the work directory
    // removed) before the state directory, which is what lets a `delete`
    // that dies half-way be run again.
    if let Some(slot) = &saved.userns {
        idpool::release(slot, &dir_path);
    }
    if let Some(w) = &saved.overlay_workdir {
        let _ = std::fs::remove_dir_all(w);
    }
    fault::point("delete:range-released");
    dir.remove()?;
    fault::point("delete:state-removed");
    if let Err(e) = crate::hooks::run_all(
        "poststop",
        &poststop,
        &hook_state(&saved, Status::Stopped),
        crate::hooks::Place::Runtime,
    ) {
        warn(&format!("{e} (the container is deleted)"));
    }
    Ok(0)
}

/// SIGKILL every process of the container (frozen ones included).
fn kill_everything(saved: &Saved) {
    match cgroup_of(saved) {
        Some(cg) => {
            let _ = cg.kill_all(Signal::SIGKILL);
            let _ = cg.thaw();
        }
        None => {
            for pid in container_pids(saved) {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}

/// `pause` / `resume`: freeze or thaw the container's cgroup.
pub fn pause(root: &Path, id: &str, freeze: bool) -> Result<i32, Error> {
    let dir = ContainerDir::open(root, id)?;
    let saved = dir.load()?;
    let status = status_of(&dir, &saved);
    let want = if freeze {
        Status::Running
    } else {
        Status::Paused
    };
    if status != want {
        return Err(usage(format!(
            "cannot {} container {id}: it is {status}, not {want}",
            if freeze { "pause" } else { "resume" }
        )));
    }
    let cg = cgroup_of(&saved).ok_or_else(|| {
        usage(format!(
            "container {id} has no cgroup (rootless without cgroup delegation), so it cannot be frozen"
        ))
    })?;
    let r = if freeze { cg.freeze() } else { cg.thaw() };
    r.map_err(|e| usage(e.to_string()))?;
    Ok(0)
}

/// `update`: new limits for a running container's cgroup.
pub fn update(
    root: &Path,
    id: &str,
    resources: &oci_spec::runtime::LinuxResources,
) -> Result<i32, Error> {
    let dir = ContainerDir::open(root, id)?;
    let saved = dir.load()?;
    if status_of(&dir, &saved) == Status::Stopped {
        return Err(usage(format!(
            "cannot update container {id}: it is stopped"
        )));
    }
    let cg = cgroup_of(&saved).ok_or_else(|| {
        usage(format!(
            "container {id} has no cgroup (rootless without cgroup delegation): its limits cannot be updated"
        ))
    })?;
    if let Some(profile) = crate::policy::load_saved(&dir.dir) {
        let violations = crate::policy::check::check_resources(&profile, resources, true);
        if !violations.is_empty() {
            return Err(crate::policy::PolicyError::Violations {
                profile: profile.name.clone(),
                what: "update",
                violations,
            }
            .into());
        }
    }
    let mut r = Resources::try_from(resources).map_err(|e| usage(e.to_string()))?;
    // Device rules are set once at create, as runc update does not touch
    // them: rewriting them would briefly cut running processes off.
    r.devices = None;
    cg.update(&r).map_err(|e| usage(e.to_string()))?;
    Ok(0)
}

/// `ps`: the container's processes, as host pids.
pub fn ps(root: &Path, id: &str, json: bool) -> Result<i32, Error> {
    let dir = ContainerDir::open(root, id)?;
    let saved = dir.load()?;
    let mut pids = match cgroup_of(&saved) {
        Some(cg) => cg.pids().map_err(|e| usage(e.to_string()))?,
        None => container_pids(&saved),
    };
    pids.sort();
    if json {
        println!(
            "{}",
            serde_json::to_string(&pids).map_err(|e| usage(e.to_string()))?
        );
    } else {
        println!("{:>8} CMD", "PID");
        for pid in pids {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .trim()
                        .to_string()
                })
                .unwrap_or_default();
            println!("{pid:>8} {cmd}");
        }
    }
    Ok(0)
}

/// Wait (up to 5 s) for a detached audit supervisor to write its end
/// record and exit once its container is gone; SIGKILL it after that (its
/// log then verifies as cut off).
fn wait_supervisor_gone(saved: &Saved) {
    let (Some(pid), Some(start)) = (saved.supervisor_pid, saved.supervisor_start_time) else {
        return;
    };
    if !wait_process_gone(pid, start) {
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// Wait (up to 5 s) until the init is gone.
fn wait_gone(saved: &Saved) {
    if saved.oci.pid > 0 {
        wait_process_gone(saved.oci.pid, saved.init_start_time);
    }
}

/// Waits up to 5 s until the process `pid` that started at `start` (clock
/// ticks after boot) has exited; true once it has. Woken by its pidfd at
/// the exit: `delete` right after the container's end no longer sleeps
/// 10 ms while the supervisor syncs the log. Where pidfds are missing
/// (before Linux 5.3), /proc is polled every 10 ms.
fn wait_process_gone(pid: i32, start: u64) -> bool {
    let alive = || {
        state::start_time(pid) == Some(start)
            && !matches!(state::proc_state(pid), Some('Z') | Some('X') | None)
    };
    let limit = std::time::Duration::from_secs(5);
    match crate::sys::pidfd_open(pid) {
        // The pidfd is the process's only if it still is that process.
        Ok(fd) if alive() => crate::sys::wait_exited(fd.as_fd(), limit),
        Ok(_) => true,
        Err(e) if e.errno == nix::errno::Errno::ESRCH => true,
        Err(_) => {
            for _ in 0..500 {
                if !alive() {
                    return true;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            false
        }
    }
}

/// `list [--format table|json] [--quiet]`.
pub fn list(root: &Path, json: bool, quiet: bool) -> Result<i32, Error> {
    let mut all = Vec::new();
    for id in state::list_ids(root) {
        // Never waits for a call under way on a container (a `create` runs
        // its hooks with the lock held): that one is read as it is.
        if let Ok(dir) = ContainerDir::peek(root, &id) {
            if let Ok(s) = current(&dir) {
                all.push(s);
            }
        }
    }
    if quiet {
        for s in &all {
            println!("{}", s.id);
        }
    } else if json {
        println!(
            "{}",
            serde_json::to_string(&all).map_err(|e| usage(e.to_string()))?
        );
    } else {
        println!(
            "{:<20} {:<8} {:<10} {:<40} {:<32} OWNER",
            "ID", "PID", "STATUS", "BUNDLE", "CREATED"
        );
        for s in &all {
            println!(
                "{:<20} {:<8} {:<10} {:<40} {:<32} {}",
                s.id,
                s.pid,
                s.status,
                s.bundle.display(),
                s.created,
                s.owner
            );
        }
    }
    Ok(0)
}

/// `features`: what this binary supports, as the OCI features document.
pub fn features() -> String {
    let caps: Vec<String> = caps::all().iter().map(|c| c.to_string()).collect();
    let f = serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": OCI_VERSION,
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": [
            "ro", "rw", "nosuid", "suid", "nodev", "dev", "noexec", "exec", "bind", "rbind",
            "private", "rprivate", "slave", "rslave", "shared", "rshared", "unbindable",
            "runbindable", "relatime", "norelatime", "strictatime", "noatime", "nodiratime",
            "defaults", "async", "sync", "dirsync", "tmpcopyup", "nosymfollow"
        ],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"],
            "capabilities": caps,
            "cgroup": {"v1": true, "v2": true, "systemd": false, "systemdUser": false, "rdma": false},
            "seccomp": {
                "enabled": true,
                "actions": [
                    "SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD",
                    "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_LOG", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"
                ],
                "operators": [
                    "SCMP_CMP_EQ", "SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_GT",
                    "SCMP_CMP_GE", "SCMP_CMP_MASKED_EQ"
                ],
                "archs": ["SCMP_ARCH_X86_64"],
                "knownFlags": [],
                "supportedFlags": []
            },
            "apparmor": {"enabled": false},
            "selinux": {"enabled": false},
            "intelRdt": {"enabled": false},
            "mountExtensions": {"idmap": {"enabled": false}}
        },
        "annotations": {
            "org.buildcell.audit.exec": "every execve/execveat is recorded before it runs",
            "org.opencontainers.runc.checkpoint.enabled": "false"
        }
    });
    serde_json::to_string_pretty(&f).unwrap_or_default()
}
