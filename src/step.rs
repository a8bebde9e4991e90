//! `buildcell step`: one build step in a fresh sandbox, without a bundle
//! (the embedded default: the host's filesystem read-only, the working
//! directory writable). The CLI turns the flags into [`StepOptions`]; this
//! module checks the step against its profile, reserves its id range,
//! opens its audit log, makes its cgroup and runs it ([`launch::run`]).

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crate::audit::{self, log::AuditLog};
use crate::error::Error;
use crate::landlock::LandlockPlan;
use crate::launch::{self, Timer};
use crate::policy::Choice;
use crate::seccomp;
use crate::spec::{self, Secret, StepRequest};
use crate::userns::IdMapPlan;

/// What `buildcell step` was asked for, its flags parsed and checked.
pub struct StepOptions {
    pub request: StepRequest,
    /// `--memory`, `--pids`: within the profile's maxima (checked here).
    pub memory: Option<i64>,
    pub pids: Option<i64>,
    /// `--seccomp FILE`: the step's own filter, under the profile's.
    pub seccomp: Option<PathBuf>,
    /// The `--landlock-*` flags' plan, which replaces the profile's.
    pub landlock: Option<LandlockPlan>,
    /// `--secret`: each at /run/secrets/NAME, redacted in the log.
    pub secrets: Vec<Secret>,
    pub audit: AuditOptions,
    /// Print each setup step and its time.
    pub verbose: bool,
}

/// Where the step's audit log goes and what signs it.
pub struct AuditOptions {
    /// `--audit-log FILE` (relative to the working directory), or a new
    /// file in the log directory.
    pub log: Option<PathBuf>,
    /// `--audit-key KEY`, or the default key when it exists.
    pub key: Option<PathBuf>,
    /// `--audit-max-size`: reaching it stops the step.
    pub max_size: u64,
}

fn usage(msg: impl Into<String>) -> Error {
    Error::Usage(msg.into())
}

