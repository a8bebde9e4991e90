//! Policy as code with the real binary: profiles chosen by flag, by the
//! name the binary is called by, by the config and by annotation; bundles
//! and steps refused with every violation before anything exists; the
//! defaults a bundle gets; Landlock from the profile. Every test runs as
//! host root and as the unprivileged test user.

mod common;

use std::fs;

use common::*;
use serde_json::{json, Value};

/// A bundle asking for what `build` never gives: the host's network, every
/// capability, the docker socket, a host path read-write, a device, a
/// host sysctl, a hook from /tmp.
fn greedy(mode: Mode, name: &str) -> std::path::PathBuf {
    pbundle(mode, name, &["true"], |c| {
        let ns: Vec<Value> = c["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["type"] != "network")
            .cloned()
            .collect();
        c["linux"]["namespaces"] = json!(ns);
        let caps = json!(["CAP_SYS_ADMIN", "CAP_NET_ADMIN", "CAP_CHOWN"]);
        c["process"]["capabilities"] =
            json!({"bounding": caps, "effective": caps, "permitted": caps});
        let mounts = c["mounts"].as_array_mut().unwrap();
        mounts.push(json!({"destination": "/etc/shadow", "type": "bind",
                           "source": "/etc/shadow", "options": ["rbind"]}));
        mounts.push(json!({"destination": "/host-etc", "type": "bind",
                           "source": "/usr", "options": ["rbind", "rw"]}));
        c["linux"]["sysctl"] = json!({"kernel.core_pattern": "|/tmp/x"});
        c["hooks"] = json!({"prestart": [{"path": "/tmp/hook"}]});
    })
}

#[test]
fn a_greedy_bundle_is_refused_with_every_violation_and_nothing_is_created() {
    each_mode(|m| {
        let b = greedy(m, "greedy");
        let log = b.join("runtime.log");
        let log_s = log.display().to_string();
        let r = rt(
            m,
            &b,
            None,
            &[
                "--log",
                &log_s,
                "--log-format",
                "json",
                "create",
                "--bundle",
                b.to_str().unwrap(),
                "g1",
            ],
        );
        assert_eq!(r.code, 1, "{r:?}");
        assert_eq!(r.stderr.lines().count(), 1, "one line: {r:?}");
        for want in [
            "profile build refuses this bundle (6 violations): ",
            "linux.namespaces: no network namespace, so the host's network would be shared; profile build allows network = loopback",
            "process.capabilities: CAP_NET_ADMIN, CAP_SYS_ADMIN not allowed (in bounding, effective, permitted)",
            "bind of /etc/shadow exposes /etc/shadow, which profile build never allows",
            "read-write bind of /usr is not under a path profile build allows read-write",
            "linux.sysctl.kernel.core_pattern: not allowed",
            "hooks.prestart[0].path: /tmp/hook is not allowed",
        ] {
            assert!(r.stderr.contains(want), "missing {want:?}: {r:?}");
        }
        // The engine reads the last JSON line of --log: the same message.
        let last = fs::read_to_string(&log).unwrap();
        let last: Value = serde_json::from_str(last.lines().last().unwrap()).unwrap();
        assert_eq!(last["level"], "error");
        assert!(
            last["msg"].as_str().unwrap().contains("(6 violations)"),
            "{last}"
        );
        // Nothing was created: no state, no container, no cgroup.
        assert!(!b.join("state").join("g1").exists());
        let l = rt(m, &b, None, &["list", "-q"]);
        assert_eq!(l.stdout.trim(), "", "{l:?}");
        for h in ["memory", "pids", "unified"] {
            let found = std::process::Command::new("find")
                .args([&format!("/sys/fs/cgroup/{h}"), "-name", "g1"])
                .output()
                .unwrap();
            assert!(
                String::from_utf8_lossy(&found.stdout).trim().is_empty(),
                "cgroup left in {h}"
            );
        }
        // `policy check` prints the same, one violation per line, exit 1.
        let c = rt(m, &b, None, &["policy", "check", b.to_str().unwrap()]);
        assert_eq!(c.code, 1, "{c:?}");
        let lines: Vec<&str> = c.stdout.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(lines.len(), 6, "{c:?}");
        // The weaker engine-compat allows it all but the sysctl... no: it
        // allows every sysctl and hook; only its never list would stop it.
        let c = rt(
            m,
            &b,
            Some("engine-compat"),
            &["policy", "check", b.to_str().unwrap()],
        );
        assert_eq!(c.code, 0, "{c:?}");
        assert!(c.stdout.contains("# ok: no violations"), "{c:?}");
    });
}

#[test]
fn the_default_bundle_runs_under_build_and_state_says_so() {
    each_mode(|m| {
        let b = pbundle(
            m,
            "plain",
            &[
                "sh",
                "-c",
                "grep -E 'NoNewPrivs|CapBnd' /proc/self/status; kill -0 1 && echo signal-ok",
            ],
            |c| {
                c["process"]["noNewPrivileges"] = json!(false);
            },
        );
        let out = ok(rt(m, &b, None, &["run", "plain1"]));
        assert!(
            out.contains("NoNewPrivs:\t1"),
            "forced by the profile: {out}"
        );
        // pid 1 of this bundle is the process itself: signalling it stays
        // inside the Landlock domain.
        assert!(out.contains("signal-ok"), "{out}");
        let r = rt(
            m,
            &b,
            None,
            &["create", "--bundle", b.to_str().unwrap(), "plain2"],
        );
        assert_eq!(r.code, 0, "{r:?}");
        let st = state_of(m, &b, "plain2");
        let a = &st["annotations"];
        assert_eq!(a["org.buildcell.policy.profile"], "build", "{st}");
        assert_eq!(a["org.buildcell.policy.sha256"].as_str().unwrap().len(), 64);
        // The tests' config names no default profile.
        assert_eq!(
            a["org.buildcell.policy.selected-by"], "the built-in default",
            "{st}"
        );
        let defaults = a["org.buildcell.policy.defaults"].as_str().unwrap_or("");
        assert!(
            defaults.contains("process.noNewPrivileges: set to true"),
            "{st}"
        );
        if m == Mode::Root {
            // Host root has cgroups: the profile's default limits applied.
            assert!(
                defaults.contains("linux.resources.memory.limit: 4G (profile default)"),
                "{st}"
            );
            assert!(
                defaults.contains("linux.resources.pids.limit: 4096"),
                "{st}"
            );
            let pid = st["pid"].as_i64().unwrap();
            let cg = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
            let mem = cg
                .lines()
                .find_map(|l| l.split_once(":memory:").map(|x| x.1.to_string()));
            if let Some(mem) = mem {
                let limit =
                    fs::read_to_string(format!("/sys/fs/cgroup/memory{mem}/memory.limit_in_bytes"))
                        .unwrap();
                assert_eq!(limit.trim(), (4u64 << 30).to_string());
            }
        }
        let ll = a["org.buildcell.landlock"].as_str().unwrap();
        assert!(
            ll.contains("enforced: scope_signal, scope_abstract_unix"),
            "{ll}"
        );
        // The audit log's first record names the profile and its hash.
        let saved: Value = serde_json::from_str(
            &fs::read_to_string(b.join("state").join("plain2").join("state.json")).unwrap(),
        )
        .unwrap();
        {
            let log = saved["audit_log"].as_str().expect("an audit log");
            let first = fs::read_to_string(log).unwrap();
            let first: Value = serde_json::from_str(first.lines().next().unwrap()).unwrap();
            assert_eq!(first["profile"], "build");
            assert_eq!(first["profile_sha256"], a["org.buildcell.policy.sha256"]);
        }
        // exec is held to the same profile: more capabilities are refused.
        let r = rt(
            m,
            &b,
            None,
            &["exec", "--cap", "CAP_SYS_ADMIN", "plain2", "true"],
        );
        assert_eq!(r.code, 1, "{r:?}");
        assert!(r.stderr.contains("profile build refuses this exec process (1 violation): process.capabilities: CAP_SYS_ADMIN not allowed"), "{r:?}");
        ok(rt(m, &b, None, &["delete", "--force", "plain2"]));
    });
}

#[test]
fn update_above_the_profile_maximum_is_refused() {
    if !is_root() {
        return skip("needs host root for a cgroup");
    }
    let m = Mode::Root;
    let b = pbundle(m, "upd", &["sleep", "30"], |_| {});
    ok(rt(
        m,
        &b,
        None,
        &["create", "--bundle", b.to_str().unwrap(), "u1"],
    ));
    let r = rt(m, &b, None, &["update", "--memory", "64g", "u1"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("profile build refuses this update (1 violation): linux.resources.memory.limit: 64G is above profile build's memory_max 16G"), "{r:?}");
    ok(rt(m, &b, None, &["update", "--memory", "1g", "u1"]));
    ok(rt(m, &b, None, &["delete", "--force", "u1"]));
}

#[test]
fn annotation_picks_only_a_selectable_profile() {
    each_mode(|m| {
        // The test config lists strict as selectable by annotation.
        let b = pbundle(
            m,
            "ann",
            &["sh", "-c", "grep CapBnd /proc/self/status"],
            |c| {
                c["annotations"] = json!({"org.buildcell.profile": "strict"});
                c["process"]["capabilities"] = json!({});
                c["root"]["readonly"] = json!(false);
            },
        );
        let r = rt(
            m,
            &b,
            None,
            &["create", "--bundle", b.to_str().unwrap(), "a1"],
        );
        assert_eq!(r.code, 0, "{r:?}");
        let st = state_of(m, &b, "a1");
        assert_eq!(
            st["annotations"]["org.buildcell.policy.profile"], "strict",
            "{st}"
        );
        assert_eq!(
            st["annotations"]["org.buildcell.policy.selected-by"],
            "annotation org.buildcell.profile"
        );
        assert!(
            st["annotations"]["org.buildcell.policy.defaults"]
                .as_str()
                .unwrap()
                .contains("root.readonly: set to true"),
            "{st}"
        );
        ok(rt(m, &b, None, &["delete", "--force", "a1"]));
        // engine-compat is not selectable: a Containerfile cannot loosen
        // its own build.
        let b = pbundle(m, "ann2", &["true"], |c| {
            c["annotations"] = json!({"org.buildcell.profile": "engine-compat"});
        });
        let r = rt(
            m,
            &b,
            None,
            &["create", "--bundle", b.to_str().unwrap(), "a2"],
        );
        assert_eq!(r.code, 1, "{r:?}");
        assert!(r.stderr.contains("annotation org.buildcell.profile=\"engine-compat\": not selectable by annotation in"), "{r:?}");
        assert!(r.stderr.contains("(selectable: strict)"), "{r:?}");
        assert!(!b.join("state").join("a2").exists());
    });
}

#[test]
fn a_pod_sandbox_gets_its_capabilities_narrowed_other_bundles_are_refused() {
    each_mode(|m| {
        // containerd's pause container under strict (selected by the test
        // config's annotation rule): the CRI's default capabilities, which
        // the pod cannot drop. Narrowed to strict's (none), said in state.
        let caps = json!(["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW"]);
        let b = pbundle(
            m,
            "sandbox",
            &["sh", "-c", "grep CapBnd /proc/self/status"],
            |c| {
                c["annotations"] = json!({"org.buildcell.profile": "strict",
                                          "io.kubernetes.cri.container-type": "sandbox"});
                c["process"]["capabilities"] =
                    json!({"bounding": caps, "effective": caps, "permitted": caps});
            },
        );
        let r = rt(m, &b, None, &["run", "--bundle", b.to_str().unwrap(), "s1"]);
        assert_eq!(r.code, 0, "{r:?}");
        assert!(r.stdout.contains("CapBnd:\t0000000000000000"), "{r:?}");
        let r = rt(
            m,
            &b,
            None,
            &["create", "--bundle", b.to_str().unwrap(), "s2"],
        );
        assert_eq!(r.code, 0, "{r:?}");
        let st = state_of(m, &b, "s2");
        let defaults = st["annotations"]["org.buildcell.policy.defaults"]
            .as_str()
            .unwrap_or("");
        assert!(
            defaults.contains("CAP_CHOWN, CAP_KILL, CAP_NET_RAW dropped")
                && defaults.contains("pod sandbox (pause)"),
            "{st}"
        );
        ok(rt(m, &b, None, &["delete", "--force", "s2"]));
        // The same bundle as a pod's ordinary container is refused.
        let b = pbundle(m, "podctr", &["true"], |c| {
            c["annotations"] = json!({"org.buildcell.profile": "strict",
                                      "io.kubernetes.cri.container-type": "container"});
            c["process"]["capabilities"] =
                json!({"bounding": caps, "effective": caps, "permitted": caps});
        });
        let r = rt(
            m,
            &b,
            None,
            &["create", "--bundle", b.to_str().unwrap(), "c1"],
        );
        assert_eq!(r.code, 1, "{r:?}");
        assert!(
            r.stderr
                .contains("process.capabilities: CAP_CHOWN, CAP_KILL, CAP_NET_RAW not allowed"),
            "{r:?}"
        );
        assert!(!b.join("state").join("c1").exists());
    });
}

#[test]
fn called_as_buildcell_name_uses_that_profile() {
    each_mode(|m| {
        let d = workdir(m, "argv0");
        let link = harness().dir.join("buildcell-strict");
        let _ = std::os::unix::fs::symlink(&harness().bin, &link);
        let mut c = command(
            m,
            &d,
            &["step", "--", "sh", "-c", "grep CapBnd /proc/self/status"],
            &[],
        );
        // Same command, other program name.
        let prog = c.get_program().to_owned();
        let mut args: Vec<std::ffi::OsString> = c.get_args().map(|a| a.to_owned()).collect();
        if prog == harness().bin.as_os_str() {
            c = std::process::Command::new(&link);
            c.args(&args).current_dir(&d).env_clear();
            c.env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                .env("HOME", home_of(m))
                .env("BUILDCELL_CONFIG", harness().dir.join("config.toml"));
        } else {
            for a in args.iter_mut() {
                if a == harness().bin.as_os_str() {
                    *a = link.clone().into_os_string();
                }
            }
            let mut n = std::process::Command::new(prog);
            n.args(&args).current_dir(&d).env_clear();
            n.env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                .env("HOME", home_of(m))
                .env("BUILDCELL_CONFIG", harness().dir.join("config.toml"));
            c = n;
        }
        let out = finish(c.stdin(std::process::Stdio::null()).output().unwrap());
        assert_eq!(out.code, 0, "{out:?}");
        assert!(
            out.stdout.contains("CapBnd:\t0000000000000000"),
            "strict: no capabilities: {out:?}"
        );
        // The default binary name keeps build's step set.
        let out = ok(run(
            m,
            &d,
            &["step", "--", "sh", "-c", "grep CapBnd /proc/self/status"],
        ));
        assert!(!out.contains("CapBnd:\t0000000000000000"), "{out}");
    });
}

#[test]
fn a_bad_profile_or_config_is_one_line_naming_file_and_line() {
    each_mode(|m| {
        let d = workdir(m, "badprof");
        let dir = d.join("profiles");
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join("typo.toml"),
            "extends = \"build\"\n\n[network]\nmode = \"none\"\nports = [22]\n",
        )
        .unwrap();
        fs::write(
            dir.join("badcap.toml"),
            "[process]\ncapabilities = [\"CAP_CHOWN\", \"CAP_GOD_MODE\"]\n",
        )
        .unwrap();
        let cfg = d.join("config.toml");
        fs::write(
            &cfg,
            format!("profile_dirs = [{:?}]\n", dir.display().to_string()),
        )
        .unwrap();
        let bad_cfg = d.join("bad-config.toml");
        fs::write(
            &bad_cfg,
            "default_profile = \"build\"\nsecret_knob = true\n",
        )
        .unwrap();
        for p in [&d, &dir] {
            chown_to(m, p);
        }
        let env = [("BUILDCELL_CONFIG", cfg.to_str().unwrap())];
        let r = run_env(m, &d, &["--profile", "typo", "step", "--", "true"], &env);
        assert_refused(
            &r,
            125,
            &format!(
                "{}:5: network.ports: unknown field `ports`",
                dir.join("typo.toml").display()
            ),
        );
        let r = run_env(m, &d, &["--profile", "badcap", "step", "--", "true"], &env);
        assert_refused(
            &r,
            125,
            &format!(
                "{}:2: process.capabilities: unknown capability \"CAP_GOD_MODE\"",
                dir.join("badcap.toml").display()
            ),
        );
        let r = run_env(m, &d, &["--profile", "nosuch", "step", "--", "true"], &env);
        assert_refused(&r, 125, "profile \"nosuch\" (--profile): not found in");
        let env = [("BUILDCELL_CONFIG", bad_cfg.to_str().unwrap())];
        let r = run_env(m, &d, &["step", "--", "true"], &env);
        assert_refused(
            &r,
            125,
            &format!("{}:2: unknown field `secret_knob`", bad_cfg.display()),
        );
    });
}

#[test]
fn profiles_set_the_network_landlock_ports_and_scopes() {
    each_mode(|m| {
        let d = workdir(m, "llnet");
        let probe = harness().probe.display().to_string();
        // build-network: TCP connect to 80 and 443 only. Inside an empty
        // network namespace an allowed port is refused by the network
        // (ECONNREFUSED, 111), any other by Landlock (EACCES, 13).
        let r = run(
            m,
            &d,
            &[
                "--profile",
                "build-network",
                "step",
                "--",
                &probe,
                "tcp",
                "127.0.0.1:80",
            ],
        );
        assert_eq!(r.stdout.trim(), "tcp: error 111", "{r:?}");
        let r = run(
            m,
            &d,
            &[
                "--profile",
                "build-network",
                "step",
                "--",
                &probe,
                "tcp",
                "127.0.0.1:22",
            ],
        );
        assert_eq!(r.stdout.trim(), "tcp: error 13", "{r:?}");
        // build: loopback TCP works (a test suite's own server).
        let r = run(m, &d, &["step", "--", &probe, "tcp-self"]);
        assert_eq!(r.stdout.trim(), "tcp-self: ok", "{r:?}");
        // strict: network none, not even TCP on lo.
        let r = run(
            m,
            &d,
            &["--profile", "strict", "step", "--", &probe, "tcp-self"],
        );
        assert!(r.stdout.contains("error 13"), "{r:?}");
        // build's signal scope: pid 1 (buildcell's init) is outside.
        let r = run(
            m,
            &d,
            &[
                "step",
                "--",
                "sh",
                "-c",
                "kill -0 1 2>/dev/null && echo reach || echo scoped",
            ],
        );
        assert_eq!(r.stdout.trim(), "scoped", "{r:?}");
        // strict's file rules: the cwd (declared output) and /tmp are
        // writable, the rest of the host tree is read-only by Landlock
        // even where the mount is not (/dev/shm).
        let r = run(m, &d, &["--profile", "strict", "step", "--", "sh", "-c",
            "touch ./out && echo cwd-ok; touch /tmp/t && echo tmp-ok; touch /dev/shm/x 2>&1 || true"]);
        assert!(
            r.stdout.contains("cwd-ok") && r.stdout.contains("tmp-ok"),
            "{r:?}"
        );
        assert!(
            !r.stdout.contains("/dev/shm")
                || r.stdout.contains("Permission denied")
                || r.stderr.contains("Permission denied"),
            "{r:?}"
        );
    });
}

#[test]
fn landlock_require_refuses_an_old_abi_before_anything_runs() {
    each_mode(|m| {
        let d = workdir(m, "llabi");
        // build-network requires Landlock's TCP rules (ABI 4).
        let r = run_env(
            m,
            &d,
            &["--profile", "build-network", "step", "--", "true"],
            &[("BUILDCELL_LANDLOCK_ABI", "2")],
        );
        assert_refused(&r, 125, "Landlock ABI 4");
        // build is best-effort: it runs on ABI 2 and says what is not
        // enforced (the scopes need ABI 6).
        let r = run_env(
            m,
            &d,
            &["step", "--", "true"],
            &[("BUILDCELL_LANDLOCK_ABI", "2")],
        );
        assert_eq!(r.code, 0, "{r:?}");
        assert!(r.stderr.contains("not enforced"), "{r:?}");
    });
}

#[test]
fn a_joined_network_namespace_with_links_is_refused_by_build() {
    if !is_root() {
        return skip("ip netns needs root");
    }
    let m = Mode::Root;
    let names = [
        format!("bcpol-empty-{}", std::process::id()),
        format!("bcpol-link-{}", std::process::id()),
    ];
    for n in &names {
        let _ = std::process::Command::new("ip")
            .args(["netns", "add", n])
            .status();
    }
    let ok_ip = std::process::Command::new("ip")
        .args([
            "-n", &names[1], "link", "add", "bcv0", "type", "veth", "peer", "name", "bcv1",
        ])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    let cleanup = || {
        for n in &names {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", n])
                .status();
        }
    };
    if !ok_ip {
        cleanup();
        return skip("ip (iproute2) with the veth link type is needed");
    }
    let joined = |name: &str| {
        pbundle(m, &format!("netjoin-{name}"), &["true"], |c| {
            let mut ns: Vec<Value> = c["linux"]["namespaces"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|n| n["type"] != "network")
                .cloned()
                .collect();
            ns.push(json!({"type": "network", "path": format!("/run/netns/{name}")}));
            c["linux"]["namespaces"] = json!(ns);
        })
    };
    let b = joined(&names[0]);
    let r = rt(m, &b, None, &["policy", "check", b.to_str().unwrap()]);
    let b2 = joined(&names[1]);
    let r2 = rt(m, &b2, None, &["policy", "check", b2.to_str().unwrap()]);
    cleanup();
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r2.code, 1, "{r2:?}");
    let want = format!(
        "linux.namespaces: network namespace is joined by path /run/netns/{} with links ",
        names[1]
    );
    assert!(r2.stdout.contains(&want), "{r2:?}");
    assert!(
        r2.stdout.contains("bcv0") && r2.stdout.contains("bcv1"),
        "{r2:?}"
    );
    assert!(
        r2.stdout
            .contains("profile build allows network = loopback (nothing but lo)"),
        "{r2:?}"
    );
}

