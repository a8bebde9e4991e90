//! The container's filesystem view.
//!
//! Every source (the root, each bind, each device node) is captured first as
//! a detached mount fd with `open_tree(OPEN_TREE_CLONE)`, while host paths
//! still mean what they say; flags are set on those fds with
//! `mount_setattr`, which applies read-only to *every* submount at once.
//! Then the root is attached and pivoted into, and the plan's mounts are
//! made inside it in order, attaching the captured fds.

use std::collections::BTreeMap;
use std::fs;
use std::io::ErrorKind;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{symlink, DirBuilderExt};
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::spec::{LaunchPlan, MountFlags, MountKind, MountPlan, MountPropagation, PlanMode};
use crate::sys::{self, attr};

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("{what} {path}: {source}")]
    Sys {
        what: &'static str,
        path: PathBuf,
        source: sys::SysError,
    },
    #[error("mount {fstype} on {path}: {errno}")]
    Mount {
        fstype: String,
        path: PathBuf,
        errno: nix::errno::Errno,
    },
    #[error("{op} {path}: {errno}")]
    Call {
        op: &'static str,
        path: PathBuf,
        errno: nix::errno::Errno,
    },
    #[error("bind mount at {path}: its source was not captured before the pivot")]
    NotCaptured { path: PathBuf },
    #[error("idmap mount sources: {message}")]
    Idmap { message: String },
    #[error("write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("/dev/null in the container is not the null device (a symlink or another file), so masked files cannot be masked with it; leave /dev to buildcell (a tmpfs /dev mount) or give the image a real /dev/null")]
    NotNullDevice,
    #[error("mount destination {path} does not exist and cannot be created ({source}); choose a destination that exists, or one under /tmp, /run or the working directory")]
    Destination {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The detached mounts captured before the pivot.
pub struct Sources {
    root: OwnedFd,
    binds: BTreeMap<usize, OwnedFd>,
    devices: Vec<(PathBuf, OwnedFd)>,
    /// The container's cgroup directories, read-only, by hierarchy name.
    cgroups: Vec<(String, OwnedFd)>,
    /// Kernel filesystems the runtime made for the container (see
    /// [`runtime_made`]), by index in the plan's mounts.
    premade: BTreeMap<usize, OwnedFd>,
}

/// Whether the mount `m` of `plan` must be made by the runtime rather
/// than by the container: proc, sysfs and mqueue instances belong to a pid,
/// network and IPC namespace, and only a process privileged over that
/// namespace's owner may make one. A container in a new user namespace
/// owns its new pid/network/IPC namespaces, not the host's or those it
/// joins by path (a pod's, a netns file): there the runtime, as host root,
/// makes the instance of *that* namespace as a detached mount (runc binds
/// the host's /sys instead, recursively: this shows only the container's
/// network namespace and no host submount).
pub fn runtime_made(plan: &LaunchPlan, m: &MountPlan) -> bool {
    let MountKind::Fs { fstype, .. } = &m.kind else {
        return false;
    };
    plan.namespaces.user
        && match fstype.as_str() {
            "proc" => !plan.namespaces.pid,
            "sysfs" => !plan.namespaces.net,
            "mqueue" => !plan.namespaces.ipc,
            _ => false,
        }
}

/// A new instance of the kernel filesystem of `m` (proc, sysfs, mqueue)
/// in the namespaces of the calling process, as a detached mount with the
/// mount's flags and options.
pub fn new_kernel_mount(m: &MountPlan) -> Result<OwnedFd, MountError> {
    let MountKind::Fs { fstype, data, .. } = &m.kind else {
        return Err(MountError::Idmap {
            message: format!("{} is not a filesystem mount", m.destination.display()),
        });
    };
    let (set, _) = attrs_of(m.flags);
    sys::new_fs_mount(fstype, data, set).map_err(|source| MountError::Sys {
        what: "make the runtime's instance for",
        path: m.destination.clone(),
        source,
    })
}

/// Stop mount events of this namespace from reaching the host (and keep the
/// host's unmounts flowing in): everything becomes a recursive slave.
pub fn make_rslave() -> Result<(), MountError> {
    set_propagation(Path::new("/"), MountPropagation::Slave, true)
}

/// Set the propagation of the mount at `path` (and below it, `recursive`).
pub fn set_propagation(
    path: &Path,
    p: MountPropagation,
    recursive: bool,
) -> Result<(), MountError> {
    let mut flags = match p {
        MountPropagation::Private => MsFlags::MS_PRIVATE,
        MountPropagation::Slave => MsFlags::MS_SLAVE,
        MountPropagation::Shared => MsFlags::MS_SHARED,
        MountPropagation::Unbindable => MsFlags::MS_UNBINDABLE,
    };
    if recursive {
        flags |= MsFlags::MS_REC;
    }
    mount(None::<&str>, path, None::<&str>, flags, None::<&str>).map_err(|errno| MountError::Call {
        op: "set propagation of",
        path: path.into(),
        errno,
    })
}

fn attrs_of(flags: MountFlags) -> (u64, u64) {
    let mut set = 0;
    let mut clear = 0;
    if flags.readonly {
        set |= attr::RDONLY;
    } else {
        clear |= attr::RDONLY;
    }
    if flags.nosuid {
        set |= attr::NOSUID;
    }
    if flags.nodev {
        set |= attr::NODEV;
    }
    if flags.noexec {
        set |= attr::NOEXEC;
    }
    (set, clear)
}

/// Capture the root, every bind source and every device as detached mounts.
/// `idmap` is called with the bind sources (and, for a bundle, the root)
/// before their flags are set (as host root the parent idmaps them).
/// `premade` are the mounts the runtime made ([`runtime_made`]).
pub fn capture_sources(
    plan: &LaunchPlan,
    premade: BTreeMap<usize, OwnedFd>,
    idmap: impl FnOnce(Option<&OwnedFd>, &[(usize, &OwnedFd)]) -> Result<Option<OwnedFd>, String>,
) -> Result<Sources, MountError> {
    let sys_err = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| MountError::Sys { what, path, source }
    };
    let root =
        sys::clone_tree(&plan.rootfs, true).map_err(sys_err("capture root", &plan.rootfs))?;
    let root_flags = MountFlags {
        propagation: None,
        // A bundle's root becomes read-only only after its mounts are
        // made (their mount points may have to be created).
        readonly: plan.rootfs_readonly && plan.mode == PlanMode::Step,
        nosuid: true,
        nodev: true,
        noexec: false,
    };

    let mut binds = BTreeMap::new();
    for (i, m) in plan.mounts.iter().enumerate() {
        if let MountKind::Bind {
            source, recursive, ..
        } = &m.kind
        {
            let fd = sys::clone_tree(source, *recursive)
                .map_err(sys_err("capture bind source", source))?;
            binds.insert(i, fd);
        }
    }
    let list: Vec<(usize, &OwnedFd)> = binds.iter().map(|(i, fd)| (*i, fd)).collect();
    // A bundle's root is idmapped with the binds; the host root `step`
    // runs in is not (it stays the host's, read-only).
    let idmap_root = (plan.mode == PlanMode::Bundle).then_some(&root);
    let replaced = idmap(idmap_root, &list).map_err(|message| MountError::Idmap { message })?;
    drop(list);
    let root = replaced.unwrap_or(root);
    set_flags(&root, root_flags).map_err(sys_err("set flags on root", &plan.rootfs))?;
    for (i, fd) in &binds {
        if let MountKind::Bind { source, .. } = &plan.mounts[*i].kind {
            set_flags(fd, plan.mounts[*i].flags)
                .map_err(sys_err("set flags on bind of", source))?;
        }
    }
    let mut devices = Vec::new();
    for dev in &plan.devices {
        let fd = sys::clone_tree(dev, false).map_err(sys_err("capture device", dev))?;
        devices.push((dev.clone(), fd));
    }
    let mut cgroups = Vec::new();
    if plan
        .mounts
        .iter()
        .any(|m| matches!(m.kind, MountKind::Cgroup))
    {
        let ro = MountFlags {
            readonly: true,
            nosuid: true,
            nodev: true,
            noexec: true,
            propagation: None,
        };
        for (name, dir) in &plan.cgroup_dirs {
            let fd = sys::clone_tree(dir, false).map_err(sys_err("capture cgroup", dir))?;
            set_flags(&fd, ro).map_err(sys_err("set flags on cgroup", dir))?;
            cgroups.push((name.clone(), fd));
        }
    }
    Ok(Sources {
        root,
        binds,
        devices,
        cgroups,
        premade,
    })
}

