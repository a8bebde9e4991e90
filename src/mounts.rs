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
    #[error("idmap bind sources: {message}")]
    Idmap { message: String },
    #[error("write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
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
/// `idmap` is called with the bind sources before their flags are set (in
/// host root mode the parent idmaps them).
pub fn capture_sources(
    plan: &LaunchPlan,
    idmap: impl FnOnce(&[(usize, &OwnedFd)]) -> Result<(), String>,
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
    set_flags(&root, root_flags).map_err(sys_err("set flags on root", &plan.rootfs))?;

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
    idmap(&list).map_err(|message| MountError::Idmap { message })?;
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
                ensure_mountpoint(&m.destination, *dir)?;
                // Every bind in the plan was captured by index; a missing one
                // is refused rather than silently left unmounted.
                let fd = sources.binds.get(&i).ok_or_else(|| MountError::Idmap {
                    message: format!(
                        "bind source for {} was not captured",
                        m.destination.display()
                    ),
                })?;
                sys::attach_mount(fd.as_fd(), &m.destination).map_err(|source| {
                    MountError::Sys {
                        what: "attach bind at",
                        path: m.destination.clone(),
                        source,
                    }
                })?;
                if let Some(p) = m.flags.propagation {
                    set_propagation(&m.destination, p, true)?;
                }
            }
            MountKind::Fs { .. } => mount_fs(m)?,
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
    ensure_mountpoint(&m.destination, true)?;
    let attach = |fd: &OwnedFd, at: &Path| {
        sys::attach_mount(fd.as_fd(), at).map_err(|source| MountError::Sys {
            what: "attach cgroup at",
            path: at.into(),
            source,
        })
    };
    if let [(name, fd)] = sources.cgroups.as_slice() {
        if name.is_empty() {
            return attach(fd, &m.destination);
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
        &m.destination,
        Some("tmpfs"),
        flags,
        Some("mode=0755"),
    )
    .map_err(fail)?;
    for (name, fd) in &sources.cgroups {
        let dir = m.destination.join(name);
        ensure_mountpoint(&dir, true)?;
        attach(fd, &dir)?;
        if name.contains(',') {
            for c in name.split(',') {
                let _ = symlink(name, m.destination.join(c));
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
    ensure_mountpoint(&m.destination, true)?;
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
        &m.destination,
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

/// Create a missing mount point (a directory, or an empty file for a file
/// bind). Fails with a clear message where the parent is read-only.
fn ensure_mountpoint(path: &Path, dir: bool) -> Result<(), MountError> {
    if path.exists() {
        return Ok(());
    }
    let err = |source| MountError::Destination {
        path: path.to_path_buf(),
        source,
    };
    if dir {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(path)
            .map_err(err)
    } else {
        if let Some(parent) = path.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)
                .map_err(err)?;
        }
        match fs::File::create(path) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(err(e)),
        }
    }
}

/// Fill a tmpfs `/dev`: bind the captured device nodes over empty files,
/// and add the standard links (`/dev/ptmx` to the container's own devpts
/// instance, `/dev/fd` and stdio to /proc).
pub fn populate_dev(sources: &Sources) -> Result<(), MountError> {
    if sources.devices.is_empty() {
        return Ok(());
    }
    for (dev, fd) in &sources.devices {
        ensure_mountpoint(dev, false)?;
        sys::attach_mount(fd.as_fd(), dev).map_err(|source| MountError::Sys {
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

/// `linux.maskedPaths`: a directory gets an empty read-only tmpfs, a file
/// the container's /dev/null; a path that does not exist is skipped.
pub fn mask_paths(paths: &[PathBuf]) -> Result<(), MountError> {
    for p in paths {
        let Ok(meta) = fs::symlink_metadata(p) else {
            continue;
        };
        if meta.file_type().is_symlink() {
            // Never follow a link out of the masked path.
            continue;
        }
        let result = if meta.is_dir() {
            mount(
                Some("tmpfs"),
                p,
                Some("tmpfs"),
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some("size=0,mode=0555"),
            )
        } else {
            mount(
                Some("/dev/null"),
                p,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
        };
        result.map_err(|errno| MountError::Call {
            op: "mask",
            path: p.clone(),
            errno,
        })?;
    }
    Ok(())
}

/// `linux.readonlyPaths`: each path bound onto itself, read-only; a path
/// that does not exist is skipped.
pub fn readonly_paths(paths: &[PathBuf]) -> Result<(), MountError> {
    for p in paths {
        match fs::symlink_metadata(p) {
            Ok(m) if !m.file_type().is_symlink() => {}
            _ => continue,
        }
        let fd = sys::clone_tree(p, true).map_err(|source| MountError::Sys {
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
        .and_then(|()| sys::attach_mount(fd.as_fd(), p))
        .map_err(|source| MountError::Sys {
            what: "make read-only",
            path: p.clone(),
            source,
        })?;
    }
    Ok(())
}

/// `linux.sysctl`: written through the container's own /proc/sys.
pub fn write_sysctls(list: &[(String, String)]) -> Result<(), MountError> {
    for (k, v) in list {
        let path = Path::new("/proc/sys").join(k.replace('.', "/"));
        fs::write(&path, v).map_err(|source| MountError::Write {
            path: path.clone(),
            source,
        })?;
    }
    Ok(())
}