#[test]
fn random_user_runs_as_a_drawn_uid_with_gid_0_and_a_passwd_entry() {
    each_mode(|m| {
        let d = workdir(m, "randuser");
        // A directory the "image" made group-0-writable (the caller's
        // files are root's inside), and one that is not.
        let shared = d.join("shared");
        let private = d.join("private");
        for (dir, mode) in [(&shared, 0o775), (&private, 0o755)] {
            fs::create_dir_all(dir).unwrap();
            // Owner and group the caller's: root's inside.
            let gid = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(caller_uid(m)))
                .unwrap()
                .map(|u| u.gid)
                .unwrap();
            nix::unistd::chown(
                dir.as_path(),
                Some(nix::unistd::Uid::from_raw(caller_uid(m))),
                Some(gid),
            )
            .unwrap();
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(dir, fs::Permissions::from_mode(mode)).unwrap();
        }
        let script = "id -u; id -g; whoami; echo $HOME; \
            printf '[user]\\n\\tname = x\\n' > $HOME/.gitconfig && echo home-ok; \
            touch shared/out && echo shared-ok; touch private/out 2>/dev/null || echo private-denied; \
            grep CapEff /proc/self/status";
        let r = run(
            m,
            &d,
            &["--profile", "random-user", "step", "--", "sh", "-c", script],
        );
        assert_eq!(r.code, 0, "{r:?}");
        let lines: Vec<&str> = r.stdout.lines().collect();
        let uid: u32 = lines[0].parse().unwrap_or_else(|_| panic!("{r:?}"));
        assert!((2000..=2999).contains(&uid), "{r:?}");
        assert_eq!(lines[1], "0", "{r:?}");
        assert_eq!(
            lines[2],
            format!("buildcell-{uid}"),
            "whoami reads the synthesized entry: {r:?}"
        );
        assert_eq!(lines[3], "/tmp", "{r:?}");
        for want in [
            "home-ok",
            "shared-ok",
            "private-denied",
            "CapEff:\t0000000000000000",
        ] {
            assert!(r.stdout.contains(want), "{want}: {r:?}");
        }
        // Two steps draw (almost surely) different uids; the passwd file
        // is gone afterwards.
        let again = run(
            m,
            &d,
            &["--profile", "random-user", "step", "--", "id", "-u"],
        );
        assert_eq!(again.code, 0, "{again:?}");
        let left: Vec<_> = fs::read_dir("/tmp")
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("buildcell-step-")
            })
            .map(|e| e.path())
            .collect();
        assert!(left.is_empty(), "passwd files left: {left:?}");
        // A bundle too: the passwd is the image's plus the entry, bound
        // from the container's state directory.
        // A map of one id: a random uid needs more.
        let b = bundle(
            m,
            "randbundle",
            &["sh", "-c", "id -u; id -g; whoami; echo $HOME"],
            |c| {
                let one = json!([{"containerID": 0, "hostID": 300000 + caller_uid(m), "size": 1}]);
                c["linux"]["uidMappings"] = one.clone();
                c["linux"]["gidMappings"] = one;
                with_user_namespace(c);
            },
        );
        let r = rt(m, &b, Some("random-user"), &["run", "rb0"]);
        assert_refused(
            &r,
            1,
            "or gid 0 is not mapped by linux.uidMappings/gidMappings; map container ids 0-65535",
        );
        let maps = match m {
            Mode::Root => json!([{"containerID": 0, "hostID": 200000, "size": 65536}]),
            Mode::User => json!([{"containerID": 0, "hostID": caller_uid(m), "size": 1},
                                 {"containerID": 1, "hostID": subuid_start("bctest").unwrap(), "size": 65535}]),
        };
        // An image with an /etc/passwd (the shared test rootfs has none).
        let image = harness().dir.join(format!("rootfs-passwd-{m:?}"));
        let _ = fs::remove_dir_all(&image);
        let cp = std::process::Command::new("cp")
            .args(["-a", rootfs().to_str().unwrap(), image.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(cp.success());
        fs::write(image.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
        let b = bundle(
            m,
            "randbundle",
            &["sh", "-c", "id -u; id -g; whoami; echo $HOME"],
            |c| {
                c["root"]["path"] = json!(image);
                c["linux"]["uidMappings"] = maps.clone();
                c["linux"]["gidMappings"] = maps.clone();
                with_user_namespace(c);
            },
        );
        let out = ok(rt(m, &b, Some("random-user"), &["run", "rb1"]));
        let lines: Vec<&str> = out.lines().collect();
        let uid: u32 = lines[0].parse().unwrap_or_else(|_| panic!("{out}"));
        assert!((2000..=2999).contains(&uid), "{out}");
        assert_eq!(
            &lines[1..],
            &["0", &format!("buildcell-{uid}"), "/tmp"],
            "{out}"
        );
    });
}

