//! The launch: one linear sequence of named steps, parent side then child
//! side. Each step lives in the module of its kernel facility; this file
//! only says what happens in which order, and why there.
//!
//! ```text
//! parent (buildcell)                     child = pid 1 of the sandbox      user process (pid 2)
//! choose id maps, block signals
//! clone(all namespaces) ---------------> die with parent
//! write uid/gid maps                     wait for maps
//!                                        capture sources as mount fds
//! [host root] idmap the binds <---fds--- send bind sources
//!                                        pivot into the read-only root
//!                                        mount proc, dev, tmpfs, binds
//!                                        hostname, loopback up
//!                                        fork --------------------------> chdir, drop caps,
//!                                        reap + forward signals           no_new_privs, close fds,
//!                                                                         landlock, exec audit,
//! wait: Failed or channel closed <--------------------------------------  seccomp (last), execve
//! forward signals, wait for pid 1
//! exit with the step's status
//! ```

use std::os::fd::{AsFd, OwnedFd};
use std::time::Instant;

use nix::sys::signal::{kill, Signal};
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid};

use crate::audit::log::AuditLog;
use crate::audit::supervisor;
use crate::error::Error;
use crate::landlock::{self, LandlockPlan};
use crate::spec::{LaunchPlan, MountKind, PlanMode};
use crate::sync::{self, ChildEnd, IdmapRequest, SetupOutcome};
use crate::userns::IdMapPlan;
use crate::{capabilities, fault, mounts, namespaces, process, reaper, seccomp, sys};

/// `--verbose`: each setup step with the time since the start.
#[derive(Clone, Copy)]
pub struct Timer {
    start: Instant,
    on: bool,
}

impl Timer {
    pub fn new(on: bool) -> Self {
        Timer {
            start: Instant::now(),
            on,
        }
    }
    pub fn log(&self, what: &str) {
        if self.on {
            let ms = self.start.elapsed().as_secs_f64() * 1000.0;
            // One write(2) per line: parent and sandbox init log at the same
            // time, and eprintln! may split a line into several writes.
            let line = format!("buildcell: [{ms:8.3} ms] {what}\n");
            let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), line.as_bytes());
        }
    }
}

/// Landlock, before anything is created: a plan this kernel cannot enforce
/// as required is refused here, not in the container. Returns what the
/// child will enforce (it also learns which paths exist only in there).
pub fn landlock_preflight(plan: Option<&LandlockPlan>) -> Result<Option<landlock::Report>, Error> {
    let Some(plan) = plan else {
        return Ok(None);
    };
    let abi = landlock::effective_abi()?;
    Ok(Some(landlock::evaluate(plan, abi)?))
}

/// The Landlock report in the container's process: every line with
/// `--verbose`; otherwise what is not enforced (best effort), which is
/// never silent.
fn say_landlock(report: &landlock::Report, t: Timer) {
    if t.on {
        for line in report.lines() {
            t.log(&format!("landlock: {line}"));
        }
        return;
    }
    for line in &report.not_enforced {
        let line = format!("buildcell: landlock: not enforced: {line}\n");
        let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), line.as_bytes());
    }
}

/// Kills and reaps the child if the parent leaves early: no half-created
/// sandbox survives a parent-side error.
struct ChildGuard(Option<Pid>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take() {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
        }
    }
}

/// How a new init gets into its cgroup before it goes on: by itself
/// through `entry` (cgroup v1: it moves itself in, and the parent waits for
/// its word; v2: it is cloned in), then `then` runs with its host pid
/// (moves it in where `entry` cannot, records it, runs the prestart and
/// createRuntime hooks).
pub struct Placement<F> {
    pub entry: crate::cgroups::Entry,
    pub then: F,
}

/// Clone the init into its namespaces, and into `into` when given (cgroup
/// v2). A kernel without `CLONE_INTO_CGROUP` (before 5.7) refuses that
/// with ENOSYS or E2BIG: then a plain clone, and the parent moves the
/// child in through `cgroup.procs` right away (killing it if it cannot).
fn clone_init(
    flags: &crate::spec::NamespacePlan,
    into: Option<&crate::cgroups::CloneTarget>,
) -> Result<Option<i32>, Error> {
    let Some(target) = into else {
        return Ok(namespaces::clone_into(flags, None)?);
    };
    match namespaces::clone_into(flags, Some(target.fd())) {
        Err(namespaces::NamespaceError::Clone(e))
            if matches!(
                e.errno,
                nix::errno::Errno::ENOSYS | nix::errno::Errno::E2BIG
            ) =>
        {
            let pid = namespaces::clone_into(flags, None)?;
            if let Some(pid) = pid {
                if let Err(e) = target.add_pid(pid) {
                    drop(ChildGuard(Some(Pid::from_raw(pid))));
                    return Err(Error::Setup {
                        step: "cgroup",
                        message: e.to_string(),
                    });
                }
            }
            Ok(pid)
        }
        other => Ok(other?),
    }
}

