//! The OCI runtime spec as buildcell uses it: the embedded default of
//! `buildcell step`, and the validation of a [`Spec`] into a [`LaunchPlan`]
//! that the launcher executes.
//!
//! Every check happens here, before any namespace exists; each failure names
//! the field at fault (`mounts[2].source: ...`).

use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Spec};
use serde_json::json;

use crate::seccomp::CompiledFilter;

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("config: {0}")]
    Deserialize(String),
    #[error("{field}: {problem}")]
    Field { field: String, problem: String },
}

fn field(field: impl Into<String>, problem: impl Into<String>) -> SpecError {
    SpecError::Field {
        field: field.into(),
        problem: problem.into(),
    }
}

/// What `buildcell step` was asked for, already checked by the CLI.
#[derive(Debug, Clone)]
pub struct StepRequest {
    pub args: Vec<String>,
    /// `K=V` entries added to PATH, HOME and TERM.
    pub env: Vec<String>,
    pub mounts: Vec<UserMount>,
    /// Absolute path of the caller's working directory (mounted read-write).
    pub cwd: PathBuf,
    /// Working directory inside (defaults to `cwd`).
    pub workdir: PathBuf,
    pub home: Option<PathBuf>,
    pub hostname: String,
    pub share_net: bool,
    pub terminal: bool,
}

/// Parse a size such as `512m`, `2G`, `1048576` into bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c.to_ascii_lowercase() {
                'k' => 1u64 << 10,
                'm' => 1 << 20,
                'g' => 1 << 30,
                't' => 1 << 40,
                'b' => 1,
                _ => return Err(format!("unknown unit {c:?}; use k, m, g or t")),
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| "expected a number with an optional unit (k, m, g, t)".to_string())?;
    // At most i64::MAX: limits become i64 values (cgroups, OCI), where a
    // negative one means unlimited.
    n.checked_mul(mult)
        .filter(|v| *v > 0 && i64::try_from(*v).is_ok())
        .ok_or_else(|| "must be positive and below 8 EiB (2^63 bytes)".to_string())
}

/// `--secret NAME=FILE`: the file's content, available read-only at
/// `/run/secrets/NAME` inside, and kept out of the audit log.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    pub name: String,
    pub value: Vec<u8>,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({}, {} bytes)", self.name, self.value.len())
    }
}

/// `--mount SRC:DST[:ro|rw]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserMount {
    pub source: PathBuf,
    pub destination: PathBuf,
    pub readonly: bool,
}

/// Directories whose content a build step must not see (credentials live
/// there): each gets an empty tmpfs.
pub const HIDDEN_DIRS: [&str; 2] = ["/root", "/home"];

pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The capabilities of a step: the OCI default set, as `runc spec` writes
/// it (bounding, permitted, effective; inheritable and ambient empty).
pub const STEP_CAPABILITIES: [&str; 3] = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"];

include!(concat!(env!("OUT_DIR"), "/default_bpf.rs"));

/// `seccomp/default.json` as build.rs compiled it, for any process whose
/// capabilities do not change it: all of them while its rules name no
/// capability (as shipped); `None` otherwise (then it is compiled for the
/// process's set). Compiling it at each `create` and `run` took ~0.26 ms.
pub fn default_seccomp_for_any_caps() -> Option<Vec<CompiledFilter>> {
    (!DEFAULT_BPF_NAMES_CAPS).then(step_seccomp)
}

/// `seccomp/default.json` compiled to BPF by build.rs for
/// [`STEP_CAPABILITIES`]: no JSON parsing at start (it cost ~0.5 MiB of
/// peak RSS).
pub fn step_seccomp() -> Vec<CompiledFilter> {
    DEFAULT_BPF
        .iter()
        .map(|f| {
            f.iter()
                .map(|&(code, jt, jf, k)| seccompiler::sock_filter { code, jt, jf, k })
                .collect()
        })
        .collect()
}

