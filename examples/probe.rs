//! Test probe run inside the sandbox by `tests/`: reports ids, environment
//! and the outcome of system calls as plain lines, exit 0 on success and 1
//! when the probed operation failed.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixStream};

fn report<T>(what: &str, r: std::io::Result<T>) -> i32 {
    match r {
        Ok(_) => {
            println!("{what}: ok");
            0
        }
        Err(e) => {
            println!("{what}: error {}", e.raw_os_error().unwrap_or(0));
            1
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    let code = match arg(0).as_str() {
        "ids" => {
            println!(
                "uid={} euid={} gid={} egid={}",
                nix::unistd::getuid(),
                nix::unistd::geteuid(),
                nix::unistd::getgid(),
                nix::unistd::getegid()
            );
            0
        }
        "env" => {
            for (k, v) in std::env::vars_os() {
                println!("{}={}", k.to_string_lossy(), v.to_string_lossy());
            }
            0
        }
        "tcp" => report("tcp", std::net::TcpStream::connect(arg(1))),
        "tcp-self" => {
            // Listen and connect on 127.0.0.1: works only when lo is up.
            let r = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| {
                let conn = std::net::TcpStream::connect(l.local_addr()?);
                drop(l);
                conn
            });
            report("tcp-self", r)
        }
        "unix" => report("unix", UnixStream::connect(arg(1))),
        "unix-abstract" => report(
            "unix-abstract",
            SocketAddr::from_abstract_name(arg(1).as_bytes())
                .and_then(|a| UnixStream::connect_addr(&a)),
        ),
        "unshare-user" => report(
            "unshare-user",
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER)
                .map_err(std::io::Error::from),
        ),
        "write" => report("write", std::fs::write(arg(1), b"x")),
        // Sleep N seconds (a setuid copy keeps its ids while the host looks).
        "sleep" => {
            std::thread::sleep(std::time::Duration::from_secs(arg(1).parse().unwrap_or(1)));
            0
        }
        "thread-exec" => {
            // execve from a second thread: the audit must record it.
            let prog = arg(1);
            let rest: Vec<String> = args.iter().skip(1).cloned().collect();
            let t = std::thread::spawn(move || {
                let c = |s: &str| std::ffi::CString::new(s).unwrap();
                let argv: Vec<_> = rest.iter().map(|a| c(a)).collect();
                let env: [std::ffi::CString; 0] = [];
                nix::unistd::execve(&c(&prog), &argv, &env)
            });
            let r = t.join();
            println!("thread-exec returned: {r:?}");
            1
        }
        "race-exec" => race_exec(arg(1).parse().unwrap_or(100)),
        "reap" => reap(&arg(1), &args[2..]),
        "i386-exec" => i386_exec(&arg(1), &arg(2)),
        "memfd-exec" => {
            // fexecve (execveat AT_EMPTY_PATH) of a copy in a memfd.
            use std::os::fd::AsFd;
            let data = std::fs::read(arg(1)).unwrap_or_default();
            let fd = nix::sys::memfd::memfd_create(
                c"probe-memfd",
                nix::sys::memfd::MemFdCreateFlag::empty(),
            )
            .expect("memfd_create");
            let mut f = std::fs::File::from(fd);
            f.write_all(&data).unwrap();
            let c = |s: &str| std::ffi::CString::new(s).unwrap();
            let argv: Vec<_> = args.iter().skip(1).map(|a| c(a)).collect();
            let env: [std::ffi::CString; 0] = [];
            let e = nix::unistd::fexecve(f.as_fd().as_raw_fd(), &argv, &env);
            println!("fexecve returned: {e:?}");
            1
        }
        "syscall" => syscalls(&args[1..]),
        "exe-write" => {
            let pids: Vec<i32> = args[1..].iter().filter_map(|a| a.parse().ok()).collect();
            exe_write(&pids)
        }
        "exe-scan" => exe_scan(arg(1).parse().unwrap_or(1000)),
        "fds" => fds(),
        "fd-cwd" => fd_cwd(arg(1).parse().unwrap_or(64)),
        "reach" => reach(&arg(1)),
        "open-write" => report(
            "open-write",
            std::fs::OpenOptions::new().write(true).open(arg(1)),
        ),
        "swap-race" => swap_race(&arg(1), &arg(2), arg(3).parse().unwrap_or(1000)),
        other => {
            eprintln!("probe: unknown command {other:?}");
            2
        }
    };
    let _ = std::io::stdout().flush();
    std::process::exit(code);
}

