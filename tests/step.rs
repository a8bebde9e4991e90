//! `buildcell step` with the embedded default, driven as a user would: the
//! real binary, real namespaces, as host root and as an unprivileged user.
//! Each test pins one default of the issue; removing the default fails it.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Stdio;

use common::*;

// ---------- errors: one line, the right exit status ----------

#[test]
fn no_command_is_an_error() {
    each_mode(|m| {
        let d = workdir(m, "nocmd");
        let r = run(m, &d, &["step"]);
        assert_refused(&r, 125, "no command given");
    });
}

#[test]
fn unknown_option_is_an_error() {
    each_mode(|m| {
        let d = workdir(m, "badopt");
        let r = run(m, &d, &["step", "--frobnicate", "--", "true"]);
        assert_eq!(r.code, 125, "{r:?}");
        assert_eq!(r.stderr.lines().count(), 1, "{r:?}");
    });
}

#[test]
fn command_not_found_is_127() {
    each_mode(|m| {
        let d = workdir(m, "notfound");
        let r = run(m, &d, &["step", "--", "no-such-command-xyz"]);
        assert_refused(&r, 127, "not found in PATH");
    });
}

#[test]
fn command_not_executable_is_126() {
    each_mode(|m| {
        let d = workdir(m, "noexec");
        let f = d.join("script");
        fs::write(&f, "#!/bin/sh\necho hi\n").unwrap();
        chown_to(m, &f);
        let r = run(m, &d, &["step", "--", "./script"]);
        assert_refused(&r, 126, "permission denied");
    });
}

#[test]
fn exit_status_is_propagated() {
    each_mode(|m| {
        let d = workdir(m, "status");
        assert_eq!(sh(m, &d, "exit 42").code, 42);
        assert_eq!(sh(m, &d, "exit 0").code, 0);
        // Death by signal N is 128+N, as in a shell.
        assert_eq!(sh(m, &d, "kill -KILL $$").code, 137);
        assert_eq!(sh(m, &d, "kill -TERM $$").code, 143);
    });
}

#[test]
fn missing_mount_source_names_it() {
    each_mode(|m| {
        let d = workdir(m, "mntsrc");
        let r = run(
            m,
            &d,
            &["step", "--mount", "/no/such/src:/tmp/x", "--", "true"],
        );
        assert_refused(&r, 125, "/no/such/src does not exist");
    });
}

#[test]
fn malformed_seccomp_names_the_json_path() {
    each_mode(|m| {
        let d = workdir(m, "badseccomp");
        let f = d.join("bad.json");
        fs::write(
            &f,
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}, {"names": ["write"], "action": 7}]}"#,
        )
        .unwrap();
        chown_to(m, &f);
        let r = run(m, &d, &["step", "--seccomp", "bad.json", "--", "true"]);
        assert_refused(&r, 125, "bad.json: syscalls[1].action");
        let r = run(m, &d, &["step", "--seccomp", "missing.json", "--", "true"]);
        assert_refused(&r, 125, "--seccomp missing.json: cannot read");
    });
}

#[test]
fn unreadable_working_directory_is_refused() {
    // Root reads every directory, so this is the unprivileged user's case.
    if !harness().modes.contains(&Mode::User) {
        return skip("needs the unprivileged mode");
    }
    let d = workdir(Mode::User, "unreadable");
    fs::set_permissions(&d, fs::Permissions::from_mode(0o311)).unwrap();
    let r = sh(Mode::User, &d, "true");
    fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
    assert_refused(&r, 125, "is not readable");
}

#[test]
fn disabled_user_namespaces_are_explained() {
    if !is_root() {
        return skip("needs root to lower max_user_namespaces in a child namespace");
    }
    let h = harness();
    let d = workdir(Mode::Root, "nouserns");
    // A user namespace where the limit is 0 stands for a host that disabled
    // them; nothing outside it changes.
    let script = format!(
        "echo 0 > /proc/sys/user/max_user_namespaces && exec {} step -- true",
        h.bin.display()
    );
    let out = std::process::Command::new("unshare")
        .args(["--user", "--map-root-user", "--", "sh", "-c", &script])
        .current_dir(&d)
        .output()
        .unwrap();
    let r = finish(out);
    assert_refused(
        &r,
        125,
        "user namespaces are disabled on this host: /proc/sys/user/max_user_namespaces is 0",
    );
}

