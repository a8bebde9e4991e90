//! A bundle (or a `step`'s spec, or an `exec` process) against a profile:
//! [`check`] lists **every** violation, one line each naming the field;
//! [`apply_defaults`] fills in what the bundle left out and says so.
//!
//! Pure but for the two closures of [`Context`] (canonicalising host
//! paths, listing a network namespace's links), so that every rule has a
//! unit test.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, LinuxResources, Process, Spec};

use super::profile::{NetworkMode, Profile, UserNamespace};

/// What the check needs to know about the caller and the host.
pub struct Context<'a> {
    /// buildcell runs as root of the initial user namespace.
    pub host_root: bool,
    /// `buildcell step` (its binds are the operator's own flags: only
    /// `mounts.never` applies to them).
    pub step: bool,
    /// The bundle directory (relative bind sources resolve against it).
    pub bundle: Option<&'a Path>,
    /// The links of the network namespace at a path (`lo`, `eth0`, ...).
    pub links: &'a dyn Fn(&Path) -> Result<Vec<String>, String>,
    /// A host path with symlinks resolved (the path itself if it cannot be).
    pub canonical: &'a dyn Fn(&Path) -> PathBuf,
    /// `$HOME` and `$XDG_RUNTIME_DIR` of the caller, for profile paths that
    /// start with them.
    pub home: Option<PathBuf>,
    pub runtime_dir: Option<PathBuf>,
}

fn ns_name(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Mount => "mount",
        LinuxNamespaceType::Network => "network",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Time => "time",
    }
}

/// How the bundle gets one kind of namespace.
enum Ns {
    New,
    Joined(PathBuf),
    Host,
}

fn namespace_of(spec: &Spec, kind: &str) -> Ns {
    let list = spec.linux().as_ref().and_then(|l| l.namespaces().as_ref());
    for n in list.into_iter().flatten() {
        if ns_name(n.typ()) == kind {
            return match n.path() {
                Some(p) => Ns::Joined(p.clone()),
                None => Ns::New,
            };
        }
    }
    Ns::Host
}

/// Whether the bundle as given runs with a user namespace of its own, or
/// would get one added (as host root, `user_namespace = "add"`).
pub fn adds_user_namespace(p: &Profile, spec: &Spec, host_root: bool) -> bool {
    host_root
        && p.new_namespaces.iter().any(|n| n == "user")
        && p.user_namespace == UserNamespace::Add
        && matches!(namespace_of(spec, "user"), Ns::Host)
}