#[test]
fn audit_sync_record_syncs_the_log_after_every_record() {
    if !is_root() {
        return skip("strace of the step as root");
    }
    let m = Mode::Root;
    let d = workdir(m, "syncrec");
    // fdatasync calls of buildcell itself (the step's supervisor), 20 execs.
    let count = |profile: &str| -> usize {
        let trace = d.join(format!("trace-{profile}"));
        let script =
            "for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do /bin/true; done";
        let out = std::process::Command::new("strace")
            .args([
                "-qq",
                "-e",
                "trace=fdatasync",
                "-o",
                trace.to_str().unwrap(),
            ])
            .arg(&harness().bin)
            .args(["--profile", profile, "step", "--", "sh", "-c", script])
            .current_dir(&d)
            .env("BUILDCELL_CONFIG", harness().dir.join("config.toml"))
            .output()
            .expect("strace (ci/test.sh installs it)");
        assert!(out.status.success(), "{out:?}");
        fs::read_to_string(&trace)
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("fdatasync("))
            .count()
    };
    let default = count("build");
    let each = count("sync-record");
    // 22 records at least (start, sh, 20 x true) plus the end's sync.
    assert!(each >= 22, "sync = record: {each} fdatasync calls");
    assert!(default <= 3, "default: {default} fdatasync calls");
}