/// Apply flags to a captured tree: recursively, or, where a submount's
/// flags are locked by the host (EPERM), to its top mount only.
fn set_flags(fd: &OwnedFd, flags: MountFlags) -> sys::Result<()> {
    let (set, clear) = attrs_of(flags);
    match sys::mount_setattr(fd.as_fd(), true, set, clear, None) {
        Err(e) if e.errno == nix::errno::Errno::EPERM && !flags.readonly => {
            sys::mount_setattr(fd.as_fd(), false, set, clear, None)
        }
        other => other,
    }
}

/// Make the captured root the process's root: attach it over `/`, pivot
/// into it and detach the old root, so nothing of the host's mount tree
/// stays reachable except what was captured.
pub fn pivot_into_root(sources: &Sources) -> Result<(), MountError> {
    let call = |op, errno| MountError::Call {
        op,
        path: "/".into(),
        errno,
    };
    sys::attach_mount(sources.root.as_fd(), Path::new("/")).map_err(|source| MountError::Sys {
        what: "attach root at",
        path: "/".into(),
        source,
    })?;
    nix::unistd::fchdir(std::os::fd::AsRawFd::as_raw_fd(&sources.root))
        .map_err(|e| call("fchdir to new root", e))?;
    nix::unistd::pivot_root(".", ".").map_err(|e| call("pivot_root", e))?;
    nix::unistd::chdir("/").map_err(|e| call("chdir", e))?;
    Ok(())
}

/// Detach the old root, stacked on top of the new one by `pivot_root(".",
/// ".")`. Until then it keeps the host's /proc in this mount namespace,
/// which the kernel requires before a new proc or sysfs may be mounted in
/// a user namespace (a fully visible instance must exist).
pub fn detach_old_root() -> Result<(), MountError> {
    umount2("/", MntFlags::MNT_DETACH).map_err(|errno| MountError::Call {
        op: "detach old root",
        path: "/".into(),
        errno,
    })
}

