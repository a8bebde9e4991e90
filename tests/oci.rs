//! The OCI runtime contract of the real binary (runc's command line):
//! lifecycle, state, kill/delete semantics, the pid file and who reaps the
//! container, stdio, config.json fields, errors that leave nothing behind.
//! Every test runs as host root and as the unprivileged test user, with a
//! busybox bundle written by `buildcell spec`.

mod common;

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use common::*;
use serde_json::{json, Value};

/// A busybox rootfs shared by every test (read-only to containers).
fn rootfs_dir() -> PathBuf {
    rootfs()
}

/// The state root of a test: inside its bundle dir.
fn root_of(bundle: &Path) -> String {
    bundle.join("state").display().to_string()
}

/// `buildcell --root ROOT ARGS...`. Its stdout and stderr go to files, not
/// pipes: a created container inherits them and keeps them open, so a
/// reader waiting for end-of-file would wait for the container.
fn rt(mode: Mode, bundle: &Path, args: &[&str]) -> Run {
    // These tests exercise the OCI contract (hooks from /bin, binds from
    // /var/tmp, joined namespaces): the permissive engine-compat profile.
    // tests/policy.rs checks what `build` refuses.
    common::rt(mode, bundle, Some("engine-compat"), args)
}

fn state_json(mode: Mode, bundle: &Path, id: &str) -> Value {
    let out = ok(rt(mode, bundle, &["state", id]));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("state is not JSON ({e}): {out}"))
}

fn alive(pid: i64) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

/// A change to a config.json, for the table of bad inputs.
type Edit = Box<dyn Fn(&mut Value)>;

#[test]
fn lifecycle_create_start_state_kill_delete() {
    each_mode(|mode| {
        let b = bundle(mode, "lifecycle", &["sleep", "60"], |_| {});
        let pid_file = b.join("pid");
        let pf = pid_file.display().to_string();
        ok(rt(
            mode,
            &b,
            &["create", "--bundle", ".", "--pid-file", &pf, "c1"],
        ));
        let s = state_json(mode, &b, "c1");
        assert_eq!(s["status"], "created", "{s}");
        assert_eq!(s["id"], "c1");
        assert_eq!(s["ociVersion"], "1.2.0");
        assert_eq!(s["bundle"], json!(b));
        for key in ["pid", "rootfs", "created", "owner"] {
            assert!(s.get(key).is_some(), "state lacks {key}: {s}");
        }
        let pid = s["pid"].as_i64().unwrap();
        let written: i64 = fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(pid, written, "--pid-file holds the container's own pid");
        assert!(alive(pid));
        // Created: the user process has not run (the init is still
        // buildcell, waiting).
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
        assert_eq!(comm.trim(), "buildcell", "init already exec'd before start");
        let listed = ok(rt(mode, &b, &["list", "--format", "json"]));
        assert!(listed.contains("\"c1\""), "{listed}");

        ok(rt(mode, &b, &["start", "c1"]));
        assert!(wait_until(5, || fs::read_to_string(format!(
            "/proc/{pid}/comm"
        ))
        .map(|c| c.trim() == "sleep")
        .unwrap_or(false)));
        assert_eq!(state_json(mode, &b, "c1")["status"], "running");
        // A second start is refused: it is running.
        assert_refused(&rt(mode, &b, &["start", "c1"]), 1, "not created");
        // Delete of a running container needs --force.
        assert_refused(&rt(mode, &b, &["delete", "c1"]), 1, "use --force");

        ok(rt(mode, &b, &["kill", "c1", "KILL"]));
        assert!(wait_until(5, || state_json(mode, &b, "c1")["status"] == "stopped"));
        assert_eq!(state_json(mode, &b, "c1")["pid"], 0);
        ok(rt(mode, &b, &["delete", "c1"]));
        assert!(entries(&b).is_empty(), "{:?}", entries(&b));
        assert_refused(
            &rt(mode, &b, &["state", "c1"]),
            1,
            "container c1 does not exist",
        );
        assert_refused(&rt(mode, &b, &["kill", "c1", "9"]), 1, "does not exist");
        assert_refused(&rt(mode, &b, &["delete", "c1"]), 1, "does not exist");
        // runc's contract: delete --force of an unknown id succeeds.
        ok(rt(mode, &b, &["delete", "--force", "c1"]));
    });
}

#[test]
fn kill_takes_numbers_and_names_and_delete_force_kills() {
    each_mode(|mode| {
        let b = bundle(
            mode,
            "kill",
            &["sh", "-c", "trap 'exit 3' USR1; sleep 60 & wait"],
            |_| {},
        );
        ok(rt(mode, &b, &["create", "k1"]));
        ok(rt(mode, &b, &["start", "k1"]));
        let pid = state_json(mode, &b, "k1")["pid"].as_i64().unwrap();
        for sig in ["SIGUSR1", "usr1", "10"] {
            assert!(rt(mode, &b, &["kill", "k1", sig]).code == 0 || !alive(pid));
        }
        assert!(wait_until(5, || !alive(pid)));
        assert_refused(&rt(mode, &b, &["kill", "k1", "BOGUS"]), 1, "invalid signal");
        ok(rt(mode, &b, &["delete", "k1"]));

        // --all signals every process; delete --force kills a running one.
        ok(rt(mode, &b, &["create", "k2"]));
        ok(rt(mode, &b, &["start", "k2"]));
        let pid = state_json(mode, &b, "k2")["pid"].as_i64().unwrap();
        ok(rt(mode, &b, &["kill", "--all", "k2", "STOP"]));
        // Stopped: `T`, or `t` while the audit supervisor traces the init
        // (it keeps the stop with PTRACE_LISTEN).
        assert!(wait_until(5, || fs::read_to_string(format!(
            "/proc/{pid}/stat"
        ))
        .map(|s| s.contains(") T ") || s.contains(") t "))
        .unwrap_or(false)));
        ok(rt(mode, &b, &["delete", "--force", "k2"]));
        assert!(!alive(pid));
        assert!(entries(&b).is_empty());
    });
}

#[test]
fn run_is_foreground_with_the_exit_status_and_leaves_no_state() {
    each_mode(|mode| {
        let b = bundle(
            mode,
            "run",
            &["sh", "-c", "echo out; echo err >&2; exit 7"],
            |_| {},
        );
        let r = rt(mode, &b, &["run", "--bundle", ".", "r1"]);
        assert_eq!(r.code, 7, "{r:?}");
        assert_eq!(r.stdout, "out\n");
        assert!(r.stderr.contains("err"), "{r:?}");
        assert!(entries(&b).is_empty(), "{:?}", entries(&b));
        // The same id can be used again at once.
        assert_eq!(rt(mode, &b, &["run", "r1"]).code, 7);
        // --detach: create + start, the container keeps running, audited.
        let d = bundle(mode, "run-detach", &["sleep", "30"], |_| {});
        let pf = d.join("pid").display().to_string();
        ok(rt(mode, &d, &["run", "--detach", "--pid-file", &pf, "rd1"]));
        let st = state_json(mode, &d, "rd1");
        assert_eq!(st["status"], "running", "{st}");
        assert_eq!(
            fs::read_to_string(&pf).unwrap().trim(),
            st["pid"].to_string()
        );
        ok(rt(mode, &d, &["exec", "rd1", "true"]));
        ok(rt(mode, &d, &["delete", "--force", "rd1"]));
        assert!(entries(&d).is_empty(), "{:?}", entries(&d));
    });
}