#[test]
fn hostile_arguments_pass_through_verbatim() {
    each_mode(|m| {
        let d = workdir(m, "argv");
        let nasty = "a b\n'\"$(touch /tmp/pwned);`id`|&>*?\\";
        let out = ok(run(m, &d, &["step", "--", "printf", "%s", nasty]));
        assert_eq!(out, nasty);
        // A long argv (4,000 arguments) gets through whole.
        let many: Vec<String> = (0..4000).map(|i| format!("arg{i}")).collect();
        let mut args = vec!["step", "--", "sh", "-c", "echo $#", "sh"];
        args.extend(many.iter().map(String::as_str));
        assert_eq!(ok(run(m, &d, &args)).trim(), "4000");
    });
}

#[test]
fn non_utf8_argument_is_refused_cleanly() {
    use std::os::unix::ffi::OsStrExt;
    each_mode(|m| {
        let d = workdir(m, "nonutf8");
        let mut c = command(m, &d, &["step", "--", "echo"], &[]);
        c.arg(std::ffi::OsStr::from_bytes(b"\xff\xfe"));
        let r = finish(c.output().unwrap());
        assert_refused(&r, 125, "not valid UTF-8");
    });
}

// ---------- identity: looks-like-root ----------

#[test]
fn root_inside_unprivileged_outside() {
    each_mode(|m| {
        let d = workdir(m, "ids");
        let h = harness();
        let out = ok(run(
            m,
            &d,
            &["step", "--", h.probe.to_str().unwrap(), "ids"],
        ));
        assert_eq!(out.trim(), "uid=0 euid=0 gid=0 egid=0");
        let map = ok(sh(m, &d, "cat /proc/self/uid_map"));
        let f: Vec<u64> = map.split_whitespace().map(|x| x.parse().unwrap()).collect();
        assert_eq!(f[0], 0, "{map}");
        assert_ne!(f[1], 0, "container root must not be host root: {map}");
        match m {
            // A range of the pool reserved for this step alone (the
            // built-in pool starts at 0x70000000).
            Mode::Root => assert!(f.len() == 3 && f[2] == 65536 && f[1] >= 65536, "{map}"),
            Mode::User => {
                assert_eq!(f[1], caller_uid(m) as u64, "{map}");
                // With a subordinate range, 0..65535 are mapped.
                if harness().user.is_some() {
                    let total: u64 = f.chunks(3).map(|c| c[2]).sum();
                    assert_eq!(total, 65536, "{map}");
                }
            }
        }
    });
}

#[test]
fn files_written_in_cwd_belong_to_the_caller() {
    each_mode(|m| {
        let d = workdir(m, "owner");
        let out = ok(sh(m, &d, "pwd; echo data > made-inside"));
        assert_eq!(
            out.trim(),
            d.to_str().unwrap(),
            "working directory is the same path"
        );
        let meta = fs::metadata(d.join("made-inside")).unwrap();
        assert_eq!(meta.uid(), caller_uid(m));
        assert_eq!(fs::read_to_string(d.join("made-inside")).unwrap(), "data\n");
    });
}

#[test]
fn setuid_binary_gains_nothing() {
    if !is_root() {
        return skip("needs root to create a setuid file owned by another mapped uid");
    }
    each_mode(|m| {
        let d = workdir(m, "setuid");
        let h = harness();
        let f = d.join("suid-probe");
        fs::copy(&h.probe, &f).unwrap();
        // Owned by container uid 1000 on disk: through the idmapped cwd
        // (root mode) or the subordinate range (user mode).
        let host_uid = match m {
            Mode::Root => 1000,
            Mode::User => subuid_start(h.user.as_deref().unwrap()).expect("subuid range") + 999,
        };
        nix::unistd::chown(&f, Some(nix::unistd::Uid::from_raw(host_uid)), None).unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o4755)).unwrap();
        let out = ok(sh(m, &d, "stat -c %u:%a suid-probe; ./suid-probe ids"));
        let mut lines = out.lines();
        assert_eq!(lines.next(), Some("1000:4755"), "{out}");
        assert_eq!(lines.next(), Some("uid=0 euid=0 gid=0 egid=0"), "{out}");
    });
}