#[test]
fn a_user_config_and_profiles_under_xdg_config_home_apply() {
    // Not as root: root reads /etc/buildcell only.
    if !harness().modes.contains(&Mode::User) {
        return skip("needs the unprivileged test user");
    }
    let m = Mode::User;
    let d = workdir(m, "xdgconf");
    let conf = d.join("xdg");
    let profiles = conf.join("buildcell/profiles");
    fs::create_dir_all(&profiles).unwrap();
    fs::write(
        conf.join("buildcell/config.toml"),
        "default_profile = \"mine\"\n",
    )
    .unwrap();
    fs::write(
        profiles.join("mine.toml"),
        "extends = \"build\"\ndescription = \"a user's own\"\n[process]\ncapabilities = []\n",
    )
    .unwrap();
    for p in [&d, &conf, &conf.join("buildcell"), &profiles] {
        chown_to(m, p);
    }
    let env = [
        ("BUILDCELL_CONFIG", ""),
        ("XDG_CONFIG_HOME", conf.to_str().unwrap()),
    ];
    let r = run_env(m, &d, &["policy", "list"], &env);
    assert!(
        r.stdout.contains(&format!(
            "* mine             {}",
            profiles.join("mine.toml").display()
        )),
        "{r:?}"
    );
    let r = run_env(
        m,
        &d,
        &["step", "--", "grep", "CapBnd", "/proc/self/status"],
        &env,
    );
    assert_eq!(r.stdout.trim(), "CapBnd:\t0000000000000000", "{r:?}");
}

