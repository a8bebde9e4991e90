//! The OCI container lifecycle behind runc's command line: `create`,
//! `start`, `state`, `kill`, `delete`, `run`, `list`. Each operation is a
//! short sequence over the state directory ([`state`]), the launcher and
//! the audit supervisor; the CLI only parses flags and calls these.

pub mod state;

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use oci_spec::runtime::Spec;

use crate::audit::{self, log::AuditLog};
use crate::cgroups::{Cgroup, CgroupPath, FreezerState, Resources};
use crate::error::Error;
use crate::fault;
use crate::idpool;
use crate::launch::{self, Gate, Timer};
use crate::spec::{self, LaunchPlan};
use crate::userns::{IdMapPlan, UserNamespacePolicy};
use state::{ContainerDir, OciState, Saved, Status};

/// The OCI runtime spec version buildcell implements.
pub const OCI_VERSION: &str = "1.2.0";

fn usage(msg: impl Into<String>) -> Error {
    Error::Usage(msg.into())
}

impl From<state::StateError> for Error {
    fn from(e: state::StateError) -> Self {
        Error::Usage(e.to_string())
    }
}

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
    fn apply(&self, plan: &mut crate::spec::ProcessPlan) {
        plan.extra_fds = self.total();
        if self.listen > 0 {
            plan.env
                .retain(|e| !e.starts_with("LISTEN_FDS=") && !e.starts_with("LISTEN_PID="));
            plan.env.push(format!("LISTEN_FDS={}", self.listen));
            plan.env.push("LISTEN_PID=1".into());
        }
    }
}

/// The state annotation naming the user namespace buildcell added and its
/// host range: `added: 0 START 65536`.
pub const USERNS_ANNOTATION: &str = "org.buildcell.userns";