#[test]
fn capabilities_nnp_and_seccomp_are_set() {
    each_mode(|m| {
        let d = workdir(m, "caps");
        let out = ok(sh(
            m,
            &d,
            "grep -E '^(Cap|NoNewPrivs|Seccomp:)' /proc/self/status",
        ));
        for want in [
            "CapInh:\t0000000000000000",
            "CapPrm:\t0000000020000420",
            "CapEff:\t0000000020000420",
            "CapBnd:\t0000000020000420",
            "CapAmb:\t0000000000000000",
            "NoNewPrivs:\t1",
            "Seccomp:\t2",
        ] {
            assert!(out.lines().any(|l| l == want), "missing {want:?} in\n{out}");
        }
    });
}

#[test]
fn seccomp_profile_is_what_blocks_nested_user_namespaces() {
    each_mode(|m| {
        let d = workdir(m, "seccomp");
        let h = harness();
        let probe = h.probe.to_str().unwrap();
        let r = run(m, &d, &["step", "--", probe, "unshare-user"]);
        assert_eq!(r.stdout.trim(), "unshare-user: error 1", "{r:?}");
        // The same call under an allow-all profile succeeds: the default
        // profile, not something else, refuses it.
        let mut args = step_without_seccomp(m, &d);
        args.extend(["--", probe, "unshare-user"]);
        let r = run(m, &d, &args);
        assert_eq!(r.stdout.trim(), "unshare-user: ok", "{r:?}");
    });
}

// ---------- filesystem ----------

/// Mount points buildcell makes itself; everything else comes from the host
/// root and must be read-only, nosuid and nodev.
fn own_mounts(m: Mode, cwd: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = [
        "/proc", "/dev", "/dev/pts", "/dev/shm", "/tmp", "/run", "/root", "/home",
    ]
    .iter()
    .chain(buildcell::spec::DEFAULT_DEVICES.iter())
    .map(|s| s.to_string())
    .collect();
    v.push(cwd.display().to_string());
    v.push(home_of(m).display().to_string());
    v
}

#[test]
fn host_root_is_read_only_on_every_submount() {
    each_mode(|m| {
        let d = workdir(m, "rootro");
        let out = ok(sh(m, &d, "cat /proc/self/mountinfo"));
        let own = own_mounts(m, &d);
        let mut host_mounts = 0;
        for line in out.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (point, opts) = (f[4], f[5]);
            if own.iter().any(|o| o == point) {
                continue;
            }
            host_mounts += 1;
            let opts: Vec<&str> = opts.split(',').collect();
            for want in ["ro", "nosuid", "nodev"] {
                assert!(opts.contains(&want), "{point} lacks {want}: {line}");
            }
        }
        assert!(host_mounts > 1, "expected the host's submounts too:\n{out}");
        // Writes fail on the root and on nested mounts.
        let r = sh(
            m,
            &d,
            "for p in /usr/buildcell-x /sys/fs/cgroup/buildcell-x /boot/buildcell-x /etc/buildcell-x; do \
               [ -d \"${p%/*}\" ] || continue; if mkdir \"$p\" 2>/dev/null; then echo \"WROTE $p\"; else echo \"refused $p\"; fi; done",
        );
        assert!(!r.stdout.contains("WROTE"), "{r:?}");
        assert!(r.stdout.contains("refused /usr/buildcell-x"), "{r:?}");
        if std::path::Path::new("/sys/fs/cgroup").is_dir() {
            assert!(
                r.stdout.contains("refused /sys/fs/cgroup/buildcell-x"),
                "{r:?}"
            );
        }
    });
}