/// The embedded default of `buildcell step` as an OCI spec: the host root
/// read-only, the working directory read-write, fresh namespaces.
pub fn step_spec(req: &StepRequest) -> Result<Spec, SpecError> {
    let tmpfs = |dest: &str, opts: &[&str]| json!({"destination": dest, "type": "tmpfs", "source": "tmpfs", "options": opts});
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc",
               "options": ["nosuid", "noexec", "nodev"]}),
        tmpfs("/dev", &["nosuid", "noexec", "mode=755", "size=65536k"]),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]}),
        tmpfs(
            "/dev/shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        tmpfs("/tmp", &["nosuid", "nodev", "mode=1777"]),
        tmpfs("/run", &["nosuid", "nodev", "mode=755"]),
    ];
    let mut hidden: Vec<PathBuf> = HIDDEN_DIRS.iter().map(PathBuf::from).collect();
    if let Some(home) = &req.home {
        if home != Path::new("/") && !hidden.iter().any(|h| home.starts_with(h)) {
            hidden.push(home.clone());
        }
    }
    for dir in hidden.iter().filter(|d| d.is_dir()) {
        mounts.push(
            json!({"destination": dir, "type": "tmpfs", "source": "tmpfs",
                           "options": ["nosuid", "nodev", "mode=755"]}),
        );
    }
    mounts.push(
        json!({"destination": req.cwd, "type": "bind", "source": req.cwd,
                       "options": ["rbind", "rw", "nosuid", "nodev"]}),
    );
    for m in &req.mounts {
        let mode = if m.readonly { "ro" } else { "rw" };
        mounts.push(
            json!({"destination": m.destination, "type": "bind", "source": m.source,
                           "options": ["rbind", mode, "nosuid", "nodev"]}),
        );
    }
    let mut env = vec![format!("PATH={DEFAULT_PATH}")];
    if let Some(home) = &req.home {
        env.push(format!("HOME={}", home.display()));
    }
    env.push(format!(
        "TERM={}",
        std::env::var("TERM").unwrap_or_else(|_| "xterm".into())
    ));
    // Later entries override earlier ones with the same name.
    for e in &req.env {
        let name = e.split('=').next().unwrap_or_default();
        env.retain(|old| old.split('=').next() != Some(name));
        env.push(e.clone());
    }
    let caps = STEP_CAPABILITIES;
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
        json!({"type": "user"}),
        json!({"type": "cgroup"}),
    ];
    if !req.share_net {
        namespaces.push(json!({"type": "network"}));
    }
    let spec = json!({
        "ociVersion": "1.2.0",
        "root": {"path": "/", "readonly": true},
        "hostname": req.hostname,
        "process": {
            "terminal": req.terminal,
            "user": {"uid": 0, "gid": 0},
            "args": req.args,
            "env": env,
            "cwd": req.workdir,
            "noNewPrivileges": true,
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
        },
        "mounts": mounts,
        "linux": {"namespaces": namespaces},
    });
    serde_json::from_value(spec).map_err(|e| SpecError::Deserialize(e.to_string()))
}

/// The config.json `buildcell spec` writes: ready for a rootless caller
/// (a user namespace mapping only the caller's ids to root, no host
/// device nodes created, no cgroup writes), and just as valid as root.
///
/// As host root (`host_root`), the config has no user namespace: buildcell
/// adds one at `create` (looks-like-root: a reserved range, an idmapped
/// rootfs), as for a root engine's bundle; mapping the caller's own ids
/// would make container root host root.
pub fn default_bundle_spec(uid: u32, gid: u32, host_root: bool) -> serde_json::Value {
    let caps = STEP_CAPABILITIES;
    let mut spec = json!({
        "ociVersion": "1.2.0",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": [format!("PATH={DEFAULT_PATH}"), "TERM=xterm"],
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "buildcell",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "nodev", "mode=1777"]}
        ],
        "linux": {
            "uidMappings": [{"containerID": 0, "hostID": uid, "size": 1}],
            "gidMappings": [{"containerID": 0, "hostID": gid, "size": 1}],
            "namespaces": [
                {"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"},
                {"type": "mount"}, {"type": "user"}, {"type": "cgroup"}
            ],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
                "/proc/scsi"
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
            ]
        }
    });
    if host_root {
        let linux = &mut spec["linux"];
        if let Some(l) = linux.as_object_mut() {
            l.remove("uidMappings");
            l.remove("gidMappings");
        }
        if let Some(ns) = linux["namespaces"].as_array_mut() {
            ns.retain(|n| n["type"] != "user");
        }
    }
    spec
}