/// Whether `create` adds a user namespace to this bundle: one without its
/// own, from host root (in the initial user namespace), policy `Add`.
/// `Require` refuses such a bundle (one line); a rootless engine's bundle
/// already runs in the engine's user namespace.
fn adds_userns(policy: UserNamespacePolicy, plan: &LaunchPlan) -> Result<bool, Error> {
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
fn clamp_sysctls_to_range(sysctl: &mut [(String, String)]) {
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
struct RangeGuard(Option<(idpool::Slot, PathBuf)>);

impl Drop for RangeGuard {
    fn drop(&mut self) {
        if let Some((slot, dir)) = self.0.take() {
            idpool::release(&slot, &dir);
        }
    }
}

/// A bundle's config.json, parsed, with its SHA-256.
pub struct Bundle {
    pub dir: PathBuf,
    pub spec: Spec,
    pub sha256: String,
}

/// Read and parse `BUNDLE/config.json`; errors name the JSON path.
pub fn load_bundle(dir: &Path) -> Result<Bundle, Error> {
    load_config(&dir.join("config.json"), dir)
}

/// Read and parse the config at `path` of the bundle `dir`.
pub fn load_config(path: &Path, dir: &Path) -> Result<Bundle, Error> {
    let dir =
        std::path::absolute(dir).map_err(|e| usage(format!("--bundle {}: {e}", dir.display())))?;
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let data = std::fs::read(&path).map_err(|e| {
        usage(format!(
            "{}: cannot read: {e}; give the bundle directory with --bundle",
            path.display()
        ))
    })?;
    let spec = parse_config(&data, &path.display().to_string())?;
    Ok(Bundle {
        sha256: audit::sha256_hex(&data),
        dir,
        spec,
    })
}

/// Parse a config.json's bytes (`name` is the file, for messages): errors
/// name the JSON path; only OCI 1.x is accepted. Pure, so that hostile
/// input can be fuzzed (`fuzz/fuzz_targets/config_json.rs`).
pub fn parse_config(data: &[u8], name: &str) -> Result<Spec, Error> {
    let de = &mut serde_json::Deserializer::from_slice(data);
    let spec: Spec = serde_path_to_error::deserialize(de)
        .map_err(|e| usage(format!("{name}: at {}: {}", e.path(), e.inner())))?;
    let major = spec.version().split('.').next().unwrap_or("");
    if major != "1" {
        return Err(usage(format!(
            "{name}: ociVersion {:?} is not supported (buildcell implements {OCI_VERSION}); write a 1.x config",
            spec.version()
        )));
    }
    Ok(spec)
}

/// The validated plan of a bundle: its seccomp filters compiled.
pub fn bundle_plan(b: &Bundle, verbose: bool) -> Result<LaunchPlan, Error> {
    let filters = bundle_seccomp(&b.spec, b.spec.process().as_ref())?;
    Ok(spec::plan_in(&b.spec, Some(&b.dir), filters, verbose)?)
}

/// A bundle's own seccomp filters, compiled once per `create` (an engine's
/// profile took ~0.25 ms a compile, and the plan is made two or three
/// times), and again only if what they were compiled from has changed:
/// the config's `linux.seccomp` and the process's bounding set (the policy
/// narrows a pod sandbox's capabilities, `policy::evaluate`).
struct BundleSeccomp {
    from: SeccompInput,
    filters: Vec<crate::seccomp::CompiledFilter>,
}

type SeccompInput = (Option<oci_spec::runtime::LinuxSeccomp>, Vec<String>);

impl BundleSeccomp {
    fn input(spec: &Spec) -> SeccompInput {
        (
            spec.linux().as_ref().and_then(|l| l.seccomp().clone()),
            bounding_caps(spec.process().as_ref()),
        )
    }

    fn compile(spec: &Spec) -> Result<Self, Error> {
        Ok(BundleSeccomp {
            from: Self::input(spec),
            filters: bundle_seccomp(spec, spec.process().as_ref())?,
        })
    }

    /// The filters for the spec as it is now.
    fn current(&mut self, spec: &Spec) -> Result<Vec<crate::seccomp::CompiledFilter>, Error> {
        if Self::input(spec) != self.from {
            *self = Self::compile(spec)?;
        }
        Ok(self.filters.clone())
    }
}

/// The plan of a bundle under its profile: the profile's seccomp filter
/// stacked on the bundle's, and the profile's Landlock plan.
fn policy_plan(
    b: &Bundle,
    own: &mut BundleSeccomp,
    profile: &crate::policy::Profile,
    verbose: bool,
) -> Result<LaunchPlan, Error> {
    let mut plan = spec::plan_in(&b.spec, Some(&b.dir), own.current(&b.spec)?, verbose)?;
    plan.seccomp.extend(crate::policy::seccomp_filters(
        profile,
        &bounding_caps(b.spec.process().as_ref()),
    )?);
    plan.landlock =
        crate::policy::landlock_plan(profile, &crate::policy::rw_bind_destinations(&b.spec));
    Ok(plan)
}

/// The bounding set of a process as `CAP_*` names.
fn bounding_caps(process: Option<&oci_spec::runtime::Process>) -> Vec<String> {
    process
        .and_then(|p| p.capabilities().as_ref())
        .and_then(|c| c.bounding().as_ref())
        .map(|s| s.iter().map(|c| format!("CAP_{c}")).collect())
        .unwrap_or_default()
}

/// The config's `linux.seccomp` compiled for `process`'s capabilities
/// (rules may depend on them); none when the config has no filter.
fn bundle_seccomp(
    spec: &Spec,
    process: Option<&oci_spec::runtime::Process>,
) -> Result<Vec<crate::seccomp::CompiledFilter>, Error> {
    let caps = bounding_caps(process);
    match spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
        Some(sc) => {
            let text = serde_json::to_string(sc).map_err(|e| usage(e.to_string()))?;
            Ok(crate::seccomp::compile_skipping(
                &text,
                "config.json linux.seccomp",
                &caps,
                &|n| !crate::syscalls::is_known(n),
            )?)
        }
        None => Ok(Vec::new()),
    }
}

/// The id maps a bundle asks for, when it asks for a user namespace.
fn bundle_idmap(plan: &LaunchPlan, spec: &Spec) -> Result<Option<IdMapPlan>, Error> {
    if !plan.namespaces.user {
        return Ok(None);
    }
    let linux = spec.linux().as_ref();
    let conv = |m: Option<&Vec<oci_spec::runtime::LinuxIdMapping>>| -> Vec<(u32, u32, u32)> {
        m.into_iter()
            .flatten()
            .map(|m| (m.container_id(), m.host_id(), m.size()))
            .collect()
    };
    let uid = conv(linux.and_then(|l| l.uid_mappings().as_ref()));
    let gid = conv(linux.and_then(|l| l.gid_mappings().as_ref()));
    if uid.is_empty() || gid.is_empty() {
        return Err(usage(
            "linux.uidMappings/gidMappings: a new user namespace needs both maps; add them to config.json",
        ));
    }
    Ok(Some(IdMapPlan::Explicit { uid, gid }))
}

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

/// Removes a half-created container's directory on error.
struct DirGuard(Option<PathBuf>);

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
struct FinishOnDrop(Option<AuditLog>);

impl Drop for FinishOnDrop {
    fn drop(&mut self) {
        if let Some(log) = self.0.take() {
            let _ = log.finish(None);
        }
    }
}

/// Removes the cgroup of a container that was not created after all (or
/// whose foreground `run` ended).
struct CgroupGuard(Option<Cgroup>);

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        if let Some(cg) = self.0.take() {
            let _ = cg.kill_and_remove();
        }
    }
}