#[test]
fn exec_into_a_foreground_run_is_audited_by_the_run() {
    // BuildKit's way: `run` in the foreground, then `exec` into it. The
    // `run` process serves the audit itself; its control socket (made
    // while the init sets up its mounts) takes the exec's listener.
    each_mode(|mode| {
        let b = bundle(mode, "run-exec", &["sleep", "30"], |_| {});
        let root = b.join("state").display().to_string();
        let fg = command(
            mode,
            &b,
            &["--root", &root, "--profile", "engine-compat", "run", "fx1"],
            &[],
        )
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
        let mut fg = KillOnDrop(Some(fg));
        assert!(
            wait_until(10, || b.join("state/fx1/state.json").exists()
                && state_json(mode, &b, "fx1")["status"] == "running"),
            "run did not start"
        );
        let saved: Value =
            serde_json::from_str(&fs::read_to_string(b.join("state/fx1/state.json")).unwrap())
                .unwrap();
        let log = PathBuf::from(saved["audit_log"].as_str().unwrap());
        let r = rt(mode, &b, &["exec", "fx1", "sh", "-c", "echo exec-into-run"]);
        assert_eq!(r.stdout, "exec-into-run\n", "{r:?}");
        ok(rt(mode, &b, &["kill", "fx1", "KILL"]));
        let status = fg.0.as_mut().unwrap().wait().unwrap();
        assert_eq!(status.code(), Some(137), "run's status: {status:?}");
        fg.0 = None;
        assert!(entries(&b).is_empty(), "{:?}", entries(&b));
        let text = fs::read_to_string(&log).unwrap();
        assert!(
            text.contains("\"argv\":[\"sh\",\"-c\",\"echo exec-into-run\"]"),
            "{text}"
        );
        assert!(text.contains("\"type\":\"end\""), "{text}");
        let v = run(mode, &b, &["audit", "verify", &log.display().to_string()]);
        assert!(v.stdout.starts_with("OK: "), "{v:?}");
    });
}