/// Make the plan's mounts inside the new root, in the order given.
pub fn mount_all(
    plan: &LaunchPlan,
    sources: &Sources,
    mut log: impl FnMut(&str),
) -> Result<(), MountError> {
    for (i, m) in plan.mounts.iter().enumerate() {
        match &m.kind {
            MountKind::Bind { dir, .. } => {
                // The source is a host path: whether it is a directory was
                // recorded in the plan, before the pivot hid the host.
                let target = mountpoint(&m.destination, *dir)?;
                // Every bind in the plan was captured by index; a missing one
                // is refused rather than silently left unmounted.
                let fd = sources.binds.get(&i).ok_or_else(|| MountError::Idmap {
                    message: format!(
                        "bind source for {} was not captured",
                        m.destination.display()
                    ),
                })?;
                sys::attach_mount_at(fd.as_fd(), target.fd()).map_err(|source| {
                    MountError::Sys {
                        what: "attach bind at",
                        path: m.destination.clone(),
                        source,
                    }
                })?;
                if let Some(p) = m.flags.propagation {
                    let target = mountpoint(&m.destination, *dir)?;
                    set_propagation(&target.mount_path()?, p, true)?;
                }
            }
            MountKind::Fs { .. } => match sources.premade.get(&i) {
                Some(fd) => {
                    let target = mountpoint(&m.destination, true)?;
                    sys::attach_mount_at(fd.as_fd(), target.fd()).map_err(|source| {
                        MountError::Sys {
                            what: "attach the runtime's instance at",
                            path: m.destination.clone(),
                            source,
                        }
                    })?
                }
                None => mount_fs(m)?,
            },
            MountKind::Cgroup => mount_cgroup(m, sources)?,
        }
        log(&format!("mounted {}", m.destination.display()));
    }
    Ok(())
}

/// A `cgroup` mount: the container's own cgroup directories, never the
/// host's tree. On v2 the one directory is bound at the destination; on v1
/// a tmpfs holds one bind per hierarchy (and a link per co-mounted
/// controller, `cpu -> cpu,cpuacct`), then becomes read-only.
fn mount_cgroup(m: &MountPlan, sources: &Sources) -> Result<(), MountError> {
    let target = mountpoint(&m.destination, true)?;
    if let [(name, fd)] = sources.cgroups.as_slice() {
        if name.is_empty() {
            return sys::attach_mount_at(fd.as_fd(), target.fd()).map_err(|source| {
                MountError::Sys {
                    what: "attach cgroup at",
                    path: m.destination.clone(),
                    source,
                }
            });
        }
    }
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let fail = |errno| MountError::Mount {
        fstype: "tmpfs".into(),
        path: m.destination.clone(),
        errno,
    };
    mount(
        Some("tmpfs"),
        &target.mount_path()?,
        Some("tmpfs"),
        flags,
        Some("mode=0755"),
    )
    .map_err(fail)?;
    // The new tmpfs is the runtime's alone (nothing of the container runs
    // yet): each hierarchy's directory is made and bound relative to its
    // root, without resolving the path from `/` again per hierarchy.
    let tmp = resolve_in_root(&m.destination).map_err(|source| MountError::Sys {
        what: "resolve cgroup tmpfs",
        path: m.destination.clone(),
        source,
    })?;
    for (name, fd) in &sources.cgroups {
        let dir = m.destination.join(name);
        let at = |e: nix::errno::Errno| MountError::Destination {
            path: dir.clone(),
            source: std::io::Error::from(e),
        };
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(at(nix::errno::Errno::EINVAL));
        }
        let raw = std::os::fd::AsRawFd::as_raw_fd(&tmp);
        match nix::sys::stat::mkdirat(
            Some(raw),
            name.as_str(),
            nix::sys::stat::Mode::from_bits_truncate(0o755),
        ) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => return Err(at(e)),
        }
        use nix::fcntl::OFlag;
        let target = nix::fcntl::openat(
            Some(raw),
            name.as_str(),
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map(sys::own_received_fd)
        .map_err(at)?;
        sys::attach_mount_at(fd.as_fd(), target.as_fd()).map_err(|source| MountError::Sys {
            what: "attach cgroup at",
            path: dir.clone(),
            source,
        })?;
        if name.contains(',') {
            for c in name.split(',') {
                let _ = nix::unistd::symlinkat(name.as_str(), Some(raw), c);
            }
        }
    }
    mount(
        None::<&str>,
        &m.destination,
        None::<&str>,
        flags | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .map_err(fail)
}

fn mount_fs(m: &MountPlan) -> Result<(), MountError> {
    let MountKind::Fs {
        fstype,
        source,
        data,
    } = &m.kind
    else {
        return Ok(());
    };
    let target = mountpoint(&m.destination, true)?;
    let at = target.mount_path()?;
    let mut flags = MsFlags::empty();
    for (on, f) in [
        (m.flags.readonly, MsFlags::MS_RDONLY),
        (m.flags.nosuid, MsFlags::MS_NOSUID),
        (m.flags.nodev, MsFlags::MS_NODEV),
        (m.flags.noexec, MsFlags::MS_NOEXEC),
    ] {
        if on {
            flags |= f;
        }
    }
    let data = (!data.is_empty()).then_some(data.as_str());
    mount(
        Some(source.as_str()),
        &at,
        Some(fstype.as_str()),
        flags,
        data,
    )
    .map_err(|errno| MountError::Mount {
        fstype: fstype.clone(),
        path: m.destination.clone(),
        errno,
    })
}

/// A mount point resolved inside the container's root (symlinks followed
/// as if the root were `/`, never through a /proc magic link), held open,
/// so that a mount lands exactly there and not where a symlink planted in
/// the image would send it.
pub struct Target {
    fd: OwnedFd,
    path: PathBuf,
}

const PROC_SUPER_MAGIC: i64 = 0x9fa0;

