//! Thin wrappers over the system calls that `nix` does not cover.
//!
//! This is the one module of buildcell allowed to contain `unsafe`. Every
//! wrapper returns a [`SysError`] that prints the call as it was made, so a
//! failure names the object at fault (`open_tree("/src", CLONE|RECURSIVE)`).

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;

/// A failed system call: what was called, on what, and the errno.
#[derive(Debug, thiserror::Error)]
#[error("{call}: {errno}")]
pub struct SysError {
    pub call: String,
    pub errno: Errno,
}

impl SysError {
    fn new(call: String) -> Self {
        SysError {
            call,
            errno: Errno::last(),
        }
    }
}

pub type Result<T> = std::result::Result<T, SysError>;

// Constants from <linux/mount.h> that libc does not export for every target.
const OPEN_TREE_CLONE: libc::c_uint = 1;
const AT_RECURSIVE: libc::c_uint = 0x8000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

/// `MOUNT_ATTR_*` flags for [`mount_setattr`].
pub mod attr {
    pub const RDONLY: u64 = 0x1;
    pub const NOSUID: u64 = 0x2;
    pub const NODEV: u64 = 0x4;
    pub const NOEXEC: u64 = 0x8;
    pub const IDMAP: u64 = 0x0010_0000;
}

/// `struct mount_attr` from <linux/mount.h>.
#[repr(C)]
#[derive(Default)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn cpath(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| SysError {
        call: format!("path {path:?}"),
        errno: Errno::EINVAL,
    })
}

/// `clone(2)` without a new stack: like `fork(2)`, with namespace flags.
///
/// Returns `Some(pid)` in the parent and `None` in the child. The caller must
/// be single-threaded (buildcell's launcher is), as with `fork`.
pub fn clone_fork(flags: libc::c_int) -> Result<Option<libc::pid_t>> {
    // SAFETY: the raw clone syscall with a NULL stack behaves like fork():
    // the child gets a copy-on-write copy of the address space and resumes
    // here. The launcher calls it while single-threaded, so no lock held by
    // another thread can be left locked in the child. No pointer arguments.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    match ret {
        -1 => Err(SysError::new(format!("clone({flags:#x})"))),
        0 => Ok(None),
        pid => Ok(Some(pid as libc::pid_t)),
    }
}

/// `struct clone_args` of `clone3(2)`, up to `cgroup` (CLONE_ARGS_SIZE_VER2).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// [`clone_fork`] through `clone3(2)` with `CLONE_INTO_CGROUP` (Linux
/// 5.7): the child is born in the cgroup v2 directory `cgroup`, so nobody
/// writes its pid into `cgroup.procs` (which takes the kernel's
/// thread-group lock for writing and waits for an RCU grace period). An
/// older kernel fails with ENOSYS, E2BIG or EINVAL.
pub fn clone_fork_into(flags: libc::c_int, cgroup: BorrowedFd<'_>) -> Result<Option<libc::pid_t>> {
    let args = CloneArgs {
        flags: u64::from(flags as u32) | CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup.as_raw_fd() as u64,
        ..Default::default()
    };
    // SAFETY: as `clone_fork`: no stack given (the child resumes here on a
    // copy-on-write copy of this one), called single-threaded. `args` is a
    // properly laid out `struct clone_args` of the size passed, which the
    // kernel only reads during the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match ret {
        -1 => Err(SysError::new(format!(
            "clone3({flags:#x}|CLONE_INTO_CGROUP)"
        ))),
        0 => Ok(None),
        pid => Ok(Some(pid as libc::pid_t)),
    }
}