/// Run one step: checked against its profile, then its id range, audit
/// log and cgroup, then the sandbox ([`launch::run`]); the log's end record
/// whatever happens. Exit status: the step's.
pub fn run(opts: StepOptions, choice: &Choice) -> Result<i32, Error> {
    let timer = Timer::new(opts.verbose);
    let req = &opts.request;
    let mut spec = spec::step_spec(req)?;
    // The step's own flags are checked like a bundle: all violations at
    // once, before anything exists.
    let policy = crate::policy::evaluate(&mut spec, None, choice, false)?;
    policy.refuse_violations("step")?;
    let profile = &policy.loaded.profile;
    timer.log(&format!(
        "policy: profile {} ({}) allows the step",
        profile.name, policy.selection.why
    ));
    // `process.user = "random"`: the synthesized passwd lives in a new
    // private directory for the step's life (mkdir never follows a
    // planted symlink; 0700).
    let mut passwd_guard = RemoveOnDrop(None);
    let passwd = if profile.user == crate::policy::profile::UserMode::Random {
        let dir = std::env::temp_dir().join(format!(
            "buildcell-step-{}-{:x}",
            std::process::id(),
            crate::policy::check::random_seed() & 0xffff_ffff
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| usage(format!("{}: {e}", dir.display())))?;
        passwd_guard.0 = Some(dir.clone());
        dir.join("passwd")
    } else {
        PathBuf::new()
    };
    let mut notes = policy.notes.clone();
    notes.extend(
        crate::policy::check::apply_random_user(
            profile,
            &mut spec,
            Path::new("/"),
            &passwd,
            crate::policy::check::random_seed(),
        )
        .map_err(|e| usage(format!("process.user = \"random\": {e}")))?,
    );
    let caps: Vec<String> = spec
        .process()
        .as_ref()
        .and_then(|p| p.capabilities().as_ref())
        .and_then(|c| c.bounding().as_ref())
        .map(|b| b.iter().map(|c| format!("CAP_{c}")).collect())
        .unwrap_or_default();
    // `--seccomp FILE` is the step's own filter; the profile's is stacked
    // on it (both apply).
    let mut filters = match &opts.seccomp {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| usage(format!("--seccomp {}: cannot read: {e}", path.display())))?;
            seccomp::compile(&text, &path.display().to_string(), &caps)?
        }
        None => Vec::new(),
    };
    if crate::policy::uses_builtin_seccomp(profile) {
        // Compiled at build time for the step's capability set.
        filters.extend(spec::step_seccomp());
        let deny_only = crate::policy::Profile {
            seccomp: "none".into(),
            ..profile.clone()
        };
        filters.extend(crate::policy::seccomp_filters(&deny_only, &caps)?);
    } else {
        filters.extend(crate::policy::seccomp_filters(profile, &caps)?);
    }
    timer.log(&format!("seccomp: {} filter(s) compiled", filters.len()));
    let mut plan = spec::plan(&spec, filters, opts.verbose)?;
    // The `--landlock-*` flags (a developer's aid) replace the profile's
    // plan; otherwise the profile's applies, with the cwd and the
    // read-write --mount destinations as the step's declared outputs.
    plan.landlock = match opts.landlock {
        Some(flags) => Some(flags),
        None => {
            let mut outputs = vec![req.cwd.clone()];
            outputs.extend(
                req.mounts
                    .iter()
                    .filter(|m| !m.readonly)
                    .map(|m| m.destination.clone()),
            );
            crate::policy::landlock_plan(profile, &outputs)
        }
    };
    // Before the audit log exists: a kernel that cannot enforce what is
    // required is refused with nothing created.
    let landlock_report = launch::landlock_preflight(plan.landlock.as_ref())?;
    if let Some(r) = &landlock_report {
        timer.log(&format!("landlock: checked against ABI {}", r.abi));
    }
    let mut record_notes = policy.annotations();
    if notes.len() > policy.notes.len() {
        record_notes.retain(|(k, _)| k != "org.buildcell.policy.defaults");
        record_notes.push(("org.buildcell.policy.defaults".into(), notes.join("; ")));
    }
    record_notes.push((
        "org.buildcell.landlock".into(),
        match &landlock_report {
            Some(r) => crate::policy::landlock_summary(r),
            None => "off".into(),
        },
    ));
    let mut redact = audit::redact::Redactor::default();
    for secret in opts.secrets {
        redact.add(&secret.name, &String::from_utf8_lossy(&secret.value));
        plan.secrets.push(secret);
    }
    for e in &req.env {
        if let Some((name, value)) = e.split_once('=') {
            if audit::redact::is_secret_name(name) || profile.redacts_env(name) {
                redact.add(name, value);
            }
        }
    }
    timer.log("spec validated");
    // Chosen before clone: reading /etc/subuid and finding the helpers is
    // parent work, and the child must not wait on it.
    let mut idmap = IdMapPlan::choose();
    // As host root, a range of its own from the pool (as a container's),
    // held until the step ends.
    let _range = match idmap {
        IdMapPlan::HostRoot { .. } => {
            let r = crate::idpool::reserve_for_step().map_err(usage)?;
            idmap = IdMapPlan::HostRoot {
                uid_start: r.slot.uid_start,
                gid_start: r.slot.gid_start,
            };
            timer.log(&format!("id range {}", r.slot.describe()));
            Some(r)
        }
        _ => None,
    };
    let mut log = open_audit_log(&opts.audit, req, &spec, &idmap, &policy, record_notes)?;
    log.set_redactor(redact);
    log.sync_every_record(profile.sync_every_record);
    timer.log(&format!("audit log {}", log.path().display()));
    let limits = StepLimits {
        memory: opts
            .memory
            .or(profile.memory_default)
            .or(profile.memory_max),
        pids: opts.pids.or(profile.pids_default).or(profile.pids_max),
        cpus: profile.cpus_default.or(profile.cpus_max),
    };
    let cgroup = step_cgroup(&limits, profile)?;
    match &cgroup {
        Some(cg) => timer.log(&format!("cgroup {} ({})", cg.0.dirs()[0].path.display(), limits.describe())),
        None if opts.memory.is_some() || opts.pids.is_some() => eprintln!(
            "buildcell: --memory/--pids not applied: this user may not create cgroups (no cgroup delegation without systemd); run as root for limits"
        ),
        None => {}
    }
    // The init moves itself in (v1) or is cloned in (v2): nobody writes
    // its pid into cgroup.procs (cgroups::Cgroup::entry).
    let entry = match &cgroup {
        Some(cg) => cg.0.entry().map_err(|e| usage(e.to_string()))?,
        None => Default::default(),
    };
    let by_itself = entry.by_itself();
    let place = |pid: i32| match &cgroup {
        Some(cg) if !by_itself => cg.0.add_pid(pid).map_err(|e| usage(e.to_string())),
        _ => Ok(()),
    };
    let placement = launch::Placement { entry, then: place };
    let result = launch::run(&plan, &idmap, timer, Some(&mut log), placement);
    drop(cgroup);
    let status = match &result {
        Ok(code) => Some(*code),
        Err(e) => Some(e.exit_code()),
    };
    // The end record and its checkpoint; a failure here fails the step.
    // When the step already failed (an audit failure among others), that
    // first error is the one to report.
    let finished = log.finish(status);
    let code = result?;
    finished.map_err(|e| usage(e.to_string()))?;
    Ok(code)
}

