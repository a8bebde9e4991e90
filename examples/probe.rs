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