/// `open_tree(AT_FDCWD, path, OPEN_TREE_CLONE|OPEN_TREE_CLOEXEC[|AT_RECURSIVE])`:
/// a detached copy of the mount (tree) at `path`.
pub fn clone_tree(path: &Path, recursive: bool) -> Result<OwnedFd> {
    let c = cpath(path)?;
    let mut flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint;
    if recursive {
        flags |= AT_RECURSIVE;
    }
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call;
    // the returned fd is new and owned by nobody else.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, c.as_ptr(), flags) };
    if fd < 0 {
        return Err(SysError::new(format!(
            "open_tree({path:?}, CLONE{})",
            if recursive { "|RECURSIVE" } else { "" }
        )));
    }
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `open_tree(dirfd, rel, OPEN_TREE_CLONE|OPEN_TREE_CLOEXEC)`: a detached
/// copy of the mount `dirfd` refers to, rooted at `rel` below it (not
/// following symlinks out of it: `rel` comes from mountinfo).
pub fn clone_tree_at(dirfd: BorrowedFd<'_>, rel: &Path) -> Result<OwnedFd> {
    let c = cpath(rel)?;
    let flags = OPEN_TREE_CLONE
        | libc::O_CLOEXEC as libc::c_uint
        | libc::AT_SYMLINK_NOFOLLOW as libc::c_uint;
    // SAFETY: `c` is a valid NUL-terminated string alive for the call,
    // `dirfd` a borrowed open fd; the returned fd is new and ours.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, dirfd.as_raw_fd(), c.as_ptr(), flags) };
    if fd < 0 {
        return Err(SysError::new(format!(
            "open_tree(fd {}, {rel:?}, CLONE)",
            dirfd.as_raw_fd()
        )));
    }
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `prctl(PR_SET_SECUREBITS, bits)`.
pub fn set_securebits(bits: u64) -> nix::Result<()> {
    // SAFETY: PR_SET_SECUREBITS takes an integer and reads no memory.
    let rc = unsafe { libc::prctl(libc::PR_SET_SECUREBITS, bits as libc::c_ulong, 0, 0, 0) };
    nix::errno::Errno::result(rc).map(|_| ())
}

/// `SECBIT_NO_SETUID_FIXUP`: a change of (fs)uid keeps the capabilities.
pub const SECBIT_NO_SETUID_FIXUP: u64 = 1 << 2;

/// `open_tree(fd, "", OPEN_TREE_CLONE|OPEN_TREE_CLOEXEC|AT_EMPTY_PATH)`: a
/// detached bind of exactly the object an O_PATH fd refers to (never a
/// path looked up again).
pub fn clone_object(fd: BorrowedFd<'_>) -> Result<OwnedFd> {
    let flags =
        OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | libc::AT_EMPTY_PATH as libc::c_uint;
    // SAFETY: the path is a static empty C string; `fd` is borrowed for the
    // call; the returned fd is new and owned by nobody else.
    let ret = unsafe { libc::syscall(libc::SYS_open_tree, fd.as_raw_fd(), c"".as_ptr(), flags) };
    if ret < 0 {
        return Err(SysError::new(format!(
            "open_tree(fd {}, CLONE|EMPTY_PATH)",
            fd.as_raw_fd()
        )));
    }
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) })
}

/// `mount_setattr(fd, "", AT_EMPTY_PATH[|AT_RECURSIVE], ...)` on a mount fd.
pub fn mount_setattr(
    fd: BorrowedFd<'_>,
    recursive: bool,
    set: u64,
    clear: u64,
    userns: Option<BorrowedFd<'_>>,
) -> Result<()> {
    let attr = MountAttr {
        attr_set: set,
        attr_clr: clear,
        propagation: 0,
        userns_fd: userns.map(|u| u.as_raw_fd() as u64).unwrap_or(0),
    };
    let mut flags = libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= AT_RECURSIVE;
    }
    // SAFETY: `attr` is a properly laid out `struct mount_attr` that lives
    // across the call, and its size is passed; the path is a static empty
    // C string.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if ret < 0 {
        return Err(SysError::new(format!(
            "mount_setattr(fd {}, set {set:#x}, clear {clear:#x}{})",
            fd.as_raw_fd(),
            if recursive { ", RECURSIVE" } else { "" }
        )));
    }
    Ok(())
}

/// `move_mount(fd, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH)`: attach a
/// detached mount at `target`.
pub fn attach_mount(fd: BorrowedFd<'_>, target: &Path) -> Result<()> {
    let c = cpath(target)?;
    // SAFETY: both strings are valid NUL-terminated C strings alive for the
    // call; `fd` is a mount fd borrowed for the duration of the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            c.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if ret < 0 {
        return Err(SysError::new(format!("move_mount(fd, {target:?})")));
    }
    Ok(())
}