/// A step's cgroup limits: `--memory`/`--pids`, else the profile's
/// defaults (or maxima).
struct StepLimits {
    memory: Option<i64>,
    pids: Option<i64>,
    cpus: Option<f64>,
}

impl StepLimits {
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(m) = self.memory {
            parts.push(format!("memory {} MiB", m >> 20));
        }
        if let Some(p) = self.pids {
            parts.push(format!("pids {p}"));
        }
        if let Some(c) = self.cpus {
            parts.push(format!("{c} CPUs"));
        }
        parts.join(", ")
    }
}

/// A step's own cgroup, killed and removed when dropped.
struct StepCgroup(crate::cgroups::Cgroup);

impl Drop for StepCgroup {
    fn drop(&mut self) {
        let _ = self.0.kill_and_remove();
    }
}

/// The step's cgroup with its limits, under the caller's own cgroup
/// (`buildcell-step-PID`). A caller that may not create cgroups (no
/// delegation) runs the step without one (`None`); limits above the
/// profile's maxima are refused.
fn step_cgroup(
    limits: &StepLimits,
    profile: &crate::policy::Profile,
) -> Result<Option<StepCgroup>, Error> {
    use crate::cgroups::{Cgroup, CgroupPath, Layout, Resources};
    let over = |what: &str, v: i64, max: Option<i64>| match max {
        Some(m) if v > m => Err(usage(format!(
            "--{what} {v}: above profile {}'s {what} maximum {m}; ask for less",
            profile.name
        ))),
        _ => Ok(()),
    };
    if let Some(m) = limits.memory {
        over("memory", m, profile.memory_max)?;
    }
    if let Some(p) = limits.pids {
        over("pids", p, profile.pids_max)?;
    }
    if limits.memory.is_none() && limits.pids.is_none() && limits.cpus.is_none() {
        return Ok(None);
    }
    let mut r = Resources::default();
    r.memory.limit = limits.memory;
    r.pids_limit = limits.pids;
    if let Some(c) = limits.cpus {
        r.cpu.period = Some(100_000);
        r.cpu.quota = Some((c * 100_000.0).round() as i64);
    }
    let layout = Layout::detect().map_err(|e| usage(e.to_string()))?;
    let path = CgroupPath::from_spec(None, &format!("buildcell-step-{}", std::process::id()))
        .map_err(|e| usage(e.to_string()))?;
    match Cgroup::create_in(&layout, &path, &r) {
        Ok(cg) => {
            remove_stale_step_cgroups(&layout, &cg);
            Ok(Some(StepCgroup(cg)))
        }
        Err(e) if e.is_permission_denied() && crate::container::rootless() => Ok(None),
        Err(e) => Err(usage(e.to_string())),
    }
}