#[test]
fn home_directories_are_hidden_but_cwd_inside_stays() {
    each_mode(|m| {
        let home = home_of(m);
        if !home.is_dir() {
            return skip(&format!("home {} does not exist", home.display()));
        }
        // A credential in the caller's home on the host.
        let ssh = home.join(".ssh-buildcell-test");
        fs::create_dir_all(&ssh).unwrap();
        fs::write(ssh.join("id_test"), "SECRET-KEY").unwrap();
        chown_to(m, &ssh);
        // The working directory lies inside the home.
        let proj = home.join(format!("buildcell-proj-{}", std::process::id()));
        fs::create_dir_all(&proj).unwrap();
        fs::write(proj.join("Makefile"), "all:\n").unwrap();
        chown_to(m, &proj);
        let r = sh(
            m,
            &proj,
            "ls -A /root /home; cat \"$HOME/.ssh-buildcell-test/id_test\" 2>&1; ls; echo HOME=$HOME",
        );
        let _ = fs::remove_dir_all(&ssh);
        let _ = fs::remove_dir_all(&proj);
        assert_eq!(r.code, 0, "{r:?}");
        assert!(!r.stdout.contains("SECRET-KEY"), "{r:?}");
        assert!(r.stdout.contains("No such file"), "{r:?}");
        assert!(
            r.stdout.contains("Makefile"),
            "cwd inside home stays reachable: {r:?}"
        );
        assert!(
            !r.stdout.lines().any(|l| l == ".ssh-buildcell-test"),
            "{r:?}"
        );
    });
}

#[test]
fn proc_is_fresh_for_the_new_pid_namespace() {
    each_mode(|m| {
        let d = workdir(m, "proc");
        let out = ok(sh(
            m,
            &d,
            "echo $$; ls /proc | grep -c '^[0-9]'; tr '\\0' ' ' < /proc/1/cmdline",
        ));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0], "2",
            "the step runs as pid 2 under buildcell's init: {out}"
        );
        let n: u32 = lines[1].parse().unwrap();
        assert!(n <= 4, "only the sandbox's processes are visible: {out}");
        assert!(lines[2].contains("buildcell"), "{out}");
    });
}

#[test]
fn dev_is_minimal() {
    each_mode(|m| {
        let d = workdir(m, "dev");
        let out = ok(sh(
            m,
            &d,
            "ls -A /dev | tr '\\n' ' '; echo; ls /dev/pts; echo x > /dev/null && echo null-ok; \
             head -c 4 /dev/zero | od -An -tx1; head -c 8 /dev/urandom | wc -c; readlink /dev/ptmx",
        ));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0].trim(),
            "core fd full null ptmx pts random shm stderr stdin stdout tty urandom zero"
        );
        assert_eq!(lines[1], "ptmx", "own devpts instance, no host ptys: {out}");
        assert_eq!(lines[2], "null-ok");
        assert_eq!(lines[3].trim(), "00 00 00 00");
        assert_eq!(lines[4].trim(), "8");
        assert_eq!(lines[5], "pts/ptmx");
    });
}

#[test]
fn tmp_and_run_are_private_tmpfs() {
    each_mode(|m| {
        let d = workdir(m, "tmprun");
        let marker =
            std::env::temp_dir().join(format!("buildcell-host-marker-{}", std::process::id()));
        fs::write(&marker, "host").unwrap();
        let out = ok(sh(
            m,
            &d,
            &format!(
                "test -e {} && echo VISIBLE; grep -E ' /(tmp|run) ' /proc/self/mountinfo | cut -d' ' -f5,9; ls -A /run | wc -l; touch /tmp/x /run/x && echo writable",
                marker.display()
            ),
        ));
        let _ = fs::remove_file(&marker);
        assert!(!out.contains("VISIBLE"), "{out}");
        assert!(out.contains("/tmp tmpfs"), "{out}");
        assert!(out.contains("/run tmpfs"), "{out}");
        assert!(out.contains("\n0\n"), "nothing of the host's /run: {out}");
        assert!(out.contains("writable"), "{out}");
    });
}

#[test]
fn host_unix_sockets_are_unreachable() {
    if !is_root() {
        return skip("needs root to listen under /run");
    }
    let path = format!("/run/buildcell-test-{}.sock", std::process::id());
    let _ = fs::remove_file(&path);
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o777)).unwrap();
    use std::os::linux::net::SocketAddrExt;
    let abs_name = format!("buildcell-test-{}", std::process::id());
    let abs = std::os::unix::net::SocketAddr::from_abstract_name(abs_name.as_bytes()).unwrap();
    let abs_listener = std::os::unix::net::UnixListener::bind_addr(&abs).unwrap();
    // The control: the host itself reaches both.
    assert!(std::os::unix::net::UnixStream::connect(&path).is_ok());
    each_mode(|m| {
        let d = workdir(m, "unix");
        let probe = harness().probe.display().to_string();
        let r = run(m, &d, &["step", "--", &probe, "unix", &path]);
        assert_eq!(r.stdout.trim(), "unix: error 2", "{r:?}");
        let r = run(m, &d, &["step", "--", &probe, "unix-abstract", &abs_name]);
        assert_eq!(r.stdout.trim(), "unix-abstract: error 111", "{r:?}");
    });
    drop(listener);
    drop(abs_listener);
    let _ = fs::remove_file(&path);
}