/// Every violation of `p` by `spec`, in the order of the config's fields.
pub fn check(p: &Profile, spec: &Spec, ctx: &Context) -> Vec<String> {
    let mut v = Vec::new();
    let who = format!("profile {}", p.name);

    // Namespaces.
    for kind in &p.new_namespaces {
        if kind == "network" {
            continue;
        }
        match namespace_of(spec, kind) {
            Ns::New => {}
            Ns::Joined(path) if p.joinable_namespaces.contains(kind) => {
                let _ = path;
            }
            Ns::Joined(path) => v.push(format!(
                "linux.namespaces: {kind} namespace is joined by path {}; {who} requires a new one",
                path.display()
            )),
            Ns::Host if kind == "user" && !ctx.host_root => {
                // Already inside the engine's user namespace (rootless), or
                // an unprivileged caller: never host root.
            }
            Ns::Host if kind == "user" && p.user_namespace == UserNamespace::Add => {}
            Ns::Host if kind == "user" => v.push(format!(
                "linux.namespaces: no user namespace, so the container would run as host root; {who} requires one (user_namespace = \"require\"): run the engine rootless or with --userns=auto"
            )),
            Ns::Host => v.push(format!(
                "linux.namespaces: no {kind} namespace, so the host's would be shared; {who} requires a new one"
            )),
        }
    }
    // Looks-like-root: a user namespace that maps host root in gives
    // nothing. A mapping of size 0 maps no id (the kernel refuses it when
    // the map is written).
    if ctx.host_root && p.new_namespaces.iter().any(|n| n == "user") {
        let maps = spec
            .linux()
            .as_ref()
            .and_then(|l| l.uid_mappings().as_ref());
        if let Some(m) = maps.into_iter().flatten().find(|m| {
            m.size() > 0 && (m.host_id() == 0 || m.host_id().checked_add(m.size()).is_none())
        }) {
            v.push(format!(
                "linux.uidMappings: container ids {}..{} map host root (host ids from {}); {who} requires an unprivileged range outside",
                m.container_id(),
                m.container_id() as u64 + m.size() as u64 - 1,
                m.host_id()
            ));
        }
    }
    let net = p.network;
    let net_name = match net {
        NetworkMode::None => "none",
        NetworkMode::Loopback => "loopback",
        NetworkMode::Tcp => "tcp",
        NetworkMode::Host => "host",
    };
    match (namespace_of(spec, "network"), net) {
        (_, NetworkMode::Host) | (Ns::New, _) => {}
        (Ns::Host, _) => v.push(format!(
            "linux.namespaces: no network namespace, so the host's network would be shared; {who} allows network = {net_name}"
        )),
        (Ns::Joined(_), NetworkMode::Tcp) => {}
        (Ns::Joined(path), _) => match (ctx.links)(&path) {
            Ok(links) => {
                let extra: Vec<String> = links.into_iter().filter(|l| l != "lo").collect();
                if !extra.is_empty() {
                    v.push(format!(
                        "linux.namespaces: network namespace is joined by path {} with links {}; {who} allows network = {net_name} (nothing but lo)",
                        path.display(),
                        extra.join(", ")
                    ));
                }
            }
            Err(e) => v.push(format!(
                "linux.namespaces: network namespace {} cannot be inspected ({e}); {who} allows network = {net_name}",
                path.display()
            )),
        },
    }

    // The process.
    if let Some(proc) = spec.process() {
        v.extend(check_process(p, proc, "process"));
    }

    // Mounts.
    let expand = |path: &Path| -> Option<PathBuf> {
        let s = path.to_str()?;
        for (var, value) in [("$HOME", &ctx.home), ("$XDG_RUNTIME_DIR", &ctx.runtime_dir)] {
            if let Some(rest) = s.strip_prefix(var) {
                return value.as_ref().map(|d| d.join(rest.trim_start_matches('/')));
            }
        }
        Some(path.to_path_buf())
    };
    let under = |list: &[PathBuf], path: &Path| {
        list.iter()
            .filter_map(|p| expand(p))
            .any(|a| path_under(&a, path))
    };
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        let opts = m.options().clone().unwrap_or_default();
        let typ = m.typ().clone().unwrap_or_default();
        let is_bind = typ == "bind" || opts.iter().any(|o| o == "bind" || o == "rbind");
        let at = format!("mounts[{i}] ({})", m.destination().display());
        if !is_bind {
            if !p.filesystems.contains(&typ) {
                v.push(format!(
                    "{at}: filesystem type {typ:?} is not allowed; {who} allows {}",
                    p.filesystems.join(", ")
                ));
            }
            continue;
        }
        let Some(source) = m.source() else { continue };
        let source = match ctx.bundle {
            Some(b) if source.is_relative() => b.join(source),
            _ => source.clone(),
        };
        let source = (ctx.canonical)(&source);
        let readonly = opts.iter().any(|o| o == "ro");
        if let Some(bad) =
            p.never.iter().filter_map(|n| expand(n)).find(|n| {
                source.starts_with(n) || (n.starts_with(&source) && source != Path::new("/"))
            })
        {
            v.push(format!(
                "{at}: bind of {} exposes {}, which {who} never allows in a container",
                source.display(),
                bad.display()
            ));
            continue;
        }
        if ctx.step {
            continue;
        }
        let allowed = if readonly {
            under(&p.bind_read_only, &source) || under(&p.bind_read_write, &source)
        } else {
            under(&p.bind_read_write, &source)
        };
        if !allowed {
            let (mode, list) = if readonly {
                (
                    "read-only",
                    [&p.bind_read_only[..], &p.bind_read_write[..]].concat(),
                )
            } else {
                ("read-write", p.bind_read_write.clone())
            };
            v.push(format!(
                "{at}: {mode} bind of {} is not under a path {who} allows {mode} ({})",
                source.display(),
                describe_paths(&list)
            ));
        }
    }

    // Devices: one line for all of them (--privileged sends the host's
    // hundred).
    let devices: Vec<String> = spec
        .linux()
        .as_ref()
        .and_then(|l| l.devices().as_ref())
        .into_iter()
        .flatten()
        .map(|d| d.path())
        .filter(|path| {
            let default = crate::spec::DEFAULT_DEVICES
                .iter()
                .any(|x| Path::new(x) == path.as_path());
            !default && !p.devices.iter().any(|a| a == *path)
        })
        .map(|path| path.display().to_string())
        .collect();
    if !devices.is_empty() {
        v.push(format!(
            "linux.devices: {} not allowed; {who} allows {}",
            devices.join(", "),
            describe_paths(&p.devices)
        ));
    }

    // Sysctls.
    let mut sysctls: Vec<&String> = spec
        .linux()
        .as_ref()
        .and_then(|l| l.sysctl().as_ref())
        .into_iter()
        .flat_map(|m| m.keys())
        .collect();
    sysctls.sort();
    for k in sysctls {
        if !p
            .sysctls
            .iter()
            .any(|pat| super::profile::glob_match(pat, k))
        {
            v.push(format!(
                "linux.sysctl.{k}: not allowed; {who} allows {}",
                describe(&p.sysctls)
            ));
        }
    }

    // Hooks.
    if let Some(h) = spec.hooks() {
        #[allow(deprecated)]
        let kinds = [
            ("prestart", h.prestart()),
            ("createRuntime", h.create_runtime()),
            ("createContainer", h.create_container()),
            ("startContainer", h.start_container()),
            ("poststart", h.poststart()),
            ("poststop", h.poststop()),
        ];
        for (kind, list) in kinds {
            for (i, hook) in list.iter().flatten().enumerate() {
                let path = hook.path().display().to_string();
                if !p
                    .hooks
                    .iter()
                    .any(|pat| super::profile::glob_match(pat, &path))
                {
                    v.push(format!(
                        "hooks.{kind}[{i}].path: {path} is not allowed; {who} allows {}",
                        describe(&p.hooks)
                    ));
                }
            }
        }
    }

    // Cgroup limits.
    if let Some(r) = spec.linux().as_ref().and_then(|l| l.resources().as_ref()) {
        // At create an unlimited (-1) limit is a missing one: the
        // profile's default fills it.
        v.extend(check_resources(p, r, false));
    }
    v
}

