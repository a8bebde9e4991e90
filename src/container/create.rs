//! `create` and `run`: a bundle checked against its profile, then the
//! state directory, the id range, the cgroup, the audit log and
//! supervisor, and the init launched, each piece saved as it is made so
//! that `delete --force` finds it if this process dies half-way.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use oci_spec::runtime::Spec;

use crate::audit::{self, log::AuditLog};
use crate::cgroups::{Cgroup, CgroupPath, Resources};
use crate::error::Error;
use crate::fault;
use crate::idpool;
use crate::launch::{self, Gate, Timer};
use crate::spec::{self, LaunchPlan};
use crate::userns::{IdMapPlan, UserNamespacePolicy};

use super::bundle::load_bundle;
use super::bundle::{bundle_idmap, policy_plan, BundleSeccomp};
use super::state::{ContainerDir, OciState, Saved, Status};
use super::supervisor::{bind_control, bundle_redactor, open_container_log, start_supervisor};
use super::{
    rootless, state, usage, write_pid_file, AUDIT_FAILURE_FILE, NO_CGROUP_ANNOTATION, OCI_VERSION,
    USERNS_ANNOTATION,
};

/// `create`/`run` arguments.
pub struct CreateArgs {
    pub id: String,
    pub bundle: PathBuf,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    /// How the operator chose the profile (`--profile`, `buildcell-NAME`).
    pub profile: crate::policy::Choice,
    /// Fds passed on to the process (see [`passed_fds`]).
    pub extra_fds: PassedFds,
}

/// The fds the caller passes to the container's process, as runc does:
/// systemd's socket activation (`LISTEN_FDS`, fds 3..) then
/// `--preserve-fds N` (the next N).
#[derive(Debug, Clone, Copy, Default)]
pub struct PassedFds {
    pub listen: u32,
    pub preserve: u32,
}

/// Check the fds the caller passes: `LISTEN_FDS` from the environment and
/// `--preserve-fds N`; each must be open.
pub fn passed_fds(preserve: u32) -> Result<PassedFds, Error> {
    let listen = match std::env::var("LISTEN_FDS") {
        Ok(v) if !v.is_empty() => v
            .parse::<u32>()
            .map_err(|_| usage(format!("LISTEN_FDS={v:?}: not a number of fds")))?,
        _ => 0,
    };
    let fds = PassedFds { listen, preserve };
    let total = fds.total();
    if total > 1024 {
        return Err(usage(format!(
            "--preserve-fds {preserve} (+ LISTEN_FDS {listen}): at most 1024 fds can be passed"
        )));
    }
    for fd in 3..3 + total as i32 {
        if nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).is_err() {
            return Err(usage(format!(
                "--preserve-fds {preserve} (+ LISTEN_FDS {listen}): fd {fd} is not open; pass only fds this process has"
            )));
        }
    }
    Ok(fds)
}

impl PassedFds {
    pub fn total(&self) -> u32 {
        self.listen + self.preserve
    }

    /// Give `plan` the fds, and the socket-activation environment
    /// (`LISTEN_FDS`, `LISTEN_PID=1`) when there are listen fds.
    pub(super) fn apply(&self, plan: &mut crate::spec::ProcessPlan) {
        plan.extra_fds = self.total();
        if self.listen > 0 {
            plan.env
                .retain(|e| !e.starts_with("LISTEN_FDS=") && !e.starts_with("LISTEN_PID="));
            plan.env.push(format!("LISTEN_FDS={}", self.listen));
            plan.env.push("LISTEN_PID=1".into());
        }
    }
}

/// Whether `create` adds a user namespace to this bundle: one without its
/// own, from host root (in the initial user namespace), policy `Add`.
/// `Require` refuses such a bundle (one line); a rootless engine's bundle
/// already runs in the engine's user namespace.
pub(super) fn adds_userns(policy: UserNamespacePolicy, plan: &LaunchPlan) -> Result<bool, Error> {
    if plan.namespaces.user || !crate::userns::host_root() {
        return Ok(false);
    }
    match policy {
        UserNamespacePolicy::Add => Ok(true),
        UserNamespacePolicy::Off => Ok(false),
        UserNamespacePolicy::Require => Err(usage(
            "linux.namespaces: no user namespace, and the policy requires one (user_namespace = \"require\"): the container would run as host root; have the engine give it one (podman --userns=auto or --uidmap, dockerd --userns-remap), run the engine rootless, or use user_namespace = \"add\"",
        )),
    }
}

