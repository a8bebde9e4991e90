//! Landlock in `buildcell step`, driven through the `--landlock-*` flags with
//! the real binary, as host root and as an unprivileged user. Every test
//! checks the allowed and the denied case, and the denied one without
//! Landlock too: a step that is not restricted fails them.

mod common;

use std::fs;

use common::*;

/// The kernel's Landlock ABI is at least `abi`, or the test is skipped (a
/// failure on CI).
fn landlock_at_least(abi: u32) -> bool {
    let have = buildcell::landlock::kernel_abi();
    if have < abi {
        skip(&format!(
            "this kernel has Landlock ABI {have}; the test needs ABI {abi}"
        ));
        return false;
    }
    true
}

fn probe() -> String {
    harness().probe.display().to_string()
}

// ---------- filesystem ----------

#[test]
fn writes_only_beneath_the_allowed_paths() {
    if !landlock_at_least(1) {
        return;
    }
    each_mode(|m| {
        let d = workdir(m, "ll-fs");
        // The control: /run is a writable tmpfs in every step.
        let out = ok(sh(m, &d, "touch /run/a && echo run-ok"));
        assert_eq!(out.trim(), "run-ok");

        let script = "touch in-cwd && touch /tmp/t && echo x > /dev/null && ls / >/dev/null \
                      && echo allowed-ok; touch /run/a; echo run-rc=$?";
        let r = run(
            m,
            &d,
            &[
                "--profile",
                "no-landlock",
                "step",
                "--landlock-write",
                "/tmp",
                "--",
                "sh",
                "-c",
                script,
            ],
        );
        assert_eq!(r.code, 0, "{r:?}");
        assert!(r.stdout.contains("allowed-ok"), "{r:?}");
        assert!(r.stdout.contains("run-rc=1"), "{r:?}");
        assert!(r.stderr.contains("/run/a': Permission denied"), "{r:?}");
        assert!(d.join("in-cwd").exists());

        // Listed: writable again.
        let r = run(
            m,
            &d,
            &[
                "--profile",
                "no-landlock",
                "step",
                "--landlock-write",
                "/run",
                "--",
                "sh",
                "-c",
                "touch /run/a && echo run-ok",
            ],
        );
        assert_eq!(ok(r).trim(), "run-ok");

        // The probe sees EACCES itself (not a shell's guess).
        let p = probe();
        let r = run(
            m,
            &d,
            &[
                "--profile",
                "no-landlock",
                "step",
                "--landlock-write",
                "/tmp",
                "--",
                &p,
                "write",
                "/run/b",
            ],
        );
        assert_eq!(r.stdout.trim(), "write: error 13", "{r:?}");
        let r = run(
            m,
            &d,
            &[
                "--profile",
                "no-landlock",
                "step",
                "--landlock-write",
                "/tmp",
                "--",
                &p,
                "write",
                "/tmp/b",
            ],
        );
        assert_eq!(r.stdout.trim(), "write: ok", "{r:?}");
    });
}

#[test]
fn a_missing_path_is_refused_or_reported() {
    if !landlock_at_least(1) {
        return;
    }
    each_mode(|m| {
        let d = workdir(m, "ll-missing");
        let r = run(
            m,
            &d,
            &[
                "--profile",
                "no-landlock",
                "step",
                "--landlock-write",
                "/outputs",
                "--",
                "true",
            ],
        );
        assert_refused(
            &r,
            125,
            "landlock: fs: /outputs does not exist in the container",
        );
        // Best effort: runs, says so, and still restricts the rest.
        let r = run(
            m,
            &d,
            &[
                "--profile",
                "no-landlock",
                "step",
                "--landlock-best-effort",
                "--landlock-write",
                "/outputs",
                "--",
                &probe(),
                "write",
                "/run/b",
            ],
        );
        assert_eq!(r.code, 1, "{r:?}");
        assert_eq!(r.stdout.trim(), "write: error 13", "{r:?}");
        assert_eq!(
            r.stderr.trim(),
            "buildcell: landlock: not enforced: fs: /outputs does not exist in the container"
        );
    });
}

// ---------- network ----------

