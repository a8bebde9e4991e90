//! Namespaces: which `clone` flags the plan asks for, the one `clone` that
//! creates them all, and the per-namespace setup done from inside (hostname,
//! loopback).

use nix::sched::CloneFlags;

use crate::spec::NamespacePlan;
use crate::sys;

#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    #[error("user namespaces are disabled on this host: {0}")]
    UserDisabled(String),
    #[error("{0}")]
    Clone(sys::SysError),
    #[error("set hostname {name:?}: {errno}")]
    Hostname {
        name: String,
        errno: nix::errno::Errno,
    },
    #[error("join namespace {path}: {message}")]
    Join {
        path: std::path::PathBuf,
        message: String,
    },
    #[error("bring up loopback: {0}")]
    Loopback(sys::SysError),
}

pub fn clone_flags(ns: &NamespacePlan) -> CloneFlags {
    let mut f = CloneFlags::empty();
    for (on, flag) in [
        (ns.user, CloneFlags::CLONE_NEWUSER),
        (ns.mount, CloneFlags::CLONE_NEWNS),
        (ns.pid, CloneFlags::CLONE_NEWPID),
        (ns.net, CloneFlags::CLONE_NEWNET),
        (ns.ipc, CloneFlags::CLONE_NEWIPC),
        (ns.uts, CloneFlags::CLONE_NEWUTS),
        (ns.cgroup, CloneFlags::CLONE_NEWCGROUP),
    ] {
        if on {
            f |= flag;
        }
    }
    f
}

/// Fork a child into new namespaces. `Ok(Some(pid))` in the parent,
/// `Ok(None)` in the child (pid 1 of the new pid namespace).
pub fn clone_into(
    ns: &NamespacePlan,
    cgroup: Option<std::os::fd::BorrowedFd<'_>>,
) -> Result<Option<i32>, NamespaceError> {
    let flags = clone_flags(ns);
    let cloned = match cgroup {
        Some(dir) => sys::clone_fork_into(flags.bits(), dir),
        None => sys::clone_fork(flags.bits()),
    };
    cloned.map_err(|e| {
        if ns.user
            && matches!(
                e.errno,
                nix::errno::Errno::ENOSPC
                    | nix::errno::Errno::EPERM
                    | nix::errno::Errno::EINVAL
                    | nix::errno::Errno::EUSERS
            )
        {
            if let Some(why) = userns_disabled_reason(e.errno) {
                return NamespaceError::UserDisabled(why);
            }
        }
        NamespaceError::Clone(e)
    })
}

/// Why creating a user namespace failed, when a host setting explains it.
fn userns_disabled_reason(errno: nix::errno::Errno) -> Option<String> {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_string())
    };
    if read("/proc/sys/user/max_user_namespaces").as_deref() == Some("0") {
        return Some("/proc/sys/user/max_user_namespaces is 0; ask an administrator to raise it (sysctl -w user.max_user_namespaces=15000)".into());
    }
    if read("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        return Some(
            "/proc/sys/kernel/unprivileged_userns_clone is 0; ask an administrator to set it to 1"
                .into(),
        );
    }
    if read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1") {
        return Some("AppArmor restricts unprivileged user namespaces (kernel.apparmor_restrict_unprivileged_userns = 1); add an AppArmor profile for buildcell that allows userns".into());
    }
    if errno == nix::errno::Errno::ENOSPC {
        return Some("the per-user limit of user namespaces is reached (ENOSPC; see /proc/sys/user/max_user_namespaces)".into());
    }
    None
}

pub fn set_hostname(name: &str) -> Result<(), NamespaceError> {
    nix::unistd::sethostname(name).map_err(|errno| NamespaceError::Hostname {
        name: name.into(),
        errno,
    })
}

pub fn loopback_up() -> Result<(), NamespaceError> {
    sys::loopback_up().map_err(NamespaceError::Loopback)
}

/// Enter existing namespaces (`linux.namespaces[].path`) in this process.
pub fn join_all(
    list: &[(oci_spec::runtime::LinuxNamespaceType, std::path::PathBuf)],
) -> Result<(), NamespaceError> {
    use oci_spec::runtime::LinuxNamespaceType as T;
    for (typ, path) in list {
        let flag = match typ {
            T::Pid => CloneFlags::CLONE_NEWPID,
            T::Network => CloneFlags::CLONE_NEWNET,
            T::Ipc => CloneFlags::CLONE_NEWIPC,
            T::Uts => CloneFlags::CLONE_NEWUTS,
            T::Cgroup => CloneFlags::CLONE_NEWCGROUP,
            T::User => CloneFlags::CLONE_NEWUSER,
            T::Mount => CloneFlags::CLONE_NEWNS,
            other => {
                return Err(NamespaceError::Join {
                    path: path.clone(),
                    message: format!("{other:?} namespaces cannot be joined"),
                })
            }
        };
        let f = std::fs::File::open(path).map_err(|e| NamespaceError::Join {
            path: path.clone(),
            message: e.to_string(),
        })?;
        nix::sched::setns(f, flag).map_err(|e| NamespaceError::Join {
            path: path.clone(),
            message: format!("setns: {}", e.desc()),
        })?;
    }
    Ok(())
}

/// Enter every namespace of process `pid` that differs from ours; returns
/// whether that included a user namespace. As a regular user the user
/// namespace comes first (it grants the rights for the others); as host
/// root it comes last: host root may enter any namespace, but once in the
/// container's user namespace it may no longer enter one owned by another
/// (a pod's pid or IPC namespace the container joined). The mount
/// namespace comes after the others (it changes the root). The pid
/// namespace applies to children forked afterwards.
pub fn enter_all_of(pid: i32) -> Result<bool, NamespaceError> {
    let order = [
        ("user", CloneFlags::CLONE_NEWUSER),
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("net", CloneFlags::CLONE_NEWNET),
        ("pid", CloneFlags::CLONE_NEWPID),
        ("cgroup", CloneFlags::CLONE_NEWCGROUP),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ];
    // Opened first: once in the container's mount namespace, the host's
    // /proc is out of reach.
    let mut files = Vec::new();
    for (name, flag) in order {
        let theirs = format!("/proc/{pid}/ns/{name}");
        let mine = format!("/proc/self/ns/{name}");
        let same = match (std::fs::read_link(&theirs), std::fs::read_link(&mine)) {
            (Ok(a), Ok(b)) => a == b,
            (Err(e), _) => {
                return Err(NamespaceError::Join {
                    path: theirs.into(),
                    message: e.to_string(),
                })
            }
            _ => false,
        };
        if same {
            continue;
        }
        let f = std::fs::File::open(&theirs).map_err(|e| NamespaceError::Join {
            path: theirs.clone().into(),
            message: e.to_string(),
        })?;
        files.push((theirs, f, flag));
    }
    let user = files
        .iter()
        .any(|(_, _, f)| *f == CloneFlags::CLONE_NEWUSER);
    if crate::userns::host_root() {
        // Stable: the mount namespace stays after the others.
        files.sort_by_key(|(_, _, f)| *f == CloneFlags::CLONE_NEWUSER);
    }
    for (path, f, flag) in files {
        nix::sched::setns(f, flag).map_err(|e| NamespaceError::Join {
            path: path.into(),
            message: format!("setns: {}", e.desc()),
        })?;
    }
    Ok(user)
}