/// The argv race of the audit findings: a second thread flips an argument
/// between "SAFE" and "EVIL" while the main thread execs
/// `sh -c 'echo "$$ $1"' sh ARG`, `n` times in forked children. The audit
/// record of each exec must name what the program really received.
fn race_exec(n: usize) -> i32 {
    use std::sync::atomic::{AtomicU8, Ordering};
    static BUF: [AtomicU8; 6] = [
        AtomicU8::new(b'S'),
        AtomicU8::new(b'A'),
        AtomicU8::new(b'F'),
        AtomicU8::new(b'E'),
        AtomicU8::new(b'!'),
        AtomicU8::new(0),
    ];
    for _ in 0..n {
        // SAFETY (fork): the probe is single-threaded at this point.
        match unsafe { nix::unistd::fork() }.expect("fork") {
            nix::unistd::ForkResult::Parent { child } => {
                let _ = nix::sys::wait::waitpid(child, None);
            }
            nix::unistd::ForkResult::Child => {
                std::thread::spawn(|| loop {
                    for w in [b"EVIL", b"SAFE"] {
                        for (i, b) in w.iter().enumerate() {
                            BUF[i].store(*b, Ordering::Relaxed);
                        }
                    }
                });
                let sh = c"/bin/sh";
                let argv = [
                    c"sh".as_ptr(),
                    c"-c".as_ptr(),
                    c"echo \"$$ $1\"".as_ptr(),
                    c"sh".as_ptr(),
                    BUF.as_ptr() as *const libc::c_char,
                    std::ptr::null(),
                ];
                let envp: [*const libc::c_char; 1] = [std::ptr::null()];
                // SAFETY: argv and envp are NULL-terminated arrays of
                // NUL-terminated strings that live until execve returns (the
                // atomics' bytes always end in the NUL at BUF[5]).
                unsafe { libc::execve(sh.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
                std::process::exit(127);
            }
        }
    }
    0
}

/// execve through the i386 entry point (`int 0x80`, syscall 11) from this
/// 64-bit process: the exec-audit filter must catch the 32-bit ABI too.
fn i386_exec(path: &str, arg: &str) -> i32 {
    // SAFETY: an anonymous private mapping below 4 GiB (MAP_32BIT), so that
    // its addresses fit the 32-bit registers of the i386 ABI; nothing else
    // refers to it.
    let page = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_32BIT,
            -1,
            0,
        )
    };
    if page == libc::MAP_FAILED || path.len() > 60 || arg.len() > 60 {
        println!("i386-exec: setup failed");
        return 1;
    }
    let base = page as usize as u32;
    // SAFETY: the page is 4096 writable bytes; every write below stays in
    // it (strings under 64 bytes at offsets 0 and 64, pointers at 128..144).
    let ret: i32 = unsafe {
        let p = page as *mut u8;
        std::ptr::copy_nonoverlapping(path.as_ptr(), p, path.len());
        std::ptr::copy_nonoverlapping(arg.as_ptr(), p.add(64), arg.len());
        let argv = p.add(128) as *mut u32;
        *argv = base;
        *argv.add(1) = base + 64;
        *argv.add(2) = 0;
        *(p.add(144) as *mut u32) = 0;
        let mut eax: i32 = 11;
        // rbx is reserved by LLVM: swap the path pointer in and out of it.
        std::arch::asm!(
            "xchg ebx, {path:e}",
            "int 0x80",
            "xchg ebx, {path:e}",
            path = inout(reg) base => _,
            inout("eax") eax,
            in("ecx") base + 128,
            in("edx") base + 144,
        );
        eax
    };
    println!("i386-exec returned {ret}");
    1
}