/// Cgroup limits above the profile's maxima (a bundle's, or `update`'s;
/// with `unlimited_too`, a limit of -1 is one).
pub fn check_resources(p: &Profile, res: &LinuxResources, unlimited_too: bool) -> Vec<String> {
    let mut v = Vec::new();
    let who = format!("profile {}", p.name);
    if let Some(max) = p.memory_max {
        match res.memory().as_ref().and_then(|m| m.limit()) {
            Some(l) if l > max => v.push(format!(
                "linux.resources.memory.limit: {} is above {who}'s memory_max {}",
                bytes(l),
                bytes(max)
            )),
            Some(l) if l < 0 && unlimited_too => v.push(format!(
                "linux.resources.memory.limit: unlimited, above {who}'s memory_max {}",
                bytes(max)
            )),
            _ => {}
        }
    }
    if let Some(max) = p.pids_max {
        match res.pids().as_ref().map(|p| p.limit()) {
            Some(l) if l > max => v.push(format!(
                "linux.resources.pids.limit: {l} is above {who}'s pids_max {max}"
            )),
            Some(l) if l < 0 && unlimited_too => v.push(format!(
                "linux.resources.pids.limit: unlimited, above {who}'s pids_max {max}"
            )),
            _ => {}
        }
    }
    if let (Some(max), Some(cpus)) = (p.cpus_max, cpus_in(res)) {
        if cpus > max + 1e-9 {
            v.push(format!(
                "linux.resources.cpu: quota/period is {cpus:.2} CPUs, above {who}'s cpus_max {max}"
            ));
        }
    }
    v
}

/// The CPU limit in CPUs (quota / period), if there is one.
fn cpus_in(res: &LinuxResources) -> Option<f64> {
    let cpu = res.cpu().as_ref()?;
    let quota = cpu.quota().filter(|q| *q > 0)?;
    let period = cpu.period().filter(|p| *p > 0).unwrap_or(100_000);
    Some(quota as f64 / period as f64)
}

fn cpus_of(spec: &Spec) -> Option<f64> {
    cpus_in(spec.linux().as_ref()?.resources().as_ref()?)
}