/// Flags a mount gets, from its options.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MountFlags {
    pub readonly: bool,
    pub nosuid: bool,
    pub nodev: bool,
    pub noexec: bool,
    /// A propagation to set on the mount after it is attached.
    pub propagation: Option<MountPropagation>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountKind {
    /// A bind mount of a host path (recursive for `rbind`); `dir` records
    /// whether the source is a directory, as seen from the host.
    Bind {
        source: PathBuf,
        recursive: bool,
        dir: bool,
    },
    /// The container's cgroup directories (see [`LaunchPlan::cgroup_dirs`]):
    /// on v1 a tmpfs with one bind per hierarchy, on v2 one bind.
    Cgroup,
    /// A new filesystem instance: tmpfs, proc, devpts, mqueue, sysfs.
    Fs {
        fstype: String,
        source: String,
        data: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountPlan {
    pub destination: PathBuf,
    pub kind: MountKind,
    pub flags: MountFlags,
}

/// Namespaces the container gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NamespacePlan {
    pub user: bool,
    pub mount: bool,
    pub pid: bool,
    pub net: bool,
    pub ipc: bool,
    pub uts: bool,
    pub cgroup: bool,
}

#[derive(Debug, Clone)]
pub struct ProcessPlan {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: PathBuf,
    pub no_new_privileges: bool,
    /// The five capability sets the process gets.
    pub caps: CapSets,
    pub user: UserPlan,
    pub rlimits: Vec<Rlimit>,
    pub terminal: bool,
    pub oom_score_adj: Option<i32>,
    /// Fds 3..3+N the caller passes on (`--preserve-fds`, `LISTEN_FDS`):
    /// kept open for the process, every other fd is closed.
    pub extra_fds: u32,
}

/// The capability sets of the user process (`process.capabilities`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CapSets {
    pub bounding: Vec<caps::Capability>,
    pub effective: Vec<caps::Capability>,
    pub permitted: Vec<caps::Capability>,
    pub inheritable: Vec<caps::Capability>,
    pub ambient: Vec<caps::Capability>,
}

/// Who the user process runs as (`process.user`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserPlan {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub umask: Option<u32>,
}

/// One `process.rlimits` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rlimit {
    pub resource: i32,
    pub soft: u64,
    pub hard: u64,
}

/// A validated spec: everything the launcher needs, nothing left to check.
#[derive(Debug)]
pub struct LaunchPlan {
    pub rootfs: PathBuf,
    pub rootfs_readonly: bool,
    pub mounts: Vec<MountPlan>,
    /// Device nodes bound from the host into `/dev` (when `/dev` is a tmpfs).
    pub devices: Vec<PathBuf>,
    pub namespaces: NamespacePlan,
    /// Existing namespaces to join (`linux.namespaces[].path`); the
    /// launcher enters them before `clone`.
    pub join: Vec<(LinuxNamespaceType, PathBuf)>,
    pub hostname: Option<String>,
    pub domainname: Option<String>,
    pub process: ProcessPlan,
    pub seccomp: Vec<CompiledFilter>,
    /// Record every exec through the seccomp-notify supervisor.
    pub audit_exec: bool,
    /// Build secrets, written to a read-only tmpfs at /run/secrets.
    pub secrets: Vec<Secret>,
    /// Landlock for the container's processes; None = no Landlock.
    pub landlock: Option<crate::landlock::LandlockPlan>,
    /// `linux.maskedPaths`: hidden (a read-only empty tmpfs for a directory,
    /// /dev/null for a file).
    pub masked_paths: Vec<PathBuf>,
    /// `linux.readonlyPaths`: bound read-only onto themselves.
    pub readonly_paths: Vec<PathBuf>,
    /// `linux.sysctl`, written inside the container's namespaces.
    pub sysctl: Vec<(String, String)>,
    /// `linux.rootfsPropagation` (default: rslave, as runc).
    pub rootfs_propagation: MountPropagation,
    /// The container's cgroup directories on the host, for `cgroup` mounts:
    /// `(name, dir)` per v1 hierarchy (`cpu,cpuacct`, `memory`, ...), or
    /// one entry with an empty name on v2. Set once the cgroup exists.
    pub cgroup_dirs: Vec<(String, PathBuf)>,
    /// A bundle's container in a user namespace buildcell added: its
    /// rootfs and bind mounts are idmapped with that namespace by the
    /// runtime (host root), so the image's root-owned files look
    /// root-owned inside and what it writes is stored as host root.
    pub idmap_mounts: bool,
    /// How the container is started: `step` forks the user process from a
    /// reaping pid 1; a bundle's init becomes the user process itself.
    pub mode: PlanMode,
    pub verbose: bool,
}