/// An engine's monitor in miniature (conmon, the containerd shim): become a
/// child subreaper, run `cmd` (buildcell create ... --pid-file PIDFILE),
/// then run `start ID` through the same binary and wait for the pid in
/// PIDFILE as a parent would. Prints `reaped PID status N`.
fn reap(pid_file: &str, cmd: &[String]) -> i32 {
    use nix::sys::wait::{waitpid, WaitStatus};
    nix::sys::prctl::set_child_subreaper(true).expect("subreaper");
    let Some((prog, rest)) = cmd.split_first() else {
        return 2;
    };
    let st = std::process::Command::new(prog)
        .args(rest)
        .status()
        .expect("create");
    if !st.success() {
        println!("create failed: {st}");
        return 1;
    }
    let pid: i32 = std::fs::read_to_string(pid_file)
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");
    let id = rest.last().cloned().unwrap_or_default();
    let root_args: Vec<&String> = rest.iter().take_while(|a| *a != "create").collect();
    let st = std::process::Command::new(prog)
        .args(root_args)
        .args(["start", &id])
        .status()
        .expect("start");
    if !st.success() {
        println!("start failed: {st}");
        return 1;
    }
    match waitpid(nix::unistd::Pid::from_raw(pid), None) {
        Ok(WaitStatus::Exited(p, code)) => {
            println!("reaped {p} status {code}");
            0
        }
        other => {
            println!("wait {pid}: {other:?}");
            1
        }
    }
}

/// The raw return of a system call as a report line: `NAME: ok` or
/// `NAME: error ERRNO`. A returned fd is closed.
fn syscall_line(name: &str, ret: libc::c_long, fd: bool) -> i32 {
    if ret < 0 {
        let e = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        println!("{name}: error {e}");
        return 1;
    }
    if fd {
        // SAFETY: the call returned a new fd that nothing else owns.
        unsafe { libc::close(ret as libc::c_int) };
    }
    println!("{name}: ok");
    0
}