/// The annotation that says why a container runs without a cgroup.
pub const NO_CGROUP_ANNOTATION: &str = "org.buildcell.cgroup";

/// Create the container's cgroup with the bundle's limits. A caller that
/// may not create cgroups (rootless, no delegation) goes on without one,
/// and the state's annotations say so; as host root that is an error.
fn make_cgroup(
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
fn default_device_rules() -> Vec<crate::cgroups::DeviceRule> {
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

/// Kills the init if `create` fails after the clone.
struct KillGuard(Option<Pid>);

impl Drop for KillGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take() {
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(pid, None);
        }
    }
}

/// Write the pid file atomically (the caller may read it at any time).
fn write_pid_file(path: &Path, pid: i32) -> Result<(), Error> {
    let tmp = path.with_extension("buildcell-tmp");
    std::fs::write(&tmp, pid.to_string())
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| usage(format!("--pid-file {}: {e}", path.display())))
}

/// What the audit log of a bundle's container must never show: the content
/// of every file bound under /run/secrets (how buildah, BuildKit and
/// Kubernetes pass build and pod secrets), and the values of environment
/// variables named like credentials. Each is replaced by
/// `<redacted:NAME>` in every record.
fn bundle_redactor(
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
fn open_container_log(
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
        crate::cli::DEFAULT_AUDIT_LIMIT,
    )
    .map_err(|e| usage(e.to_string()))
}