/// Run the plan to completion; returns the step's exit status. With
/// `audit`, every exec in the sandbox is recorded there before it runs
/// (the plan must have `audit_exec` set).
pub fn run(
    plan: &LaunchPlan,
    idmap: &IdMapPlan,
    timer: Timer,
    audit: Option<&mut AuditLog>,
    placement: Placement<impl FnOnce(i32) -> Result<(), Error>>,
) -> Result<i32, Error> {
    let Placement {
        entry: crate::cgroups::Entry { mut join, into },
        then: place,
    } = placement;
    timer.log(&format!("id maps: {}", idmap.describe()));

    let (parent_end, child_end) = sync::channel()?;
    // Blocked before clone so that no signal sent between clone and the wait
    // loop is lost; the child inherits the mask and reads the same signals.
    let sfd = reaper::signal_fd().map_err(|errno| Error::Setup {
        step: "block signals",
        message: errno.desc().into(),
    })?;

    let mut flags = plan.namespaces;
    // Made by the init itself once it is in its cgroup.
    flags.cgroup = false;
    let pid = match clone_init(&flags, into.as_ref())? {
        None => {
            drop(parent_end);
            container_init(plan, child_end, sfd, join, Premade::new(), timer)
        }
        Some(pid) => Pid::from_raw(pid),
    };
    drop(into);
    drop(child_end);
    let mut guard = ChildGuard(Some(pid));
    timer.log(&format!("cloned sandbox init, host pid {pid}"));

    // Into the step's cgroup (when it has one) before anything runs: the
    // init moved itself (v1), or `place` moves it.
    if join.take().is_some() {
        if let Err(outcome) = parent_end.wait_joined()? {
            return Err(child_failed(&mut guard, pid, outcome));
        }
        timer.log("init joined its cgroup");
    }
    place(pid.as_raw())?;
    timer.log("in its cgroup");
    idmap.write(pid.as_raw())?;
    timer.log("uid/gid maps written");

    // As host root the binds are idmapped, so container root writes files
    // owned by the host caller, not by the unprivileged range. Only host
    // root may idmap a host filesystem, so the parent does it, on detached
    // mounts the child captured (a mount must be attached by a namespace
    // whose owner captured it).
    let host_root = matches!(idmap, IdMapPlan::HostRoot { .. });
    parent_end.maps_written(host_root)?;
    if host_root {
        match parent_end.wait_idmap_request()? {
            IdmapRequest::Mounts { root, binds } => {
                let (new_root, _) = idmap_mounts(plan, pid, root.as_ref(), &binds, None, timer)?;
                parent_end.idmap_done(new_root.as_ref())?;
                timer.log("bind sources idmapped");
            }
            IdmapRequest::Failed(outcome) => return Err(child_failed(&mut guard, pid, outcome)),
        }
    }

    let listener = match parent_end.wait_started()? {
        SetupOutcome::Executed => None,
        SetupOutcome::Listening(l) => Some(l),
        failed => return Err(child_failed(&mut guard, pid, failed)),
    };
    guard.0 = None;
    timer.log("step started");
    let code = match (listener, audit) {
        (None, _) => reaper::supervise(pid, &sfd, false),
        (Some(listener), Some(log)) => {
            let watch = supervisor::Watch::of(pid);
            let out = supervisor::run(listener, None, watch, &sfd, log, supervisor::Mode::Parent);
            if let Some(why) = out.audit_failure {
                return Err(Error::Setup {
                    step: "audit",
                    message: format!("{why}; the step was stopped"),
                });
            }
            out.exit_code
        }
        (Some(_), None) => {
            // The plan asked for exec audit without a log: never run
            // unaudited.
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
            return Err(Error::Setup {
                step: "audit",
                message: "exec audit requested but no audit log given".into(),
            });
        }
    };
    // An exec failure the user process reported (not found, not executable).
    if let Some((step, message, exit_code)) = parent_end.take_failure() {
        return Err(Error::Child {
            step,
            message,
            exit_code,
        });
    }
    timer.log(&format!("step ended with status {code}"));
    Ok(code)
}

/// The child reported a failed step: it exits by itself; reap it.
fn child_failed(guard: &mut ChildGuard, pid: Pid, outcome: SetupOutcome) -> Error {
    guard.0 = None;
    let _ = waitpid(pid, None);
    match outcome {
        SetupOutcome::Failed {
            step,
            message,
            exit_code,
        } => Error::Child {
            step,
            message,
            exit_code,
        },
        SetupOutcome::Executed | SetupOutcome::Listening(_) => Error::Setup {
            step: "setup",
            message: "the sandbox init exited before its setup finished".into(),
        },
    }
}

/// Kernel filesystems the runtime made for the container, by index in the
/// plan's mounts (see [`mounts::runtime_made`]).
type Premade = std::collections::BTreeMap<usize, OwnedFd>;

/// What to do when a rootfs cannot be idmapped.
const ROOTFS_FIX: &str = "buildcell gives the containers of an engine running as root a user namespace of their own and needs an idmapped rootfs for it (a filesystem with idmapped mounts, or overlayfs on such layers: Linux 5.19+); run the engine rootless, or have it give the container a user namespace and use a profile with user_namespace = \"require\"";

/// Idmap the child's detached root (a bundle's, in a user namespace
/// buildcell added) and bind sources with its user namespace; returns the
/// root to use instead when the rootfs is an overlayfs mount, which cannot
/// be idmapped itself: the same overlay made again on idmapped layers.
/// A root that cannot be idmapped either way is an error; for a `step` so
/// is a bind. A bundle's bind whose filesystem cannot be idmapped stays a
/// plain bind (its files show as nobody inside, what the container writes
/// there belongs to its unprivileged range): an engine's volume on NFS
/// still works. `creator`: host uid and gid of the container's root.
fn idmap_mounts(
    plan: &LaunchPlan,
    pid: Pid,
    root: Option<&OwnedFd>,
    binds: &[(usize, OwnedFd)],
    creator: Option<(u32, u32)>,
    timer: Timer,
) -> Result<(Option<OwnedFd>, Option<mounts::TempDir>), Error> {
    let userns_path = format!("/proc/{pid}/ns/user");
    let userns = std::fs::File::open(&userns_path).map_err(|e| Error::Setup {
        step: "open user namespace",
        message: format!("{userns_path}: {e}"),
    })?;
    let rootfs_err = |what: String| Error::Setup {
        step: "idmapped rootfs",
        message: format!("{}: {what}; {ROOTFS_FIX}", plan.rootfs.display()),
    };
    let mut new_root = None;
    let mut workdir = None;
    if let Some(root) = root {
        match sys::mount_setattr(
            root.as_fd(),
            true,
            sys::attr::IDMAP,
            0,
            Some(userns.as_fd()),
        ) {
            Ok(()) => {}
            Err(e)
                if e.errno == nix::errno::Errno::EINVAL
                    && mounts::fs_type_of(&plan.rootfs) == "overlay" =>
            {
                let (uid, gid) = creator.ok_or_else(|| {
                    rootfs_err("an overlayfs rootfs needs the container's host range".into())
                })?;
                let (fd, dir) = idmapped_overlay(&plan.rootfs, userns.as_fd(), uid, gid)
                    .map_err(|e| rootfs_err(format!("overlay on idmapped layers: {e}")))?;
                timer.log("rootfs: overlay made again on idmapped layers");
                new_root = Some(fd);
                workdir = dir;
            }
            Err(e) => {
                return Err(rootfs_err(format!(
                    "it is on {} (or holds a mount) that cannot be idmapped ({})",
                    mounts::fs_type_of(&plan.rootfs),
                    e.errno.desc()
                )))
            }
        }
    }
    for (i, fd) in binds {
        let Some(MountKind::Bind {
            source, recursive, ..
        }) = plan.mounts.get(*i).map(|m| &m.kind)
        else {
            return Err(Error::Setup {
                step: "idmap bind mount",
                message: format!("the sandbox sent mount index {i}, which is not a bind mount"),
            });
        };
        match sys::mount_setattr(fd.as_fd(), *recursive, sys::attr::IDMAP, 0, Some(userns.as_fd())) {
            Ok(()) => {}
            Err(e)
                if plan.mode == PlanMode::Bundle
                    && matches!(e.errno, nix::errno::Errno::EINVAL | nix::errno::Errno::EPERM) =>
            {
                timer.log(&format!(
                    "bind {} ({}) not idmapped: {}",
                    source.display(),
                    mounts::fs_type_of(source),
                    e.errno.desc()
                ));
            }
            Err(e) => {
                return Err(Error::Setup {
                    step: "idmap bind mount",
                    message: format!(
                        "{}: {e}; its filesystem may not support idmapped mounts (run buildcell as a regular user instead)",
                        source.display()
                    ),
                })
            }
        }
    }
    Ok((new_root, workdir))
}