// ---------- network ----------

#[test]
fn no_network_but_loopback() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    each_mode(|m| {
        let d = workdir(m, "net");
        let probe = harness().probe.display().to_string();
        // Interfaces of this network namespace: only lo.
        let out = ok(sh(
            m,
            &d,
            "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '",
        ));
        assert_eq!(out.trim(), "lo");
        // lo is up: a listener inside is reachable.
        let r = run(m, &d, &["step", "--", &probe, "tcp-self"]);
        assert_eq!(r.stdout.trim(), "tcp-self: ok", "{r:?}");
        // The host's loopback listener is not (ECONNREFUSED inside).
        let r = run(m, &d, &["step", "--", &probe, "tcp", &addr]);
        assert_eq!(r.stdout.trim(), "tcp: error 111", "{r:?}");
        // --net shares the host network: the default profile (build)
        // refuses it, naming the rule; one that allows network = host runs.
        let r = run(m, &d, &["step", "--net", "--", &probe, "tcp", &addr]);
        assert_refused(&r, 125, "profile build refuses this step (1 violation): linux.namespaces: no network namespace, so the host's network would be shared; profile build allows network = loopback");
        let r = run(
            m,
            &d,
            &[
                "--profile",
                "engine-compat",
                "step",
                "--net",
                "--",
                &probe,
                "tcp",
                &addr,
            ],
        );
        assert_eq!(r.stdout.trim(), "tcp: ok", "{r:?}");
    });
}

#[test]
fn hostname_is_buildcell() {
    each_mode(|m| {
        let d = workdir(m, "hostname");
        assert_eq!(ok(sh(m, &d, "hostname")).trim(), "buildcell");
        let r = run(m, &d, &["step", "--hostname", "b2", "--", "hostname"]);
        assert_eq!(ok(r).trim(), "b2");
    });
}

// ---------- process: env, stdio, signals, lifetime ----------

#[test]
fn environment_is_clean() {
    each_mode(|m| {
        let d = workdir(m, "env");
        let probe = harness().probe.display().to_string();
        let env = [("SECRET_TOKEN", "s3cr3t"), ("TERM", "xterm-test")];
        let r = run_env(m, &d, &["step", "--", &probe, "env"], &env);
        let mut keys: Vec<&str> = ok_ref(&r)
            .lines()
            .map(|l| l.split('=').next().unwrap())
            .collect();
        keys.sort();
        assert_eq!(keys, ["HOME", "PATH", "TERM"], "{r:?}");
        assert!(r.stdout.contains("TERM=xterm-test"), "{r:?}");
        assert!(!r.stdout.contains("s3cr3t"), "{r:?}");
        let r = run_env(
            m,
            &d,
            &[
                "step",
                "--env",
                "SECRET_TOKEN",
                "--env",
                "A=1",
                "--",
                &probe,
                "env",
            ],
            &env,
        );
        assert!(r.stdout.contains("SECRET_TOKEN=s3cr3t"), "{r:?}");
        assert!(r.stdout.contains("A=1"), "{r:?}");
        let r = run_env(
            m,
            &d,
            &["step", "--env", "UNSET_VAR_XYZ", "--", "true"],
            &env,
        );
        assert_refused(&r, 125, "--env UNSET_VAR_XYZ: not set");
    });
}

fn ok_ref(r: &Run) -> &str {
    assert_eq!(r.code, 0, "{r:?}");
    &r.stdout
}

#[test]
fn stdio_passes_through() {
    each_mode(|m| {
        let d = workdir(m, "stdio");
        let mut child = command(
            m,
            &d,
            &["step", "--", "sh", "-c", "cat; echo to-stderr >&2"],
            &[],
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"line one\nline two\n")
            .unwrap();
        let r = finish(child.wait_with_output().unwrap());
        assert_eq!(r.code, 0, "{r:?}");
        assert_eq!(r.stdout, "line one\nline two\n");
        assert_eq!(r.stderr, "to-stderr\n");
    });
}