/// The checks that apply to any process: the container's and each
/// `exec`'d one. `at` is the field prefix (`process`).
pub fn check_process(p: &Profile, proc: &Process, at: &str) -> Vec<String> {
    let mut v = Vec::new();
    let who = format!("profile {}", p.name);
    if let Some(c) = proc.capabilities() {
        let mut extra: Vec<String> = Vec::new();
        let mut sets: Vec<&str> = Vec::new();
        for (name, set) in [
            ("bounding", c.bounding()),
            ("effective", c.effective()),
            ("permitted", c.permitted()),
            ("inheritable", c.inheritable()),
            ("ambient", c.ambient()),
        ] {
            let mut found = false;
            for cap in set.iter().flatten() {
                let text = format!("CAP_{cap}");
                if !p.capabilities.contains(&text) {
                    found = true;
                    if !extra.contains(&text) {
                        extra.push(text);
                    }
                }
            }
            if found {
                sets.push(name);
            }
        }
        if !extra.is_empty() {
            extra.sort();
            v.push(format!(
                "{at}.capabilities: {} not allowed (in {}); {who} allows {}",
                extra.join(", "),
                sets.join(", "),
                describe(&p.capabilities)
            ));
        }
    }
    for (i, r) in proc.rlimits().iter().flatten().enumerate() {
        let name = r.typ().to_string();
        if let Some(max) = p.rlimits.get(&name) {
            if r.hard() > *max {
                v.push(format!(
                    "{at}.rlimits[{i}]: {name} hard limit {} is above {who}'s {max}",
                    r.hard()
                ));
            }
        }
    }
    v
}

fn describe(list: &[String]) -> String {
    if list.is_empty() {
        "none".into()
    } else {
        list.join(", ")
    }
}

fn describe_paths(list: &[PathBuf]) -> String {
    describe(
        &list
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>(),
    )
}

fn bytes(n: i64) -> String {
    const G: i64 = 1 << 30;
    const M: i64 = 1 << 20;
    if n % G == 0 {
        format!("{}G", n / G)
    } else if n % M == 0 {
        format!("{}M", n / M)
    } else {
        format!("{n} bytes")
    }
}

/// Give `spec` what `p` says a bundle gets when it says nothing (cgroup
/// limits) and what it always gets (no_new_privileges, a read-only root):
/// each change as one line for `state` and the audit record. Cgroup
/// defaults only when `cgroups` (the caller makes a cgroup).
pub fn apply_defaults(p: &Profile, spec: &mut Spec, cgroups: bool) -> Vec<String> {
    use oci_spec::runtime::{LinuxCpuBuilder, LinuxPidsBuilder};
    let mut notes = Vec::new();
    if p.no_new_privileges {
        if let Some(proc) = spec.process_mut() {
            if proc.no_new_privileges() != Some(true) {
                proc.set_no_new_privileges(Some(true));
                notes.push("process.noNewPrivileges: set to true (no_new_privileges)".into());
            }
        }
    }
    if p.rootfs_read_only {
        if let Some(root) = spec.root_mut() {
            if root.readonly() != Some(true) {
                root.set_readonly(Some(true));
                notes.push("root.readonly: set to true (mounts.rootfs_read_only)".into());
            }
        }
    }
    let cpus_missing = cpus_of(spec).is_none();
    let Some(linux) = spec.linux_mut().as_mut().filter(|_| cgroups) else {
        return notes;
    };
    let mut res = linux
        .resources()
        .clone()
        .unwrap_or_else(LinuxResources::default);
    let mut changed = false;
    let mem_limit = res
        .memory()
        .as_ref()
        .and_then(|m| m.limit())
        .filter(|l| *l > 0);
    if let (None, Some(d)) = (mem_limit, p.memory_default.or(p.memory_max)) {
        // Through JSON: keeps every other field of an existing section.
        let mut m = serde_json::to_value(res.memory()).unwrap_or_default();
        if !m.is_object() {
            m = serde_json::json!({});
        }
        m["limit"] = d.into();
        res.set_memory(serde_json::from_value(m).ok());
        changed = true;
        notes.push(format!(
            "linux.resources.memory.limit: {} (profile default)",
            bytes(d)
        ));
    }
    let pids_limit = res.pids().as_ref().map(|p| p.limit()).filter(|l| *l > 0);
    if let (None, Some(d)) = (pids_limit, p.pids_default.or(p.pids_max)) {
        if let Ok(pids) = LinuxPidsBuilder::default().limit(d).build() {
            res.set_pids(Some(pids));
            changed = true;
            notes.push(format!("linux.resources.pids.limit: {d} (profile default)"));
        }
    }
    if let (true, Some(c)) = (cpus_missing, p.cpus_default.or(p.cpus_max)) {
        let mut cpu = res.cpu().clone().unwrap_or_else(|| {
            LinuxCpuBuilder::default()
                .build()
                .expect("an empty cpu section builds")
        });
        cpu.set_period(Some(100_000));
        cpu.set_quota(Some((c * 100_000.0).round() as i64));
        res.set_cpu(Some(cpu));
        changed = true;
        notes.push(format!("linux.resources.cpu: {c} CPUs (profile default)"));
    }
    if changed {
        linux.set_resources(Some(res));
    }
    notes
}