/// `move_mount(fd, "", target_fd, "", F_EMPTY_PATH | T_EMPTY_PATH)`:
/// attach a detached mount onto the object an O_PATH fd refers to (a
/// mount point resolved earlier, never a path looked up again).
pub fn attach_mount_at(fd: BorrowedFd<'_>, target: BorrowedFd<'_>) -> Result<()> {
    const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;
    // SAFETY: the empty strings are valid NUL-terminated C strings; both
    // fds are borrowed for the duration of the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            fd.as_raw_fd(),
            c"".as_ptr(),
            target.as_raw_fd(),
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    if ret < 0 {
        return Err(SysError::new("move_mount(fd, target fd)".into()));
    }
    Ok(())
}

/// A new instance of filesystem `fstype` as a detached mount:
/// `fsopen(fstype)`, each comma-separated option of `options` set
/// (`key=value` as a string, `key` alone as a flag), `FSCONFIG_CMD_CREATE`,
/// then `fsmount` with the `MOUNT_ATTR_*` flags `attrs`. The instance
/// belongs to the namespaces of the calling process (the network namespace
/// for sysfs, the IPC namespace for mqueue, the active pid namespace for
/// proc), whichever process later attaches it.
pub fn new_fs_mount(fstype: &str, options: &str, attrs: u64) -> Result<OwnedFd> {
    let opts: Vec<(&str, Option<&str>)> = options
        .split(',')
        .filter(|o| !o.is_empty())
        .map(|o| match o.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (o, None),
        })
        .collect();
    new_fs_mount_opts(fstype, &opts, attrs)
}

/// [`new_fs_mount`] with the options given one by one (values may hold
/// commas: overlayfs layer paths).
pub fn new_fs_mount_opts(
    fstype: &str,
    options: &[(&str, Option<&str>)],
    attrs: u64,
) -> Result<OwnedFd> {
    const FSOPEN_CLOEXEC: libc::c_uint = 1;
    const FSCONFIG_SET_FLAG: libc::c_uint = 0;
    const FSCONFIG_SET_STRING: libc::c_uint = 1;
    const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
    const FSMOUNT_CLOEXEC: libc::c_uint = 1;
    let name = CString::new(fstype).map_err(|_| SysError {
        call: format!("fsopen({fstype:?})"),
        errno: Errno::EINVAL,
    })?;
    // SAFETY: `name` is a valid NUL-terminated string alive for the call;
    // the returned fd is new and owned by nobody else.
    let fs = unsafe { libc::syscall(libc::SYS_fsopen, name.as_ptr(), FSOPEN_CLOEXEC) };
    if fs < 0 {
        return Err(SysError::new(format!("fsopen({fstype:?})")));
    }
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    let fs = unsafe { OwnedFd::from_raw_fd(fs as RawFd) };
    for &(key, value) in options {
        let opt = match value {
            Some(v) => format!("{key}={v}"),
            None => key.to_string(),
        };
        let bad = || SysError {
            call: format!("fsconfig({fstype:?}, {opt:?})"),
            errno: Errno::EINVAL,
        };
        let k = CString::new(key).map_err(|_| bad())?;
        let v = value.map(CString::new).transpose().map_err(|_| bad())?;
        let (cmd, vptr) = match &v {
            Some(v) => (FSCONFIG_SET_STRING, v.as_ptr()),
            None => (FSCONFIG_SET_FLAG, std::ptr::null()),
        };
        // SAFETY: `k` and `v` are valid NUL-terminated strings (or NULL for
        // a flag) alive for the call; `fs` is the fs context fd.
        let ret =
            unsafe { libc::syscall(libc::SYS_fsconfig, fs.as_raw_fd(), cmd, k.as_ptr(), vptr, 0) };
        if ret < 0 {
            return Err(SysError::new(format!("fsconfig({fstype:?}, {opt:?})")));
        }
    }
    // SAFETY: no pointer arguments; `fs` is the fs context fd.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    };
    if ret < 0 {
        let mut err = SysError::new(format!("fsconfig({fstype:?}, CMD_CREATE)"));
        // The filesystem says why in the context's log, one message per read.
        let mut buf = [0u8; 512];
        for _ in 0..4 {
            match nix::unistd::read(fs.as_raw_fd(), &mut buf) {
                Ok(n) if n > 0 => {
                    let msg = String::from_utf8_lossy(&buf[..n]);
                    err.call.push_str(&format!(" [{}]", msg.trim()));
                }
                _ => break,
            }
        }
        return Err(err);
    }
    // SAFETY: no pointer arguments; the returned fd is new and ours.
    let m = unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, attrs) };
    if m < 0 {
        return Err(SysError::new(format!("fsmount({fstype:?}, {attrs:#x})")));
    }
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(m as RawFd) })
}

