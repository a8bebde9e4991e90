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
use std::os::unix::fs::symlink;
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
    let target = mountpoint(&m.destination, true)?;
    let attach = |fd: &OwnedFd, at: &Path| {
        let t = mountpoint(at, true)?;
        sys::attach_mount_at(fd.as_fd(), t.fd()).map_err(|source| MountError::Sys {
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
        &target.mount_path()?,
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
    let root = nix::fcntl::open(
        "/",
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map(sys::own_received_fd)
    .map_err(|errno| sys::SysError {
        call: "open(\"/\")".into(),
        errno,
    })?;
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
    match resolve_in_root(path) {
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
    let mut prefix = PathBuf::from("/");
    let mut parent = resolve_in_root(&prefix).map_err(sys_err)?;
    for (i, c) in comps.iter().enumerate() {
        prefix.push(c);
        match resolve_in_root(&prefix) {
            Ok(fd) => {
                parent = fd;
                continue;
            }
            Err(e) if e.errno == nix::errno::Errno::ENOENT => {}
            Err(e) => return Err(sys_err(e)),
        }
        let name = Path::new(c.as_os_str());
        let last = i + 1 == comps.len();
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
        parent = resolve_in_root(&prefix).map_err(sys_err)?;
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
/// the container's /dev/null (see [`null_device`]); a path that does not
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