/// See [`LaunchPlan::mode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanMode {
    Step,
    Bundle,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MountPropagation {
    Private,
    #[default]
    Slave,
    Shared,
    Unbindable,
}

/// The devices every container gets (as runc does).
pub const DEFAULT_DEVICES: [&str; 6] = [
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
];

/// Validate the embedded `step` spec into a plan.
pub fn plan(
    spec: &Spec,
    seccomp: Vec<CompiledFilter>,
    verbose: bool,
) -> Result<LaunchPlan, SpecError> {
    plan_in(spec, None, seccomp, verbose)
}

/// Validate `spec` into a plan. `bundle` is the bundle directory for a
/// config.json (relative root paths resolve against it); `None` for `step`.
pub fn plan_in(
    spec: &Spec,
    bundle: Option<&Path>,
    seccomp: Vec<CompiledFilter>,
    verbose: bool,
) -> Result<LaunchPlan, SpecError> {
    let mode = match bundle {
        Some(_) => PlanMode::Bundle,
        None => PlanMode::Step,
    };
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| field("root", "missing; a container needs a root filesystem"))?;
    let rootfs = match bundle {
        Some(b) => b.join(root.path()),
        None => root.path().clone(),
    };
    if !rootfs.is_absolute() {
        return Err(field(
            "root.path",
            format!(
                "{} is relative; buildcell step passes an absolute path",
                rootfs.display()
            ),
        ));
    }
    if !rootfs.is_dir() {
        return Err(field(
            "root.path",
            format!(
                "{} is not a directory (missing rootfs?); create it or fix root.path",
                rootfs.display()
            ),
        ));
    }

    let mut mounts = Vec::new();
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        mounts.push(plan_mount(i, m, bundle)?);
    }
    let dev_tmpfs = mounts.iter().any(|m| {
        m.destination == Path::new("/dev")
            && matches!(&m.kind, MountKind::Fs { fstype, .. } if fstype == "tmpfs")
    });
    let linux = spec
        .linux()
        .as_ref()
        .ok_or_else(|| field("linux", "missing"))?;
    let mut devices: Vec<PathBuf> = Vec::new();
    if dev_tmpfs {
        devices.extend(DEFAULT_DEVICES.iter().map(PathBuf::from));
        for (i, d) in linux.devices().iter().flatten().enumerate() {
            let path = d.path().clone();
            if !path.starts_with("/dev")
                || path
                    .components()
                    .any(|c| c == std::path::Component::ParentDir)
            {
                return Err(field(
                    format!("linux.devices[{i}].path"),
                    format!("{} is not under /dev", path.display()),
                ));
            }
            if !path.exists() {
                return Err(field(
                    format!("linux.devices[{i}].path"),
                    format!(
                        "{} does not exist on the host; buildcell binds device nodes from the host",
                        path.display()
                    ),
                ));
            }
            if !devices.contains(&path) {
                devices.push(path);
            }
        }
    }

    let mut ns = NamespacePlan::default();
    let mut join = Vec::new();
    for (i, n) in linux.namespaces().iter().flatten().enumerate() {
        let typ = n.typ();
        if let Some(path) = n.path() {
            if mode == PlanMode::Step {
                return Err(field(
                    format!("linux.namespaces[{i}].path"),
                    "joining an existing namespace is not supported for a step",
                ));
            }
            if matches!(typ, LinuxNamespaceType::User | LinuxNamespaceType::Mount) {
                return Err(field(
                    format!("linux.namespaces[{i}].path"),
                    format!("joining an existing {typ:?} namespace is not supported; remove the path to get a new one"),
                ));
            }
            check_namespace_file(i, typ, path)?;
            join.push((typ, path.clone()));
            continue;
        }
        match typ {
            LinuxNamespaceType::User => ns.user = true,
            LinuxNamespaceType::Mount => ns.mount = true,
            LinuxNamespaceType::Pid => ns.pid = true,
            LinuxNamespaceType::Network => ns.net = true,
            LinuxNamespaceType::Ipc => ns.ipc = true,
            LinuxNamespaceType::Uts => ns.uts = true,
            LinuxNamespaceType::Cgroup => ns.cgroup = true,
            other => {
                return Err(field(
                    format!("linux.namespaces[{i}].type"),
                    format!("{other:?} namespaces are not supported"),
                ))
            }
        }
    }
    let required: &[(bool, &str)] = match mode {
        PlanMode::Step => &[(ns.user, "user"), (ns.mount, "mount"), (ns.pid, "pid")],
        PlanMode::Bundle => &[(ns.mount, "mount")],
    };
    for (set, name) in required {
        if !set {
            return Err(field(
                "linux.namespaces",
                format!(
                    "a new {name} namespace is required: buildcell never runs a container in the host's"
                ),
            ));
        }
    }

    let process = match (spec.process().as_ref(), mode) {
        (Some(p), _) => plan_process(p, "process")?,
        (None, PlanMode::Step) => return Err(field("process", "missing; nothing to run")),
        // The runtime spec lets a container be created without a process:
        // `start` refuses it. The init waits at the start gate with
        // nothing to exec.
        (None, PlanMode::Bundle) => ProcessPlan {
            args: Vec::new(),
            env: Vec::new(),
            cwd: PathBuf::from("/"),
            no_new_privileges: true,
            caps: CapSets::default(),
            user: UserPlan::default(),
            rlimits: Vec::new(),
            terminal: false,
            oom_score_adj: None,
            extra_fds: 0,
        },
    };

    let mut sysctl: Vec<(String, String)> = linux
        .sysctl()
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    sysctl.sort();
    for (k, _) in &sysctl {
        if k.is_empty() || k.contains("..") || k.starts_with('/') || k.starts_with('.') {
            return Err(field(format!("linux.sysctl.{k}"), "not a sysctl name"));
        }
    }
    let rootfs_propagation = match linux.rootfs_propagation().as_deref() {
        None | Some("") | Some("slave") | Some("rslave") => MountPropagation::Slave,
        Some("private") | Some("rprivate") => MountPropagation::Private,
        Some("shared") | Some("rshared") => MountPropagation::Shared,
        Some("unbindable") | Some("runbindable") => MountPropagation::Unbindable,
        Some(other) => {
            return Err(field(
                "linux.rootfsPropagation",
                format!("{other:?} is not one of shared, slave, private, unbindable"),
            ))
        }
    };
    let paths = |list: &Option<Vec<String>>, name: &str| -> Result<Vec<PathBuf>, SpecError> {
        list.iter()
            .flatten()
            .enumerate()
            .map(|(i, p)| {
                let path = PathBuf::from(p);
                if !path.is_absolute()
                    || path
                        .components()
                        .any(|c| c == std::path::Component::ParentDir)
                {
                    Err(field(
                        format!("linux.{name}[{i}]"),
                        format!("{p} is not an absolute path without `..`"),
                    ))
                } else {
                    Ok(path)
                }
            })
            .collect()
    };

    Ok(LaunchPlan {
        rootfs,
        rootfs_readonly: root.readonly().unwrap_or(false),
        mounts,
        devices,
        namespaces: ns,
        join,
        hostname: spec.hostname().clone(),
        domainname: spec.domainname().clone(),
        process,
        seccomp,
        audit_exec: true,
        secrets: Vec::new(),
        landlock: None,
        masked_paths: paths(linux.masked_paths(), "maskedPaths")?,
        readonly_paths: paths(linux.readonly_paths(), "readonlyPaths")?,
        sysctl,
        rootfs_propagation,
        cgroup_dirs: Vec::new(),
        idmap_mounts: false,
        mode,
        verbose,
    })
}