/// Resolution rules of [`openat2`] (`RESOLVE_*`).
pub mod resolve {
    pub const NO_MAGICLINKS: u64 = libc::RESOLVE_NO_MAGICLINKS;
    pub const NO_SYMLINKS: u64 = libc::RESOLVE_NO_SYMLINKS;
    pub const IN_ROOT: u64 = libc::RESOLVE_IN_ROOT;
    pub const BENEATH: u64 = libc::RESOLVE_BENEATH;
    pub const NO_XDEV: u64 = libc::RESOLVE_NO_XDEV;
}

/// `openat2(dirfd, path, {flags, 0, resolve})`.
pub fn openat2(dirfd: BorrowedFd<'_>, path: &Path, flags: i32, resolve: u64) -> Result<OwnedFd> {
    let c = cpath(path)?;
    // SAFETY: zeroed open_how is a valid value (all fields are integers).
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = resolve;
    // SAFETY: `c` is a valid C string and `how` a valid open_how whose size
    // is passed; the kernel returns a new fd or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dirfd.as_raw_fd(),
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(SysError::new(format!("openat2({path:?})")));
    }
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `close_range(first, ~0, 0)`: close every fd from `first` on.
pub fn close_fds_from(first: RawFd) -> Result<()> {
    // SAFETY: close_range takes no pointers; closing fds the process does not
    // use any more is the point (called right before exec).
    let ret = unsafe { libc::syscall(libc::SYS_close_range, first as libc::c_uint, u32::MAX, 0) };
    if ret < 0 {
        return Err(SysError::new(format!("close_range({first}, ~0)")));
    }
    Ok(())
}

/// `landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)`: the
/// kernel's Landlock ABI version. `ENOSYS` (not built in) and `EOPNOTSUPP`
/// (not enabled at boot) come back as the error. The landlock crate probes
/// the same way but keeps the result private.
pub fn landlock_abi_version() -> Result<u32> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with the VERSION flag the kernel reads no memory: the attribute
    // pointer must be NULL and the size 0, and no fd is created.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if ret < 0 {
        return Err(SysError::new(
            "landlock_create_ruleset(NULL, 0, VERSION)".into(),
        ));
    }
    Ok(ret as u32)
}

/// Bring the loopback interface up in the current network namespace.
pub fn loopback_up() -> Result<()> {
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|errno| SysError {
        call: "socket(AF_INET, SOCK_DGRAM)".into(),
        errno,
    })?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the interface name from and writes the flags
    // into `req`, which is a valid, live `struct ifreq`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(SysError::new("ioctl(SIOCGIFFLAGS, \"lo\")".into()));
    }
    // SAFETY: the union member ifru_flags was just filled in by the kernel.
    unsafe {
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    // SAFETY: as above; SIOCSIFFLAGS only reads `req`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(SysError::new("ioctl(SIOCSIFFLAGS, \"lo\", UP)".into()));
    }
    Ok(())
}

/// `_exit(2)`: leave a forked child without running the parent's atexit
/// handlers or flushing buffers it inherited.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and touches no Rust-managed state.
    unsafe { libc::_exit(code) }
}

/// A `/proc` file read whole: open, reads of 4 KiB at a time, close.
/// `fs::read_to_string` asks for the size first (0 for these files), then
/// reads 32 bytes and doubles: 8 reads and a `statx` for `/proc/PID/status`.
/// (`Take` reads without asking for the size.)
pub fn read_proc(path: impl AsRef<Path>) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::with_capacity(4096);
    std::fs::File::open(path)?
        .take(u64::MAX)
        .read_to_string(&mut text)?;
    Ok(text)
}