/// The overlayfs mount at `rootfs` made again, with the same layers and
/// options, each layer an idmapped mount (user namespace `userns`): the
/// image's files keep their owners inside, and what the container writes
/// lands in the engine's upper directory with the ids the engine expects.
/// The new instance is made by host root with its filesystem ids set to
/// the container's root (`uid`, `gid`), capabilities kept: overlayfs works
/// in its upper layer with its maker's credentials, which must map through
/// the idmapped layers. The engine's own mount of the same upper directory
/// stays; the kernel warns that both use it (the engine does not write
/// through its mount while the container runs).
fn idmapped_overlay(
    rootfs: &std::path::Path,
    userns: std::os::fd::BorrowedFd<'_>,
    uid: u32,
    gid: u32,
) -> Result<(OwnedFd, Option<mounts::TempDir>), String> {
    let ov = mounts::overlay_of(rootfs)?;
    let work_name = format!("buildcell-{uid}-{gid}");
    let (held, opts, workdir) = mounts::idmapped_layers(&ov, userns, &work_name)?;
    let fd = fd_from_helper(|| {
        sys::set_securebits(sys::SECBIT_NO_SETUID_FIXUP).map_err(|e| format!("securebits: {e}"))?;
        nix::unistd::setfsgid(nix::unistd::Gid::from_raw(gid));
        nix::unistd::setfsuid(nix::unistd::Uid::from_raw(uid));
        let refs: Vec<(&str, Option<&str>)> = opts
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_deref()))
            .collect();
        sys::new_fs_mount_opts("overlay", &refs, 0).map_err(|e| e.to_string())
    })?;
    drop(held);
    if ov.subdir.as_os_str().is_empty() {
        return Ok((fd, workdir));
    }
    let sub = sys::clone_tree_at(fd.as_fd(), &ov.subdir).map_err(|e| e.to_string())?;
    Ok((sub, workdir))
}