/// Remove the cgroups of earlier steps that were killed before they
/// could remove their own (`buildcell-step-PID` beside this step's, in any
/// hierarchy, whose PID no longer exists and which hold no process). A
/// killed step's sandbox dies with it (`PDEATHSIG`), so only the empty
/// directories stay behind.
fn remove_stale_step_cgroups(layout: &crate::cgroups::Layout, own: &crate::cgroups::Cgroup) {
    use crate::cgroups::{Cgroup, CgroupPath};
    let mut names = std::collections::BTreeSet::new();
    for d in own.dirs() {
        let Some(parent) = d.path.parent() else {
            continue;
        };
        let Ok(entries) = std::fs::read_dir(parent) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = name
                .strip_prefix("buildcell-step-")
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                names.insert(name);
            }
        }
    }
    for name in names {
        let Ok(path) = CgroupPath::from_spec(None, &name) else {
            continue;
        };
        if let Ok(cg) = Cgroup::open_in(layout, &path) {
            if cg.pids().is_ok_and(|p| p.is_empty()) {
                let _ = cg.remove();
            }
        }
    }
}

/// Removes a directory when dropped (the step's synthesized passwd).
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(d) = self.0.take() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// Create the step's audit log, outside anything the step can write.
fn open_audit_log(
    wanted: &AuditOptions,
    req: &StepRequest,
    spec: &oci_spec::runtime::Spec,
    idmap: &IdMapPlan,
    policy: &crate::policy::Evaluation,
    annotations: Vec<(String, String)>,
) -> Result<AuditLog, Error> {
    let path = match &wanted.log {
        Some(p) => req.cwd.join(p),
        None => {
            let dir = audit::ensure_log_dir().map_err(usage)?;
            dir.join(format!(
                "step-{}-{}.log",
                audit::record::now().replace(':', ""),
                std::process::id()
            ))
        }
    };
    let parent = path
        .parent()
        .and_then(|p| p.canonicalize().ok())
        .ok_or_else(|| {
            usage(format!(
                "--audit-log {}: its directory does not exist",
                path.display()
            ))
        })?;
    let writable = std::iter::once(req.cwd.as_path()).chain(
        req.mounts
            .iter()
            .filter(|m| !m.readonly)
            .map(|m| m.source.as_path()),
    );
    for w in writable {
        if let Ok(w) = w.canonicalize() {
            if parent.starts_with(&w) {
                return Err(usage(format!(
                    "--audit-log {}: lies inside {}, which the step can write; put the log elsewhere",
                    path.display(),
                    w.display()
                )));
            }
        }
    }
    let key_path = wanted.key.clone().unwrap_or_else(audit::default_key_path);
    let key = if wanted.key.is_some() || key_path.exists() {
        Some(audit::keys::load_signing(&key_path).map_err(|e| usage(format!("audit key: {e}")))?)
    } else {
        None
    };
    // Hash the spec as it serializes, without a buffer of the whole JSON.
    let mut hasher = audit::HashWriter::default();
    let _ = serde_json::to_writer(&mut hasher, spec);
    let start = audit::record::Start {
        buildcell_version: env!("CARGO_PKG_VERSION").into(),
        container_id: format!("step-{}", std::process::id()),
        bundle: None,
        config_sha256: hasher.finish_hex(),
        profile: Some(policy.loaded.profile.name.clone()),
        profile_sha256: Some(policy.loaded.sha256.clone()),
        annotations: annotations.into_iter().collect(),
        uid_map: idmap.map_text().0,
        gid_map: idmap.map_text().1,
        host: nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default(),
        ..Default::default()
    };
    AuditLog::create(&path, start, key, Default::default(), wanted.max_size)
        .map_err(|e| usage(e.to_string()))
}
