//! The profile schema: what a TOML file in `profiles/` may say, parsed
//! strictly (unknown keys and wrong types are errors naming file, line and
//! key), merged with the profile it `extends`, then resolved into a
//! [`Profile`] with every default filled in.
//!
//! Every section and key is documented in `profiles/README.md`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A profile file as written: every key optional, so that a profile that
/// `extends` another says only what differs.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProfile {
    pub description: Option<String>,
    pub extends: Option<String>,
    pub namespaces: Option<RawNamespaces>,
    pub network: Option<RawNetwork>,
    pub process: Option<RawProcess>,
    pub mounts: Option<RawMounts>,
    pub devices: Option<RawDevices>,
    pub sysctls: Option<RawPatterns>,
    pub hooks: Option<RawPatterns>,
    pub cgroups: Option<RawCgroups>,
    pub seccomp: Option<RawSeccomp>,
    pub landlock: Option<RawLandlock>,
    pub audit: Option<RawAudit>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNamespaces {
    pub new: Option<Vec<String>>,
    pub joinable: Option<Vec<String>>,
    pub user_namespace: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNetwork {
    pub mode: Option<String>,
    pub connect_tcp: Option<Vec<u16>>,
    pub bind_tcp: Option<Vec<u16>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProcess {
    pub no_new_privileges: Option<bool>,
    pub capabilities: Option<Vec<String>>,
    pub user: Option<String>,
    pub random_uids: Option<[u32; 2]>,
    pub rlimits: Option<std::collections::BTreeMap<String, u64>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMounts {
    pub bind_read_write: Option<Vec<String>>,
    pub bind_read_only: Option<Vec<String>>,
    pub never: Option<Vec<String>>,
    pub filesystems: Option<Vec<String>>,
    pub rootfs_read_only: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDevices {
    pub allowed: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPatterns {
    pub allowed: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCgroups {
    pub memory_max: Option<String>,
    pub memory_default: Option<String>,
    pub pids_max: Option<i64>,
    pub pids_default: Option<i64>,
    pub cpus_max: Option<f64>,
    pub cpus_default: Option<f64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSeccomp {
    pub profile: Option<String>,
    pub deny: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLandlock {
    pub mode: Option<String>,
    pub read_exec: Option<Vec<String>>,
    pub read_write: Option<Vec<String>>,
    pub writable_binds: Option<bool>,
    pub scope_signal: Option<bool>,
    pub scope_abstract_unix: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    pub redact_env: Option<Vec<String>>,
    pub sync: Option<String>,
}

/// `child` over `parent`: a key the child sets wins, whole (a list is
/// replaced, not appended: what a profile allows is readable in one file
/// plus the ones it extends, key by key).
macro_rules! merge_section {
    ($child:expr, $parent:expr, $($field:ident),+) => {
        match ($child, $parent) {
            (Some(c), Some(p)) => Some({
                let mut m = c;
                $( if m.$field.is_none() { m.$field = p.$field; } )+
                m
            }),
            (c, p) => c.or(p),
        }
    };
}

impl RawProfile {
    /// This profile over the one it extends.
    pub fn over(self, parent: RawProfile) -> RawProfile {
        RawProfile {
            description: self.description.or(parent.description),
            extends: None,
            namespaces: merge_section!(
                self.namespaces,
                parent.namespaces,
                new,
                joinable,
                user_namespace
            ),
            network: merge_section!(self.network, parent.network, mode, connect_tcp, bind_tcp),
            process: merge_section!(
                self.process,
                parent.process,
                no_new_privileges,
                capabilities,
                user,
                random_uids,
                rlimits
            ),
            mounts: merge_section!(
                self.mounts,
                parent.mounts,
                bind_read_write,
                bind_read_only,
                never,
                filesystems,
                rootfs_read_only
            ),
            devices: merge_section!(self.devices, parent.devices, allowed),
            sysctls: merge_section!(self.sysctls, parent.sysctls, allowed),
            hooks: merge_section!(self.hooks, parent.hooks, allowed),
            cgroups: merge_section!(
                self.cgroups,
                parent.cgroups,
                memory_max,
                memory_default,
                pids_max,
                pids_default,
                cpus_max,
                cpus_default
            ),
            seccomp: merge_section!(self.seccomp, parent.seccomp, profile, deny),
            landlock: merge_section!(
                self.landlock,
                parent.landlock,
                mode,
                read_exec,
                read_write,
                writable_binds,
                scope_signal,
                scope_abstract_unix
            ),
            audit: merge_section!(self.audit, parent.audit, redact_env, sync),
        }
    }
}

/// Namespace kinds a profile can name.
pub const NAMESPACE_KINDS: [&str; 7] = ["user", "mount", "network", "pid", "ipc", "uts", "cgroup"];

/// What to do with a bundle that has no user namespace, as host root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UserNamespace {
    /// Add one (looks-like-root: root inside, an unprivileged range outside).
    Add,
    /// Refuse the bundle.
    Require,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkMode {
    /// A new network namespace with only `lo`, and no TCP at all.
    None,
    /// A new network namespace with only `lo`; TCP on it allowed.
    Loopback,
    /// Any network namespace but the host's; TCP limited to the listed ports.
    Tcp,
    /// Anything, the host's network included.
    Host,
}

/// Who the process runs as inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UserMode {
    /// As the bundle (or `step`: root) says.
    Bundle,
    /// A uid drawn from `random_uids`, gid 0, with a passwd entry.
    Random,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LandlockMode {
    Off,
    Require,
    BestEffort,
}

/// A resolved profile: every key has its value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub name: String,
    pub description: String,
    /// Namespaces that must be new (not the host's, not joined by path).
    pub new_namespaces: Vec<String>,
    /// Of those, the ones that may be joined by path instead (a pod's).
    pub joinable_namespaces: Vec<String>,
    pub user_namespace: UserNamespace,
    pub network: NetworkMode,
    pub connect_tcp: Vec<u16>,
    pub bind_tcp: Vec<u16>,
    pub no_new_privileges: bool,
    pub capabilities: Vec<String>,
    pub user: UserMode,
    pub random_uids: [u32; 2],
    /// Highest hard value per `RLIMIT_*` name; names not listed are free.
    pub rlimits: std::collections::BTreeMap<String, u64>,
    pub bind_read_write: Vec<PathBuf>,
    pub bind_read_only: Vec<PathBuf>,
    pub never: Vec<PathBuf>,
    pub filesystems: Vec<String>,
    pub rootfs_read_only: bool,
    pub devices: Vec<PathBuf>,
    pub sysctls: Vec<String>,
    pub hooks: Vec<String>,
    pub memory_max: Option<i64>,
    pub memory_default: Option<i64>,
    pub pids_max: Option<i64>,
    pub pids_default: Option<i64>,
    pub cpus_max: Option<f64>,
    pub cpus_default: Option<f64>,
    /// A file of `seccomp/` (without `.json`), stacked on the bundle's own
    /// filter; `none` for no extra filter.
    pub seccomp: String,
    pub seccomp_deny: Vec<String>,
    pub landlock: LandlockMode,
    pub landlock_read_exec: Vec<PathBuf>,
    pub landlock_read_write: Vec<PathBuf>,
    pub landlock_writable_binds: bool,
    pub scope_signal: bool,
    pub scope_abstract_unix: bool,
    pub redact_env: Vec<String>,
    /// fdatasync the audit log after every record (`audit.sync =
    /// "record"`), not only at checkpoints and the end.
    pub sync_every_record: bool,
}

impl Profile {
    /// Whether an environment variable's value must never be recorded
    /// (`audit.redact_env`).
    pub fn redacts_env(&self, name: &str) -> bool {
        let upper = name.to_ascii_uppercase();
        self.redact_env
            .iter()
            .any(|p| glob_match(&p.to_ascii_uppercase(), &upper))
    }
}

/// A problem in a profile, before it has a file and line.
pub struct Problem {
    /// The dotted key (`process.capabilities`).
    pub key: String,
    /// A value to find the line by (the offending list element), if any.
    pub value: Option<String>,
    pub message: String,
}

fn problem(key: &str, value: Option<&str>, message: impl Into<String>) -> Problem {
    Problem {
        key: key.into(),
        value: value.map(String::from),
        message: message.into(),
    }
}

/// Fill defaults and check every value; `known_syscall` says whether a
/// syscall name exists.
pub fn resolve(
    name: &str,
    raw: RawProfile,
    known_syscall: &dyn Fn(&str) -> bool,
) -> Result<Profile, Problem> {
    let ns = raw.namespaces.unwrap_or_default();
    let net = raw.network.unwrap_or_default();
    let pr = raw.process.unwrap_or_default();
    let mo = raw.mounts.unwrap_or_default();
    let cg = raw.cgroups.unwrap_or_default();
    let sc = raw.seccomp.unwrap_or_default();
    let ll = raw.landlock.unwrap_or_default();
    let au = raw.audit.unwrap_or_default();

    let kinds = |key: &str, list: Option<Vec<String>>| -> Result<Vec<String>, Problem> {
        let list = list.unwrap_or_default();
        for k in &list {
            if !NAMESPACE_KINDS.contains(&k.as_str()) {
                return Err(problem(
                    key,
                    Some(k),
                    format!(
                        "unknown namespace {k:?}; use {}",
                        NAMESPACE_KINDS.join(", ")
                    ),
                ));
            }
        }
        Ok(list)
    };
    let new_namespaces = kinds("namespaces.new", ns.new)?;
    let joinable_namespaces = kinds("namespaces.joinable", ns.joinable)?;
    let user_namespace = match ns.user_namespace.as_deref() {
        None | Some("add") => UserNamespace::Add,
        Some("require") => UserNamespace::Require,
        Some(o) => {
            return Err(problem(
                "namespaces.user_namespace",
                Some(o),
                format!("{o:?} is not \"add\" or \"require\""),
            ))
        }
    };
    let network = match net.mode.as_deref() {
        None | Some("none") => NetworkMode::None,
        Some("loopback") => NetworkMode::Loopback,
        Some("tcp") => NetworkMode::Tcp,
        Some("host") => NetworkMode::Host,
        Some(o) => {
            return Err(problem(
                "network.mode",
                Some(o),
                format!("{o:?} is not none, loopback, tcp or host"),
            ))
        }
    };
    let connect_tcp = net.connect_tcp.unwrap_or_default();
    let bind_tcp = net.bind_tcp.unwrap_or_default();
    if network != NetworkMode::Tcp && (!connect_tcp.is_empty() || !bind_tcp.is_empty()) {
        return Err(problem(
            "network.connect_tcp",
            None,
            "ports are only meaningful with mode = \"tcp\"",
        ));
    }
    let capabilities = pr.capabilities.unwrap_or_default();
    for c in &capabilities {
        if c.parse::<caps::Capability>().is_err() {
            return Err(problem(
                "process.capabilities",
                Some(c),
                format!("unknown capability {c:?} (names are like CAP_CHOWN)"),
            ));
        }
    }
    let user = match pr.user.as_deref() {
        None | Some("bundle") => UserMode::Bundle,
        Some("random") => UserMode::Random,
        Some(o) => {
            return Err(problem(
                "process.user",
                Some(o),
                format!("{o:?} is not \"bundle\" or \"random\""),
            ))
        }
    };
    let random_uids = pr.random_uids.unwrap_or([1000, 65533]);
    if random_uids[0] == 0 || random_uids[0] > random_uids[1] || random_uids[1] > 65533 {
        return Err(problem(
            "process.random_uids",
            None,
            "must be [LOW, HIGH] with 1 <= LOW <= HIGH <= 65533 (the ids a user namespace maps)",
        ));
    }
    let rlimits = pr.rlimits.unwrap_or_default();
    for k in rlimits.keys() {
        if crate::spec::rlimit_number(k).is_none() {
            return Err(problem(
                "process.rlimits",
                Some(k),
                format!("unknown rlimit {k:?} (names are like RLIMIT_NOFILE)"),
            ));
        }
    }
    let paths = |key: &str, list: Option<Vec<String>>| -> Result<Vec<PathBuf>, Problem> {
        list.unwrap_or_default()
            .into_iter()
            .map(|p| {
                let path = PathBuf::from(&p);
                let rooted = path.is_absolute()
                    || ["$HOME", "$XDG_RUNTIME_DIR"]
                        .iter()
                        .any(|v| p == *v || p.starts_with(&format!("{v}/")));
                if !rooted
                    || path
                        .components()
                        .any(|c| c == std::path::Component::ParentDir)
                {
                    Err(problem(
                        key,
                        Some(&p),
                        format!("{p:?} is not an absolute path (or $HOME/..., $XDG_RUNTIME_DIR/...) without `..`"),
                    ))
                } else {
                    Ok(path)
                }
            })
            .collect()
    };
    let filesystems = mo.filesystems.unwrap_or_else(|| {
        [
            "proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2",
        ]
        .map(String::from)
        .to_vec()
    });
    let size = |key: &str, v: Option<String>| -> Result<Option<i64>, Problem> {
        match v {
            None => Ok(None),
            Some(t) => crate::spec::parse_size(&t)
                .map(|n| Some(n as i64))
                .map_err(|e| problem(key, Some(&t), format!("{t:?}: {e}"))),
        }
    };
    let memory_max = size("cgroups.memory_max", cg.memory_max)?;
    let memory_default = size("cgroups.memory_default", cg.memory_default)?;
    let positive = |key: &str, v: Option<i64>| -> Result<Option<i64>, Problem> {
        match v {
            Some(n) if n <= 0 => Err(problem(key, None, "must be a positive number")),
            v => Ok(v),
        }
    };
    let pids_max = positive("cgroups.pids_max", cg.pids_max)?;
    let pids_default = positive("cgroups.pids_default", cg.pids_default)?;
    for (key, v) in [
        ("cgroups.cpus_max", cg.cpus_max),
        ("cgroups.cpus_default", cg.cpus_default),
    ] {
        if v.is_some_and(|c| !(c > 0.0 && c <= 4096.0)) {
            return Err(problem(key, None, "must be a number of CPUs above 0"));
        }
    }
    let over = |d: Option<f64>, m: Option<f64>| matches!((d, m), (Some(d), Some(m)) if d > m);
    if over(
        memory_default.map(|v| v as f64),
        memory_max.map(|v| v as f64),
    ) || over(pids_default.map(|v| v as f64), pids_max.map(|v| v as f64))
        || over(cg.cpus_default, cg.cpus_max)
    {
        return Err(problem(
            "cgroups",
            None,
            "a *_default is above its *_max; lower the default",
        ));
    }
    let seccomp = sc.profile.unwrap_or_else(|| "default".into());
    if seccomp.is_empty()
        || !seccomp
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
    {
        return Err(problem(
            "seccomp.profile",
            Some(&seccomp),
            "must name a file of seccomp/ without .json (letters, digits, - and _)",
        ));
    }
    let seccomp_deny = sc.deny.unwrap_or_default();
    for s in &seccomp_deny {
        if !known_syscall(s) {
            return Err(problem(
                "seccomp.deny",
                Some(s),
                format!("unknown syscall {s:?} on x86_64"),
            ));
        }
    }
    let sync_every_record = match au.sync.as_deref() {
        None | Some("checkpoint") => false,
        Some("record") => true,
        Some(o) => {
            return Err(problem(
                "audit.sync",
                Some(o),
                format!("{o:?} is not \"checkpoint\" or \"record\""),
            ))
        }
    };
    let landlock = match ll.mode.as_deref() {
        None | Some("require") => LandlockMode::Require,
        Some("best-effort") => LandlockMode::BestEffort,
        Some("off") => LandlockMode::Off,
        Some(o) => {
            return Err(problem(
                "landlock.mode",
                Some(o),
                format!("{o:?} is not require, best-effort or off"),
            ))
        }
    };
    Ok(Profile {
        name: name.into(),
        description: raw.description.unwrap_or_default(),
        new_namespaces,
        joinable_namespaces,
        user_namespace,
        network,
        connect_tcp,
        bind_tcp,
        no_new_privileges: pr.no_new_privileges.unwrap_or(true),
        capabilities,
        user,
        random_uids,
        rlimits,
        bind_read_write: paths("mounts.bind_read_write", mo.bind_read_write)?,
        bind_read_only: paths("mounts.bind_read_only", mo.bind_read_only)?,
        never: paths("mounts.never", mo.never)?,
        filesystems,
        rootfs_read_only: mo.rootfs_read_only.unwrap_or(false),
        devices: paths("devices.allowed", raw.devices.and_then(|d| d.allowed))?,
        sysctls: raw.sysctls.and_then(|s| s.allowed).unwrap_or_default(),
        hooks: raw.hooks.and_then(|s| s.allowed).unwrap_or_default(),
        memory_max,
        memory_default,
        pids_max,
        pids_default,
        cpus_max: cg.cpus_max,
        cpus_default: cg.cpus_default,
        seccomp,
        seccomp_deny,
        landlock,
        landlock_read_exec: paths("landlock.read_exec", ll.read_exec)?,
        landlock_read_write: paths("landlock.read_write", ll.read_write)?,
        landlock_writable_binds: ll.writable_binds.unwrap_or(false),
        scope_signal: ll.scope_signal.unwrap_or(true),
        scope_abstract_unix: ll.scope_abstract_unix.unwrap_or(true),
        redact_env: au.redact_env.unwrap_or_default(),
        sync_every_record,
    })
}

/// Shell-style match of `*` (any run of characters) in `pattern`.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}