/// Take ownership of an fd the kernel just installed through `SCM_RIGHTS`.
pub fn own_received_fd(fd: RawFd) -> OwnedFd {
    // SAFETY: the fd was installed in this process by recvmsg(SCM_RIGHTS) a
    // moment ago and nothing else refers to it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// `ioctl(fd, TIOCSCTTY, 0)`: make the terminal `fd` the calling session's
/// controlling terminal.
pub fn set_controlling_terminal(fd: BorrowedFd<'_>) -> nix::Result<()> {
    // SAFETY: TIOCSCTTY takes an integer argument (0: do not steal) and
    // reads no memory of ours; `fd` is a valid open descriptor.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSCTTY, 0) };
    nix::errno::Errno::result(rc).map(|_| ())
}

/// `ptrace(PTRACE_LISTEN, pid)`: leave a seized tracee in its group-stop
/// (a SIGSTOP sent to it keeps working), while still being told of its
/// next event.
pub fn ptrace_listen(pid: i32) -> nix::Result<()> {
    // SAFETY: PTRACE_LISTEN takes no address or data; the kernel checks
    // that `pid` is our tracee in a group-stop.
    let rc = unsafe {
        libc::ptrace(
            libc::PTRACE_LISTEN,
            pid,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_void>(),
        )
    };
    nix::errno::Errno::result(rc).map(|_| ())
}

/// `setrlimit(2)` for a resource given by number (`process.rlimits`).
pub fn set_rlimit(resource: i32, soft: u64, hard: u64) -> nix::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: `lim` is a valid rlimit struct on the stack for the duration
    // of the call; an unknown resource number makes the kernel return
    // EINVAL, nothing else.
    #[allow(clippy::unnecessary_cast)]
    let rc = unsafe { libc::setrlimit(resource as libc::__rlimit_resource_t, &lim) };
    nix::errno::Errno::result(rc).map(|_| ())
}

/// `prlimit(2)` on another process: set a resource limit of `pid` (a
/// container's init, from the runtime, which may raise a hard limit where
/// the init, in its own user namespace, may not).
pub fn set_rlimit_of(pid: i32, resource: i32, soft: u64, hard: u64) -> nix::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: `lim` is a valid rlimit struct on the stack for the duration
    // of the call, the old-limit pointer is NULL; an unknown resource or
    // pid makes the kernel return an error, nothing else.
    #[allow(clippy::unnecessary_cast)]
    let rc = unsafe {
        libc::prlimit(
            pid,
            resource as libc::__rlimit_resource_t,
            &lim,
            std::ptr::null_mut(),
        )
    };
    nix::errno::Errno::result(rc).map(|_| ())
}

/// Restore the default disposition of `sig`.
pub fn default_signal(sig: nix::sys::signal::Signal) -> nix::Result<()> {
    use nix::sys::signal::{signal, SigHandler};
    // SAFETY: installing SIG_DFL registers no Rust code as a handler, so no
    // async-signal-safety requirement arises.
    unsafe { signal(sig, SigHandler::SigDfl) }.map(|_| ())
}

// ---- seccomp user notification ----

/// `struct seccomp_data`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct SeccompData {
    pub nr: i32,
    pub arch: u32,
    pub instruction_pointer: u64,
    pub args: [u64; 6],
}

/// `struct seccomp_notif`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct SeccompNotif {
    pub id: u64,
    pub pid: u32,
    pub flags: u32,
    pub data: SeccompData,
}

/// `struct seccomp_notif_resp`.
#[repr(C)]
#[derive(Debug, Default)]
struct SeccompNotifResp {
    id: u64,
    val: i64,
    error: i32,
    flags: u32,
}

const SECCOMP_SET_MODE_FILTER: libc::c_uint = 1;
const SECCOMP_FILTER_FLAG_NEW_LISTENER: libc::c_uint = 1 << 3;
const SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV: libc::c_uint = 1 << 5;
const SECCOMP_USER_NOTIF_FLAG_CONTINUE: u32 = 1;
const SECCOMP_IOCTL_NOTIF_RECV: libc::c_ulong = 0xc050_2100;
const SECCOMP_IOCTL_NOTIF_SEND: libc::c_ulong = 0xc018_2101;
const SECCOMP_IOCTL_NOTIF_ID_VALID: libc::c_ulong = 0x4008_2102;
const SECCOMP_IOCTL_NOTIF_SET_FLAGS: libc::c_ulong = 0x4008_2104;
const SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP: libc::c_ulong = 1;