/// Annotations by which the CRI implementations mark a pod's sandbox
/// container (the pause process): containerd's, then CRI-O's.
const SANDBOX_ANNOTATIONS: [&str; 2] = [
    "io.kubernetes.cri.container-type",
    "io.kubernetes.cri-o.ContainerType",
];

/// The bundle is a Kubernetes pod's sandbox container: the pause process,
/// which holds the pod's namespaces and needs no capability, but to which
/// the CRI gives the runtime's default set with no way for the pod to drop
/// it. Marking a bundle so only makes buildcell narrow its capabilities
/// (never widen anything), so the annotation need not be trusted.
pub fn is_pod_sandbox(spec: &Spec) -> bool {
    spec.annotations().as_ref().is_some_and(|a| {
        SANDBOX_ANNOTATIONS
            .iter()
            .any(|k| a.get(*k).map(String::as_str) == Some("sandbox"))
    })
}

/// Capabilities that are buildcell's or the CRI's default, not the
/// operator's request (`step`'s; a pod sandbox's): keep only those the
/// profile allows, and say which went.
pub fn narrow_capabilities(p: &Profile, spec: &mut Spec) -> Option<String> {
    let proc = spec.process_mut().as_mut()?;
    let mut caps = proc.capabilities().clone()?;
    let allowed = |c: &oci_spec::runtime::Capability| p.capabilities.contains(&format!("CAP_{c}"));
    let mut dropped: Vec<String> = Vec::new();
    let mut narrow = |set: Option<oci_spec::runtime::Capabilities>| {
        set.map(|s| {
            s.into_iter()
                .filter(|c| {
                    let keep = allowed(c);
                    if !keep && !dropped.contains(&format!("CAP_{c}")) {
                        dropped.push(format!("CAP_{c}"));
                    }
                    keep
                })
                .collect()
        })
    };
    caps.set_bounding(narrow(caps.bounding().clone()));
    caps.set_effective(narrow(caps.effective().clone()));
    caps.set_permitted(narrow(caps.permitted().clone()));
    caps.set_inheritable(narrow(caps.inheritable().clone()));
    caps.set_ambient(narrow(caps.ambient().clone()));
    proc.set_capabilities(Some(caps));
    if dropped.is_empty() {
        return None;
    }
    dropped.sort();
    Some(format!(
        "process.capabilities: {} dropped (not in profile {})",
        dropped.join(", "),
        p.name
    ))
}

/// `exec`'s process: what `apply_defaults` does for the container's.
pub fn apply_process_defaults(p: &Profile, proc: &mut Process) {
    if p.no_new_privileges {
        proc.set_no_new_privileges(Some(true));
    }
}

/// The links of the network namespace at `path`, read from a thread that
/// joins it (`/proc/thread-self/net/dev` lists the thread's namespace).
pub fn netns_links(path: &Path) -> Result<Vec<String>, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("setns: {}", e.desc()))?;
            let text = std::fs::read_to_string("/proc/thread-self/net/dev")
                .map_err(|e| format!("/proc/thread-self/net/dev: {e}"))?;
            Ok(text
                .lines()
                .skip(2)
                .filter_map(|l| l.split(':').next())
                .map(|n| n.trim().to_string())
                .filter(|n| !n.is_empty())
                .collect())
        })
        .join()
        .unwrap_or_else(|_| Err("the inspecting thread failed".into()))
    })
}