#[test]
fn tcp_connect_only_to_the_allowed_ports() {
    if !landlock_at_least(4) {
        return;
    }
    each_mode(|m| {
        let d = workdir(m, "ll-tcp");
        let p = probe();
        // Nobody listens on lo inside: an allowed port is refused by the
        // peer (ECONNREFUSED, 111), a denied one by Landlock (EACCES, 13).
        let r = run(
            m,
            &d,
            &[
                "--profile",
                "no-landlock",
                "step",
                "--",
                &p,
                "tcp",
                "127.0.0.1:81",
            ],
        );
        assert_eq!(r.stdout.trim(), "tcp: error 111", "{r:?}");
        let script = format!("{p} tcp 127.0.0.1:80; {p} tcp 127.0.0.1:81");
        let r = run(
            m,
            &d,
            &[
                "--profile",
                "no-landlock",
                "step",
                "--landlock-connect",
                "80",
                "--",
                "sh",
                "-c",
                &script,
            ],
        );
        assert_eq!(r.stdout, "tcp: error 111\ntcp: error 13\n", "{r:?}");
        let r = run(
            m,
            &d,
            &[
                "--profile",
                "no-landlock",
                "step",
                "--landlock-connect",
                "none",
                "--",
                &p,
                "tcp",
                "127.0.0.1:80",
            ],
        );
        assert_eq!(r.stdout.trim(), "tcp: error 13", "{r:?}");
    });
    // A real connection on the host's network, allowed and denied.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let other = if port == 65535 { port - 1 } else { port + 1 };
    each_mode(|m| {
        let d = workdir(m, "ll-tcp-net");
        let p = probe();
        let r = run(
            m,
            &d,
            &[
                "--profile",
                "no-landlock",
                "step",
                "--net",
                "--landlock-connect",
                &port.to_string(),
                "--",
                &p,
                "tcp",
                &addr,
            ],
        );
        assert_eq!(r.stdout.trim(), "tcp: ok", "{r:?}");
        let r = run(
            m,
            &d,
            &[
                "--profile",
                "no-landlock",
                "step",
                "--net",
                "--landlock-connect",
                &other.to_string(),
                "--",
                &p,
                "tcp",
                &addr,
            ],
        );
        assert_eq!(r.stdout.trim(), "tcp: error 13", "{r:?}");
    });
}

// ---------- scopes ----------

#[test]
fn scope_refuses_signals_outside_the_domain() {
    if !landlock_at_least(6) {
        return;
    }
    each_mode(|m| {
        let d = workdir(m, "ll-signal");
        // Pid 1 is buildcell's reaping init, outside the step's domain.
        let out = ok(run(
            m,
            &d,
            &[
                "--profile",
                "no-landlock",
                "step",
                "--",
                "sh",
                "-c",
                "kill -0 1 && echo pid1-ok",
            ],
        ));
        assert_eq!(out.trim(), "pid1-ok");
        let script = "kill -0 1; echo pid1-rc=$?; sleep 5 & kill -0 $! && echo child-ok; kill $!";
        let r = run(
            m,
            &d,
            &[
                "--profile",
                "no-landlock",
                "step",
                "--landlock-scope",
                "--",
                "sh",
                "-c",
                script,
            ],
        );
        assert!(r.stdout.contains("pid1-rc=1"), "{r:?}");
        assert!(r.stderr.contains("Operation not permitted"), "{r:?}");
        // Its own children are in the domain.
        assert!(r.stdout.contains("child-ok"), "{r:?}");
    });
}