impl Target {
    /// A path naming exactly this object, for calls that take a path
    /// (mount(2)): through /proc/self/fd once the container's own procfs
    /// is mounted, else the original path, checked to hold no symlink.
    pub fn mount_path(&self) -> Result<PathBuf, MountError> {
        #[allow(clippy::unnecessary_cast)]
        let proc_mounted = nix::sys::statfs::statfs("/proc")
            .map(|s| s.filesystem_type().0 as i64 == PROC_SUPER_MAGIC)
            .unwrap_or(false);
        if proc_mounted {
            return Ok(PathBuf::from(format!(
                "/proc/self/fd/{}",
                std::os::fd::AsRawFd::as_raw_fd(&self.fd)
            )));
        }
        let rel = self.path.strip_prefix("/").unwrap_or(&self.path);
        if rel.as_os_str().is_empty() {
            return Ok(PathBuf::from("/"));
        }
        let root = open_root()?;
        sys::openat2(
            root.as_fd(),
            rel,
            libc::O_PATH,
            sys::resolve::IN_ROOT | sys::resolve::NO_SYMLINKS,
        )
        .map_err(|source| MountError::Sys {
            what: "mount destination (symlinks are not followed before /proc is mounted)",
            path: self.path.clone(),
            source,
        })?;
        Ok(self.path.clone())
    }

    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn open_root() -> Result<OwnedFd, MountError> {
    nix::fcntl::open(
        "/",
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map(sys::own_received_fd)
    .map_err(|errno| MountError::Call {
        op: "open",
        path: "/".into(),
        errno,
    })
}

/// Resolve `path` inside the current root: an O_PATH fd.
pub fn resolve_in_root(path: &Path) -> sys::Result<OwnedFd> {
    resolve_under(&root_dir()?, path)
}

/// The root (`/`: the container's after `pivot_root`), for resolutions.
fn root_dir() -> sys::Result<OwnedFd> {
    nix::fcntl::open(
        "/",
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map(sys::own_received_fd)
    .map_err(|errno| sys::SysError {
        call: "open(\"/\")".into(),
        errno,
    })
}

/// [`resolve_in_root`] with the root already open.
fn resolve_under(root: &OwnedFd, path: &Path) -> sys::Result<OwnedFd> {
    let rel = path.strip_prefix("/").unwrap_or(path);
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    sys::openat2(
        root.as_fd(),
        rel,
        libc::O_PATH,
        sys::resolve::IN_ROOT | sys::resolve::NO_MAGICLINKS,
    )
}

/// Resolve a mount point inside the root, creating what is missing (a
/// directory, or an empty file for a file bind) one component at a time
/// under already-resolved parents. Fails with a clear message where the
/// parent is read-only.
fn mountpoint(path: &Path, dir: bool) -> Result<Target, MountError> {
    mountpoint_via(path, dir, path, 0)
}

/// [`mountpoint`] for `path`, reached from the spec's `asked` through
/// `hops` dangling symlinks so far (each one is created where it points,
/// inside the root, as runc does).
fn mountpoint_via(path: &Path, dir: bool, asked: &Path, hops: u32) -> Result<Target, MountError> {
    let err = |source: std::io::Error| MountError::Destination {
        path: path.to_path_buf(),
        source,
    };
    let sys_err = |source| MountError::Sys {
        what: "resolve mount destination",
        path: path.to_path_buf(),
        source,
    };
    let root = root_dir().map_err(sys_err)?;
    let resolve = |p: &Path| resolve_under(&root, p);
    match resolve(path) {
        Ok(fd) => {
            return Ok(Target {
                fd,
                path: path.to_path_buf(),
            })
        }
        Err(e) if e.errno == nix::errno::Errno::ENOENT => {}
        Err(e) => return Err(sys_err(e)),
    }
    let comps: Vec<_> = path
        .components()
        .filter(|c| matches!(c, std::path::Component::Normal(_)))
        .collect();
    // Most often only the last component is missing: start at its parent
    // when that resolves, else walk from the root.
    let mut prefix: PathBuf = Path::new("/").join(
        comps
            .iter()
            .take(comps.len().saturating_sub(1))
            .collect::<PathBuf>(),
    );
    let (mut parent, start) = match resolve(&prefix) {
        Ok(fd) => (fd, comps.len().saturating_sub(1)),
        Err(e) if e.errno == nix::errno::Errno::ENOENT => {
            prefix = PathBuf::from("/");
            (resolve(&prefix).map_err(sys_err)?, 0)
        }
        Err(e) => return Err(sys_err(e)),
    };
    for (i, c) in comps.iter().enumerate().skip(start) {
        prefix.push(c);
        let last = i + 1 == comps.len();
        // The whole path did not resolve above: its last component is
        // missing (or a dangling symlink) without asking again.
        if !last {
            match resolve(&prefix) {
                Ok(fd) => {
                    parent = fd;
                    continue;
                }
                Err(e) if e.errno == nix::errno::Errno::ENOENT => {}
                Err(e) => return Err(sys_err(e)),
            }
        }
        let name = Path::new(c.as_os_str());
        let raw = std::os::fd::AsRawFd::as_raw_fd(&parent);
        // A dangling symlink: create what it points to (inside the root),
        // then the rest of the path under it.
        if let Ok(link) = nix::fcntl::readlinkat(Some(raw), name) {
            if hops >= 40 {
                return Err(err(std::io::Error::from_raw_os_error(libc::ELOOP)));
            }
            let base = match Path::new(&link).is_absolute() {
                true => PathBuf::from(&link),
                false => prefix.parent().unwrap_or(Path::new("/")).join(&link),
            };
            let rest: PathBuf = comps[i + 1..].iter().collect();
            return mountpoint_via(&base.join(rest), dir, asked, hops + 1).map(|t| Target {
                fd: t.fd,
                path: asked.to_path_buf(),
            });
        }
        if dir || !last {
            match nix::sys::stat::mkdirat(
                Some(raw),
                name,
                nix::sys::stat::Mode::from_bits_truncate(0o755),
            ) {
                Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                Err(e) => return Err(err(std::io::Error::from(e))),
            }
        } else {
            use nix::fcntl::OFlag;
            let fd = nix::fcntl::openat(
                Some(raw),
                name,
                OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::from_bits_truncate(0o644),
            )
            .map_err(|e| err(std::io::Error::from(e)))?;
            drop(sys::own_received_fd(fd));
        }
        parent = resolve(&prefix).map_err(sys_err)?;
    }
    Ok(Target {
        fd: parent,
        path: path.to_path_buf(),
    })
}

/// Create a missing mount point; see [`mountpoint`].
fn ensure_mountpoint(path: &Path, dir: bool) -> Result<(), MountError> {
    mountpoint(path, dir).map(|_| ())
}

/// Fill a tmpfs `/dev`: bind the captured device nodes over empty files,
/// and add the standard links (`/dev/ptmx` to the container's own devpts
/// instance, `/dev/fd` and stdio to /proc).
pub fn populate_dev(sources: &Sources) -> Result<(), MountError> {
    if sources.devices.is_empty() {
        return Ok(());
    }
    for (dev, fd) in &sources.devices {
        let target = mountpoint(dev, false)?;
        sys::attach_mount_at(fd.as_fd(), target.fd()).map_err(|source| MountError::Sys {
            what: "attach device at",
            path: dev.clone(),
            source,
        })?;
    }
    for (link, target) in [
        ("/dev/ptmx", "pts/ptmx"),
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
        ("/dev/core", "/proc/kcore"),
    ] {
        match symlink(target, link) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(MountError::Destination {
                    path: link.into(),
                    source: e,
                })
            }
        }
    }
    Ok(())
}

/// Where build secrets appear inside.
pub const SECRETS_DIR: &str = "/run/secrets";

/// Write the secrets into a fresh tmpfs at /run/secrets (each file 0400),
/// then make that tmpfs read-only. Never on a disk, never in the working
/// directory.
pub fn mount_secrets(secrets: &[crate::spec::Secret]) -> Result<(), MountError> {
    if secrets.is_empty() {
        return Ok(());
    }
    let dir = Path::new(SECRETS_DIR);
    ensure_mountpoint(dir, true)?;
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let fail = |errno| MountError::Mount {
        fstype: "tmpfs".into(),
        path: dir.into(),
        errno,
    };
    mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        flags,
        Some("mode=0755,size=1m"),
    )
    .map_err(fail)?;
    for s in secrets {
        let path = dir.join(&s.name);
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o400)
                .open(&path)?;
            f.write_all(&s.value)
        };
        write().map_err(|source| MountError::Destination {
            path: path.clone(),
            source,
        })?;
    }
    mount(
        None::<&str>,
        dir,
        None::<&str>,
        flags | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .map_err(fail)
}