/// `net.ipv4.ping_group_range` names gids of the writer's user namespace:
/// docker's `0 2147483647` (every group) cannot be written in a namespace
/// that maps 0..65535. Clamped to the mapped gids, it still means every
/// group of the container.
pub(super) fn clamp_sysctls_to_range(sysctl: &mut [(String, String)]) {
    let top = crate::userns::RANGE_SIZE - 1;
    for (k, v) in sysctl.iter_mut() {
        if k != "net.ipv4.ping_group_range" {
            continue;
        }
        let ids: Vec<u64> = v
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if let [lo, hi] = ids[..] {
            let c = |x: u64| x.min(u64::from(top));
            *v = format!("{} {}", c(lo), c(hi));
        }
    }
}

/// Releases a reserved id range unless the container was created.
pub(super) struct RangeGuard(Option<(idpool::Slot, PathBuf)>);

impl Drop for RangeGuard {
    fn drop(&mut self) {
        if let Some((slot, dir)) = self.0.take() {
            idpool::release(&slot, &dir);
        }
    }
}

/// Removes a half-created container's directory on error.
pub(super) struct DirGuard(Option<PathBuf>);

impl Drop for DirGuard {
    fn drop(&mut self) {
        if let Some(d) = self.0.take() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// `create` (foreground = false) and `run` (foreground = true).
pub fn create(
    root: &Path,
    args: &CreateArgs,
    foreground: bool,
    verbose: bool,
) -> Result<i32, Error> {
    let timer = Timer::new(verbose);
    state::check_id(&args.id)?;
    let mut bundle = load_bundle(&args.bundle)?;
    if foreground && bundle.spec.process().is_none() {
        return Err(usage(
            "process: missing in config.json; run needs a process to run",
        ));
    }
    // The config's own errors first (a namespace path that is not one),
    // then the policy: a bundle that asks for more than its profile allows
    // is refused with every violation, before anything exists.
    let mut own_seccomp = BundleSeccomp::compile(&bundle.spec)?;
    spec::plan_in(
        &bundle.spec,
        Some(&bundle.dir),
        own_seccomp.filters.clone(),
        verbose,
    )?;
    timer.log("config.json parsed and validated");
    let mut policy = crate::policy::evaluate(
        &mut bundle.spec,
        Some(&bundle.dir),
        &args.profile,
        !rootless(),
    )?;
    policy.refuse_violations("bundle")?;
    timer.log(&format!(
        "policy: profile {} ({}) allows the bundle",
        policy.loaded.profile.name, policy.selection.why
    ));
    let mut plan = policy_plan(&bundle, &mut own_seccomp, &policy.loaded.profile, verbose)?;
    let landlock_report = launch::landlock_preflight(plan.landlock.as_ref())?;
    if plan.process.terminal && args.console_socket.is_none() && !foreground {
        return Err(usage(
            "process.terminal is true but no --console-socket was given; pass one or set terminal to false",
        ));
    }
    let mut idmap = bundle_idmap(&plan, &bundle.spec)?;
    let add_userns = adds_userns(
        crate::policy::user_namespace_policy(&policy.loaded.profile),
        &plan,
    )?;
    timer.log("config.json validated");

    let dir = ContainerDir::create(root, &args.id)?;
    let mut guard = DirGuard(Some(dir.dir.clone()));
    let owner = nix::unistd::geteuid().as_raw().to_string();
    // What exists so far, saved as each piece is made (status `creating`):
    // if this process dies half-way, `delete --force` finds every piece.
    let mut progress = Saved {
        oci: OciState {
            oci_version: OCI_VERSION.into(),
            id: args.id.clone(),
            pid: 0,
            status: Status::Creating,
            bundle: bundle.dir.clone(),
            rootfs: plan.rootfs.clone(),
            created: audit::record::now(),
            owner: owner.clone(),
            annotations: BTreeMap::new(),
        },
        init_start_time: 0,
        cgroup: None,
        audit_log: None,
        supervisor_pid: None,
        config_sha256: bundle.sha256.clone(),
        userns: None,
        overlay_workdir: None,
        supervisor_start_time: None,
    };
    dir.save(&progress)?;
    fault::point("create:state-dir-made");
    // `process.user = "random"`: the passwd file lives in the state dir.
    let rootfs = plan.rootfs.clone();
    if let Some(note) = crate::policy::check::apply_random_user(
        &policy.loaded.profile,
        &mut bundle.spec,
        &rootfs,
        &dir.dir.join("passwd"),
        crate::policy::check::random_seed(),
    )
    .map_err(|e| usage(format!("process.user = \"random\": {e}")))?
    {
        policy.notes.push(note);
        plan = policy_plan(&bundle, &mut own_seccomp, &policy.loaded.profile, verbose)?;
    }
    // Looks-like-root: a user namespace of its own, container ids
    // 0..65535 = a host range reserved for this container alone.
    let mut range_guard = RangeGuard(None);
    if add_userns {
        let (step_uid, step_gid) = crate::userns::step_host_range();
        let pool = idpool::Pool::load(step_uid, step_gid).map_err(usage)?;
        let slot = idpool::reserve(&pool, &dir.dir).map_err(usage)?;
        range_guard.0 = Some((slot, dir.dir.clone()));
        progress.userns = Some(slot);
        dir.save(&progress)?;
        fault::point("create:range-reserved");
        idmap = Some(IdMapPlan::HostRoot {
            uid_start: slot.uid_start,
            gid_start: slot.gid_start,
        });
        plan.namespaces.user = true;
        plan.idmap_mounts = true;
        clamp_sysctls_to_range(&mut plan.sysctl);
        timer.log(&format!("user namespace added: {}", slot.describe()));
    }
    let added_range = range_guard.0.as_ref().map(|(slot, _)| *slot);
    // The config as created: `exec` takes the seccomp filter and the
    // process defaults from it, whatever happens to the bundle later.
    let config_copy = dir.dir.join("config.json");
    std::fs::write(
        &config_copy,
        serde_json::to_vec(&bundle.spec).map_err(|e| usage(e.to_string()))?,
    )
    .map_err(|e| usage(format!("{}: {e}", config_copy.display())))?;
    let gate = if foreground {
        Gate::Now
    } else {
        nix::unistd::mkfifo(&dir.fifo(), nix::sys::stat::Mode::from_bits_truncate(0o600))
            .map_err(|e| usage(format!("{}: mkfifo: {e}", dir.fifo().display())))?;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(dir.fifo())
            .map_err(|e| usage(format!("{}: {e}", dir.fifo().display())))?;
        Gate::Fifo(OwnedFd::from(f))
    };

    let annotations: BTreeMap<String, String> = bundle
        .spec
        .annotations()
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut annotations = annotations;
    annotations.extend(policy.annotations());
    annotations.insert(
        "org.buildcell.landlock".into(),
        match &landlock_report {
            Some(r) => crate::policy::landlock_summary(r),
            None => "off (landlock.mode = \"off\")".into(),
        },
    );
    std::fs::write(
        dir.dir.join(crate::policy::STATE_FILE),
        serde_json::to_vec(&policy.loaded.profile).map_err(|e| usage(e.to_string()))?,
    )
    .map_err(|e| usage(format!("{}: {e}", dir.dir.display())))?;
    if let Some(slot) = &added_range {
        annotations.insert(USERNS_ANNOTATION.into(), slot.describe());
    }
    let (cgroup, drop_mknod) = make_cgroup(&bundle.spec, &args.id, &mut annotations)?;
    let cgroup_guard = CgroupGuard(cgroup.clone());
    if cgroup.is_some() {
        timer.log("cgroup created");
        progress.cgroup = cgroup.as_ref().and_then(|c| serde_json::to_value(c).ok());
        dir.save(&progress)?;
    }
    fault::point("create:cgroup-made");
    let mut log = open_container_log(&args.id, &bundle, &idmap, &annotations, &policy)?;
    log.set_redactor(bundle_redactor(&bundle.spec, &plan, &policy.loaded.profile));
    log.sync_every_record(policy.loaded.profile.sync_every_record);
    let log_path = log.path().to_path_buf();
    progress.audit_log = Some(log_path.clone());
    dir.save(&progress)?;
    fault::point("create:log-opened");
    // A create that fails before the log has an owner ends the log: it
    // then verifies as complete, with no exec.
    let mut log = FinishOnDrop(Some(log));

    if drop_mknod {
        let caps = &mut plan.process.caps;
        for set in [
            &mut caps.bounding,
            &mut caps.effective,
            &mut caps.permitted,
            &mut caps.inheritable,
            &mut caps.ambient,
        ] {
            set.retain(|c| *c != caps::Capability::CAP_MKNOD);
        }
    }
    if let Some(cg) = &cgroup {
        plan.cgroup_dirs = cg
            .dirs()
            .iter()
            .map(|d| {
                let name = d
                    .controllers
                    .iter()
                    .map(|c| c.trim_start_matches("name=").to_string())
                    .collect::<Vec<_>>()
                    .join(",");
                (name, d.path.clone())
            })
            .collect();
    }
    let hooks = bundle.spec.hooks().clone().unwrap_or_default();
    let oci_state = |pid: i32, status: Status| OciState {
        oci_version: OCI_VERSION.into(),
        id: args.id.clone(),
        pid,
        status,
        bundle: bundle.dir.clone(),
        rootfs: plan.rootfs.clone(),
        created: String::new(),
        owner: owner.clone(),
        annotations: annotations.clone(),
    };
    // Detached, the supervisor starts now, before any namespace is entered;
    // it takes the log. A foreground `run` keeps the log and serves itself.
    let (mut supervisor, mut log) = if foreground {
        (None, log)
    } else {
        let control = bind_control(&dir.dir)?;
        let owned = log.0.take().ok_or_else(|| usage("audit log missing"))?;
        let sup = start_supervisor(control, owned, dir.dir.join(AUDIT_FAILURE_FILE))?;
        progress.supervisor_pid = Some(sup.pid);
        progress.supervisor_start_time = state::start_time(sup.pid);
        dir.save(&progress)?;
        fault::point("create:supervisor-forked");
        (Some(sup), FinishOnDrop(None))
    };
    let progress = std::cell::RefCell::new(progress);
    // The init moves itself in (v1) or is cloned in (v2): nobody writes
    // its pid into cgroup.procs (cgroups::Cgroup::entry).
    let entry = match &cgroup {
        Some(cg) => cg.entry().map_err(|e| usage(e.to_string()))?,
        None => Default::default(),
    };
    let by_itself = entry.by_itself();
    let place = |pid: i32| -> Result<(), Error> {
        // The init is made: it is what `delete` must find from now on.
        {
            let mut p = progress.borrow_mut();
            p.oci.pid = pid;
            p.init_start_time = state::start_time(pid).unwrap_or(0);
            dir.save(&p)?;
        }
        if let Some(cg) = cgroup.as_ref().filter(|_| !by_itself) {
            cg.add_pid(pid).map_err(|e| usage(e.to_string()))?;
        }
        let state = serde_json::to_string(&oci_state(pid, Status::Creating)).unwrap_or_default();
        #[allow(deprecated)]
        let prestart = hooks.prestart().clone().unwrap_or_default();
        crate::hooks::run_all("prestart", &prestart, &state, crate::hooks::Place::Runtime)
            .map_err(usage)?;
        let create_runtime = hooks.create_runtime().clone().unwrap_or_default();
        crate::hooks::run_all(
            "createRuntime",
            &create_runtime,
            &state,
            crate::hooks::Place::Runtime,
        )
        .map_err(usage)
    };
    let console = args
        .console_socket
        .as_deref()
        .filter(|_| plan.process.terminal);
    args.extra_fds.apply(&mut plan.process);
    // So is the work directory of an overlay rootfs made again.
    let made_workdir = |w: &Path| -> Result<(), Error> {
        let mut p = progress.borrow_mut();
        p.overlay_workdir = Some(w.to_path_buf());
        Ok(dir.save(&p)?)
    };
    let launching = launch::create(
        &plan,
        idmap.as_ref(),
        gate,
        console.is_some(),
        launch::Placement { entry, then: place },
        made_workdir,
        timer,
    )?;
    // While the init makes its mounts: a foreground `run` serves the audit
    // listener itself, and what its supervisor needs of the init (and the
    // control socket `exec` hands listeners over) is found now, not on the
    // way to the init's first exec.
    let early = (foreground && plan.audit_exec).then(|| {
        (
            audit::supervisor::Watch::of(launching.pid()),
            bind_control(&dir.dir).ok(),
        )
    });
    let init_start_time = state::start_time(launching.pid().as_raw()).unwrap_or(0);
    let mut created = launching.wait_ready(console, timer)?;
    let progress = progress.into_inner();
    let overlay_workdir = created.overlay_workdir.take();
    let pid = created.pid;
    let mut kill_guard = KillGuard(Some(pid));
    let create_container = hooks.create_container().clone().unwrap_or_default();
    if !create_container.is_empty() {
        let state =
            serde_json::to_string(&oci_state(pid.as_raw(), Status::Creating)).unwrap_or_default();
        crate::hooks::run_all(
            "createContainer",
            &create_container,
            &state,
            crate::hooks::Place::Container {
                init: pid.as_raw(),
                open_in_runtime: true,
            },
        )
        .map_err(usage)?;
    }

    let saved = Saved {
        oci: OciState {
            oci_version: OCI_VERSION.into(),
            id: args.id.clone(),
            pid: pid.as_raw(),
            status: Status::Created,
            bundle: bundle.dir.clone(),
            rootfs: plan.rootfs.clone(),
            created: audit::record::now(),
            owner,
            annotations,
        },
        init_start_time,
        cgroup: cgroup.as_ref().and_then(|c| serde_json::to_value(c).ok()),
        audit_log: Some(log_path.clone()),
        supervisor_pid: None,
        config_sha256: bundle.sha256.clone(),
        userns: added_range,
        overlay_workdir: overlay_workdir
            .as_ref()
            .and_then(|d| d.path().map(Path::to_path_buf)),
        supervisor_start_time: progress.supervisor_start_time,
    };

    if let Some(mut log) = log.0.take() {
        dir.save(&saved)?;
        if let Some(p) = &args.pid_file {
            write_pid_file(p, pid.as_raw())?;
        }
        kill_guard.0 = None;
        // Like runc run: this process stays the init's parent, serves the
        // audit listener and forwards signals until the container exits.
        let dir_path = dir.dir.clone();
        drop(dir);
        let code = match created.listener {
            Some(l) => {
                let (watch, control) = early.unwrap_or_else(|| {
                    (
                        audit::supervisor::Watch::of(pid),
                        bind_control(&dir_path).ok(),
                    )
                });
                let out = audit::supervisor::run(
                    l,
                    control,
                    watch,
                    &created.signals,
                    &mut log,
                    audit::supervisor::Mode::Parent,
                );
                if let Some(why) = out.audit_failure {
                    let _ = log.finish(Some(out.exit_code));
                    return Err(usage(format!("audit: {why}; the container was stopped")));
                }
                out.exit_code
            }
            None => crate::reaper::supervise(pid, &created.signals, false),
        };
        timer.log(&format!("container exited ({code})"));
        let failure = created.channel.take_failure();
        let finished = log.finish(Some(code));
        timer.log("audit log ended");
        drop(cgroup_guard);
        timer.log("cgroup removed");
        drop(range_guard);
        drop(guard);
        timer.log("state removed");
        if let Some((step, message, exit_code)) = failure {
            return Err(Error::Child {
                step,
                message,
                exit_code,
            });
        }
        finished.map_err(|e| usage(e.to_string()))?;
        return Ok(code);
    }

    let mut saved = saved;
    saved.supervisor_pid = supervisor.as_ref().map(|s| s.pid);
    if let Some(listener) = created.listener {
        match &supervisor {
            Some(sup) => {
                sup.give(&listener, pid)?;
                fault::point("create:listener-given");
            }
            None => {
                return Err(usage(
                    "exec audit requested but no audit supervisor runs; nothing runs unaudited",
                ))
            }
        }
    }
    if let Some(p) = &args.pid_file {
        write_pid_file(p, pid.as_raw())?;
    }
    dir.save(&saved)?;
    fault::point("create:saved");
    kill_guard.0 = None;
    guard.0 = None;
    if let Some(s) = &mut supervisor {
        s.reap = false;
    }
    range_guard.0 = None;
    if let Some(d) = overlay_workdir {
        d.keep();
    }
    std::mem::forget(cgroup_guard);
    timer.log("created");
    Ok(0)
}

/// Ends an audit log nobody else will end (create failed first).
pub(super) struct FinishOnDrop(Option<AuditLog>);

impl Drop for FinishOnDrop {
    fn drop(&mut self) {
        if let Some(log) = self.0.take() {
            let _ = log.finish(None);
        }
    }
}

/// Removes the cgroup of a container that was not created after all (or
/// whose foreground `run` ended).
pub(super) struct CgroupGuard(Option<Cgroup>);

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        if let Some(cg) = self.0.take() {
            let _ = cg.kill_and_remove();
        }
    }
}