/// Kills the foreground `run` if the test fails before it ends.
struct KillOnDrop(Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn created_container_writes_to_the_callers_stdio() {
    each_mode(|mode| {
        let b = bundle(
            mode,
            "stdio",
            &["sh", "-c", "echo to-stdout; echo to-stderr >&2"],
            |_| {},
        );
        let out = b.join("out.txt");
        let err = b.join("err.txt");
        for f in [&out, &err] {
            fs::write(f, "").unwrap();
            chown_to(mode, f);
        }
        let root = root_of(&b);
        let mut c = command(
            mode,
            &b,
            &[
                "--root",
                &root,
                "--profile",
                "engine-compat",
                "create",
                "s1",
            ],
            &[],
        );
        c.stdout(fs::File::create(&out).unwrap())
            .stderr(fs::OpenOptions::new().append(true).open(&err).unwrap());
        assert!(
            c.status().unwrap().success(),
            "{}",
            fs::read_to_string(&err).unwrap()
        );
        ok(rt(mode, &b, &["start", "s1"]));
        assert!(wait_until(5, || fs::read_to_string(&out).unwrap() == "to-stdout\n"));
        assert!(wait_until(5, || fs::read_to_string(&err)
            .unwrap()
            .contains("to-stderr")));
        assert!(wait_until(5, || state_json(mode, &b, "s1")["status"] == "stopped"));
        ok(rt(mode, &b, &["delete", "s1"]));
    });
}

#[test]
fn the_engines_monitor_reaps_the_container_from_the_pid_file() {
    each_mode(|mode| {
        let b = bundle(mode, "reap", &["sh", "-c", "exit 42"], |_| {});
        let pf = b.join("pid").display().to_string();
        let root = root_of(&b);
        let h = harness();
        let bin = h.bin.display().to_string();
        let probe = h.probe.display().to_string();
        let args = [
            probe.as_str(),
            "reap",
            &pf,
            &bin,
            "--root",
            &root,
            "--profile",
            "engine-compat",
            "create",
            "--pid-file",
            &pf,
            "m1",
        ];
        let out = match (mode, &h.user) {
            (Mode::User, Some(user)) => std::process::Command::new("runuser")
                .args(["-u", user, "--"])
                .args(args)
                .current_dir(&b)
                .output()
                .unwrap(),
            _ => std::process::Command::new(args[0])
                .args(&args[1..])
                .current_dir(&b)
                .output()
                .unwrap(),
        };
        let r = finish(out);
        assert!(r.stdout.contains("status 42"), "{r:?}");
        ok(rt(mode, &b, &["delete", "m1"]));
    });
}

#[test]
fn config_fields_are_applied() {
    each_mode(|mode| {
        let script = "hostname; echo cwd=$(pwd); echo env=$FOO; id; ulimit -n; umask; \
                      grep -E '^(NoNewPrivs|CapEff)' /proc/self/status; \
                      cat /proc/kcore | head -c 1 | wc -c; touch /proc/sys/kernel/x 2>&1; \
                      touch /rootfs-write 2>&1; echo setgroups=$(cat /proc/self/setgroups); \
                      echo uidmap=$(cat /proc/self/uid_map); echo done";
        let b = bundle(mode, "fields", &["sh", "-c", script], |c| {
            c["hostname"] = json!("fieldhost");
            c["process"]["cwd"] = json!("/tmp");
            c["process"]["env"] = json!(["PATH=/bin", "FOO=bar"]);
            c["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "hard": 512, "soft": 256}]);
            c["process"]["user"]["umask"] = json!(0o027);
            if mode == Mode::Root {
                // A runc-style root container: no user namespace, another user.
                let ns: Vec<Value> = c["linux"]["namespaces"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|n| n["type"] != "user")
                    .cloned()
                    .collect();
                c["linux"]["namespaces"] = json!(ns);
                c["process"]["user"] =
                    json!({"uid": 1000, "gid": 1000, "additionalGids": [10], "umask": 23});
            } else {
                // setgroups is denied with the single-id map (below): the
                // supplementary group is left out, the container still runs.
                c["process"]["user"]["additionalGids"] = json!([0]);
            }
        });
        let r = rt(mode, &b, &["run", "f1"]);
        let out = ok(r);
        assert!(out.starts_with("fieldhost\ncwd=/tmp\nenv=bar\n"), "{out}");
        match mode {
            Mode::Root => {
                assert!(out.contains("uid=1000 gid=1000 groups=10"), "{out}");
                assert!(out.contains("\n0027\n"), "{out}");
            }
            Mode::User => {
                assert!(out.contains("uid=0 gid=0"), "{out}");
                assert!(out.contains("\n0027\n"), "{out}");
                // The bundle maps the caller's own ids alone: written by
                // buildcell itself, setgroups denied (as runc does), no
                // newuidmap/newgidmap.
                let me = caller_uid(mode);
                assert!(out.contains(&format!("uidmap= 0 {me} 1\n")), "{out}");
                assert!(out.contains("setgroups=deny\n"), "{out}");
            }
        }
        assert!(out.contains("\n256\n"), "rlimit: {out}");
        assert!(out.contains("NoNewPrivs:\t1"), "{out}");
        if mode == Mode::User {
            // Root inside keeps exactly the spec's three capabilities.
            assert!(out.contains("CapEff:\t0000000020000420"), "{out}");
        }
        // maskedPaths: /proc/kcore reads empty; readonlyPaths: /proc/sys.
        assert!(out.contains("\n0\n"), "{out}");
        assert!(out.contains("Read-only file system"), "{out}");
        assert!(out.ends_with("done\n"), "{out}");
    });
}

#[test]
fn bad_input_is_one_line_and_leaves_nothing_behind() {
    each_mode(|mode| {
        let b = bundle(mode, "bad", &["true"], |_| {});
        assert_refused(
            &rt(mode, &b, &["create", "../x"]),
            1,
            "invalid container id",
        );
        assert_refused(&rt(mode, &b, &["create", "a/b"]), 1, "invalid container id");

        let cfg = b.join("config.json");
        let good = fs::read_to_string(&cfg).unwrap();
        let cases: Vec<(&str, Edit, &str)> = vec![
            (
                "wrong type",
                Box::new(|c| c["process"]["args"] = json!("true")),
                "at process.args",
            ),
            (
                "oci version",
                Box::new(|c| c["ociVersion"] = json!("2.0.0")),
                "ociVersion \"2.0.0\" is not supported",
            ),
            (
                "missing rootfs",
                Box::new(|c| c["root"]["path"] = json!("/nonexistent/rootfs")),
                "root.path: /nonexistent/rootfs is not a directory",
            ),
            (
                "unknown capability",
                Box::new(|c| c["process"]["capabilities"]["bounding"] = json!(["CAP_FLY"])),
                "process.capabilities.bounding",
            ),
            (
                "namespace path not a namespace",
                Box::new(|c| {
                    c["linux"]["namespaces"]
                        .as_array_mut()
                        .unwrap()
                        .retain(|n| n["type"] != "network");
                    c["linux"]["namespaces"]
                        .as_array_mut()
                        .unwrap()
                        .push(json!({"type": "network", "path": "/etc/hostname"}));
                }),
                "is not a Network namespace file",
            ),
            (
                "seccomp filter longer than the kernel takes",
                Box::new(|c| {
                    let rules: Vec<Value> = (0..1000)
                        .map(|i| {
                            json!({"names": ["mkdir"], "action": "SCMP_ACT_ERRNO",
                                   "args": [{"index": 1, "value": i, "op": "SCMP_CMP_EQ"}]})
                        })
                        .collect();
                    c["linux"]["seccomp"] =
                        json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": rules});
                }),
                "more than the kernel's 4096",
            ),
            (
                "cwd missing inside",
                Box::new(|c| c["process"]["cwd"] = json!("/no/such/dir")),
                "process.cwd: /no/such/dir",
            ),
            (
                "command missing inside",
                Box::new(|c| c["process"]["args"] = json!(["/bin/nope"])),
                "cannot execute \"/bin/nope\"",
            ),
        ];
        for (what, edit, text) in cases {
            let mut c: Value = serde_json::from_str(&good).unwrap();
            edit(&mut c);
            fs::write(&cfg, serde_json::to_string(&c).unwrap()).unwrap();
            let r = if what == "command missing inside" {
                // Found at exec time: `run` reports it (create cannot).
                rt(mode, &b, &["run", "x1"])
            } else {
                rt(mode, &b, &["create", "x1"])
            };
            assert!(r.code != 0, "{what}: {r:?}");
            assert!(r.stderr.contains(text), "{what}: expected {text:?}: {r:?}");
            assert_eq!(r.stderr.lines().count(), 1, "{what}: {r:?}");
            assert!(entries(&b).is_empty(), "{what}: left {:?}", entries(&b));
        }
        fs::write(&cfg, "{ not json").unwrap();
        assert_refused(&rt(mode, &b, &["create", "x1"]), 1, "config.json: at");
        fs::write(&cfg, &good).unwrap();
        // An id that exists already.
        ok(rt(mode, &b, &["create", "dup"]));
        assert_refused(&rt(mode, &b, &["create", "dup"]), 1, "already exists");
        ok(rt(mode, &b, &["delete", "--force", "dup"]));
        assert!(entries(&b).is_empty());
        // No init, supervisor or buildcell of this test is left running.
        let root = root_of(&b);
        let left: Vec<String> = host_processes(&harness().bin.display().to_string())
            .into_iter()
            .filter(|p| p.contains(&root))
            .collect();
        assert!(
            wait_until(5, || host_processes(&harness().bin.display().to_string())
                .iter()
                .all(|p| !p.contains(&root))),
            "{left:?}"
        );
    });
}

#[test]
fn errors_also_go_to_the_json_log() {
    each_mode(|mode| {
        let b = bundle(mode, "log", &["true"], |_| {});
        let log = b.join("log.json").display().to_string();
        let r = rt(
            mode,
            &b,
            &["--log", &log, "--log-format", "json", "state", "nope"],
        );
        assert_eq!(r.code, 1);
        let line = fs::read_to_string(&log).unwrap();
        let v: Value = serde_json::from_str(line.trim()).unwrap();
        assert_eq!(v["level"], "error");
        assert_eq!(v["msg"], "container nope does not exist");
        assert!(v["time"].as_str().unwrap().ends_with('Z'));
        assert_refused(
            &rt(mode, &b, &["--systemd-cgroup", "state", "x"]),
            1,
            "--systemd-cgroup",
        );
        assert_refused(&rt(mode, &b, &["checkpoint", "x"]), 1, "not supported");
        let r = rt(mode, &b, &["--bogus-flag", "state", "x"]);
        assert!(r.code != 0 && r.stderr.contains("--bogus-flag"), "{r:?}");
        // A missing argument is named, on the one line; global flags are
        // taken after the subcommand too (each subcommand's arguments are
        // built only when it is called).
        let r = rt(mode, &b, &["state"]);
        assert_eq!(r.stderr.lines().count(), 1, "{r:?}");
        assert!(
            r.code != 0 && r.stderr.contains("not provided: <ID>"),
            "{r:?}"
        );
        assert_refused(
            &rt(mode, &b, &["state", "--systemd-cgroup", "x"]),
            1,
            "--systemd-cgroup",
        );
    });
}

#[test]
fn version_and_features() {
    each_mode(|mode| {
        let b = workdir(mode, "version");
        let v = ok(run(mode, &b, &["--version"]));
        assert!(v.lines().any(|l| l.starts_with("commit: ")), "{v}");
        assert!(v.starts_with("buildcell version "), "{v}");
        let f: Value = serde_json::from_str(&ok(run(mode, &b, &["features"]))).unwrap();
        assert_eq!(f["ociVersionMin"], "1.0.0");
        assert!(f["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .contains(&json!("user")));
    });
}

#[test]
fn every_container_is_audited() {
    each_mode(|mode| {
        let b = bundle(
            mode,
            "audited",
            &["sh", "-c", "echo one | cat; true"],
            |_| {},
        );
        ok(rt(mode, &b, &["create", "a1"]));
        let saved: Value =
            serde_json::from_str(&fs::read_to_string(b.join("state/a1/state.json")).unwrap())
                .unwrap();
        let log = PathBuf::from(saved["audit_log"].as_str().unwrap());
        ok(rt(mode, &b, &["start", "a1"]));
        assert!(wait_until(5, || state_json(mode, &b, "a1")["status"] == "stopped"));
        // The supervisor ends when the last process using the filter is
        // gone, and writes the end record.
        assert!(wait_until(5, || fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("\"type\":\"end\"")));
        let text = fs::read_to_string(&log).unwrap();
        assert!(text.contains("\"container_id\":\"a1\""), "{text}");
        assert!(
            text.contains(&format!("\"bundle\":\"{}\"", b.display())),
            "{text}"
        );
        assert!(
            text.contains("\"argv\":[\"sh\",\"-c\",\"echo one | cat; true\"]"),
            "{text}"
        );
        assert!(text.contains("\"argv\":[\"cat\"]"), "{text}");
        let v = run(mode, &b, &["audit", "verify", &log.display().to_string()]);
        assert!(v.stdout.starts_with("OK: "), "{v:?}");
        ok(rt(mode, &b, &["delete", "a1"]));
    });
}

#[test]
fn cgroup_limits_pause_update_ps_and_cleanup() {
    each_mode(|mode| {
        let cg = format!("/buildcell-test-{}/{mode:?}", std::process::id());
        let add = |c: &mut Value| {
            c["linux"]["cgroupsPath"] = json!(cg);
            c["linux"]["resources"] = json!({
                "memory": {"limit": 33554432},
                "pids": {"limit": 20},
                "devices": [{"allow": false, "access": "rwm"}]
            });
            c["mounts"].as_array_mut().unwrap().push(json!(
                {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                 "options": ["rw", "nosuid", "noexec", "nodev"]}));
        };
        let b = bundle(
            mode,
            "cgroup",
            &["sh", "-c", "cat /sys/fs/cgroup/memory/memory.limit_in_bytes; echo x > /dev/null && echo devnull-ok; sleep 60"],
            add,
        );
        ok(rt(mode, &b, &["create", "g1"]));
        let s = state_json(mode, &b, "g1");
        if mode == Mode::User {
            // Rootless without a delegated cgroup: no limits, and it says so.
            let note = s["annotations"]["org.buildcell.cgroup"]
                .as_str()
                .unwrap_or("");
            assert!(note.starts_with("none: "), "{s}");
            ok(rt(mode, &b, &["start", "g1"]));
            assert_refused(&rt(mode, &b, &["pause", "g1"]), 1, "has no cgroup");
            ok(rt(mode, &b, &["delete", "--force", "g1"]));
            return;
        }
        // The init is in the cgroup in every hierarchy by the time `create`
        // returns (on v1 it moved itself in: cgroups::SelfJoin).
        let init = s["pid"].as_i64().unwrap();
        let own = fs::read_to_string(format!("/proc/{init}/cgroup")).unwrap();
        for line in own.lines().filter(|l| !l.starts_with("0::")) {
            assert!(line.ends_with(&cg), "{line} is not in {cg}: {own}");
        }
        let memdir = PathBuf::from("/sys/fs/cgroup/memory").join(cg.trim_start_matches('/'));
        assert_eq!(
            fs::read_to_string(memdir.join("memory.limit_in_bytes"))
                .unwrap()
                .trim(),
            "33554432"
        );
        ok(rt(mode, &b, &["start", "g1"]));
        let pid = s["pid"].as_i64().unwrap();
        let ps: Vec<i64> =
            serde_json::from_str(&ok(rt(mode, &b, &["ps", "--format", "json", "g1"]))).unwrap();
        assert!(ps.contains(&pid), "{ps:?} lacks {pid}");
        ok(rt(mode, &b, &["pause", "g1"]));
        assert_eq!(state_json(mode, &b, "g1")["status"], "paused");
        ok(rt(mode, &b, &["resume", "g1"]));
        assert_eq!(state_json(mode, &b, "g1")["status"], "running");
        ok(rt(mode, &b, &["update", "--memory", "64m", "g1"]));
        assert_eq!(
            fs::read_to_string(memdir.join("memory.limit_in_bytes"))
                .unwrap()
                .trim(),
            "67108864"
        );
        // Cgroups made inside the container's own (a manager nested in
        // it would): removed with it, deepest first.
        fs::create_dir_all(memdir.join("sub/deeper")).unwrap();
        fs::create_dir_all(
            Path::new("/sys/fs/cgroup/pids")
                .join(cg.trim_start_matches('/'))
                .join("sub"),
        )
        .unwrap();
        ok(rt(mode, &b, &["delete", "--force", "g1"]));
        assert!(!memdir.exists(), "cgroup left behind");
        for h in ["pids", "cpu", "freezer", "devices"] {
            assert!(!Path::new("/sys/fs/cgroup")
                .join(h)
                .join(cg.trim_start_matches('/'))
                .exists());
        }

        // What the container saw: its own limit through the cgroup mount,
        // and /dev/null usable despite the bundle's deny-all device rule.
        let b2 = bundle(
            mode,
            "cgroup-view",
            &["sh", "-c", "cat /sys/fs/cgroup/memory/memory.limit_in_bytes; echo x > /dev/null && echo devnull-ok"],
            add,
        );
        let r = rt(mode, &b2, &["--debug", "run", "g2"]);
        assert_eq!(r.code, 0, "{r:?}");
        assert_eq!(r.stdout, "33554432\ndevnull-ok\n");
        // On cgroup v1 the init moved itself in: the parent's write of its
        // pid would wait for an RCU grace period (6-15 ms here).
        if !Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            assert!(r.stderr.contains("init joined its cgroup"), "{r:?}");
        }
        // Past the memory limit the kernel kills the container: 137.
        let b3 = bundle(
            mode,
            "oom",
            &["sh", "-c", "head -c 200m /dev/zero | tail > /dev/null"],
            add,
        );
        assert_eq!(rt(mode, &b3, &["run", "g3"]).code, 137);
        for d in fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
            let _ = fs::remove_dir(
                d.path()
                    .join(format!("buildcell-test-{}", std::process::id())),
            );
        }
    });
}

#[test]
fn exec_runs_in_the_container_and_is_audited() {
    each_mode(|mode| {
        let b = bundle(mode, "exec", &["sleep", "60"], |_| {});
        ok(rt(mode, &b, &["create", "x1"]));
        ok(rt(mode, &b, &["start", "x1"]));
        let init = state_json(mode, &b, "x1")["pid"].as_i64().unwrap();
        // Foreground: the status and output of the process, pid 2 inside.
        let r = rt(
            mode,
            &b,
            &["exec", "x1", "sh", "-c", "echo in $$ $(hostname); exit 3"],
        );
        assert_eq!(r.code, 3, "{r:?}");
        assert_eq!(r.stdout, "in 2 buildcell\n");
        // A secret only this exec is given (docker exec -e TOKEN=...): it
        // is redacted from the container's log like the init's.
        let r = rt(
            mode,
            &b,
            &[
                "exec",
                "--env",
                "DEPLOY_TOKEN=exec-only-secret-9931",
                "x1",
                "sh",
                "-c",
                "/bin/echo $DEPLOY_TOKEN",
            ],
        );
        assert_eq!(r.stdout, "exec-only-secret-9931\n", "{r:?}");
        // --process FILE with env, cwd and user, detached with a pid file.
        let proc_file = b.join("process.json");
        fs::write(
            &proc_file,
            json!({"args": ["sh", "-c", "echo $FOO $(id -u) $(pwd) > /tmp/out; sleep 30"],
                   "env": ["PATH=/bin", "FOO=bar"], "cwd": "/tmp",
                   "user": {"uid": 0, "gid": 0}})
            .to_string(),
        )
        .unwrap();
        let pf = b.join("exec.pid").display().to_string();
        let pfile = proc_file.display().to_string();
        ok(rt(
            mode,
            &b,
            &[
                "exec",
                "--process",
                &pfile,
                "--detach",
                "--pid-file",
                &pf,
                "x1",
            ],
        ));
        let pid: i64 = fs::read_to_string(&pf).unwrap().trim().parse().unwrap();
        assert!(alive(pid));
        // In the init's cgroups, every hierarchy (on v1 it moved itself in).
        let cgroups = |p: i64| fs::read_to_string(format!("/proc/{p}/cgroup")).unwrap();
        assert_eq!(cgroups(pid), cgroups(init));
        let ps: Vec<i64> =
            serde_json::from_str(&ok(rt(mode, &b, &["ps", "--format", "json", "x1"]))).unwrap();
        assert!(ps.contains(&pid) && ps.contains(&init), "{ps:?}");
        // Same mount namespace as the init: the file is visible through it.
        let out = PathBuf::from(format!("/proc/{init}/root/tmp/out"));
        assert!(wait_until(5, || fs::read_to_string(&out)
            .is_ok_and(|s| s == "bar 0 /tmp\n")));
        // An unknown command: 127 and one line.
        assert_refused(
            &rt(mode, &b, &["exec", "x1", "/nope"]),
            127,
            "cannot execute",
        );

        let saved: Value =
            serde_json::from_str(&fs::read_to_string(b.join("state/x1/state.json")).unwrap())
                .unwrap();
        let log = PathBuf::from(saved["audit_log"].as_str().unwrap());
        ok(rt(mode, &b, &["kill", "x1", "KILL"]));
        assert!(
            wait_until(5, || !alive(pid)),
            "exec'd process outlived the init"
        );
        assert!(wait_until(5, || state_json(mode, &b, "x1")["status"] == "stopped"));
        assert_refused(&rt(mode, &b, &["exec", "x1", "true"]), 1, "it is stopped");
        ok(rt(mode, &b, &["delete", "x1"]));
        assert!(wait_until(5, || fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("\"type\":\"end\"")));
        let text = fs::read_to_string(&log).unwrap();
        // The exec'd commands are in the container's one log.
        assert!(
            text.contains("\"argv\":[\"sh\",\"-c\",\"echo in $$ $(hostname); exit 3\"]"),
            "{text}"
        );
        assert!(text.contains("\"argv\":[\"sleep\",\"30\"]"), "{text}");
        assert!(
            text.contains("\"argv\":[\"/bin/echo\",\"<redacted:DEPLOY_TOKEN>\"]"),
            "{text}"
        );
        assert!(!text.contains("exec-only-secret-9931"), "{text}");
        let v = run(mode, &b, &["audit", "verify", &log.display().to_string()]);
        assert!(v.stdout.starts_with("OK: "), "{v:?}");
    });
}

#[test]
fn terminal_master_goes_to_the_console_socket() {
    each_mode(|mode| {
        let b = bundle(
            mode,
            "tty",
            &[
                "sh",
                "-c",
                "tty; test -t 0 && test -t 1 && echo all-tty; sleep 5",
            ],
            |c| c["process"]["terminal"] = json!(true),
        );
        let sock = b.join("console.sock");
        let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        fs::set_permissions(&sock, fs::Permissions::from_mode(0o777)).unwrap();
        let s = sock.display().to_string();
        // Without a console socket a terminal is refused at once.
        assert_refused(&rt(mode, &b, &["create", "t0"]), 1, "--console-socket");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|scope| {
            scope.spawn(|| tx.send(receive_master(&listener)).unwrap());
            ok(rt(mode, &b, &["create", "--console-socket", &s, "t1"]));
        });
        let master = rx.recv().unwrap();
        ok(rt(mode, &b, &["start", "t1"]));
        let mut f = fs::File::from(master);
        let mut seen = String::new();
        assert!(
            wait_until(5, || {
                let mut buf = [0u8; 256];
                if let Ok(n) = std::io::Read::read(&mut f, &mut buf) {
                    seen.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
                seen.contains("all-tty")
            }),
            "{seen:?}"
        );
        assert!(seen.starts_with("/dev/pts/0"), "{seen:?}");
        ok(rt(mode, &b, &["delete", "--force", "t1"]));
    });
}

#[test]
fn mount_destinations_cannot_leave_the_rootfs() {
    each_mode(|mode| {
        // An image whose mount destinations are symlinks out of it: an
        // absolute link (resolves inside the root), and a /proc magic link
        // to the host's root (pid 1 of the host: no pid namespace).
        let host_dir = workdir(mode, "escape-target");
        let rootfs = workdir(mode, "escape-rootfs");
        let src = rootfs_dir();
        fs::create_dir_all(rootfs.join("bin")).unwrap();
        fs::copy(src.join("bin/busybox"), rootfs.join("bin/busybox")).unwrap();
        let _ = symlink("busybox", rootfs.join("bin/sh"));
        let _ = symlink("busybox", rootfs.join("bin/cat"));
        for d in ["proc", "dev", "sys", "tmp"] {
            fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        symlink(&host_dir, rootfs.join("abs")).unwrap();
        symlink(
            format!("/proc/1/root{}", host_dir.display()),
            rootfs.join("magic"),
        )
        .unwrap();
        let tmpfs_at = |c: &mut Value, dest: &str| {
            c["root"]["path"] = json!(rootfs);
            c["root"]["readonly"] = json!(false);
            c["mounts"].as_array_mut().unwrap().push(json!(
                {"destination": dest, "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]}));
            if mode == Mode::Root {
                // As runc runs it for docker --pid host: the host's pids
                // (and /proc/1/root, the host's root) are visible inside.
                c["linux"]["namespaces"]
                    .as_array_mut()
                    .unwrap()
                    .retain(|n| n["type"] != "pid" && n["type"] != "user");
            }
        };
        // The absolute link stays inside: the tmpfs lands on /abs's target
        // inside the rootfs (created there), never on the host directory.
        let b = bundle(
            mode,
            "escape-abs",
            &["sh", "-c", "echo inside > /abs/f && cat /abs/f"],
            |c| tmpfs_at(c, "/abs"),
        );
        let r = rt(mode, &b, &["run", "e1"]);
        assert_eq!(r.stdout, "inside\n", "{r:?}");
        assert!(!host_dir.join("f").exists(), "wrote through to the host");
        // The magic link is refused, with one line naming the mount.
        let b = bundle(mode, "escape-magic", &["true"], |c| tmpfs_at(c, "/magic"));
        let r = rt(mode, &b, &["run", "esc2"]);
        assert!(r.code != 0, "{r:?}");
        assert!(r.stderr.contains("/magic"), "{r:?}");
        assert_eq!(r.stderr.lines().count(), 1, "{r:?}");
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            !mounts.contains(&host_dir.display().to_string()),
            "host dir mounted over"
        );
        assert!(entries(&b).is_empty());
    });
}

#[test]
fn mount_destinations_missing_several_levels_are_created() {
    each_mode(|mode| {
        // On a tmpfs at /tmp: a tmpfs three directories down, and a file
        // bind whose parents are missing too (an empty file is made for it).
        let host = workdir(mode, "deep-source");
        fs::write(host.join("f.txt"), "from the host\n").unwrap();
        chown_to(mode, &host.join("f.txt"));
        let b = bundle(
            mode,
            "deep-mounts",
            &[
                "sh",
                "-c",
                "cat /tmp/d/e/f.txt && echo x > /tmp/a/b/c/y && cat /tmp/a/b/c/y \
                 && awk '$5 == \"/tmp/a/b/c\" || $5 == \"/tmp/d/e/f.txt\" {print $5}' /proc/self/mountinfo",
            ],
            |c| {
                let m = c["mounts"].as_array_mut().unwrap();
                m.push(json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]}));
                m.push(json!({"destination": "/tmp/a/b/c", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]}));
                m.push(json!({"destination": "/tmp/d/e/f.txt", "type": "bind", "source": host.join("f.txt"), "options": ["rbind", "ro"]}));
            },
        );
        let r = rt(mode, &b, &["run", "deep1"]);
        let mut lines: Vec<&str> = r.stdout.lines().collect();
        lines[2..].sort_unstable();
        assert_eq!(
            lines,
            ["from the host", "x", "/tmp/a/b/c", "/tmp/d/e/f.txt"],
            "{r:?}"
        );
        assert_eq!(r.code, 0, "{r:?}");
        assert!(entries(&b).is_empty());
    });
}

#[test]
fn hooks_run_in_the_spec_order_with_the_state_on_stdin() {
    each_mode(|mode| {
        let log = workdir(mode, "hooks-log").join("hooks.log");
        fs::write(&log, "").unwrap();
        chown_to(mode, &log);
        let host_hook = |kind: &str| {
            json!({"path": "/bin/busybox", "args": ["busybox", "sh", "-c",
                format!("read s; echo \"{kind} $s\" >> {}", log.display())]})
        };
        let in_container = |kind: &str| {
            json!({"path": "/bin/busybox", "args": ["busybox", "sh", "-c",
                format!("read s; echo \"{kind} $s\" >> /tmp/hooks")]})
        };
        let b = bundle(
            mode,
            "hooks",
            &["sh", "-c", "cat /tmp/hooks; sleep 30"],
            |c| {
                c["hooks"] = json!({
                    "prestart": [host_hook("prestart")],
                    "createRuntime": [host_hook("createRuntime")],
                    "createContainer": [in_container("createContainer")],
                    "startContainer": [in_container("startContainer")],
                    "poststart": [host_hook("poststart")],
                    "poststop": [host_hook("poststop")],
                });
            },
        );
        ok(rt(mode, &b, &["create", "h1"]));
        let pid = state_json(mode, &b, "h1")["pid"].as_i64().unwrap();
        let host = fs::read_to_string(&log).unwrap();
        let lines: Vec<&str> = host.lines().collect();
        assert_eq!(lines.len(), 2, "before create returns: {host}");
        assert!(lines[0].starts_with("prestart {"), "{host}");
        assert!(lines[1].starts_with("createRuntime {"), "{host}");
        let st: Value = serde_json::from_str(lines[0].trim_start_matches("prestart ")).unwrap();
        assert_eq!(st["status"], "creating");
        assert_eq!(st["pid"], pid);
        assert_eq!(st["id"], "h1");
        assert_eq!(st["bundle"], json!(b));
        let inside = PathBuf::from(format!("/proc/{pid}/root/tmp/hooks"));
        let c = fs::read_to_string(&inside).unwrap();
        assert!(
            c.starts_with("createContainer {") && c.lines().count() == 1,
            "{c}"
        );

        ok(rt(mode, &b, &["start", "h1"]));
        let c = fs::read_to_string(&inside).unwrap();
        assert!(
            c.lines().nth(1).unwrap().starts_with("startContainer {"),
            "{c}"
        );
        assert!(c.contains("\"status\":\"created\""), "{c}");
        assert!(wait_until(5, || fs::read_to_string(&log)
            .unwrap()
            .lines()
            .count()
            == 3));
        let host = fs::read_to_string(&log).unwrap();
        assert!(
            host.lines().nth(2).unwrap().starts_with("poststart {"),
            "{host}"
        );
        assert!(host.contains("\"status\":\"running\""), "{host}");
        ok(rt(mode, &b, &["delete", "--force", "h1"]));
        let host = fs::read_to_string(&log).unwrap();
        let last = host.lines().nth(3).unwrap_or_default();
        assert!(
            last.starts_with("poststop {") && last.contains("\"status\":\"stopped\""),
            "{host}"
        );

        // Failure rules: a failing prestart fails create (nothing left); a
        // hook past its timeout is killed and fails create; a failing
        // poststart or poststop is only a warning.
        let fail = json!({"path": "/bin/busybox", "args": ["busybox", "sh", "-c", "echo nope >&2; exit 3"]});
        let slow =
            json!({"path": "/bin/busybox", "args": ["busybox", "sleep", "10"], "timeout": 1});
        let b = bundle(mode, "hooks-fail", &["true"], |c| {
            c["hooks"] = json!({"prestart": [fail]})
        });
        let r = rt(mode, &b, &["create", "h2"]);
        assert_refused(
            &r,
            1,
            "hooks.prestart[0] /bin/busybox: exited with status 3 (nope)",
        );
        assert!(entries(&b).is_empty());
        let b = bundle(mode, "hooks-slow", &["true"], |c| {
            c["hooks"] = json!({"createRuntime": [slow]})
        });
        let t = std::time::Instant::now();
        assert_refused(&rt(mode, &b, &["create", "h3"]), 1, "timed out after 1 s");
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
        assert!(entries(&b).is_empty());
        let b =
            bundle(
                mode,
                "hooks-warn",
                &["true"],
                |c| c["hooks"] = json!({"poststart": [fail.clone()], "poststop": [fail.clone()]}),
            );
        ok(rt(mode, &b, &["create", "h4"]));
        let r = rt(mode, &b, &["start", "h4"]);
        assert_eq!(r.code, 0, "{r:?}");
        assert!(r.stderr.contains("warning: hooks.poststart[0]"), "{r:?}");
        assert!(wait_until(5, || state_json(mode, &b, "h4")["status"] == "stopped"));
        let r = rt(mode, &b, &["delete", "h4"]);
        assert_eq!(r.code, 0, "{r:?}");
        assert!(r.stderr.contains("warning: hooks.poststop[0]"), "{r:?}");
        assert!(entries(&b).is_empty());
    });
}

#[test]
fn secrets_bound_under_run_secrets_never_reach_the_audit_log() {
    each_mode(|mode| {
        // As buildah passes `bud --secret id=tok,src=FILE`: the file bound
        // at /run/secrets/tok; the step uses it on a command line.
        let secret = workdir(mode, "secret-src").join("tok");
        fs::write(&secret, "s3cr3t-value-4711\n").unwrap();
        let b = bundle(
            mode,
            "secret",
            &[
                "sh",
                "-c",
                "sh -c \"echo using $(cat /run/secrets/tok)\"; /bin/echo $API_TOKEN",
            ],
            |c| {
                c["mounts"].as_array_mut().unwrap().push(json!(
                    {"destination": "/run/secrets/tok", "type": "bind", "source": secret,
                     "options": ["bind", "ro"]}));
                c["process"]["env"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!("API_TOKEN=tok-from-env-0815"));
            },
        );
        let r = rt(mode, &b, &["run", "secret1"]);
        assert_eq!(
            r.stdout, "using s3cr3t-value-4711\ntok-from-env-0815\n",
            "{r:?}"
        );
        let log = newest_log(mode, "secret1");
        let text = fs::read_to_string(&log).unwrap();
        assert!(text.contains("echo using <redacted:tok>"), "{text}");
        assert!(text.contains("<redacted:API_TOKEN>"), "{text}");
        assert!(!text.contains("s3cr3t-value-4711"), "{text}");
        assert!(!text.contains("tok-from-env-0815"), "{text}");
    });
}

#[test]
fn bundle_seccomp_and_rootfs_propagation_are_applied_as_configured() {
    each_mode(|mode| {
        // seccomp in OCI form: allow by default, mkdir EPERM, rmdir ENOSYS
        // through errnoRet, names of other architectures left out, and
        // fchmodat2 (newer than the build host's kernel headers) applied,
        // not left out with them: EOPNOTSUPP instead of the kernel's EINVAL.
        let b = bundle(
            mode,
            "seccomp",
            &["sh", "-c", "mkdir /tmp/a 2>&1; touch /tmp/f; chmod 4755 /tmp/f 2>&1; chmod 755 /tmp/f && echo chmod-0755-ok; mkdir -p /tmp/b && rmdir /tmp/b 2>&1; /probe syscall fchmodat2; grep Seccomp: /proc/self/status"],
            |c| {
                c["root"]["path"] = json!(probe_rootfs());
                c["linux"]["seccomp"] = json!({
                    "defaultAction": "SCMP_ACT_ALLOW",
                    "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
                    "syscalls": [
                        {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
                         "args": [{"index": 1, "value": 0o700, "op": "SCMP_CMP_NE"}]},
                        {"names": ["rmdir", "_llseek", "arm_fadvise64_64"], "action": "SCMP_ACT_ERRNO",
                         "errnoRet": 38},
                        {"names": ["fchmodat2"], "action": "SCMP_ACT_ERRNO", "errnoRet": 95},
                        {"names": ["chmod"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
                         "args": [{"index": 1, "value": 0o4000, "valueTwo": 0o4000, "op": "SCMP_CMP_MASKED_EQ"}]},
                        {"names": ["fchmodat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
                         "args": [{"index": 2, "value": 0o4000, "valueTwo": 0o4000, "op": "SCMP_CMP_MASKED_EQ"}]}
                    ]
                });
            },
        );
        let out = ok(rt(mode, &b, &["run", "sc1"]));
        // busybox `mkdir -p` uses mode 0777 too: both refused by the rule.
        assert!(
            out.contains("mkdir: can't create directory '/tmp/a': Operation not permitted"),
            "{out}"
        );
        // The argument conditions decide: chmod with the setuid bit is
        // refused, without it let through.
        assert!(
            out.contains("chmod: /tmp/f: Operation not permitted"),
            "{out}"
        );
        assert!(out.contains("chmod-0755-ok\n"), "{out}");
        assert!(
            out.contains("Function not implemented") || out.contains("Operation not permitted"),
            "{out}"
        );
        assert!(out.contains("Seccomp:\t2"), "{out}");
        assert!(out.contains("fchmodat2: error 95"), "{out}");

        // The root is a detached copy of the rootfs: "slave" has no master
        // to follow, so it stays private (README: differences from runc).
        for (prop, want) in [
            ("private", None),
            ("slave", None),
            ("shared", Some("shared:")),
        ] {
            let b = bundle(
                mode,
                &format!("prop-{prop}"),
                &["sh", "-c", "awk '$5 == \"/\"' /proc/self/mountinfo"],
                |c| {
                    c["linux"]["rootfsPropagation"] = json!(prop);
                },
            );
            let line = ok(rt(mode, &b, &["run", "p1"]));
            match want {
                Some(tag) => assert!(line.contains(tag), "{prop}: {line}"),
                None => assert!(
                    !line.contains("master:") && !line.contains("shared:"),
                    "{prop}: {line}"
                ),
            }
        }
        let b = bundle(mode, "prop-bad", &["true"], |c| {
            c["linux"]["rootfsPropagation"] = json!("sideways")
        });
        assert_refused(
            &rt(mode, &b, &["create", "p2"]),
            1,
            "linux.rootfsPropagation",
        );
    });
}

#[test]
fn a_config_without_process_is_created_and_refused_at_start() {
    each_mode(|mode| {
        let b = bundle(mode, "noproc", &["true"], |c| {
            c.as_object_mut().unwrap().remove("process");
        });
        // The runtime spec: create succeeds, start refuses.
        ok(rt(mode, &b, &["create", "n1"]));
        assert_eq!(state_json(mode, &b, "n1")["status"], "created");
        assert_refused(&rt(mode, &b, &["start", "n1"]), 1, "has no process");
        assert_eq!(state_json(mode, &b, "n1")["status"], "created");
        assert_refused(&rt(mode, &b, &["run", "n2"]), 1, "process: missing");
        ok(rt(mode, &b, &["delete", "n1"]));
        assert!(entries(&b).is_empty());
    });
}

#[test]
fn the_container_dies_with_its_audit_supervisor() {
    each_mode(|mode| {
        let b = bundle(
            mode,
            "supervisor",
            &["sh", "-c", "while true; do sleep 0.1; done"],
            |_| {},
        );
        ok(rt(mode, &b, &["create", "v1"]));
        ok(rt(mode, &b, &["start", "v1"]));
        let saved: Value =
            serde_json::from_str(&fs::read_to_string(b.join("state/v1/state.json")).unwrap())
                .unwrap();
        let sup = saved["supervisor_pid"].as_i64().unwrap() as i32;
        let init = saved["oci"]["pid"].as_i64().unwrap();
        // The loop execs `sleep` ten times a second, each one recorded.
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert!(alive(init));
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(sup), nix::sys::signal::SIGKILL).unwrap();
        // The kernel kills the init (PTRACE_O_EXITKILL), and with it every
        // process of its pid namespace: no exec runs unaudited.
        assert!(
            wait_until(5, || !alive(init)),
            "the container outlived its supervisor"
        );
        assert!(wait_until(5, || state_json(mode, &b, "v1")["status"] == "stopped"));
        ok(rt(mode, &b, &["delete", "v1"]));
    });
}

#[test]
fn the_runtime_binary_cannot_be_reached_through_proc_exe() {
    each_mode(|mode| {
        // Before start, pid 1 of the container still runs buildcell's own
        // binary. Another process of the container (an exec, as an engine
        // may run one) tries to read and to overwrite it through
        // /proc/1/exe (the CVE-2019-5736 class).
        let b = bundle(mode, "proc-exe", &["true"], |c| {
            if mode == Mode::Root {
                // Container root = host root: the case that matters.
                c["linux"]["namespaces"]
                    .as_array_mut()
                    .unwrap()
                    .retain(|n| n["type"] != "user");
            }
        });
        ok(rt(mode, &b, &["create", "x1"]));
        let probe = "cat /proc/1/exe > /dev/null 2>&1 && echo readable || echo denied; \
                     (echo x >> /proc/1/exe) 2>/dev/null && echo WRITABLE || echo not-writable";
        let out = ok(rt(mode, &b, &["exec", "x1", "sh", "-c", probe]));
        assert!(out.contains("not-writable"), "{out}");
        if mode == Mode::Root {
            // Non-dumpable: no access at all without CAP_SYS_PTRACE in the
            // host's user namespace.
            assert!(out.contains("denied"), "{out}");
        }
        ok(rt(mode, &b, &["delete", "--force", "x1"]));
        // The binary is intact.
        assert!(ok(run(mode, &b, &["--version"])).starts_with("buildcell version"));
    });
}

#[test]
fn bad_exec_update_and_pid_file_input_is_one_line_and_leaves_nothing() {
    each_mode(|mode| {
        let b = bundle(mode, "bad-more", &["sleep", "30"], |_| {});
        ok(rt(mode, &b, &["create", "m1"]));
        ok(rt(mode, &b, &["start", "m1"]));
        let procs = b.join("proc.json");
        fs::write(&procs, r#"{"args": "x"}"#).unwrap();
        let p = procs.display().to_string();
        assert_refused(
            &rt(mode, &b, &["exec", "--process", &p, "m1"]),
            1,
            "at args: invalid type",
        );
        assert_refused(
            &rt(mode, &b, &["exec", "m1"]),
            1,
            "give --process FILE or a command",
        );
        let res = b.join("res.json");
        fs::write(&res, r#"{"memory": {"limit": "big"}}"#).unwrap();
        let r = res.display().to_string();
        assert_refused(
            &rt(mode, &b, &["update", "--resources", &r, "m1"]),
            1,
            "at memory.limit",
        );
        assert_refused(
            &rt(mode, &b, &["update", "--memory", "lots", "m1"]),
            1,
            "--memory \"lots\"",
        );
        // Only the init is left in the container: no half-started exec.
        let ps: Vec<i64> =
            serde_json::from_str(&ok(rt(mode, &b, &["ps", "--format", "json", "m1"]))).unwrap();
        assert_eq!(ps.len(), 1, "{ps:?}");
        ok(rt(mode, &b, &["delete", "--force", "m1"]));
        // A pid file that cannot be written fails create after the clone:
        // the init, its cgroup and the state are all gone again.
        let r = rt(
            mode,
            &b,
            &["create", "--pid-file", "/nonexistent/dir/pid", "m2"],
        );
        assert_refused(&r, 1, "--pid-file /nonexistent/dir/pid");
        assert!(entries(&b).is_empty(), "{:?}", entries(&b));
        let root = root_of(&b);
        assert!(wait_until(5, || host_processes(
            &harness().bin.display().to_string()
        )
        .iter()
        .all(|p| !p.contains(&root))));
    });
}

#[test]
fn preserve_fds_and_listen_fds_reach_the_process() {
    each_mode(|mode| {
        let b = bundle(
            mode,
            "fds",
            &["sh", "-c", "echo to-three >&3; echo to-four >&4; echo \"$LISTEN_FDS $LISTEN_PID\"; ls /proc/self/fd | wc -l"],
            |_| {},
        );
        let (three, four) = (b.join("three.txt"), b.join("four.txt"));
        for f in [&three, &four] {
            fs::write(f, "").unwrap();
            chown_to(mode, f);
        }
        let root = root_of(&b);
        // The caller opens fds 3 and 4 (a shell does it here), as systemd's
        // socket activation (LISTEN_FDS=1: fd 3) plus --preserve-fds 1 (fd 4).
        let script = format!(
            "exec 3>>{} 4>>{}; LISTEN_FDS=1 exec \"$@\"",
            three.display(),
            four.display()
        );
        let mut args = vec!["sh", "-c", script.as_str(), "sh"];
        let bin = harness().bin.display().to_string();
        args.extend_from_slice(&[
            bin.as_str(),
            "--root",
            &root,
            "--profile",
            "engine-compat",
            "run",
            "--preserve-fds",
            "1",
            "f1",
        ]);
        let mut c = match (mode, &harness().user) {
            (Mode::User, Some(u)) => {
                let mut c = std::process::Command::new("runuser");
                c.args(["-u", u, "--"]).args(&args);
                c
            }
            _ => {
                let mut c = std::process::Command::new(args[0]);
                c.args(&args[1..]);
                c
            }
        };
        c.current_dir(&b)
            .env("BUILDCELL_CONFIG", harness().dir.join("config.toml"));
        let r = finish(c.output().unwrap());
        assert_eq!(r.code, 0, "{r:?}");
        assert_eq!(fs::read_to_string(&three).unwrap(), "to-three\n");
        assert_eq!(fs::read_to_string(&four).unwrap(), "to-four\n");
        let lines: Vec<&str> = r.stdout.lines().collect();
        assert_eq!(lines[0], "1 1", "{r:?}");
        // 0-4 and the one ls opens: nothing of the runtime's.
        assert_eq!(lines[1].trim(), "6", "{r:?}");
        // An fd that is not open: one line, nothing created.
        let r = rt(mode, &b, &["run", "--preserve-fds", "40", "f2"]);
        assert_refused(&r, 1, "fd 3 is not open");
    });
}