/// A namespace path must name a namespace file of the right type.
fn check_namespace_file(i: usize, typ: LinuxNamespaceType, path: &Path) -> Result<(), SpecError> {
    let f = format!("linux.namespaces[{i}].path");
    let meta =
        std::fs::metadata(path).map_err(|e| field(&f, format!("{}: {e}", path.display())))?;
    // nsfs files live on their own filesystem (NSFS_MAGIC); a bind-mounted
    // namespace file keeps it. Anything else is not a namespace.
    let st = nix::sys::statfs::statfs(path)
        .map_err(|e| field(&f, format!("{}: {e}", path.display())))?;
    const NSFS_MAGIC: i64 = 0x6e73_6673;
    #[allow(clippy::unnecessary_cast)]
    if st.filesystem_type().0 as i64 != NSFS_MAGIC || meta.is_dir() {
        return Err(field(
            &f,
            format!("{} is not a {typ:?} namespace file", path.display()),
        ));
    }
    Ok(())
}

/// Validate an OCI `process` object (config.json's, or `exec --process`).
/// `at` is the JSON path used in messages.
pub fn plan_process(
    process: &oci_spec::runtime::Process,
    at: &str,
) -> Result<ProcessPlan, SpecError> {
    let args = process.args().clone().unwrap_or_default();
    if args.is_empty() {
        return Err(field(
            format!("{at}.args"),
            "empty; give the command to run",
        ));
    }
    if !process.cwd().is_absolute() {
        return Err(field(
            format!("{at}.cwd"),
            format!("{} is not absolute", process.cwd().display()),
        ));
    }
    let mut caps = CapSets::default();
    if let Some(c) = process.capabilities() {
        let conv = |set: &Option<oci_spec::runtime::Capabilities>, name: &str| {
            let mut out = Vec::new();
            for cap in set.iter().flatten() {
                let text = format!("CAP_{cap}");
                let parsed = text.parse::<caps::Capability>().map_err(|_| {
                    field(
                        format!("{at}.capabilities.{name}"),
                        format!("{text} is not a capability this kernel interface knows"),
                    )
                })?;
                out.push(parsed);
            }
            out.sort_by_key(|c| c.index());
            Ok::<_, SpecError>(out)
        };
        caps.bounding = conv(c.bounding(), "bounding")?;
        caps.effective = conv(c.effective(), "effective")?;
        caps.permitted = conv(c.permitted(), "permitted")?;
        caps.inheritable = conv(c.inheritable(), "inheritable")?;
        caps.ambient = conv(c.ambient(), "ambient")?;
    }
    let mut rlimits = Vec::new();
    for (i, r) in process.rlimits().iter().flatten().enumerate() {
        let name = r.typ().to_string();
        let resource = rlimit_number(&name).ok_or_else(|| {
            field(
                format!("{at}.rlimits[{i}].type"),
                format!("{name} is not known"),
            )
        })?;
        if r.soft() > r.hard() {
            return Err(field(
                format!("{at}.rlimits[{i}]"),
                format!(
                    "soft limit {} is above the hard limit {}",
                    r.soft(),
                    r.hard()
                ),
            ));
        }
        rlimits.push(Rlimit {
            resource,
            soft: r.soft(),
            hard: r.hard(),
        });
    }
    let u = process.user();
    Ok(ProcessPlan {
        args,
        env: process.env().clone().unwrap_or_default(),
        cwd: process.cwd().clone(),
        no_new_privileges: process.no_new_privileges().unwrap_or(false),
        caps,
        user: UserPlan {
            uid: u.uid(),
            gid: u.gid(),
            additional_gids: u.additional_gids().clone().unwrap_or_default(),
            umask: u.umask(),
        },
        rlimits,
        terminal: process.terminal().unwrap_or(false),
        oom_score_adj: process.oom_score_adj(),
        extra_fds: 0,
    })
}