#[test]
fn closed_stdio_is_replaced_not_reused() {
    each_mode(|m| {
        let d = workdir(m, "closedstdio");
        let bin = harness().bin.display().to_string();
        // buildcell started with fds 0 and 1 closed: its own sockets must not
        // become the step's stdin/stdout. (Rust's runtime opens /dev/null on
        // closed stdio fds at start; this pins that buildcell relies on it.)
        let script = format!("exec 0<&- 1>&-; {bin} step -- sh -c 'read x; echo \"read=$? $x\" >&2; ls -l /proc/self/fd/ >&2'");
        let mut c = match (m, &harness().user) {
            (Mode::User, Some(u)) => {
                let mut c = std::process::Command::new("runuser");
                c.args(["-u", u, "--", "sh", "-c", &script]);
                c
            }
            _ => {
                let mut c = std::process::Command::new("sh");
                c.args(["-c", &script]);
                c
            }
        };
        let r = finish(c.current_dir(&d).output().unwrap());
        assert_eq!(r.code, 0, "{r:?}");
        assert!(
            r.stderr.contains("read=1"),
            "stdin is empty, not a socket: {r:?}"
        );
        assert!(!r.stderr.contains("socket:"), "{r:?}");
    });
}

#[test]
fn terminal_is_passed_when_stdin_is_one() {
    if which("script").is_none() {
        return skip("util-linux `script` is needed to give buildcell a terminal");
    }
    each_mode(|m| {
        let d = workdir(m, "tty");
        let h = harness();
        let inner = format!(
            "{} step -- sh -c 'test -t 0 && test -t 1 && echo TTY-OK'",
            h.bin.display()
        );
        let mut c = match (&h.user, m) {
            (Some(u), Mode::User) => {
                let mut c = std::process::Command::new("runuser");
                c.args(["-u", u, "--", "script", "-qec", &inner, "/dev/null"]);
                c
            }
            _ => {
                let mut c = std::process::Command::new("script");
                c.args(["-qec", &inner, "/dev/null"]);
                c
            }
        };
        let r = finish(c.current_dir(&d).stdin(Stdio::null()).output().unwrap());
        assert!(r.stdout.contains("TTY-OK"), "{r:?}");
    });
}

fn which(cmd: &str) -> Option<std::path::PathBuf> {
    std::env::var("PATH")
        .ok()?
        .split(':')
        .map(|d| std::path::Path::new(d).join(cmd))
        .find(|p| p.is_file())
}

#[test]
fn signals_are_forwarded_to_the_step() {
    use nix::sys::signal::Signal;
    each_mode(|m| {
        let d = workdir(m, "signals");
        for sig in [
            Signal::SIGTERM,
            Signal::SIGINT,
            Signal::SIGHUP,
            Signal::SIGQUIT,
        ] {
            let name = sig.as_str().trim_start_matches("SIG");
            let script = format!(
                "trap 'echo got-{name}; exit 3' {name}; echo ready; while :; do sleep 0.05; done"
            );
            let mut child = KillOnDrop(
                command(m, &d, &["step", "--", "sh", "-c", &script], &[])
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap(),
            );
            let mut out = BufReader::new(child.0.stdout.take().unwrap());
            let mut line = String::new();
            out.read_line(&mut line).unwrap();
            assert_eq!(line, "ready\n");
            nix::sys::signal::kill(buildcell_pid(&child.0), sig).unwrap();
            let mut rest = String::new();
            std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
            let status = child.0.wait().unwrap();
            assert_eq!(rest, format!("got-{name}\n"), "{sig}");
            assert_eq!(status.code(), Some(3), "{sig}");
        }
    });
}

#[test]
fn no_process_outlives_the_step() {
    each_mode(|m| {
        let d = workdir(m, "stray");
        let tag = format!(
            "{}",
            300 + std::process::id() % 500 + if m == Mode::Root { 0 } else { 1000 }
        );
        let r = sh(m, &d, &format!("sleep {tag} & sleep {tag} & echo started"));
        assert_eq!(ok(r).trim(), "started");
        // The pid namespace died with its init: nothing left on the host.
        assert!(wait_until(2, || host_processes(&format!("sleep {tag}")).is_empty()));
    });
}