/// Make a bundle's root read-only once its mounts are made
/// (`root.readonly`).
pub fn finish_root(plan: &LaunchPlan, sources: &Sources) -> Result<(), MountError> {
    if plan.mode == PlanMode::Bundle && plan.rootfs_readonly {
        sys::mount_setattr(sources.root.as_fd(), false, attr::RDONLY, 0, None).map_err(
            |source| MountError::Sys {
                what: "make read-only",
                path: "/".into(),
                source,
            },
        )?;
    }
    Ok(())
}

/// `p` resolved inside the root, when it exists (masked and read-only
/// paths that do not exist are skipped).
fn existing_target(p: &Path) -> Option<Target> {
    resolve_in_root(p).ok().map(|fd| Target {
        fd,
        path: p.to_path_buf(),
    })
}

/// The container's `/dev/null`, held open once checked to be the null
/// device (character device 1:3, reached without a symlink). Masking binds
/// this object: whatever else an image or a race put at that path (a
/// symlink to /proc/sys/kernel/core_pattern would bind a writable sysctl
/// over the masked path, the CVE-2025-31133 class) is refused.
fn null_device() -> Result<OwnedFd, MountError> {
    let path = Path::new("/dev/null");
    let root = open_root()?;
    let fd = match sys::openat2(
        root.as_fd(),
        Path::new("dev/null"),
        libc::O_PATH,
        sys::resolve::IN_ROOT | sys::resolve::NO_SYMLINKS,
    ) {
        Ok(fd) => fd,
        Err(e) if e.errno == nix::errno::Errno::ELOOP => return Err(MountError::NotNullDevice),
        Err(source) => {
            return Err(MountError::Sys {
                what: "mask with",
                path: path.into(),
                source,
            })
        }
    };
    let st = nix::sys::stat::fstat(std::os::fd::AsRawFd::as_raw_fd(&fd)).map_err(|errno| {
        MountError::Call {
            op: "stat",
            path: path.into(),
            errno,
        }
    })?;
    if st.st_mode & libc::S_IFMT != libc::S_IFCHR || st.st_rdev != libc::makedev(1, 3) {
        return Err(MountError::NotNullDevice);
    }
    Ok(fd)
}

/// `linux.maskedPaths`: a directory gets an empty read-only tmpfs, a file
/// the container's /dev/null (see `null_device`); a path that does not
/// exist is skipped.
pub fn mask_paths(paths: &[PathBuf]) -> Result<(), MountError> {
    let mut null: Option<OwnedFd> = None;
    for p in paths {
        let Some(target) = existing_target(p) else {
            continue;
        };
        let at = target.mount_path()?;
        let Ok(meta) = fs::metadata(&at) else {
            continue;
        };
        if meta.is_dir() {
            mount(
                Some("tmpfs"),
                &at,
                Some("tmpfs"),
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some("size=0,mode=0555"),
            )
            .map_err(|errno| MountError::Call {
                op: "mask",
                path: p.clone(),
                errno,
            })?;
            continue;
        }
        let dev = match &null {
            Some(fd) => fd,
            None => null.insert(null_device()?),
        };
        sys::clone_object(dev.as_fd())
            .and_then(|copy| sys::attach_mount_at(copy.as_fd(), target.fd()))
            .map_err(|source| MountError::Sys {
                what: "mask",
                path: p.clone(),
                source,
            })?;
    }
    Ok(())
}