pub fn rlimit_number(name: &str) -> Option<i32> {
    use libc::*;
    #[allow(clippy::unnecessary_cast)]
    Some(match name {
        "RLIMIT_CPU" => RLIMIT_CPU as i32,
        "RLIMIT_FSIZE" => RLIMIT_FSIZE as i32,
        "RLIMIT_DATA" => RLIMIT_DATA as i32,
        "RLIMIT_STACK" => RLIMIT_STACK as i32,
        "RLIMIT_CORE" => RLIMIT_CORE as i32,
        "RLIMIT_RSS" => RLIMIT_RSS as i32,
        "RLIMIT_NPROC" => RLIMIT_NPROC as i32,
        "RLIMIT_NOFILE" => RLIMIT_NOFILE as i32,
        "RLIMIT_MEMLOCK" => RLIMIT_MEMLOCK as i32,
        "RLIMIT_AS" => RLIMIT_AS as i32,
        "RLIMIT_LOCKS" => RLIMIT_LOCKS as i32,
        "RLIMIT_SIGPENDING" => RLIMIT_SIGPENDING as i32,
        "RLIMIT_MSGQUEUE" => RLIMIT_MSGQUEUE as i32,
        "RLIMIT_NICE" => RLIMIT_NICE as i32,
        "RLIMIT_RTPRIO" => RLIMIT_RTPRIO as i32,
        "RLIMIT_RTTIME" => RLIMIT_RTTIME as i32,
        _ => return None,
    })
}

