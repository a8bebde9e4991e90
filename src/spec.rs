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

/// Flags a mount gets, from its options.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MountFlags {
    pub readonly: bool,
    pub nosuid: bool,
    pub nodev: bool,
    pub noexec: bool,
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
    /// The bounding set; the permitted and effective sets of root after exec
    /// follow from it. Inheritable and ambient stay empty.
    pub capabilities: Vec<caps::Capability>,
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
    pub hostname: Option<String>,
    pub process: ProcessPlan,
    pub seccomp: Vec<CompiledFilter>,
    /// Record every exec through the seccomp-notify supervisor.
    pub audit_exec: bool,
    /// Build secrets, written to a read-only tmpfs at /run/secrets.
    pub secrets: Vec<Secret>,
    pub verbose: bool,
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

/// Validate `spec` into a plan.
pub fn plan(
    spec: &Spec,
    seccomp: Vec<CompiledFilter>,
    verbose: bool,
) -> Result<LaunchPlan, SpecError> {
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| field("root", "missing; a container needs a root filesystem"))?;
    let rootfs = root.path().clone();
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
            format!("{} is not a directory", rootfs.display()),
        ));
    }

    let mut mounts = Vec::new();
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        mounts.push(plan_mount(i, m)?);
    }
    let devices = if mounts.iter().any(|m| {
        m.destination == Path::new("/dev")
            && matches!(&m.kind, MountKind::Fs { fstype, .. } if fstype == "tmpfs")
    }) {
        DEFAULT_DEVICES.iter().map(PathBuf::from).collect()
    } else {
        Vec::new()
    };

    let linux = spec
        .linux()
        .as_ref()
        .ok_or_else(|| field("linux", "missing"))?;
    let mut ns = NamespacePlan::default();
    for (i, n) in linux.namespaces().iter().flatten().enumerate() {
        if n.path().is_some() {
            return Err(field(
                format!("linux.namespaces[{i}].path"),
                "joining an existing namespace is not supported yet; remove the path to get a new one",
            ));
        }
        match n.typ() {
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
    for (set, name) in [(ns.user, "user"), (ns.mount, "mount"), (ns.pid, "pid")] {
        if !set {
            return Err(field(
                "linux.namespaces",
                format!(
                    "a new {name} namespace is required: buildcell never runs a step in the host's"
                ),
            ));
        }
    }

    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| field("process", "missing; nothing to run"))?;
    let args = process.args().clone().unwrap_or_default();
    if args.is_empty() {
        return Err(field("process.args", "empty; give the command to run"));
    }
    if !process.cwd().is_absolute() {
        return Err(field(
            "process.cwd",
            format!("{} is not absolute", process.cwd().display()),
        ));
    }
    let mut capabilities = Vec::new();
    if let Some(c) = process.capabilities() {
        for cap in c.bounding().iter().flatten() {
            let name = format!("CAP_{cap}");
            let parsed = name.parse::<caps::Capability>().map_err(|_| {
                field(
                    "process.capabilities.bounding",
                    format!("{name} is not a capability this kernel interface knows"),
                )
            })?;
            capabilities.push(parsed);
        }
    }
    capabilities.sort_by_key(|c| c.index());

    Ok(LaunchPlan {
        rootfs,
        rootfs_readonly: root.readonly().unwrap_or(false),
        mounts,
        devices,
        namespaces: ns,
        hostname: spec.hostname().clone(),
        process: ProcessPlan {
            args,
            env: process.env().clone().unwrap_or_default(),
            cwd: process.cwd().clone(),
            no_new_privileges: process.no_new_privileges().unwrap_or(false),
            capabilities,
        },
        seccomp,
        audit_exec: true,
        secrets: Vec::new(),
        verbose,
    })
}

fn plan_mount(i: usize, m: &oci_spec::runtime::Mount) -> Result<MountPlan, SpecError> {
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
            "suid" | "dev" | "exec" | "private" | "rprivate" | "relatime" | "strictatime" => {}
            "bind" => bind = Some(false),
            "rbind" => bind = Some(true),
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
        let source = m
            .source()
            .clone()
            .ok_or_else(|| field(format!("mounts[{i}].source"), "a bind mount needs a source"))?;
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
    } else {
        match typ.as_str() {
            "tmpfs" | "proc" | "devpts" | "mqueue" | "sysfs" => {}
            other => {
                return Err(field(
                    format!("mounts[{i}].type"),
                    format!(
                        "{other:?} is not supported (tmpfs, proc, devpts, mqueue, sysfs, bind)"
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
        assert_eq!(p.process.capabilities.len(), 3);
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