/// Run `f` in a forked child of this (single-threaded) process and get the
/// fd it makes: for work that needs other credentials or another active
/// pid namespace than the runtime's.
fn fd_from_helper(f: impl FnOnce() -> Result<OwnedFd, String>) -> Result<OwnedFd, String> {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().map_err(|e| e.to_string())?;
    let helper = match sys::clone_fork(0) {
        Err(e) => return Err(format!("fork: {e}")),
        Ok(None) => {
            drop(ours);
            let sock = std::os::fd::AsRawFd::as_raw_fd(&theirs);
            let _ = match f() {
                Ok(fd) => sync::send_with_fd(sock, b"ok", std::os::fd::AsRawFd::as_raw_fd(&fd)),
                Err(e) => {
                    nix::sys::socket::send(sock, e.as_bytes(), nix::sys::socket::MsgFlags::empty())
                        .map(|_| ())
                }
            };
            sys::exit_now(0)
        }
        Ok(Some(pid)) => Pid::from_raw(pid),
    };
    drop(theirs);
    let mut buf = [0u8; 2048];
    let got = sync::recv_with_fd(std::os::fd::AsRawFd::as_raw_fd(&ours), &mut buf);
    let _ = waitpid(helper, None);
    match got {
        Ok((_, Some(fd))) => Ok(fd),
        Ok((0, None)) => Err("the helper process ended without an answer".into()),
        Ok((n, None)) => Err(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Err(e) => Err(format!("receive from the helper process: {e}")),
    }
}

/// Make the kernel filesystems the container cannot make itself (see
/// [`mounts::runtime_made`]), in the namespaces the container will have:
/// this process has entered those the bundle joins by path, and shares
/// the host's otherwise. A proc instance belongs to the *active* pid
/// namespace of its maker, which a joined pid namespace is not for this
/// process (setns only moves its children): a child forked into it makes
/// that one. Only host root may make them for namespaces it does not own.
fn runtime_mounts(plan: &LaunchPlan) -> Result<Premade, Error> {
    let mut out = Premade::new();
    if !crate::userns::host_root() {
        return Ok(out);
    }
    let pid_joined = plan
        .join
        .iter()
        .any(|(t, _)| *t == oci_spec::runtime::LinuxNamespaceType::Pid);
    for (i, m) in plan.mounts.iter().enumerate() {
        if !mounts::runtime_made(plan, m) {
            continue;
        }
        let proc = matches!(&m.kind, MountKind::Fs { fstype, .. } if fstype == "proc");
        let fd = if proc && pid_joined {
            proc_in_joined_pid_ns(m)?
        } else {
            mounts::new_kernel_mount(m).map_err(|e| Error::Setup {
                step: "mounts",
                message: e.to_string(),
            })?
        };
        out.insert(i, fd);
    }
    Ok(out)
}

/// A proc instance of the pid namespace this process joined: made by a
/// child forked into it.
fn proc_in_joined_pid_ns(m: &crate::spec::MountPlan) -> Result<OwnedFd, Error> {
    fd_from_helper(|| mounts::new_kernel_mount(m).map_err(|e| e.to_string())).map_err(|message| {
        Error::Setup {
            step: "mounts",
            message: format!(
                "{} (in the joined pid namespace): {message}",
                m.destination.display()
            ),
        }
    })
}

/// A failed child step: its name, its message, buildcell's exit status.
struct Failure(&'static str, String, i32);

fn fail<E: std::fmt::Display>(step: &'static str) -> impl FnOnce(E) -> Failure {
    move |e| Failure(step, e.to_string(), 125)
}

/// Close every fd but stdio and `keep`: nothing buildcell's caller left
/// open (a host directory: the CVE-2024-21626 class) may stay in a process
/// inside the sandbox.
fn close_inherited_fds(keep: &[std::os::fd::RawFd]) -> Result<(), Failure> {
    let top = keep.iter().copied().max().unwrap_or(2).max(2);
    sys::close_fds_from(top + 1).map_err(fail("close fds"))?;
    for fd in 3..top {
        if !keep.contains(&fd) {
            let _ = nix::unistd::close(fd);
        }
    }
    Ok(())
}

/// Pid 1 of the sandbox. Never returns.
fn container_init(
    plan: &LaunchPlan,
    chan: ChildEnd,
    sfd: SignalFd,
    join: Option<crate::cgroups::SelfJoin>,
    premade: Premade,
    timer: Timer,
) -> ! {
    // Pid 1 runs for the step's whole life, inside its pid namespace: it
    // keeps only the channel and the signalfd, first of all (a step's
    // `premade` holds nothing).
    // (And the cgroup files it moves itself in with, closed right after.)
    let mut keep = vec![chan.as_raw_fd(), std::os::fd::AsRawFd::as_raw_fd(&sfd)];
    keep.extend(join.iter().flat_map(|j| j.raw_fds()));
    if let Err(Failure(step, message, code)) =
        close_inherited_fds(&keep).and_then(|()| init_steps(plan, &chan, join, premade, timer))
    {
        chan.failed(step, &message, code);
        sys::exit_now(code);
    }
    match fork_user_process() {
        Err(Failure(step, message, code)) => {
            chan.failed(step, &message, code);
            sys::exit_now(code)
        }
        Ok(ForkResult::Child) => user_process(plan, &chan, timer),
        Ok(ForkResult::Parent { child }) => {
            // Only the user process may hold the channel now, so that it
            // closes exactly when the user process execs (close-on-exec).
            drop(chan);
            sys::exit_now(reaper::supervise(child, &sfd, true))
        }
    }
}

/// The setup of pid 1, up to the fork of the user process.
fn init_steps(
    plan: &LaunchPlan,
    chan: &ChildEnd,
    join: Option<crate::cgroups::SelfJoin>,
    premade: Premade,
    t: Timer,
) -> Result<(), Failure> {
    // First: if buildcell dies during setup, the whole sandbox dies with it
    // (pid 1 going takes the pid namespace down). A bundle's init clears
    // this again when it is ready: `create` exits and leaves it running.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(fail("set parent-death signal"))?;
    // Then into its cgroup, before anything can run in it: through the
    // files the parent opened (cgroup v1, see cgroups::SelfJoin), closed
    // at once; the parent waits for the word.
    if let Some(join) = join {
        let joined = join.join();
        drop(join);
        joined.map_err(|m| Failure("cgroup", m, 125))?;
        chan.joined().map_err(fail("sync"))?;
    }
    // Nothing below works before the parent has written the id maps (and
    // placed this process in its cgroup).
    let idmap = chan.wait_maps_written().map_err(fail("wait for id maps"))?;
    // Supplementary groups of the caller mean nothing inside; drop them where
    // the maps allow it (setgroups is denied with a single-id map).
    let _ = nix::unistd::setgroups(&[]);
    // The cgroup namespace is made only now, rooted at the cgroup the
    // parent moved this process into.
    if plan.namespaces.cgroup {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP)
            .map_err(fail("cgroup namespace"))?;
    }
    if plan.mode == PlanMode::Bundle {
        // Written through the host's /proc, before the pivot hides it
        // (unless the parent, as host root, already did: lowering it needs
        // CAP_SYS_RESOURCE of the host, which a user namespace lacks).
        if let Some(adj) = plan.process.oom_score_adj {
            let path = "/proc/self/oom_score_adj";
            let now = std::fs::read_to_string(path).unwrap_or_default();
            if now.trim() != adj.to_string() {
                std::fs::write(path, adj.to_string()).map_err(fail("process.oomScoreAdj"))?;
            }
        }
    }

    // Nothing mounted from here on may reach the host; the propagation the
    // bundle asks for is given to the new root after the pivot.
    mounts::make_rslave().map_err(fail("mounts"))?;
    let sources = mounts::capture_sources(plan, premade, |root, binds| match idmap {
        true => chan.request_idmap(root, binds).map_err(|e| e.to_string()),
        false => Ok(None),
    })
    .map_err(fail("mounts"))?;
    t.log("mount sources captured (root read-only, nosuid, nodev)");
    // Become root of the new namespace: as host root the creator's own uid
    // is not mapped (container root is an unprivileged host uid), and files
    // could not be created with an unmapped fsuid. Done after the capture,
    // which still runs with the caller's host uid and so can reach the
    // caller's own directories (a cwd under /root, mode 0700).
    let root = (nix::unistd::Uid::from_raw(0), nix::unistd::Gid::from_raw(0));
    // A uid change makes the process dumpable again (fs.suid_dumpable):
    // keep what protect_runtime_binary set.
    let dumpable = nix::sys::prctl::get_dumpable().unwrap_or(true);
    nix::unistd::setresgid(root.1, root.1, root.1)
        .map_err(fail("become root in the user namespace (gid)"))?;
    nix::unistd::setresuid(root.0, root.0, root.0)
        .map_err(fail("become root in the user namespace (uid)"))?;
    if !dumpable {
        let _ = nix::sys::prctl::set_dumpable(false);
    }
    // The uid change cleared the parent-death signal: set it again, then
    // make sure the parent did not die before it was set.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(fail("set parent-death signal"))?;
    if chan.peer_gone() {
        return Err(Failure(
            "set parent-death signal",
            "buildcell exited during setup".into(),
            125,
        ));
    }
    mounts::pivot_into_root(&sources).map_err(fail("pivot_root"))?;
    t.log("pivoted into the new root");
    mounts::mount_all(plan, &sources, |m| t.log(m)).map_err(fail("mounts"))?;
    mounts::populate_dev(&sources).map_err(fail("/dev"))?;
    mounts::mount_secrets(&plan.secrets).map_err(fail("secrets"))?;
    // Sysctls first: /proc/sys is usually among the read-only paths.
    mounts::write_sysctls(&plan.sysctl).map_err(fail("linux.sysctl"))?;
    mounts::mask_paths(&plan.masked_paths).map_err(fail("linux.maskedPaths"))?;
    mounts::readonly_paths(&plan.readonly_paths).map_err(fail("linux.readonlyPaths"))?;
    mounts::finish_root(plan, &sources).map_err(fail("root.readonly"))?;
    mounts::detach_old_root().map_err(fail("pivot_root"))?;
    // The new root is a detached copy: give it the propagation asked for.
    // (A copy has no master, so "slave" leaves it private: no host mount
    // event reaches the container either way.)
    mounts::set_propagation(std::path::Path::new("/"), plan.rootfs_propagation, true)
        .map_err(fail("linux.rootfsPropagation"))?;
    drop(sources);
    t.log("/dev populated");
    fault::point("init:mounts-done");

    // Only a namespace of its own may be renamed (a joined one is shared).
    if plan.namespaces.uts {
        if let Some(name) = &plan.hostname {
            namespaces::set_hostname(name).map_err(fail("hostname"))?;
        }
        if let Some(name) = &plan.domainname {
            std::fs::write("/proc/sys/kernel/domainname", name).map_err(fail("domainname"))?;
        }
    }
    if plan.namespaces.net {
        namespaces::loopback_up().map_err(fail("network"))?;
        t.log("network namespace: lo up");
    }

    Ok(())
}

fn fork_user_process() -> Result<ForkResult, Failure> {
    match sys::clone_fork(0) {
        Ok(None) => Ok(ForkResult::Child),
        Ok(Some(pid)) => Ok(ForkResult::Parent {
            child: Pid::from_raw(pid),
        }),
        Err(e) => Err(Failure("fork user process", e.to_string(), 125)),
    }
}

/// The user process, pid 2: the last steps, then exec. Never returns.
fn user_process(plan: &LaunchPlan, chan: &ChildEnd, t: Timer) -> ! {
    let p = &plan.process;
    let result = (|| -> Result<std::convert::Infallible, Failure> {
        // The cwd is set only now, inside the new root.
        nix::unistd::chdir(&p.cwd).map_err(|e| {
            Failure(
                "working directory",
                format!("{}: {}", p.cwd.display(), e.desc()),
                125,
            )
        })?;
        // Root inside unless the profile drew a random uid (gid 0).
        become_user(p).map_err(fail("capabilities"))?;
        if p.no_new_privileges {
            nix::sys::prctl::set_no_new_privs().map_err(fail("no_new_privs"))?;
        }
        // Only stdio and the channel (close-on-exec) survive.
        close_inherited_fds(&[chan.as_raw_fd()])?;
        process::reset_signals();
        t.log("capabilities dropped, no_new_privs set, fds closed");
        // Landlock: after no_new_privs (which it needs, having no
        // CAP_SYS_ADMIN) and the fd close (its ruleset fd is gone at exec
        // anyway), before the exec-audit filter and seccomp, which could
        // forbid its system calls. The paths it names are opened here,
        // inside the new root.
        if let Some(ll) = &plan.landlock {
            let report = landlock::apply(ll).map_err(fail("landlock"))?;
            say_landlock(&report, t);
        }
        // Exec audit: from here every execve/execveat of this process and
        // its descendants waits for the supervisor, which records it before
        // the program's first instruction. Installed before the profile's
        // filter, which could forbid seccomp() itself.
        if plan.audit_exec {
            let listener = sys::seccomp_install_listener(&seccomp::exec_notify_program())
                .map_err(fail("exec audit filter"))?;
            chan.listening(&listener)
                .map_err(fail("exec audit filter"))?;
        }
        // Last: after this only the syscalls the profile allows work.
        seccomp::apply(&plan.seccomp).map_err(fail("seccomp"))?;
        let f = process::exec(&p.args, &p.env);
        Err(Failure("exec", f.message, f.exit_code))
    })();
    let Err(Failure(step, message, code)) = result;
    chan.failed(step, &message, code);
    sys::exit_now(code)
}

/// A bundle's container after `create`: its init, set up and waiting for
/// `start` on the gate, and its exec-audit listener.
pub struct Created {
    pub pid: Pid,
    pub listener: Option<OwnedFd>,
    /// The signals blocked before clone (for a foreground `run`).
    pub signals: SignalFd,
    /// The channel: a foreground `run` reads the exec failure from it.
    pub channel: sync::ParentEnd,
    /// The work directory of the container's own overlayfs instance (an
    /// overlay rootfs made again on idmapped layers): removed at delete.
    pub overlay_workdir: Option<mounts::TempDir>,
}

/// How a bundle's init waits for `start`: on the exec fifo (`create`), or
/// not at all (`run`).
pub enum Gate {
    /// The fifo opened read-write: the init polls it until `start` writes
    /// one byte.
    Fifo(OwnedFd),
    Now,
}

/// Set up a bundle's container up to the point where only its own mounts
/// and the exec of the user process are left ([`Launching::wait_ready`]
/// waits for those). `console`: the init makes a terminal and sends its
/// master. `placement` puts the new init into its cgroup before
/// the init goes on; `made_workdir` hears of the work directory of an
/// overlay rootfs made again as soon as it exists (both so that `delete`
/// finds them if this process dies). On any error nothing is left running.
pub fn create(
    plan: &LaunchPlan,
    idmap: Option<&IdMapPlan>,
    gate: Gate,
    console: bool,
    placement: Placement<impl FnOnce(i32) -> Result<(), Error>>,
    made_workdir: impl FnOnce(&std::path::Path) -> Result<(), Error>,
    timer: Timer,
) -> Result<Launching, Error> {
    let Placement {
        entry: crate::cgroups::Entry { mut join, into },
        then: place,
    } = placement;
    if let Some(m) = idmap {
        timer.log(&format!("id maps: {}", m.describe()));
    }
    landlock_preflight(plan.landlock.as_ref())?;
    let (parent_end, child_end) = sync::channel()?;
    let sfd = reaper::signal_fd().map_err(|errno| Error::Setup {
        step: "block signals",
        message: errno.desc().into(),
    })?;
    // Namespaces given by path are entered by this process before clone:
    // the child then inherits them (a pid namespace applies to children
    // only), and its own new user namespace could not enter them.
    namespaces::join_all(&plan.join)?;
    let premade = runtime_mounts(plan)?;
    let mut flags = plan.namespaces;
    // Made by the init itself once it is in its cgroup.
    flags.cgroup = false;
    let pid = match clone_init(&flags, into.as_ref())? {
        None => {
            drop(parent_end);
            oci_init(plan, child_end, gate, console, join, premade, timer)
        }
        Some(pid) => {
            drop(premade);
            drop(into);
            Pid::from_raw(pid)
        }
    };
    drop(child_end);
    drop(gate);
    let mut guard = ChildGuard(Some(pid));
    timer.log(&format!("cloned container init, host pid {pid}"));
    fault::point("create:cloned");
    let joined = join.take().is_some();
    if let Some(m) = idmap {
        m.write(pid.as_raw())?;
        timer.log("uid/gid maps written");
    }
    fault::point("create:ids-mapped");
    if crate::userns::host_root() {
        // Raising a hard rlimit or lowering oom_score_adj needs
        // CAP_SYS_RESOURCE of the host, which an init in a user namespace
        // lacks: host root sets them on it (best effort; the init sets
        // them again and reports a failure).
        for r in &plan.process.rlimits {
            let _ = sys::set_rlimit_of(pid.as_raw(), r.resource, r.soft, r.hard);
        }
        if let Some(adj) = plan.process.oom_score_adj {
            let _ = std::fs::write(format!("/proc/{pid}/oom_score_adj"), adj.to_string());
        }
    }
    // The cgroup (the init moved itself on v1), then the prestart and
    // createRuntime hooks: the container's namespaces exist, its init waits.
    if joined {
        if let Err(outcome) = parent_end.wait_joined()? {
            return Err(child_failed(&mut guard, pid, outcome));
        }
        timer.log("init joined its cgroup");
    }
    place(pid.as_raw())?;
    timer.log("in its cgroup, prestart and createRuntime hooks run");
    fault::point("create:placed");
    parent_end.maps_written(plan.idmap_mounts)?;
    let mut overlay_workdir = None;
    if plan.idmap_mounts {
        match parent_end.wait_idmap_request()? {
            IdmapRequest::Mounts { root, binds } => {
                let creator = match idmap {
                    Some(IdMapPlan::HostRoot {
                        uid_start,
                        gid_start,
                    }) => Some((*uid_start, *gid_start)),
                    _ => None,
                };
                let (new_root, workdir) =
                    idmap_mounts(plan, pid, root.as_ref(), &binds, creator, timer)?;
                if let Some(path) = workdir.as_ref().and_then(|w| w.path()) {
                    made_workdir(path)?;
                }
                overlay_workdir = workdir;
                parent_end.idmap_done(new_root.as_ref())?;
                timer.log("rootfs and bind sources idmapped");
                fault::point("create:idmapped");
            }
            IdmapRequest::Failed(outcome) => return Err(child_failed(&mut guard, pid, outcome)),
        }
    }
    Ok(Launching {
        pid,
        guard,
        signals: sfd,
        channel: parent_end,
        overlay_workdir,
    })
}

/// An init [`create`] has cloned and set up, still making its mounts: the
/// caller prepares what needs only its pid while it does (the audit
/// supervisor's checks: in a foreground `run` they were on the path to the
/// first exec), then waits for it. Dropped before [`wait_ready`](Self::wait_ready),
/// it kills the init.
pub struct Launching {
    pid: Pid,
    guard: ChildGuard,
    signals: SignalFd,
    channel: sync::ParentEnd,
    overlay_workdir: Option<mounts::TempDir>,
}

impl Launching {
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Wait until the init is ready (its terminal's master sent to
    /// `console_socket` on the way); the init is killed on failure.
    pub fn wait_ready(
        mut self,
        console_socket: Option<&std::path::Path>,
        timer: Timer,
    ) -> Result<Created, Error> {
        let on_console = |master: OwnedFd| match console_socket {
            Some(path) => crate::terminal::send_to_console_socket(path, &master),
            None => Err("the container made a terminal but no --console-socket was given".into()),
        };
        match self.channel.wait_ready(on_console)? {
            Ok(listener) => {
                self.guard.0 = None;
                timer.log("container init ready, waiting for start");
                fault::point("create:ready");
                Ok(Created {
                    pid: self.pid,
                    listener,
                    signals: self.signals,
                    channel: self.channel,
                    overlay_workdir: self.overlay_workdir,
                })
            }
            Err(outcome) => Err(child_failed(&mut self.guard, self.pid, outcome)),
        }
    }
}

/// A bundle's init: the setup, then the user process's own last steps in
/// the same process (it becomes the user process). Never returns.
fn oci_init(
    plan: &LaunchPlan,
    chan: ChildEnd,
    gate: Gate,
    console: bool,
    join: Option<crate::cgroups::SelfJoin>,
    premade: Premade,
    t: Timer,
) -> ! {
    protect_runtime_binary();
    let result = init_steps(plan, &chan, join, premade, t).and_then(|()| {
        let last = LastSteps {
            process: &plan.process,
            seccomp: &plan.seccomp,
            landlock: plan.landlock.as_ref(),
            audit: plan.audit_exec,
            console,
            ready_point: "init:before-ready",
        };
        become_process(&last, &chan, gate)
    });
    let Err(Failure(step, message, code)) = result;
    chan.failed(step, &message, code);
    sys::exit_now(code)
}

/// What the last steps of a container process need.
struct LastSteps<'a> {
    process: &'a crate::spec::ProcessPlan,
    seccomp: &'a [crate::seccomp::CompiledFilter],
    landlock: Option<&'a LandlockPlan>,
    audit: bool,
    /// Make a terminal and send its master to the parent.
    console: bool,
    /// The fault point just before it says it is ready.
    ready_point: &'static str,
}

/// The last steps of a container process, shared by a bundle's init and
/// `exec`: terminal, cwd, rlimits, ids and capabilities, no_new_privs,
/// fds, signals, Landlock, the exec-audit filter, ready, the start gate,
/// seccomp, execve. Returns only on failure.
fn become_process(
    last: &LastSteps,
    chan: &ChildEnd,
    gate: Gate,
) -> Result<std::convert::Infallible, Failure> {
    let p = last.process;
    // The terminal comes from the container's own devpts; the engine gets
    // the master, the slave becomes stdio.
    if p.terminal && last.console {
        let (master, slave) = crate::terminal::open_pty().map_err(fail("terminal"))?;
        chan.console(&master).map_err(fail("terminal"))?;
        drop(master);
        crate::terminal::attach(&slave).map_err(fail("terminal"))?;
    }
    let _ = nix::unistd::setsid();
    let gate_fd = match &gate {
        Gate::Fifo(fd) => Some(std::os::fd::AsRawFd::as_raw_fd(fd)),
        Gate::Now => None,
    };
    // Only stdio, the fds the caller passes on (3..3+extra_fds), the
    // channel and the gate survive, and they are closed before the cwd is
    // entered: a cwd of /proc/self/fd/N must never reach a directory of the
    // host through an fd the runtime leaked.
    let passed = 3..3 + p.extra_fds as i32;
    let keep: Vec<_> = [Some(chan.as_raw_fd()), gate_fd]
        .into_iter()
        .flatten()
        .chain(passed)
        .collect();
    close_inherited_fds(&keep)?;
    // The cwd is resolved inside the container's root, never through a
    // magic link.
    let cwd_err = |e: String| Failure("process.cwd", format!("{}: {e}", p.cwd.display()), 125);
    let cwd = mounts::resolve_in_root(&p.cwd).map_err(|e| cwd_err(e.errno.desc().into()))?;
    nix::unistd::fchdir(std::os::fd::AsRawFd::as_raw_fd(&cwd))
        .map_err(|e| cwd_err(e.desc().into()))?;
    drop(cwd);
    for r in &p.rlimits {
        process::set_rlimit(r).map_err(fail("process.rlimits"))?;
    }
    process::reset_signals();
    // Landlock's ruleset is built now, while the process may still open
    // every path it names (its ids and capabilities change below), and
    // enforced once no_new_privs is set, before the filters.
    let landlock = match last.landlock {
        Some(plan) => Some(landlock::prepare(plan).map_err(fail("landlock"))?),
        None => None,
    };
    let restrict = |prepared: Option<landlock::Prepared>| -> Result<(), Failure> {
        if let Some(prepared) = prepared {
            prepared.restrict_self().map_err(fail("landlock"))?;
        }
        Ok(())
    };
    // With no_new_privs the filters are installed last, after the
    // capabilities are dropped. Without it, installing a filter needs
    // CAP_SYS_ADMIN, so they come first (as runc does), and the profile
    // must allow the capability calls that follow.
    let audit = || -> Result<Option<OwnedFd>, Failure> {
        if !last.audit {
            return Ok(None);
        }
        sys::seccomp_install_listener(&seccomp::exec_notify_program())
            .map(Some)
            .map_err(fail("exec audit filter"))
    };
    let listener;
    if p.no_new_privileges {
        become_user(p).map_err(fail("capabilities"))?;
        nix::sys::prctl::set_no_new_privs().map_err(fail("no_new_privs"))?;
        restrict(landlock)?;
        listener = audit()?;
    } else {
        // Without no_new_privs, Landlock needs CAP_SYS_ADMIN in the
        // container's user namespace: still held here.
        restrict(landlock)?;
        listener = audit()?;
        seccomp::apply(last.seccomp).map_err(fail("seccomp"))?;
        become_user(p).map_err(fail("capabilities"))?;
    }
    // From here the runtime may exit: this process must outlive it.
    nix::sys::prctl::set_pdeathsig(None).map_err(fail("clear parent-death signal"))?;
    fault::point(last.ready_point);
    chan.ready(listener.as_ref()).map_err(fail("ready"))?;
    drop(listener);
    if let Gate::Fifo(fd) = &gate {
        wait_for_start(fd).map_err(fail("wait for start"))?;
    }
    drop(gate);
    if p.no_new_privileges {
        seccomp::apply(last.seccomp).map_err(fail("seccomp"))?;
    }
    let f = process::exec(&p.args, &p.env);
    Err(Failure("exec", f.message, f.exit_code))
}

/// Until it execs, a process inside the container runs buildcell's own
/// binary: the container must not open it through /proc/PID/exe (the
/// CVE-2019-5736 class). As host root, the process is made non-dumpable,
/// so /proc/PID/exe needs CAP_SYS_PTRACE in the host's user namespace,
/// which no container has; the flag is reset by the kernel at the execve
/// of the user's program. As a regular user container root is that user,
/// who could not write a root-owned binary anyway (and the audit
/// supervisor, without CAP_SYS_PTRACE, could not trace a non-dumpable
/// task), so the flag is left alone there.
fn protect_runtime_binary() -> bool {
    let host_root = crate::userns::host_root();
    if host_root {
        let _ = nix::sys::prctl::set_dumpable(false);
    }
    host_root
}

/// The process's user and capability sets. A uid change makes the kernel
/// mark the task non-dumpable, and a rootless audit supervisor, without
/// CAP_SYS_PTRACE where the task's memory was made (the host's user
/// namespace), could then not trace its exec: every exec would be refused,
/// failing closed. So the dumpable flag is kept as it was before the
/// change: cleared as host root ([`protect_runtime_binary`]), set
/// otherwise (the task's host uid cannot write the runtime binary).
fn become_user(p: &crate::spec::ProcessPlan) -> Result<(), capabilities::CapError> {
    let was_dumpable = nix::sys::prctl::get_dumpable().unwrap_or(false);
    capabilities::apply(&p.caps, &p.user)?;
    if was_dumpable {
        let _ = nix::sys::prctl::set_dumpable(true);
    }
    Ok(())
}

/// A process started by `exec` in a running container: forked, ready to
/// exec, with its exec-audit listener.
pub struct Spawned {
    pub pid: Pid,
    pub listener: Option<OwnedFd>,
    pub signals: SignalFd,
    pub channel: sync::ParentEnd,
}

/// `exec`: start `process` in the namespaces of the container whose init
/// is `init`. An intermediate child enters the namespaces (the user
/// namespace first, the mount namespace last) and forks the process, which
/// is then inside the container's pid namespace; `placement` puts it in
/// the container's cgroup before it goes on (with a `join`, the process
/// moves itself in once the parent has heard of it).
#[allow(clippy::too_many_arguments)]
pub fn exec(
    init: i32,
    process: &crate::spec::ProcessPlan,
    seccomp: &[crate::seccomp::CompiledFilter],
    landlock: Option<&LandlockPlan>,
    audit: bool,
    console_socket: Option<&std::path::Path>,
    placement: Placement<impl FnOnce(i32) -> Result<(), Error>>,
    timer: Timer,
) -> Result<Spawned, Error> {
    // (An exec'd process is not cloned into a v2 cgroup: the
    // intermediate that forks it is container root by then, whom the
    // kernel would not let move it; `then` moves it there.)
    let Placement {
        entry: crate::cgroups::Entry { join, into: _ },
        then: place,
    } = placement;
    landlock_preflight(landlock)?;
    let (parent_end, child_end) = sync::channel()?;
    let sfd = reaper::signal_fd().map_err(|errno| Error::Setup {
        step: "block signals",
        message: errno.desc().into(),
    })?;
    let middle = match sys::clone_fork(0).map_err(|e| Error::Setup {
        step: "fork",
        message: e.to_string(),
    })? {
        None => {
            drop(parent_end);
            let last = LastSteps {
                process,
                seccomp,
                landlock,
                audit,
                console: console_socket.is_some(),
                ready_point: "exec-process:before-ready",
            };
            exec_middle(init, &last, join, child_end)
        }
        Some(pid) => Pid::from_raw(pid),
    };
    drop(join);
    drop(child_end);
    let spawned = parent_end.wait_spawned();
    // The intermediate exits once it has forked; reap it either way.
    let _ = waitpid(middle, None);
    let pid = match spawned? {
        Ok(pid) => Pid::from_raw(pid),
        Err(outcome) => return Err(child_failed(&mut ChildGuard(None), middle, outcome)),
    };
    let mut guard = KillGuard(Some(pid));
    timer.log(&format!(
        "exec: process forked in the container, host pid {pid}"
    ));
    fault::point("exec:forked");
    place(pid.as_raw())?;
    parent_end.placed()?;
    fault::point("exec:placed");
    let on_console = |master: OwnedFd| match console_socket {
        Some(path) => crate::terminal::send_to_console_socket(path, &master),
        None => Err("the process made a terminal but no --console-socket was given".into()),
    };
    match parent_end.wait_ready(on_console)? {
        Ok(listener) => {
            guard.0 = None;
            Ok(Spawned {
                pid,
                listener,
                signals: sfd,
                channel: parent_end,
            })
        }
        Err(SetupOutcome::Failed {
            step,
            message,
            exit_code,
        }) => Err(Error::Child {
            step,
            message,
            exit_code,
        }),
        Err(_) => Err(Error::Setup {
            step: "exec",
            message: "the process ended before it was ready".into(),
        }),
    }
}

/// Kills a process that is not our child (an `exec`'d one) on error.
struct KillGuard(Option<Pid>);

impl Drop for KillGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take() {
            let _ = kill(pid, Signal::SIGKILL);
        }
    }
}