/// Install `prog` with a new notification listener; returns the listener.
/// `WAIT_KILLABLE_RECV` keeps a signal during the wait from restarting the
/// syscall and notifying twice.
pub fn seccomp_install_listener(prog: &[seccompiler::sock_filter]) -> Result<OwnedFd> {
    let fprog = libc::sock_fprog {
        len: prog.len() as libc::c_ushort,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `fprog` points at `prog`, a live slice of `sock_filter`, whose
    // layout is the kernel's `struct sock_filter` (repr(C) in seccompiler);
    // the kernel copies the program during the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_SET_MODE_FILTER,
            SECCOMP_FILTER_FLAG_NEW_LISTENER | SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
            &fprog as *const libc::sock_fprog,
        )
    };
    if fd < 0 {
        return Err(SysError::new(
            "seccomp(SET_MODE_FILTER, NEW_LISTENER|WAIT_KILLABLE_RECV)".into(),
        ));
    }
    // SAFETY: the kernel returned a new listener fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Receive one notification (blocks until one is pending).
pub fn notif_recv(listener: BorrowedFd<'_>) -> Result<SeccompNotif> {
    let mut n = SeccompNotif::default();
    // SAFETY: `n` is a zeroed, properly laid out `struct seccomp_notif` the
    // kernel fills in; it lives across the call.
    let ret = unsafe { libc::ioctl(listener.as_raw_fd(), SECCOMP_IOCTL_NOTIF_RECV, &mut n) };
    if ret < 0 {
        return Err(SysError::new("ioctl(SECCOMP_IOCTL_NOTIF_RECV)".into()));
    }
    Ok(n)
}

/// Answer a notification: let the syscall run (`error` = None) or fail it
/// with `error`.
pub fn notif_send(listener: BorrowedFd<'_>, id: u64, error: Option<i32>) -> Result<()> {
    let resp = match error {
        None => SeccompNotifResp {
            id,
            flags: SECCOMP_USER_NOTIF_FLAG_CONTINUE,
            ..Default::default()
        },
        Some(e) => SeccompNotifResp {
            id,
            error: -e,
            ..Default::default()
        },
    };
    // SAFETY: `resp` is a properly laid out `struct seccomp_notif_resp` that
    // lives across the call; the kernel only reads it.
    let ret = unsafe { libc::ioctl(listener.as_raw_fd(), SECCOMP_IOCTL_NOTIF_SEND, &resp) };
    if ret < 0 {
        return Err(SysError::new(format!(
            "ioctl(SECCOMP_IOCTL_NOTIF_SEND, id {id})"
        )));
    }
    Ok(())
}

/// Whether notification `id` is still pending (its task did not die or
/// get interrupted); checked after every read of the task's memory.
pub fn notif_id_valid(listener: BorrowedFd<'_>, id: u64) -> bool {
    // SAFETY: the kernel reads one u64 from `&id`, which lives across the call.
    unsafe { libc::ioctl(listener.as_raw_fd(), SECCOMP_IOCTL_NOTIF_ID_VALID, &id) == 0 }
}