#[test]
fn a_changed_seccomp_default_json_is_compiled_an_identical_one_is_the_builds() {
    // `create` and `run` take the built-in profile's filter from the build,
    // unless a seccomp directory holds a default.json that differs from
    // it: that file is compiled and applied. Rootless, the user's own
    // directory ($XDG_CONFIG_HOME/buildcell/seccomp) is searched, so the
    // test needs no shared path; as host root only /etc/buildcell/seccomp
    // is, which every other test's containers use at the same time.
    if !harness().modes.contains(&Mode::User) {
        skip("the unprivileged half (BUILDCELL_TEST_USER) is needed: only its seccomp directory is private to a test");
        return;
    }
    let m = Mode::User;
    let b = pbundle(
        m,
        "seccomp-override",
        &["sh", "-c", "mkdir /dev/shm/d && echo made"],
        |_| {},
    );
    let cfg = b.join("cfg");
    let dir = cfg.join("buildcell/seccomp");
    fs::create_dir_all(&dir).unwrap();
    for d in [&cfg, &cfg.join("buildcell"), &dir] {
        chown_to(m, d);
    }
    let built_in = include_str!("../seccomp/default.json");
    // mkdir and mkdirat out of the allow list: the default action refuses.
    let mut changed: Value = serde_json::from_str(built_in).unwrap();
    for rule in changed["syscalls"].as_array_mut().unwrap() {
        if let Some(names) = rule["names"].as_array_mut() {
            names.retain(|n| n != "mkdir" && n != "mkdirat");
        }
    }
    let file = dir.join("default.json");
    let env = [("XDG_CONFIG_HOME", cfg.to_str().unwrap())];

    fs::write(&file, serde_json::to_string(&changed).unwrap()).unwrap();
    let r = rt_env(m, &b, None, &["run", "o1"], &env);
    assert!(
        r.code != 0 && !r.stdout.contains("made") && r.stderr.contains("mkdir"),
        "the changed file applies: {r:?}"
    );

    fs::write(&file, built_in).unwrap();
    let r = rt_env(m, &b, None, &["run", "o2"], &env);
    assert_eq!(r.stdout, "made\n", "the same file as the build's: {r:?}");
    assert!(entries(&b).is_empty(), "{:?}", entries(&b));
}