#[test]
fn killing_buildcell_kills_the_sandbox() {
    each_mode(|m| {
        let d = workdir(m, "pdeath");
        let tag = format!(
            "{}",
            900 + std::process::id() % 500 + if m == Mode::Root { 0 } else { 1000 }
        );
        let needle = format!("sleep {tag}");
        let script = format!("sleep {tag} & echo ready; sleep {tag}");
        let mut child = KillOnDrop(
            command(m, &d, &["step", "--", "sh", "-c", &script], &[])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let mut out = BufReader::new(child.0.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line, "ready\n");
        assert!(
            wait_until(5, || host_processes(&needle).len() == 2),
            "{:?}",
            host_processes(&needle)
        );
        nix::sys::signal::kill(buildcell_pid(&child.0), nix::sys::signal::Signal::SIGKILL).unwrap();
        let _ = child.0.wait();
        // Pid 1 had PDEATHSIG=SIGKILL: the whole pid namespace goes.
        assert!(
            wait_until(2, || host_processes(&needle).is_empty()),
            "{:?}",
            host_processes(&needle)
        );
    });
}

// ---------- flags ----------

#[test]
fn mount_flag_is_read_only_unless_rw() {
    each_mode(|m| {
        let d = workdir(m, "mountflag");
        let src = workdir(m, "mountflag-src");
        fs::write(src.join("in"), "from-host").unwrap();
        let s = src.display().to_string();
        let r = run(
            m,
            &d,
            &["step", "--mount", &format!("{s}:/tmp/ro"), "--mount", &format!("{s}:/tmp/rw:rw"), "--",
              "sh", "-c", "cat /tmp/ro/in; touch /tmp/ro/x 2>/dev/null && echo RO-WROTE; touch /tmp/rw/made && echo rw-ok"],
        );
        let out = ok(r);
        assert!(out.contains("from-host"), "{out}");
        assert!(!out.contains("RO-WROTE"), "{out}");
        assert!(out.contains("rw-ok"), "{out}");
        assert!(src.join("made").exists());
        // A destination that cannot be created on the read-only host root.
        let r = run(
            m,
            &d,
            &[
                "step",
                "--mount",
                &format!("{s}:/usr/no-such-dir-xyz"),
                "--",
                "true",
            ],
        );
        assert_refused(
            &r,
            125,
            "/usr/no-such-dir-xyz does not exist and cannot be created",
        );
    });
}

#[test]
fn workdir_flag_sets_the_working_directory() {
    each_mode(|m| {
        let d = workdir(m, "wd");
        let r = run(m, &d, &["step", "--workdir", "/tmp", "--", "pwd"]);
        assert_eq!(ok(r).trim(), "/tmp");
        let r = run(m, &d, &["step", "--workdir", "/no/such/dir", "--", "pwd"]);
        assert_refused(&r, 125, "working directory: /no/such/dir");
    });
}

#[test]
fn limits_apply_as_root_and_are_reported_rootless() {
    each_mode(|m| {
        let d = workdir(m, "limits");
        // dd's 200 MiB buffer in a 64 MiB cgroup: the kernel OOM-kills it;
        // a fork loop stops at the pids limit (the shell's "Cannot fork" on
        // stdout, wherever the fork fails: with a pipeline after the loop,
        // the shell itself could fail to fork the pipeline's reader first,
        // and say so where the test did not look).
        let oom = run(
            m,
            &d,
            &[
                "step",
                "--memory",
                "64m",
                "--",
                "dd",
                "if=/dev/zero",
                "of=/dev/null",
                "bs=200M",
                "count=1",
            ],
        );
        let forks = run(
            m,
            &d,
            &[
                "step",
                "--pids",
                "8",
                "--",
                "sh",
                "-c",
                "exec 2>&1; n=0; while [ $n -lt 20 ]; do sleep 5 & n=$((n+1)); done; echo started",
            ],
        );
        match m {
            Mode::Root => {
                assert_eq!(oom.code, 128 + 9, "OOM-killed in its cgroup: {oom:?}");
                assert!(
                    forks.stdout.to_lowercase().contains("fork")
                        && !forks.stdout.contains("started"),
                    "pids limit: {forks:?}"
                );
            }
            Mode::User => {
                // No cgroup delegation without systemd: said once, and the
                // step runs.
                assert!(
                    oom.stderr
                        .contains("--memory/--pids not applied: this user may not create cgroups"),
                    "{oom:?}"
                );
                assert!(forks.stdout.contains("started"), "{forks:?}");
            }
        }
        // Above the profile's maximum (build: 16G), or not a size.
        let r = run(m, &d, &["step", "--memory", "64g", "--", "true"]);
        assert_refused(&r, 125, "above profile build's memory maximum");
        let r = run(m, &d, &["step", "--memory", "lots", "--", "true"]);
        assert_eq!(r.code, 125, "{r:?}");
        let r = run(m, &d, &["step", "--pids", "40000", "--", "true"]);
        assert_refused(&r, 125, "above profile build's pids maximum 32768");
        // A count past i64 once wrapped to -1, "no limit", past the maximum.
        for huge in ["18446744073709551615", "9223372036854775808"] {
            let r = run(m, &d, &["step", "--pids", huge, "--", "true"]);
            assert_refused(&r, 125, "above the largest limit a cgroup takes");
        }
    });
}

#[test]
fn verbose_prints_each_step_with_its_time() {
    each_mode(|m| {
        let d = workdir(m, "verbose");
        let r = run(m, &d, &["step", "--verbose", "--", "true"]);
        assert_eq!(r.code, 0, "{r:?}");
        for want in [
            "id maps:",
            "cloned sandbox init",
            "pivoted into the new root",
            "mounted /proc",
            "step started",
        ] {
            assert!(r.stderr.contains(want), "missing {want:?}: {r:?}");
        }
        assert!(
            r.stderr
                .lines()
                .all(|l| l.starts_with("buildcell: [") && l.contains(" ms] ")),
            "{r:?}"
        );
        if m == Mode::User && harness().user.is_some() {
            assert!(r.stderr.contains("newuidmap"), "{r:?}");
        }
    });
}

/// As host root, every step gets a host id range of its own from the pool
/// (two steps at once never share host ids), released when it ends; a
/// step killed before it could release its range loses it to the next
/// step.
#[test]
fn steps_as_root_hold_ranges_of_their_own() {
    if !is_root() {
        skip("ranges are reserved for steps run as host root");
        return;
    }
    let m = Mode::Root;
    let d = workdir(m, "step-ranges");
    let start = |args: &[&str]| {
        command(m, &d, args, &[])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let script = |stop: &str| {
        format!("head -c 40 /proc/self/uid_map; echo; i=0; while [ ! -e {stop} ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done")
    };
    let _ = fs::remove_file(d.join("stop-a"));
    let mut a = start(&["step", "--", "sh", "-c", &script("stop-a")]);
    let mut b = start(&["step", "--", "sh", "-c", &script("stop-b")]);
    let first_line = |c: &mut std::process::Child| {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(c.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        line.split_whitespace().nth(1).unwrap_or("").to_string()
    };
    let (ra, rb) = (first_line(&mut a), first_line(&mut b));
    assert!(!ra.is_empty() && !rb.is_empty(), "{ra:?} {rb:?}");
    assert_ne!(ra, rb, "two steps share host range {ra}");
    let holders =
        |pid: nix::unistd::Pid| Path::new(&format!("/run/buildcell/steps/{pid}")).is_dir();
    let (pa, pb) = (buildcell_pid(&a), buildcell_pid(&b));
    assert!(holders(pa) && holders(pb));
    // a ends normally: its range and holder are released.
    fs::write(d.join("stop-a"), "").unwrap();
    assert!(a.wait().unwrap().success());
    assert!(!holders(pa), "a's holder directory stays");
    assert!(!Path::new(&format!("/run/buildcell/ranges/u{ra}-g{ra}")).exists());
    // b is killed: its reservation stays until the next step reclaims it.
    nix::sys::signal::kill(pb, nix::sys::signal::Signal::SIGKILL).unwrap();
    let _ = b.wait();
    assert!(holders(pb), "a killed step cannot remove its holder");
    ok(run(m, &d, &["step", "--", "true"]));
    assert!(!holders(pb), "the next step removes a dead step's holder");
    assert!(!Path::new(&format!("/run/buildcell/ranges/u{rb}-g{rb}")).exists());
}