/// `linux.readonlyPaths`: each path bound onto itself, read-only; a path
/// that does not exist is skipped.
pub fn readonly_paths(paths: &[PathBuf]) -> Result<(), MountError> {
    for p in paths {
        // Held open while its /proc/self/fd path is in use.
        let Some(target) = existing_target(p) else {
            continue;
        };
        let at = target.mount_path()?;
        let fd = sys::clone_tree(&at, true).map_err(|source| MountError::Sys {
            what: "capture read-only path",
            path: p.clone(),
            source,
        })?;
        sys::mount_setattr(
            fd.as_fd(),
            true,
            attr::RDONLY | attr::NOSUID | attr::NODEV,
            0,
            None,
        )
        .and_then(|()| sys::attach_mount_at(fd.as_fd(), target.fd()))
        .map_err(|source| MountError::Sys {
            what: "make read-only",
            path: p.clone(),
            source,
        })?;
    }
    Ok(())
}

/// `linux.sysctl`: written through the container's own /proc/sys, each
/// file opened beneath it without crossing a mount or following a symlink:
/// a mount the bundle made inside /proc/sys (another proc instance at
/// /proc/sys/net/ipv4) cannot turn an allowed name (`net.ipv4.sys.kernel.
/// core_pattern` matches `net.*`) into a write to another sysctl (the
/// CVE-2025-52881 class: the runtime's writes redirected).
pub fn write_sysctls(list: &[(String, String)]) -> Result<(), MountError> {
    if list.is_empty() {
        return Ok(());
    }
    let dir = Path::new("/proc/sys");
    let call = |op, errno| MountError::Call {
        op,
        path: dir.into(),
        errno,
    };
    let procsys = nix::fcntl::open(
        dir,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map(sys::own_received_fd)
    .map_err(|e| call("open", e))?;
    #[allow(clippy::unnecessary_cast)]
    let fs_type = nix::sys::statfs::fstatfs(&procsys)
        .map_err(|e| call("statfs", e))?
        .filesystem_type()
        .0 as i64;
    if fs_type != PROC_SUPER_MAGIC {
        return Err(call(
            "write sysctls: not a proc filesystem:",
            nix::errno::Errno::EXDEV,
        ));
    }
    for (k, v) in list {
        let rel = PathBuf::from(k.replace('.', "/"));
        let path = dir.join(&rel);
        let fd = sys::openat2(
            procsys.as_fd(),
            &rel,
            libc::O_WRONLY,
            sys::resolve::BENEATH | sys::resolve::NO_XDEV | sys::resolve::NO_SYMLINKS,
        )
        .map_err(|source| MountError::Sys {
            what: "open (beneath /proc/sys, crossing no mount)",
            path: path.clone(),
            source,
        })?;
        use std::io::Write;
        fs::File::from(fd)
            .write_all(v.as_bytes())
            .map_err(|source| MountError::Write { path, source })?;
    }
    Ok(())
}

/// The filesystem type of the mount holding `path` in this mount
/// namespace (for messages): the last mount in /proc/self/mountinfo whose
/// mount point is the longest prefix of the path.
pub fn fs_type_of(path: &Path) -> String {
    let path = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let info = crate::sys::read_proc("/proc/self/mountinfo").unwrap_or_default();
    let unescape = |s: &str| {
        s.replace("\\040", " ")
            .replace("\\011", "\t")
            .replace("\\012", "\n")
            .replace("\\134", "\\")
    };
    let mut best: Option<(usize, String)> = None;
    for line in info.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let (Some(point), Some(fstype)) = (left.split(' ').nth(4), right.split(' ').next()) else {
            continue;
        };
        let point = PathBuf::from(unescape(point));
        if path.starts_with(&point) {
            let depth = point.components().count();
            if best.as_ref().is_none_or(|(d, _)| depth >= *d) {
                best = Some((depth, fstype.to_string()));
            }
        }
    }
    best.map(|(_, t)| t)
        .unwrap_or_else(|| "an unknown filesystem".into())
}

/// An overlayfs mount, as /proc/self/mountinfo shows it: enough to build
/// the same overlay again on idmapped layers (an overlayfs mount itself
/// cannot be idmapped; its layers can, since Linux 5.19).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlay {
    /// Lower layers, top first; `None` marks `::`, before the data-only
    /// layers.
    pub lower: Vec<Option<PathBuf>>,
    /// Upper and work directory.
    pub upper: Option<(PathBuf, PathBuf)>,
    /// Every other option of the superblock (index, metacopy, redirect_dir,
    /// xino, uuid, ro, ...), passed on as they are.
    pub options: Vec<(String, Option<String>)>,
    /// Where the path asked for lies inside the overlay (empty: its root).
    pub subdir: PathBuf,
    /// The mount point the overlay was found at.
    pub mount_point: PathBuf,
}

/// Undo mountinfo's octal escapes (`\040` for a space, ...).
pub(crate) fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Split overlayfs's `lowerdir=` value: `:` separates layers, `\:` is a
/// colon inside a path, `::` starts the data-only layers.
fn split_lowerdir(v: &str) -> Vec<Option<PathBuf>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = v.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            ':' => {
                out.push(Some(PathBuf::from(std::mem::take(&mut cur))));
                if chars.peek() == Some(&':') {
                    chars.next();
                    out.push(None);
                }
            }
            c => cur.push(c),
        }
    }
    out.push(Some(PathBuf::from(cur)));
    out
}