/// The intermediate of `exec`: enter the container's namespaces, fork the
/// process, report its pid, exit. Never returns.
fn exec_middle(
    init: i32,
    last: &LastSteps,
    join: Option<crate::cgroups::SelfJoin>,
    chan: ChildEnd,
) -> ! {
    let protected = protect_runtime_binary();
    // Raised here, while this process may: in the container's user
    // namespace a hard limit can no longer be raised. The process sets
    // them again (then a no-op) and reports what failed.
    for r in &last.process.rlimits {
        let _ = process::set_rlimit(r);
    }
    match namespaces::enter_all_of(init) {
        Err(e) => {
            chan.failed("join the container's namespaces", &e.to_string(), 125);
            sys::exit_now(125);
        }
        // In the container's user namespace, become its root at once: the
        // host uid is not mapped there, and files (a terminal) made with
        // an unmapped id would belong to nobody.
        Ok(true) => {
            let _ = nix::unistd::setresgid(0.into(), 0.into(), 0.into());
            let _ = nix::unistd::setresuid(0.into(), 0.into(), 0.into());
            if protected {
                let _ = nix::sys::prctl::set_dumpable(false);
            }
        }
        Ok(false) => {}
    }
    match sys::clone_fork(0) {
        Err(e) => {
            chan.failed("fork", &e.to_string(), 125);
            sys::exit_now(125)
        }
        Ok(Some(pid)) => {
            let _ = chan.spawned(pid);
            sys::exit_now(0)
        }
        Ok(None) => {
            // No parent-death signal: the parent is the intermediate, which
            // exits now. If `buildcell exec` dies instead, the channel
            // closes and the wait below fails.
            // Placed by the parent, or told to move itself in (cgroup v1),
            // closing the cgroup files before anything else.
            let result = chan
                .wait_placed()
                .map_err(fail("wait for the cgroup"))
                .and_then(|()| match join {
                    Some(join) => {
                        let joined = join.join();
                        drop(join);
                        joined.map_err(|m| Failure("cgroup", m, 125))
                    }
                    None => Ok(()),
                })
                .and_then(|()| become_process(last, &chan, Gate::Now));
            let Err(Failure(step, message, code)) = result;
            chan.failed(step, &message, code);
            sys::exit_now(code)
        }
    }
}

/// Block until `start` writes its byte into the exec fifo.
fn wait_for_start(fd: &OwnedFd) -> nix::Result<()> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    loop {
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
        let mut b = [0u8; 1];
        match nix::unistd::read(std::os::fd::AsRawFd::as_raw_fd(fd), &mut b) {
            Ok(1) => return Ok(()),
            Ok(_) | Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}