/// `syscall NAME...`: each raw system call with harmless arguments, so that
/// only a filter (or the kernel's own checks) decides the result: bad
/// pointers or an unknown command where the call would otherwise do
/// something, and fds that are closed again. Exit 1 if any failed.
///
/// `syscall --in-userns NAME...` first tries to make a user and mount
/// namespace of its own (line `unshare-user-mount: ...`), where the calls
/// that need CAP_SYS_ADMIN would have it: what is left to refuse them is a
/// filter.
fn syscalls(names: &[String]) -> i32 {
    let mut code = 0;
    let mut names = names;
    if names.first().map(String::as_str) == Some("--in-userns") {
        names = &names[1..];
        // SAFETY: unshare takes flags only.
        let r = unsafe {
            libc::syscall(
                libc::SYS_unshare,
                (libc::CLONE_NEWUSER | libc::CLONE_NEWNS) as i64,
            )
        };
        syscall_line("unshare-user-mount", r, false);
    }
    for name in names {
        let null = std::ptr::null::<libc::c_void>();
        // SAFETY: every call below passes null or invalid pointers that the
        // kernel checks (EFAULT), values it validates, or, where a call
        // succeeds, buffers owned by this frame; returned fds are closed.
        let (ret, fd) = unsafe {
            match name.as_str() {
                "io_uring_setup" => (libc::syscall(libc::SYS_io_uring_setup, 1i64, null), true),
                // User-mode-only faults need no privilege: it succeeds
                // unless something refuses the call itself.
                "userfaultfd" => (
                    libc::syscall(libc::SYS_userfaultfd, (libc::O_CLOEXEC | 1) as i64),
                    true,
                ),
                "perf_event_open" => (
                    libc::syscall(libc::SYS_perf_event_open, null, 0i64, -1i64, -1i64, 0i64),
                    true,
                ),
                // An unknown command: EINVAL from the kernel.
                "bpf" => (libc::syscall(libc::SYS_bpf, 9999i64, null, 0i64), true),
                // An unknown operation: EOPNOTSUPP from the kernel.
                "keyctl" => (
                    libc::syscall(libc::SYS_keyctl, 9999i64, 0i64, 0i64, 0i64, 0i64),
                    false,
                ),
                "add_key" => (
                    libc::syscall(libc::SYS_add_key, null, null, null, 0i64, 0i64),
                    false,
                ),
                // A flag it does not know: EINVAL from the kernel (6.6+).
                "fchmodat2" => (
                    libc::syscall(
                        libc::SYS_fchmodat2,
                        libc::AT_FDCWD as i64,
                        c"/".as_ptr(),
                        0o755i64,
                        0x8000_0000i64,
                    ),
                    false,
                ),
                "fsopen" => (
                    libc::syscall(libc::SYS_fsopen, c"tmpfs".as_ptr(), 1i64),
                    true,
                ),
                "fsmount" => (libc::syscall(libc::SYS_fsmount, -1i64, 1i64, 0i64), true),
                "move_mount" => (
                    libc::syscall(
                        libc::SYS_move_mount,
                        -1i64,
                        c"".as_ptr(),
                        -1i64,
                        c"".as_ptr(),
                        0i64,
                    ),
                    false,
                ),
                // Without OPEN_TREE_CLONE this is an O_PATH open: allowed
                // to anyone the filter lets through.
                "open_tree" => (
                    libc::syscall(
                        libc::SYS_open_tree,
                        libc::AT_FDCWD as i64,
                        c"/".as_ptr(),
                        libc::O_CLOEXEC as i64,
                    ),
                    true,
                ),
                // A size below the first version: EINVAL from the kernel.
                "mount_setattr" => (
                    libc::syscall(libc::SYS_mount_setattr, -1i64, null, 0i64, null, 0i64),
                    false,
                ),
                "unshare-user" => (
                    libc::syscall(libc::SYS_unshare, libc::CLONE_NEWUSER as i64),
                    false,
                ),
                // Not traced: ESRCH from the kernel.
                "ptrace" => (
                    libc::syscall(
                        libc::SYS_ptrace,
                        libc::PTRACE_PEEKUSER as i64,
                        libc::getpid() as i64,
                        0i64,
                        0i64,
                    ),
                    false,
                ),
                "process_vm_readv" => {
                    let src = [7u8; 8];
                    let mut dst = [0u8; 8];
                    let local = libc::iovec {
                        iov_base: dst.as_mut_ptr().cast(),
                        iov_len: dst.len(),
                    };
                    let remote = libc::iovec {
                        iov_base: src.as_ptr() as *mut libc::c_void,
                        iov_len: src.len(),
                    };
                    let r = libc::syscall(
                        libc::SYS_process_vm_readv,
                        libc::getpid() as i64,
                        &local as *const libc::iovec,
                        1i64,
                        &remote as *const libc::iovec,
                        1i64,
                        0i64,
                    );
                    (r, false)
                }
                other => {
                    println!("{other}: unknown to the probe");
                    code = 2;
                    continue;
                }
            }
        };
        code = code.max(syscall_line(name, ret, fd));
    }
    code
}

/// The pids of other processes that run buildcell's binary (by `comm`,
/// which anyone may read).
fn buildcell_pids() -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim_end() == "buildcell")
        })
        .collect()
}