/// The overlayfs mount holding `path` (canonical) in `mountinfo` (the
/// text of /proc/self/mountinfo). Layer paths are as the engine gave them
/// (possibly relative to its working directory at mount time).
pub fn parse_overlay(mountinfo: &str, path: &Path) -> Result<Overlay, String> {
    let mut best: Option<(usize, &str)> = None;
    for line in mountinfo.lines() {
        let Some(point) = line.split(' ').nth(4) else {
            continue;
        };
        let point = PathBuf::from(unescape_octal(point));
        if path.starts_with(&point) {
            let depth = point.components().count();
            if best.is_none_or(|(d, _)| depth >= d) {
                best = Some((depth, line));
            }
        }
    }
    let line = best.map(|(_, l)| l).ok_or("no mount holds it")?;
    let (left, right) = line.split_once(" - ").ok_or("malformed mountinfo line")?;
    let mut l = left.split(' ');
    let (root, point) = (l.nth(3).unwrap_or("/"), l.next().unwrap_or("/"));
    let mut r = right.split(' ');
    let fstype = r.next().unwrap_or_default();
    if fstype != "overlay" {
        return Err(format!("it is on {fstype}, not overlay"));
    }
    let superopts = r.nth(1).unwrap_or_default();
    let mount_point = PathBuf::from(unescape_octal(point));
    let below = path.strip_prefix(&mount_point).unwrap_or(Path::new(""));
    let root = unescape_octal(root);
    let subdir = Path::new(root.trim_start_matches('/')).join(below);
    let mut ov = Overlay {
        lower: Vec::new(),
        upper: None,
        options: Vec::new(),
        subdir,
        mount_point,
    };
    let (mut upper, mut work, mut data) = (None, None, Vec::new());
    for opt in superopts.split(',') {
        let (k, v) = match opt.split_once('=') {
            Some((k, v)) => (k, Some(unescape_octal(v))),
            None => (opt, None),
        };
        match (k, v) {
            ("lowerdir", Some(v)) => ov.lower = split_lowerdir(&v),
            ("lowerdir+", Some(v)) => ov.lower.push(Some(v.into())),
            ("datadir+", Some(v)) => data.push(Some(PathBuf::from(v))),
            ("upperdir", Some(v)) => upper = Some(PathBuf::from(v)),
            ("workdir", Some(v)) => work = Some(PathBuf::from(v)),
            ("rw", None) => {}
            (k, v) => ov.options.push((k.to_string(), v)),
        }
    }
    if !data.is_empty() {
        ov.lower.push(None);
        ov.lower.extend(data);
    }
    if ov.lower.is_empty() {
        return Err("the overlay mount shows no lowerdir".into());
    }
    ov.upper = match (upper, work) {
        (Some(u), Some(w)) => Some((u, w)),
        (None, None) => None,
        _ => return Err("the overlay mount shows an upperdir without a workdir".into()),
    };
    Ok(ov)
}

impl Overlay {
    /// Every layer path, upper and work included.
    fn paths(&self) -> impl Iterator<Item = &PathBuf> {
        self.lower
            .iter()
            .flatten()
            .chain(self.upper.iter().flat_map(|(u, w)| [u, w]))
    }

    /// Make relative layer paths absolute. An engine that mounts many
    /// layers gives them relative to a directory it changed into (a
    /// storage root that holds the mount point, as containers/storage and
    /// containerd do): the nearest ancestor of the mount point under
    /// which every layer exists.
    pub fn resolve_relative(&mut self) -> Result<(), String> {
        if self.paths().all(|p| p.is_absolute()) {
            return Ok(());
        }
        let base = self
            .mount_point
            .ancestors()
            .skip(1)
            .find(|b| self.paths().all(|p| p.is_absolute() || b.join(p).is_dir()))
            .map(Path::to_path_buf)
            .ok_or("its layers are given relative to a directory buildcell cannot find")?;
        let abs = |p: &mut PathBuf| {
            if !p.is_absolute() {
                *p = base.join(&*p);
            }
        };
        self.lower.iter_mut().flatten().for_each(abs);
        if let Some((u, w)) = &mut self.upper {
            abs(u);
            abs(w);
        }
        Ok(())
    }
}

/// The overlayfs mount holding `path` in this mount namespace, layer paths
/// made absolute.
pub fn overlay_of(path: &Path) -> Result<Overlay, String> {
    let canon = fs::canonicalize(path).map_err(|e| e.to_string())?;
    let info = crate::sys::read_proc("/proc/self/mountinfo").map_err(|e| e.to_string())?;
    let mut ov = parse_overlay(&info, &canon)?;
    ov.resolve_relative()?;
    Ok(ov)
}

/// A directory removed (with its content) when dropped, unless kept.
#[derive(Debug)]
pub struct TempDir(Option<PathBuf>);

impl TempDir {
    pub fn new(path: PathBuf) -> TempDir {
        TempDir(Some(path))
    }
    /// Keep it: the caller removes it later.
    pub fn keep(mut self) -> Option<PathBuf> {
        self.0.take()
    }
    pub fn path(&self) -> Option<&Path> {
        self.0.as_deref()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_dir_all(p);
        }
    }
}

/// What [`idmapped_layers`] gives: the layer fds to keep open, the
/// overlayfs options naming them, the new work directory.
pub type IdmappedLayers = (Vec<OwnedFd>, Vec<(String, Option<String>)>, Option<TempDir>);