/// The audit supervisor of a created container, started before the
/// container exists: a new session, stdio on /dev/null (the engine's pipes
/// must see EOF when the container ends), no fd but the log, the control
/// socket and the hand-off socket. It is forked before `create` enters any
/// namespace the bundle names by path, so it never lives in the
/// container's pid or network namespace.
struct SupervisorHandle {
    pid: i32,
    handoff: std::os::unix::net::UnixStream,
    /// Until `create` succeeds: on drop, wait for the supervisor to end
    /// its log and exit (SIGKILL after 5 s), so that a failed `create`
    /// leaves no process behind.
    reap: bool,
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
    fn give(&self, listener: &OwnedFd, init: Pid) -> Result<(), Error> {
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

/// Where a detached supervisor that stopped its container because the
/// audit failed says why (its stdio is /dev/null): `state` shows it as the
/// annotation [`AUDIT_FAILURE_ANNOTATION`].
const AUDIT_FAILURE_FILE: &str = "audit.failure";
pub const AUDIT_FAILURE_ANNOTATION: &str = "org.buildcell.audit.failure";

fn start_supervisor(
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
fn receive_listener(s: &std::os::unix::net::UnixStream) -> Option<(OwnedFd, Pid)> {
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
fn short_socket_path(dir: &Path, name: &str) -> Result<(std::fs::File, PathBuf), Error> {
    let f = std::fs::File::open(dir).map_err(|e| usage(format!("{}: {e}", dir.display())))?;
    let path = PathBuf::from(format!("/proc/self/fd/{}/{name}", f.as_raw_fd()));
    Ok((f, path))
}

/// The control socket of a container's audit supervisor, where `exec`
/// hands over the listeners of new processes.
const CONTROL_SOCKET: &str = "audit.sock";

fn bind_control(dir: &Path) -> Result<std::os::unix::net::UnixListener, Error> {
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
fn close_all_but(keep: &[i32]) {
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

/// `exec` arguments.
pub struct ExecArgs {
    pub id: String,
    /// Fds passed on to the process (see [`passed_fds`]).
    pub extra_fds: PassedFds,
    pub process: Option<PathBuf>,
    pub detach: bool,
    pub pid_file: Option<PathBuf>,
    pub tty: bool,
    pub console_socket: Option<PathBuf>,
    pub cwd: Option<PathBuf>,
    pub env: Vec<String>,
    pub user: Option<String>,
    pub additional_gids: Vec<u32>,
    pub caps: Vec<String>,
    pub no_new_privs: bool,
    pub args: Vec<String>,
}

/// Parse `exec --process`'s JSON (`name` is the file, for messages);
/// errors name the JSON path. Pure, so that hostile input can be fuzzed
/// (`fuzz/fuzz_targets/exec_process.rs`).
pub fn parse_process(data: &[u8], name: &str) -> Result<oci_spec::runtime::Process, Error> {
    let de = &mut serde_json::Deserializer::from_slice(data);
    serde_path_to_error::deserialize(de)
        .map_err(|e| usage(format!("--process {name}: at {}: {}", e.path(), e.inner())))
}

/// The process `exec` runs: `--process FILE`, or the container's own
/// process with the command line and flags applied (as runc does).
fn exec_process(a: &ExecArgs, base: &Spec) -> Result<oci_spec::runtime::Process, Error> {
    if let Some(path) = &a.process {
        let data =
            std::fs::read(path).map_err(|e| usage(format!("--process {}: {e}", path.display())))?;
        return parse_process(&data, &path.display().to_string());
    }
    if a.args.is_empty() {
        return Err(usage("exec: give --process FILE or a command after the id"));
    }
    let mut p = base.process().clone().unwrap_or_default();
    p.set_args(Some(a.args.clone()));
    p.set_terminal(Some(a.tty));
    if let Some(cwd) = &a.cwd {
        p.set_cwd(cwd.clone());
    }
    let mut env = p.env().clone().unwrap_or_default();
    env.extend(a.env.iter().cloned());
    p.set_env(Some(env));
    if let Some(u) = &a.user {
        let (uid, gid) = match u.split_once(':') {
            Some((uid, gid)) => (uid, Some(gid)),
            None => (u.as_str(), None),
        };
        let bad = || usage(format!("--user {u:?}: give UID[:GID] as numbers"));
        let mut user = p.user().clone();
        user.set_uid(uid.parse().map_err(|_| bad())?);
        if let Some(g) = gid {
            user.set_gid(g.parse().map_err(|_| bad())?);
        }
        if !a.additional_gids.is_empty() {
            user.set_additional_gids(Some(a.additional_gids.clone()));
        }
        p.set_user(user);
    }
    if a.no_new_privs {
        p.set_no_new_privileges(Some(true));
    }
    if !a.caps.is_empty() {
        let mut caps = p.capabilities().clone().unwrap_or_default();
        for name in &a.caps {
            let cap: oci_spec::runtime::Capability = name
                .trim_start_matches("CAP_")
                .parse()
                .map_err(|_| usage(format!("--cap {name:?}: not a capability")))?;
            for set in [
                caps.bounding().clone(),
                caps.effective().clone(),
                caps.permitted().clone(),
            ]
            .iter()
            .enumerate()
            {
                let mut s = set.1.clone().unwrap_or_default();
                s.insert(cap);
                match set.0 {
                    0 => caps.set_bounding(Some(s)),
                    1 => caps.set_effective(Some(s)),
                    _ => caps.set_permitted(Some(s)),
                };
            }
        }
        p.set_capabilities(Some(caps));
    }
    Ok(p)
}

/// `exec`: run a new process in a running container. Its exec-audit
/// listener goes to the container's supervisor; with `--detach` the pid
/// goes to `--pid-file` and the caller reaps it, otherwise buildcell waits
/// and exits with its status.
pub fn exec(root: &Path, a: &ExecArgs, verbose: bool) -> Result<i32, Error> {
    let timer = Timer::new(verbose);
    let dir = ContainerDir::open(root, &a.id)?;
    let saved = dir.load()?;
    let status = status_of(&dir, &saved);
    if !matches!(status, Status::Running | Status::Created) {
        return Err(usage(format!(
            "cannot exec in container {}: it is {status}",
            a.id
        )));
    }
    let config_path = dir.dir.join("config.json");
    let data = std::fs::read(&config_path)
        .map_err(|e| usage(format!("{}: {e}", config_path.display())))?;
    let base: Spec = serde_json::from_slice(&data)
        .map_err(|e| usage(format!("{}: {e}", config_path.display())))?;
    let mut process = exec_process(a, &base)?;
    // The profile the container was created under binds its execs too.
    let profile = crate::policy::load_saved(&dir.dir).ok_or_else(|| {
        usage(format!(
            "{}: missing or unreadable; the container's profile is unknown, so nothing is exec'd (delete and re-create it)",
            dir.dir.join(crate::policy::STATE_FILE).display()
        ))
    })?;
    let violations = crate::policy::check::check_process(&profile, &process, "process");
    if !violations.is_empty() {
        return Err(crate::policy::PolicyError::Violations {
            profile: profile.name.clone(),
            what: "exec process",
            violations,
        }
        .into());
    }
    crate::policy::check::apply_process_defaults(&profile, &mut process);
    let mut plan = spec::plan_process(&process, "process")?;
    a.extra_fds.apply(&mut plan);
    if plan.terminal && a.console_socket.is_none() {
        return Err(usage(
            "process.terminal is true but no --console-socket was given",
        ));
    }
    let mut seccomp = bundle_seccomp(&base, Some(&process))?;
    seccomp.extend(crate::policy::seccomp_filters(
        &profile,
        &bounding_caps(Some(&process)),
    )?);
    let cgroup = cgroup_of(&saved);
    // On cgroup v1 the process moves itself in (cgroups::SelfJoin); on v2
    // the runtime moves it (see launch::exec).
    let entry = crate::cgroups::Entry {
        join: match &cgroup {
            Some(cg) => cg.self_join().map_err(|e| usage(e.to_string()))?,
            None => None,
        },
        into: None,
    };
    let by_itself = entry.by_itself();
    let place = |pid: i32| match &cgroup {
        Some(cg) if !by_itself => cg.add_pid(pid).map_err(|e| usage(e.to_string())),
        _ => Ok(()),
    };
    // The process is forked by an intermediate that exits at once: as a
    // child subreaper, buildcell gets it back to wait for it.
    if !a.detach {
        nix::sys::prctl::set_child_subreaper(true)
            .map_err(|e| usage(format!("exec: child subreaper: {e}")))?;
    }
    let console = a.console_socket.as_deref().filter(|_| plan.terminal);
    // The container's Landlock plan: an exec'd process gets the same
    // domain rules as the init.
    let landlock =
        crate::policy::landlock_plan(&profile, &crate::policy::rw_bind_destinations(&base));
    let spawned = launch::exec(
        saved.oci.pid,
        &plan,
        &seccomp,
        landlock.as_ref(),
        true,
        console,
        launch::Placement { entry, then: place },
        timer,
    )
    .map_err(|e| {
        // The init may have died while we joined it.
        if state::init_alive(&saved) {
            e
        } else {
            usage(format!("cannot exec in container {}: it is stopped", a.id))
        }
    })?;
    let pid = spawned.pid;
    if let Some(listener) = &spawned.listener {
        let (_dirfd, socket) = short_socket_path(&dir.dir, CONTROL_SOCKET)?;
        // The process's own credential-named variables are redacted from
        // the container's log from now on, like the init's.
        let secrets: Vec<(String, String)> = process
            .env()
            .iter()
            .flatten()
            .filter_map(|e| e.split_once('='))
            .filter(|(name, _)| audit::redact::is_secret_name(name) || profile.redacts_env(name))
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        fault::point("exec:ready");
        if let Err(e) = audit::supervisor::hand_over(&socket, listener, &secrets) {
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            return Err(usage(format!(
                "exec refused: {e}; no command runs unaudited"
            )));
        }
    }
    fault::point("exec:handed-over");
    drop(spawned.listener);
    if let Some(p) = &a.pid_file {
        write_pid_file(p, pid.as_raw())?;
    }
    // Other calls on this container (kill, delete) must not wait for us.
    drop(dir);
    if a.detach {
        return Ok(0);
    }
    let code = crate::reaper::supervise(pid, &spawned.signals, false);
    if let Some((step, message, exit_code)) = spawned.channel.take_failure() {
        return Err(Error::Child {
            step,
            message,
            exit_code,
        });
    }
    Ok(code)
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