/// Create the container's cgroup with the bundle's limits. A caller that
/// may not create cgroups (rootless, no delegation) goes on without one,
/// and the state's annotations say so; as host root that is an error.
pub(super) fn make_cgroup(
    spec: &Spec,
    id: &str,
    annotations: &mut BTreeMap<String, String>,
) -> Result<(Option<Cgroup>, bool), Error> {
    let linux = spec.linux().as_ref();
    let path = CgroupPath::from_spec(linux.and_then(|l| l.cgroups_path().as_deref()), id)
        .map_err(|e| usage(e.to_string()))?;
    let mut resources = match linux.and_then(|l| l.resources().as_ref()) {
        Some(r) => Resources::try_from(r).map_err(|e| usage(e.to_string()))?,
        None => Resources::default(),
    };
    let layout = crate::cgroups::Layout::detect().map_err(|e| usage(e.to_string()))?;
    if let Some(rules) = &mut resources.devices {
        rules.extend(default_device_rules());
    }
    let mut v2_devices_unenforced = false;
    if layout.version() == crate::cgroups::Version::V2 && resources.devices.is_some() && rootless()
    {
        // Only host root may load the BPF device program: rootless, the
        // rules cannot be enforced. The container keeps the spec's device
        // nodes (bound from the host) and loses CAP_MKNOD, so it cannot
        // make any other node.
        resources.devices = None;
        v2_devices_unenforced = true;
        annotations.insert(
            "org.buildcell.cgroup.devices".into(),
            "device rules not enforced on cgroup v2 rootless (the BPF device program needs host root): only the spec's device nodes exist, CAP_MKNOD dropped".into(),
        );
    }
    match Cgroup::create_in(&layout, &path, &resources) {
        Ok(cg) => Ok((Some(cg), v2_devices_unenforced)),
        Err(e) if e.is_permission_denied() && rootless() => {
            annotations.insert(
                NO_CGROUP_ANNOTATION.into(),
                format!("none: {e}; the container runs without cgroup limits"),
            );
            Ok((None, v2_devices_unenforced))
        }
        Err(e) => Err(usage(e.to_string())),
    }
}