/// Ask the kernel (6.6 and later) to hand each notification of `listener`
/// and its answer over on the CPU that is waiting for it: the notifying
/// task wakes the supervisor there, and the answer wakes the task there,
/// instead of waking another, possibly idle, CPU each way.
pub fn notif_set_sync_wakeup(listener: BorrowedFd<'_>) -> Result<()> {
    // SAFETY: SET_FLAGS takes its flags by value in the argument; nothing
    // is read from or written to this process's memory.
    let ret = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            SECCOMP_IOCTL_NOTIF_SET_FLAGS,
            SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP,
        )
    };
    if ret < 0 {
        return Err(SysError::new(
            "ioctl(SECCOMP_IOCTL_NOTIF_SET_FLAGS, SYNC_WAKE_UP)".into(),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// A task's ids without /proc/PID/status (the audit record of an exec)

/// `struct pidfd_info` as Linux 6.13 first published it (64 bytes; later
/// kernels append fields and take the shorter struct as asked for).
#[repr(C)]
#[derive(Default)]
struct PidfdInfo {
    mask: u64,
    cgroupid: u64,
    pid: u32,
    tgid: u32,
    ppid: u32,
    ruid: u32,
    rgid: u32,
    euid: u32,
    egid: u32,
    suid: u32,
    sgid: u32,
    fsuid: u32,
    fsgid: u32,
    spare0: u32,
}

const PIDFD_INFO_PID: u64 = 1;
const PIDFD_INFO_CREDS: u64 = 1 << 1;
/// `_IOWR(PIDFS_IOCTL_MAGIC = 0xFF, 11, struct pidfd_info)`, 64 bytes.
const PIDFD_GET_INFO: libc::c_ulong = 0xc040_ff0b;

/// A live task's parent pid and real uid and gid, as the caller's pid and
/// user namespaces see them (what `PPid`, `Uid` and `Gid` of its
/// `/proc/PID/status` say), from `PIDFD_GET_INFO` (Linux 6.13): no status
/// text generated and parsed. `pid` must lead its thread group.
pub struct TaskIds {
    pub ppid: i32,
    pub uid: u32,
    pub gid: u32,
}

/// A pidfd of process `pid` (Linux 5.3): it stays this process's even
/// when the pid is reused, and polls readable once the process has exited.
pub fn pidfd_open(pid: i32) -> Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags by value; it returns a new
    // fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(SysError::new(format!("pidfd_open({pid})")));
    }
    // SAFETY: the kernel just returned this fd; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Waits until the process of `pidfd` has exited (a zombie has), at most
/// `timeout`: woken by the kernel at the exit, no polling of /proc.
/// True once it has exited.
pub fn wait_exited(pidfd: BorrowedFd<'_>, timeout: std::time::Duration) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let end = std::time::Instant::now() + timeout;
    loop {
        let left = end.saturating_duration_since(std::time::Instant::now());
        // Rounded up: a wait of 0.4 ms left is not a busy poll of 0 ms.
        let ms = PollTimeout::try_from(left.as_micros().div_ceil(1000).min(60_000) as i32)
            .unwrap_or(PollTimeout::MAX);
        match poll(&mut [PollFd::new(pidfd, PollFlags::POLLIN)], ms) {
            Ok(n) if n > 0 => return true,
            Err(Errno::EINTR) => continue,
            Ok(_) if left.is_zero() => return false,
            Ok(_) => continue,
            Err(_) => return false,
        }
    }
}

pub fn task_ids(pid: i32) -> Result<TaskIds> {
    let fd = pidfd_open(pid)?;
    let mut info = PidfdInfo {
        mask: PIDFD_INFO_PID | PIDFD_INFO_CREDS,
        ..Default::default()
    };
    // SAFETY: `info` is a repr(C) struct of the 64 bytes the request
    // encodes; the kernel writes at most that many into it during the call.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), PIDFD_GET_INFO, &mut info) };
    if ret < 0 {
        return Err(SysError::new(format!("ioctl(PIDFD_GET_INFO) of pid {pid}")));
    }
    let want = PIDFD_INFO_PID | PIDFD_INFO_CREDS;
    if info.mask & want != want {
        return Err(SysError {
            call: format!("ioctl(PIDFD_GET_INFO) of pid {pid}: no pid or creds"),
            errno: Errno::EOPNOTSUPP,
        });
    }
    Ok(TaskIds {
        ppid: info.ppid as i32,
        uid: info.ruid,
        gid: info.rgid,
    })
}

/// `pid` (of the caller's pid namespace) as the pid namespace `ns` sees
/// it (`NS_GET_PID_IN_PIDNS`, Linux 6.11); ESRCH when it is not there.
pub fn pid_in_namespace(ns: BorrowedFd<'_>, pid: i32) -> Result<i32> {
    // SAFETY: the request takes the pid by value in the argument and returns
    // the translated pid; nothing is read from or written to our memory.
    let ret = unsafe {
        libc::ioctl(
            ns.as_raw_fd(),
            libc::NS_GET_PID_IN_PIDNS,
            pid as libc::c_ulong,
        )
    };
    match ret {
        r if r < 0 => Err(SysError::new(format!("ioctl(NS_GET_PID_IN_PIDNS, {pid})"))),
        // The task is alive but not in (or below) that namespace.
        0 => Err(SysError {
            call: format!("ioctl(NS_GET_PID_IN_PIDNS, {pid})"),
            errno: Errno::ESRCH,
        }),
        r => Ok(r),
    }
}

// ---------------------------------------------------------------------------
// BPF: the cgroup v2 device program

/// One eBPF instruction (`struct bpf_insn`): opcode, registers
/// (dst in the low nibble, src in the high), offset, immediate.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BpfInsn {
    pub code: u8,
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_PROG_ATTACH: libc::c_int = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// The `BPF_PROG_LOAD` members of `union bpf_attr`, zero-padded to the
/// size of the union's largest member this kernel family knows.
#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    _rest: [u8; 96],
}

/// The `BPF_PROG_ATTACH` members of `union bpf_attr`.
#[repr(C)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
    _rest: [u8; 108],
}