/// The CVE-2019-5736 moves against `/proc/PID/exe`: open it for writing,
/// and open it O_PATH to reopen it for writing through `/proc/self/fd`
/// later. One line per pid; `WRITABLE` if any open for writing worked
/// (nothing is written).
fn exe_attempts(pid: i32) -> String {
    use std::os::unix::fs::OpenOptionsExt;
    let exe = format!("/proc/{pid}/exe");
    let errno = |e: std::io::Error| e.raw_os_error().unwrap_or(0).to_string();
    let wronly = match std::fs::OpenOptions::new().write(true).open(&exe) {
        Ok(_) => "WRITABLE".to_string(),
        Err(e) => format!("error {}", errno(e)),
    };
    let path = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(&exe)
    {
        Err(e) => format!("error {}", errno(e)),
        Ok(f) => {
            let again = format!("/proc/self/fd/{}", f.as_raw_fd());
            match std::fs::OpenOptions::new().write(true).open(again) {
                Ok(_) => "ok, reopen WRITABLE".to_string(),
                Err(e) => format!("ok, reopen error {}", errno(e)),
            }
        }
    };
    format!("exe {pid}: open-write {wronly}; o-path {path}")
}

fn exe_write(pids: &[i32]) -> i32 {
    let mut code = 0;
    for pid in pids {
        let line = exe_attempts(*pid);
        if line.contains("WRITABLE") {
            code = 1;
        }
        println!("{line}");
    }
    code
}

/// For `ms` milliseconds, try [`exe_attempts`] on every process that runs
/// buildcell's binary as it appears (an `exec`'s process is buildcell until
/// it execs). Ends with `seen N`.
fn exe_scan(ms: u64) -> i32 {
    let end = std::time::Instant::now() + std::time::Duration::from_millis(ms);
    let mut seen = std::collections::BTreeSet::new();
    let mut code = 0;
    while std::time::Instant::now() < end {
        for pid in buildcell_pids() {
            if seen.insert(pid) {
                let line = exe_attempts(pid);
                if line.contains("WRITABLE") {
                    code = 1;
                }
                println!("{line}");
            }
        }
    }
    println!("seen {}", seen.len());
    code
}

/// The fds of this process, from /proc/self/fd (the directory's own fd
/// left out).
fn fds() -> i32 {
    let list: Vec<String> = match std::fs::read_dir("/proc/self/fd") {
        Ok(d) => d
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(e) => {
            println!("fds: error {}", e.raw_os_error().unwrap_or(0));
            return 1;
        }
    };
    let mut n: Vec<i32> = list
        .iter()
        .filter_map(|s| s.parse().ok())
        .filter(|fd| std::fs::read_link(format!("/proc/self/fd/{fd}")).is_ok())
        .collect();
    n.sort();
    let n: Vec<String> = n.iter().map(|x| x.to_string()).collect();
    println!("fds: {}", n.join(" "));
    0
}

/// The CVE-2024-21626 moves: `chdir` into `/proc/self/fd/N` and
/// `/proc/1/fd/N` for N in 3..`max`. A directory reached prints
/// `cwd BASE/N: PATH` (PATH as getcwd sees it: `(unreachable)/...` outside
/// the root); the line `fd-cwd: N tried, M entered` ends it.
fn fd_cwd(max: i32) -> i32 {
    let mut entered = 0;
    let mut tried = 0;
    let home = std::fs::File::open("/").expect("open /");
    let pid1 = std::process::id() == 1;
    for base in ["/proc/self/fd", "/proc/1/fd"] {
        for n in 3..max {
            // This process's own fd of `/`, wherever it shows.
            if n == home.as_raw_fd() && (base == "/proc/self/fd" || pid1) {
                continue;
            }
            tried += 1;
            let p = format!("{base}/{n}");
            if nix::unistd::chdir(p.as_str()).is_ok() {
                entered += 1;
                let cwd = nix::unistd::getcwd()
                    .map(|c| c.display().to_string())
                    .unwrap_or_else(|e| format!("getcwd error {}", e as i32));
                println!("cwd {p}: {cwd}");
                let _ = nix::unistd::fchdir(home.as_raw_fd());
            }
        }
    }
    println!("fd-cwd: {tried} tried, {entered} entered");
    i32::from(entered > 0)
}