fn plan_mount(
    i: usize,
    m: &oci_spec::runtime::Mount,
    bundle: Option<&Path>,
) -> Result<MountPlan, SpecError> {
    let dest = m.destination().clone();
    if !dest.is_absolute() {
        return Err(field(
            format!("mounts[{i}].destination"),
            format!("{} is not absolute", dest.display()),
        ));
    }
    if dest
        .components()
        .any(|c| c == std::path::Component::ParentDir)
    {
        return Err(field(
            format!("mounts[{i}].destination"),
            format!("{} contains `..`", dest.display()),
        ));
    }
    let options = m.options().clone().unwrap_or_default();
    let mut flags = MountFlags::default();
    let mut data = Vec::new();
    let mut bind = None;
    for o in &options {
        match o.as_str() {
            "ro" => flags.readonly = true,
            "rw" => flags.readonly = false,
            "nosuid" => flags.nosuid = true,
            "nodev" => flags.nodev = true,
            "noexec" => flags.noexec = true,
            "bind" => bind = Some(false),
            "rbind" => bind = Some(true),
            // Propagation of a bind: every container mount is a slave of
            // the host at most (the root is made rslave first); a private
            // or slave request is therefore already met.
            "private" | "rprivate" | "slave" | "rslave" => {}
            "shared" | "rshared" | "unbindable" | "runbindable" => {
                flags.propagation = Some(match o.trim_start_matches('r') {
                    "shared" => MountPropagation::Shared,
                    _ => MountPropagation::Unbindable,
                })
            }
            // Accepted with the kernel's defaults (atime handling) or as
            // no-ops that runc also accepts.
            "suid" | "dev" | "exec" | "relatime" | "norelatime" | "strictatime" | "noatime"
            | "nodiratime" | "defaults" | "async" | "sync" | "dirsync" | "tmpcopyup"
            | "nosymfollow" => {}
            // buildah run -v SRC:DST (no options) sends one empty option.
            "" => {}
            other if other.contains('=') || other == "newinstance" => data.push(other.to_string()),
            other => {
                return Err(field(
                    format!("mounts[{i}].options"),
                    format!("unknown option {other:?}"),
                ))
            }
        }
    }
    let typ = m.typ().clone().unwrap_or_default();
    let kind = if typ == "bind" || bind.is_some() {
        let mut source = m
            .source()
            .clone()
            .ok_or_else(|| field(format!("mounts[{i}].source"), "a bind mount needs a source"))?;
        if let Some(b) = bundle {
            source = b.join(source);
        }
        if !source.exists() {
            return Err(field(
                format!("mounts[{i}].source"),
                format!("{} does not exist", source.display()),
            ));
        }
        MountKind::Bind {
            dir: source.is_dir(),
            source,
            recursive: bind.unwrap_or(true),
        }
    } else if typ == "cgroup" || typ == "cgroup2" {
        // The container's own cgroup, read-only whatever the options say:
        // limits are set from outside, never by the container.
        flags.readonly = true;
        flags.nosuid = true;
        flags.nodev = true;
        flags.noexec = true;
        MountKind::Cgroup
    } else {
        match typ.as_str() {
            "tmpfs" | "proc" | "devpts" | "mqueue" | "sysfs" => {}
            other => {
                return Err(field(
                    format!("mounts[{i}].type"),
                    format!(
                    "{other:?} is not supported (tmpfs, proc, devpts, mqueue, sysfs, cgroup, bind)"
                ),
                ))
            }
        }
        MountKind::Fs {
            source: m
                .source()
                .as_ref()
                .map(|s| s.display().to_string())
                .unwrap_or_else(|| typ.clone()),
            fstype: typ,
            data: data.join(","),
        }
    };
    Ok(MountPlan {
        destination: dest,
        kind,
        flags,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> StepRequest {
        StepRequest {
            args: vec!["true".into()],
            env: vec!["A=1".into(), "TERM=dumb".into()],
            mounts: vec![UserMount {
                source: "/etc".into(),
                destination: "/mnt/etc".into(),
                readonly: true,
            }],
            cwd: "/tmp".into(),
            workdir: "/tmp".into(),
            home: Some("/nonexistent-home".into()),
            hostname: "buildcell".into(),
            share_net: false,
            terminal: false,
        }
    }

    #[test]
    fn step_default_plan() {
        let spec = step_spec(&request()).unwrap();
        let p = plan(&spec, vec![], false).unwrap();
        assert!(p.rootfs_readonly);
        assert_eq!(p.rootfs, Path::new("/"));
        assert!(p.namespaces.net && p.namespaces.user && p.namespaces.pid);
        assert_eq!(p.devices.len(), 6);
        assert_eq!(p.process.caps.bounding.len(), 3);
        assert!(p.process.no_new_privileges);
        // --env overrides TERM, adds A; nothing else of the caller leaks.
        assert!(p.process.env.contains(&"TERM=dumb".to_string()));
        assert!(p.process.env.contains(&"A=1".to_string()));
        assert_eq!(p.process.env.len(), 4);
        let cwd = p
            .mounts
            .iter()
            .find(|m| {
                m.destination == Path::new("/tmp") && matches!(m.kind, MountKind::Bind { .. })
            })
            .unwrap();
        assert!(!cwd.flags.readonly && cwd.flags.nosuid && cwd.flags.nodev);
        let user = p.mounts.last().unwrap();
        assert!(user.flags.readonly);
    }

    #[test]
    fn embedded_bpf_is_the_default_profile_compiled() {
        let caps: Vec<String> = STEP_CAPABILITIES.iter().map(|c| c.to_string()).collect();
        let runtime =
            crate::seccomp::compile(crate::seccomp::DEFAULT_PROFILE, "default.json", &caps)
                .unwrap();
        assert_eq!(step_seccomp(), runtime);
    }

    #[test]
    fn embedded_default_bpf_serves_every_capability_set() {
        // As shipped, no rule of seccomp/default.json depends on a
        // capability: create and run use the embedded program.
        let embedded = default_seccomp_for_any_caps()
            .expect("seccomp/default.json names a capability: the embedded BPF is step's only");
        let all: Vec<String> = caps::all().iter().map(|c| c.to_string()).collect();
        let podman: Vec<String> = [
            "CAP_CHOWN",
            "CAP_DAC_OVERRIDE",
            "CAP_FOWNER",
            "CAP_FSETID",
            "CAP_KILL",
            "CAP_NET_BIND_SERVICE",
            "CAP_SETFCAP",
            "CAP_SETGID",
            "CAP_SETPCAP",
            "CAP_SETUID",
            "CAP_SYS_CHROOT",
        ]
        .iter()
        .map(|c| c.to_string())
        .collect();
        for caps in [vec![], podman, all] {
            let runtime = crate::seccomp::compile_skipping(
                crate::seccomp::DEFAULT_PROFILE,
                "default.json",
                &caps,
                &|n| !crate::syscalls::is_known(n),
            )
            .unwrap();
            assert_eq!(embedded, runtime, "capabilities {caps:?}");
        }
    }

    #[test]
    fn share_net_keeps_host_network() {
        let mut r = request();
        r.share_net = true;
        let p = plan(&step_spec(&r).unwrap(), vec![], false).unwrap();
        assert!(!p.namespaces.net);
    }

    #[test]
    fn bad_mounts_name_the_field() {
        let mut spec = step_spec(&request()).unwrap();
        let mut mounts = spec.mounts().clone().unwrap();
        mounts[0].set_destination("relative".into());
        spec.set_mounts(Some(mounts.clone()));
        let e = plan(&spec, vec![], false).unwrap_err().to_string();
        assert!(e.starts_with("mounts[0].destination:"), "{e}");
        mounts[0].set_destination("/proc".into());
        // buildah run -v SRC:DST sends one empty option: accepted.
        mounts[0].set_options(Some(vec!["".into(), "nosuid".into()]));
        spec.set_mounts(Some(mounts.clone()));
        assert!(plan(&spec, vec![], false).is_ok());
        mounts[0].set_options(Some(vec!["frobnicate".into()]));
        spec.set_mounts(Some(mounts));
        let e = plan(&spec, vec![], false).unwrap_err().to_string();
        assert!(e.contains("unknown option \"frobnicate\""), "{e}");
    }

    #[test]
    fn missing_user_namespace_is_refused() {
        let mut spec = step_spec(&request()).unwrap();
        let mut linux = spec.linux().clone().unwrap();
        let ns: Vec<_> = linux
            .namespaces()
            .clone()
            .unwrap()
            .into_iter()
            .filter(|n| n.typ() != LinuxNamespaceType::User)
            .collect();
        linux.set_namespaces(Some(ns));
        spec.set_linux(Some(linux));
        let e = plan(&spec, vec![], false).unwrap_err().to_string();
        assert!(e.contains("new user namespace is required"), "{e}");
    }
}