#[test]
fn scope_refuses_abstract_sockets_made_outside() {
    if !landlock_at_least(6) {
        return;
    }
    use std::os::linux::net::SocketAddrExt;
    let name = format!("buildcell-ll-test-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let listener = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();
    each_mode(|m| {
        let d = workdir(m, "ll-abstract");
        let p = probe();
        // --net: the host's network namespace, where the socket lives.
        let r = run(
            m,
            &d,
            &[
                "--profile",
                "no-landlock",
                "step",
                "--net",
                "--",
                &p,
                "unix-abstract",
                &name,
            ],
        );
        assert_eq!(r.stdout.trim(), "unix-abstract: ok", "{r:?}");
        let r = run(
            m,
            &d,
            &[
                "--profile",
                "no-landlock",
                "step",
                "--net",
                "--landlock-scope",
                "--",
                &p,
                "unix-abstract",
                &name,
            ],
        );
        assert_eq!(r.stdout.trim(), "unix-abstract: error 1", "{r:?}");
    });
    drop(listener);
}

// ---------- older kernels, emulated ----------

#[test]
fn an_older_abi_is_refused_or_reported() {
    if !landlock_at_least(4) {
        return;
    }
    let env = [("BUILDCELL_LANDLOCK_ABI", "2")];
    each_mode(|m| {
        let d = workdir(m, "ll-abi");
        let p = probe();
        let r = run_env(
            m,
            &d,
            &[
                "--profile",
                "no-landlock",
                "step",
                "--landlock-connect",
                "80",
                "--",
                &p,
                "tcp",
                "127.0.0.1:81",
            ],
            &env,
        );
        assert_refused(
            &r,
            125,
            "landlock: profile needs TCP connect rules (Landlock ABI 4); this kernel has ABI 2",
        );
        assert!(r.stdout.is_empty(), "{r:?}");
        // Best effort: the step runs, TCP is not restricted (the ABI-2
        // ruleset has no network rights), the filesystem still is, and
        // --verbose says what is not enforced.
        let script = format!("{p} tcp 127.0.0.1:81; {p} write /run/b");
        let r = run_env(
            m,
            &d,
            &[
                "--profile",
                "no-landlock",
                "step",
                "--verbose",
                "--landlock-best-effort",
                "--landlock-connect",
                "80",
                "--landlock-write",
                "/tmp",
                "--",
                "sh",
                "-c",
                &script,
            ],
            &env,
        );
        assert_eq!(r.stdout, "tcp: error 111\nwrite: error 13\n", "{r:?}");
        assert!(
            r.stderr.contains(
                "landlock: Landlock ABI 2 (capped at 2 by BUILDCELL_LANDLOCK_ABI); enforced: fs\n"
            ),
            "{r:?}"
        );
        assert!(
            r.stderr.contains(
                "landlock: not enforced: tcp_connect: needs Landlock ABI 4, kernel has ABI 2"
            ),
            "{r:?}"
        );
        assert!(
            r.stderr
                .contains("landlock: partial: fs: truncate is not restricted (needs Landlock ABI 3, kernel has ABI 2)"),
            "{r:?}"
        );
        // Without the cap the same flags enforce both (ABI 4 and later).
        let r = run(
            m,
            &d,
            &[
                "--profile",
                "no-landlock",
                "step",
                "--verbose",
                "--landlock-connect",
                "80",
                "--landlock-write",
                "/tmp",
                "--",
                &p,
                "tcp",
                "127.0.0.1:81",
            ],
        );
        assert_eq!(r.stdout.trim(), "tcp: error 13", "{r:?}");
        assert!(r.stderr.contains("enforced: fs, tcp_connect\n"), "{r:?}");
    });
}

#[test]
fn bad_landlock_flags_are_one_line_errors() {
    each_mode(|m| {
        let d = workdir(m, "ll-flags");
        let r = run(
            m,
            &d,
            &[
                "--profile",
                "no-landlock",
                "step",
                "--landlock-connect",
                "http",
                "--",
                "true",
            ],
        );
        assert_refused(&r, 125, "--landlock-connect \"http\": expected a TCP port");
        let r = run(
            m,
            &d,
            &[
                "--profile",
                "no-landlock",
                "step",
                "--landlock-best-effort",
                "--",
                "true",
            ],
        );
        assert_refused(&r, 125, "no Landlock restriction asked for");
        let r = run_env(
            m,
            &d,
            &[
                "--profile",
                "no-landlock",
                "step",
                "--landlock-scope",
                "--",
                "true",
            ],
            &[("BUILDCELL_LANDLOCK_ABI", "six")],
        );
        assert_refused(
            &r,
            125,
            "BUILDCELL_LANDLOCK_ABI=\"six\": not a Landlock ABI number",
        );
        // Nothing was left behind in the working directory.
        assert_eq!(fs::read_dir(&d).unwrap().count(), 0);
    });
}