/// Every way to touch process `pid` from here: a signal (0), a pidfd,
/// ptrace, process_vm_readv, its /proc entry and memory. One line each.
/// `@FILE`: the pid is in FILE, once it is there (waited for up to 10 s).
fn reach(which: &str) -> i32 {
    let pid: i32 = match which.strip_prefix('@') {
        None => which.parse().unwrap_or(0),
        Some(file) => {
            let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                let text = std::fs::read_to_string(file).unwrap_or_default();
                if let Ok(pid) = text.trim().parse() {
                    break pid;
                }
                if std::time::Instant::now() > end {
                    println!("reach: no pid in {file}");
                    return 2;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    };
    let errno = || std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    let line = |what: &str, ret: libc::c_long| {
        if ret < 0 {
            println!("{what}: error {}", errno());
        } else {
            println!("{what}: ok");
        }
    };
    // SAFETY: signal 0 only checks; the pidfd is closed; a seized process is
    // detached at once; process_vm_readv writes into a local buffer.
    unsafe {
        line("kill", libc::kill(pid, 0) as libc::c_long);
        let fd = libc::syscall(libc::SYS_pidfd_open, pid as i64, 0i64);
        line("pidfd_open", fd);
        if fd >= 0 {
            libc::close(fd as libc::c_int);
        }
        let r = libc::syscall(
            libc::SYS_ptrace,
            libc::PTRACE_SEIZE as i64,
            pid as i64,
            0i64,
            0i64,
        );
        line("ptrace", r);
        if r == 0 {
            libc::syscall(
                libc::SYS_ptrace,
                libc::PTRACE_DETACH as i64,
                pid as i64,
                0i64,
                0i64,
            );
        }
        let mut dst = [0u8; 8];
        let local = libc::iovec {
            iov_base: dst.as_mut_ptr().cast(),
            iov_len: dst.len(),
        };
        let remote = libc::iovec {
            iov_base: 0x1000 as *mut libc::c_void,
            iov_len: dst.len(),
        };
        line(
            "process_vm_readv",
            libc::syscall(
                libc::SYS_process_vm_readv,
                pid as i64,
                &local as *const libc::iovec,
                1i64,
                &remote as *const libc::iovec,
                1i64,
                0i64,
            ),
        );
    }
    for what in ["stat", "mem"] {
        let r = std::fs::File::open(format!("/proc/{pid}/{what}"));
        match r {
            Ok(_) => println!("/proc/{what}: ok"),
            Err(e) => println!("/proc/{what}: error {}", e.raw_os_error().unwrap_or(0)),
        }
    }
    0
}

/// The rename race of CVE-2021-30465: for `ms` milliseconds, swap the
/// directory `dir` with a symlink to `target` (renameat2 RENAME_EXCHANGE),
/// as fast as possible; `dir` is a directory again at the end. Prints the
/// number of swaps.
fn swap_race(dir: &str, target: &str, ms: u64) -> i32 {
    let link = format!("{dir}.link");
    let _ = std::fs::remove_file(&link);
    if let Err(e) = std::os::unix::fs::symlink(target, &link) {
        println!("swap-race: symlink error {}", e.raw_os_error().unwrap_or(0));
        return 1;
    }
    let a = std::ffi::CString::new(dir).unwrap();
    let b = std::ffi::CString::new(link.as_str()).unwrap();
    let end = std::time::Instant::now() + std::time::Duration::from_millis(ms);
    let mut swaps: u64 = 0;
    while std::time::Instant::now() < end {
        // SAFETY: two NUL-terminated paths that outlive the call.
        let r = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                a.as_ptr(),
                libc::AT_FDCWD,
                b.as_ptr(),
                libc::RENAME_EXCHANGE,
            )
        };
        if r == 0 {
            swaps += 1;
        }
    }
    if swaps % 2 == 1 {
        // SAFETY: as above.
        unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                a.as_ptr(),
                libc::AT_FDCWD,
                b.as_ptr(),
                libc::RENAME_EXCHANGE,
            )
        };
    }
    println!("swap-race: {swaps} swaps");
    0
}