/// Load `insns` as a `BPF_PROG_TYPE_CGROUP_DEVICE` program and attach it
/// to the cgroup v2 directory `cgroup` (`BPF_F_ALLOW_MULTI`: it runs with
/// the programs of the ancestors, and every one must allow). The program
/// stays attached as long as the cgroup exists. The verifier's log is in
/// the error when loading fails.
pub fn attach_device_program(cgroup: BorrowedFd<'_>, insns: &[BpfInsn]) -> Result<()> {
    let license = c"Apache-2.0";
    let mut log = vec![0u8; 64 * 1024];
    let load = |log_level: u32, log: &mut [u8]| {
        let attr = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            log_level,
            log_size: if log_level > 0 { log.len() as u32 } else { 0 },
            log_buf: if log_level > 0 {
                log.as_mut_ptr() as u64
            } else {
                0
            },
            kern_version: 0,
            prog_flags: 0,
            _rest: [0; 96],
        };
        // SAFETY: `attr` is a zero-padded `union bpf_attr` prefix for
        // BPF_PROG_LOAD; the instruction array, the license string and the
        // log buffer it points to outlive the call, and their lengths are
        // the ones given. The returned fd is new and owned by nobody else.
        unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_LOAD,
                &attr as *const ProgLoadAttr,
                std::mem::size_of::<ProgLoadAttr>(),
            )
        }
    };
    let mut fd = load(0, &mut log);
    if fd < 0 && Errno::last() != Errno::EPERM {
        // Once more with the verifier's log, to say why.
        fd = load(1, &mut log);
        if fd < 0 {
            let errno = Errno::last();
            let text = String::from_utf8_lossy(&log);
            let text = text.trim_end_matches('\0').trim();
            let last = text
                .lines()
                .rfind(|l| !l.starts_with("processed "))
                .unwrap_or("");
            return Err(SysError {
                call: format!("bpf(BPF_PROG_LOAD, cgroup device program of {} instructions; verifier: {last})", insns.len()),
                errno,
            });
        }
    }
    if fd < 0 {
        return Err(SysError::new(
            "bpf(BPF_PROG_LOAD, cgroup device program)".into(),
        ));
    }
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    let prog = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    let attr = ProgAttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        replace_bpf_fd: 0,
        _rest: [0; 108],
    };
    // SAFETY: `attr` is a zero-padded `union bpf_attr` prefix for
    // BPF_PROG_ATTACH; both fds are open for the whole call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_ATTACH,
            &attr as *const ProgAttachAttr,
            std::mem::size_of::<ProgAttachAttr>(),
        )
    };
    if r < 0 {
        return Err(SysError::new(
            "bpf(BPF_PROG_ATTACH, BPF_CGROUP_DEVICE)".into(),
        ));
    }
    Ok(())
}

/// Give the free memory of the heap back to the kernel (glibc's
/// `malloc_trim`): the detached audit supervisor, forked from a `create`
/// that has parsed and compiled everything, keeps only what it uses.
pub fn trim_heap() {
    // SAFETY: malloc_trim takes no pointer; it only releases free chunks of
    // glibc's own arenas.
    unsafe { libc::malloc_trim(0) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::time::{Duration, Instant};

    /// `sleep SECS` and a pidfd of it.
    fn sleeper(secs: &str) -> (std::process::Child, OwnedFd) {
        let child = std::process::Command::new("sleep")
            .arg(secs)
            .spawn()
            .unwrap();
        let fd = pidfd_open(child.id() as i32).unwrap();
        (child, fd)
    }

    /// A pidfd wakes its waiter at the exit, and not before.
    #[test]
    fn wait_exited_wakes_at_the_exit() {
        let (mut short, fd) = sleeper("0.3");
        let t = Instant::now();
        assert!(wait_exited(fd.as_fd(), Duration::from_secs(10)));
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(250), "{took:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
        // A zombie has exited too.
        assert!(wait_exited(fd.as_fd(), Duration::ZERO));
        short.wait().unwrap();

        let (mut long, fd) = sleeper("30");
        let t = Instant::now();
        assert!(!wait_exited(fd.as_fd(), Duration::from_millis(150)));
        assert!(t.elapsed() >= Duration::from_millis(140));
        long.kill().unwrap();
        assert!(wait_exited(fd.as_fd(), Duration::from_secs(10)));
        long.wait().unwrap();
    }
}