/// Device rules every container gets after the bundle's own, as runc
/// does (engines send "deny all" and count on these): mknod of any node,
/// and the standard nodes of /dev.
pub(super) fn default_device_rules() -> Vec<crate::cgroups::DeviceRule> {
    use crate::cgroups::{DeviceKind::*, DeviceRule};
    let rules = [
        (Char, None, None, "m"),
        (Block, None, None, "m"),
        (Char, Some(1), Some(3), "rwm"), // null
        (Char, Some(1), Some(5), "rwm"), // zero
        (Char, Some(1), Some(7), "rwm"), // full
        (Char, Some(1), Some(8), "rwm"), // random
        (Char, Some(1), Some(9), "rwm"), // urandom
        (Char, Some(5), Some(0), "rwm"), // tty
        (Char, Some(5), Some(1), "rwm"), // console
        (Char, Some(5), Some(2), "rwm"), // ptmx
        (Char, Some(136), None, "rwm"),  // pts
    ];
    rules
        .into_iter()
        .filter_map(|(k, maj, min, a)| DeviceRule::new(true, k, maj, min, a).ok())
        .collect()
}

/// Kills the init if `create` fails after the clone.
pub(super) struct KillGuard(Option<Pid>);

impl Drop for KillGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take() {
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(pid, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_group_range_is_clamped_to_the_mapped_gids() {
        let mut s = vec![
            (
                "net.ipv4.ping_group_range".to_string(),
                "0 2147483647".to_string(),
            ),
            (
                "net.ipv4.ip_unprivileged_port_start".to_string(),
                "0".to_string(),
            ),
        ];
        clamp_sysctls_to_range(&mut s);
        assert_eq!(s[0].1, "0 65535");
        assert_eq!(s[1].1, "0");
    }
}