/// `process.user = "random"` (OpenShift style): a uid drawn from the
/// profile's range, gid 0, and an `/etc/passwd` entry for it so that tools
/// that look themselves up work. The image's passwd (under `rootfs`) plus
/// one line is written to `passwd_out` and bound read-only over
/// `/etc/passwd`; `HOME` is `/tmp`, writable in every container. Returns
/// the note for `state`, or `None` when the profile keeps the bundle's user.
pub fn apply_random_user(
    p: &Profile,
    spec: &mut Spec,
    rootfs: &Path,
    passwd_out: &Path,
    seed: u64,
) -> Result<Option<String>, String> {
    if p.user != super::profile::UserMode::Random {
        return Ok(None);
    }
    let [lo, hi] = p.random_uids;
    let uid = lo + (seed % u64::from(hi - lo + 1)) as u32;
    // With maps in the bundle, the drawn uid and gid 0 must be mapped.
    if let Some(l) = spec.linux() {
        let covers = |maps: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>, id: u32| {
            maps.as_ref().is_none_or(|ms| {
                ms.iter()
                    .any(|m| id >= m.container_id() && (id - m.container_id()) < m.size())
            })
        };
        if !covers(l.uid_mappings(), uid) || !covers(l.gid_mappings(), 0) {
            return Err(format!(
                "uid {uid} (from random_uids {lo}..{hi}) or gid 0 is not mapped by linux.uidMappings/gidMappings; map container ids 0-65535 or use a profile with user = \"bundle\""
            ));
        }
    }
    let name = format!("buildcell-{uid}");
    let image_passwd = rootfs.join("etc/passwd");
    let image = std::fs::read_to_string(&image_passwd).map_err(|e| {
        format!(
            "{}: {e}; the image needs an /etc/passwd to extend with the random user's entry",
            image_passwd.display()
        )
    })?;
    let mut text: String = image
        .lines()
        .filter(|l| l.split(':').nth(2) != Some(&uid.to_string()))
        .map(|l| format!("{l}\n"))
        .collect();
    text.push_str(&format!(
        "{name}:x:{uid}:0:buildcell random user:/tmp:/bin/sh\n"
    ));
    std::fs::write(passwd_out, text).map_err(|e| format!("{}: {e}", passwd_out.display()))?;
    let proc = spec
        .process_mut()
        .as_mut()
        .ok_or("process: missing; nothing to run as a random user")?;
    // Not root, and no capability but in the bounding set (OpenShift's
    // restricted default).
    if let Some(mut caps) = proc.capabilities().clone() {
        caps.set_effective(None);
        caps.set_permitted(None);
        caps.set_inheritable(None);
        caps.set_ambient(None);
        proc.set_capabilities(Some(caps));
    }
    let mut user = proc.user().clone();
    user.set_uid(uid);
    user.set_gid(0);
    user.set_additional_gids(None);
    proc.set_user(user);
    let mut env: Vec<String> = proc
        .env()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| {
            !["HOME=", "USER=", "LOGNAME="]
                .iter()
                .any(|k| e.starts_with(k))
        })
        .collect();
    env.extend([
        "HOME=/tmp".to_string(),
        format!("USER={name}"),
        format!("LOGNAME={name}"),
    ]);
    proc.set_env(Some(env));
    let mount: oci_spec::runtime::Mount = serde_json::from_value(serde_json::json!({
        "destination": "/etc/passwd", "type": "bind", "source": passwd_out,
        "options": ["bind", "ro", "nosuid", "nodev", "noexec"]
    }))
    .map_err(|e| e.to_string())?;
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    mounts.push(mount);
    spec.set_mounts(Some(mounts));
    Ok(Some(format!(
        "process.user: random uid {uid}, gid 0, /etc/passwd entry {name}, HOME=/tmp (process.user = \"random\")"
    )))
}

/// A seed for [`apply_random_user`] from the kernel's random source.
pub fn random_seed() -> u64 {
    let mut b = [0u8; 8];
    let _ = std::fs::File::open("/dev/urandom").and_then(|mut f| {
        use std::io::Read;
        f.read_exact(&mut b)
    });
    u64::from_ne_bytes(b)
}

/// `path` is `allowed` or beneath it. A component of `allowed` may hold `*`,
/// any run of characters within that one component: `/var/tmp/buildah*`
/// allows `/var/tmp/buildah2790/hosts` but not `/var/tmp/x/buildah1`.
pub(crate) fn path_under(allowed: &Path, path: &Path) -> bool {
    let mut have = path.components();
    allowed.components().all(|want| {
        let Some(got) = have.next() else {
            return false;
        };
        match (want.as_os_str().to_str(), got.as_os_str().to_str()) {
            (Some(w), Some(g)) if w.contains('*') => super::profile::glob_match(w, g),
            _ => want == got,
        }
    })
}