/// Idmapped detached copies of the layers of `ov` with the user namespace
/// `userns`, and the overlayfs options that name them (through
/// `/proc/self/fd`: keep the fds open until the overlay is made). The
/// engine's own mount holds its work directory (overlayfs refuses a
/// second mount on a `volatile` one): the new instance gets its own,
/// `work_name` inside the engine's (so on the same filesystem as the upper
/// directory, and removed with the engine's layer). Upper and work
/// directory must be on one mount: their common parent is idmapped once.
pub fn idmapped_layers(
    ov: &Overlay,
    userns: std::os::fd::BorrowedFd<'_>,
    work_name: &str,
) -> Result<IdmappedLayers, String> {
    let mut held = Vec::new();
    let mut idmapped = |dir: &Path| -> Result<String, String> {
        let fd = sys::clone_tree(dir, false).map_err(|e| e.to_string())?;
        sys::mount_setattr(fd.as_fd(), false, attr::IDMAP, 0, Some(userns))
            .map_err(|e| format!("layer {} ({}): {e}", dir.display(), fs_type_of(dir)))?;
        let path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
        held.push(fd);
        Ok(path)
    };
    let mut lower = String::new();
    for (i, l) in ov.lower.iter().enumerate() {
        match l {
            Some(dir) => {
                if i > 0 {
                    lower.push(':');
                }
                lower.push_str(&idmapped(dir)?);
            }
            None => lower.push(':'),
        }
    }
    let mut opts = vec![("lowerdir".to_string(), Some(lower))];
    let mut work_dir = None;
    if let Some((u, w)) = &ov.upper {
        let (u, w) = (
            fs::canonicalize(u).map_err(|e| format!("upperdir {}: {e}", u.display()))?,
            fs::canonicalize(w).map_err(|e| format!("workdir {}: {e}", w.display()))?,
        );
        let w = w.join(work_name);
        // A leftover of an earlier container with the same range.
        let _ = fs::remove_dir_all(&w);
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&w)
            .map_err(|e| format!("workdir {}: {e}", w.display()))?;
        work_dir = Some(TempDir::new(w.clone()));
        let common: PathBuf = u
            .components()
            .zip(w.components())
            .take_while(|(a, b)| a == b)
            .map(|(a, _)| a)
            .collect();
        let base = idmapped(&common)?;
        let rel = |p: &Path| {
            let r = p.strip_prefix(&common).unwrap_or(p);
            format!("{base}/{}", r.display())
        };
        opts.push(("upperdir".into(), Some(rel(&u))));
        opts.push(("workdir".into(), Some(rel(&w))));
    }
    opts.extend(ov.options.iter().cloned());
    Ok((held, opts, work_dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "\
22 1 8:0 / / rw,relatime - ext4 /dev/vda rw
40 22 0:39 / /var/lib/s/overlay/abc/merged rw,relatime - overlay overlay rw,lowerdir=l/AAA:l/B\\134:B,upperdir=abc/diff,workdir=abc/work,volatile,index=off
41 22 0:40 / /srv/with\\040space rw - overlay overlay rw,lowerdir=/a::/d1,upperdir=/u,workdir=/w
42 22 0:40 /sub /mnt/b rw - overlay overlay ro,lowerdir+=/x,lowerdir+=/y,datadir+=/z
";

    #[test]
    fn overlay_layers_and_options_from_mountinfo() {
        let ov = parse_overlay(INFO, Path::new("/var/lib/s/overlay/abc/merged")).unwrap();
        // `\134` is a backslash, which escapes the colon inside a path.
        assert_eq!(ov.lower, vec![Some("l/AAA".into()), Some("l/B:B".into())]);
        assert_eq!(ov.upper, Some(("abc/diff".into(), "abc/work".into())));
        assert_eq!(
            ov.options,
            vec![
                ("volatile".into(), None),
                ("index".into(), Some("off".into()))
            ]
        );
        assert_eq!(ov.subdir, PathBuf::new());
        // Data-only layers after `::`, a mount point with a space, a path
        // below the mount point.
        let ov = parse_overlay(INFO, Path::new("/srv/with space/etc")).unwrap();
        assert_eq!(ov.lower, vec![Some("/a".into()), None, Some("/d1".into())]);
        assert_eq!(ov.subdir, PathBuf::from("etc"));
        // lowerdir+/datadir+, a bind of a subdirectory, read-only.
        let ov = parse_overlay(INFO, Path::new("/mnt/b")).unwrap();
        assert_eq!(
            ov.lower,
            vec![
                Some("/x".into()),
                Some("/y".into()),
                None,
                Some("/z".into())
            ]
        );
        assert_eq!(ov.upper, None);
        assert_eq!(ov.options, vec![("ro".into(), None)]);
        assert_eq!(ov.subdir, PathBuf::from("sub"));
        let e = parse_overlay(INFO, Path::new("/etc")).unwrap_err();
        assert!(e.contains("ext4"), "{e}");
    }

    #[test]
    fn relative_layers_resolve_against_an_ancestor_of_the_mount_point() {
        let base = std::env::temp_dir().join(format!("bc-ovl-{}", std::process::id()));
        for d in ["l/AAA", "abc/diff", "abc/work", "abc/merged"] {
            fs::create_dir_all(base.join(d)).unwrap();
        }
        let mut ov = Overlay {
            lower: vec![Some("l/AAA".into())],
            upper: Some(("abc/diff".into(), "abc/work".into())),
            options: vec![],
            subdir: PathBuf::new(),
            mount_point: base.join("abc/merged"),
        };
        ov.resolve_relative().unwrap();
        assert_eq!(ov.lower, vec![Some(base.join("l/AAA"))]);
        assert_eq!(
            ov.upper,
            Some((base.join("abc/diff"), base.join("abc/work")))
        );
        ov.lower = vec![Some("nowhere".into())];
        assert!(ov.resolve_relative().is_err());
        let _ = fs::remove_dir_all(&base);
    }
}
