//! The escape suite: one test per known class of container escape, each
//! run with the real binary under the shipped `build` profile, in every
//! mode buildcell runs in:
//!
//! - `buildcell step`, as host root and as the unprivileged test user;
//! - a bundle (`create`/`start`/`exec`, or `run`): rootless (the test user;
//!   `buildcell spec` maps the caller to root) and as host root with a user
//!   namespace mapping an unprivileged range (0..65535 to host 200000);
//! - a root engine's bundle (host root, no user namespace): buildcell adds
//!   one (looks-like-root: a reserved range, an idmapped rootfs).
//!
//! Each test names the protection it proves. Where one protection would
//! hide another, a control runs the same attempt under a test profile with
//! that one protection removed (`build-no-landlock`, `build-no-nnp`,
//! `build-host-net`, `no-seccomp`: tests/common) and shows it succeed.
//! README.md, "Escape classes", lists them.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::*;
use serde_json::{json, Value};

/// The probe in a step (the host's file system is the step's).
fn probe() -> String {
    harness().probe.display().to_string()
}

/// The probe in a bundle ([`probe_rootfs`]).
const PROBE: &str = "/probe";

/// A bundle `build` accepts in `mode`, on the probe rootfs.
fn probe_bundle(mode: Mode, name: &str, args: &[&str], edit: impl FnOnce(&mut Value)) -> PathBuf {
    pbundle(mode, name, args, |c| {
        c["root"]["path"] = json!(probe_rootfs());
        edit(c)
    })
}

/// `create` under `build` (or `profile`), the container's stdout and stderr
/// in `B/ID.out` and `B/ID.err`; returns the stdout file.
fn create(mode: Mode, b: &Path, profile: Option<&str>, id: &str) -> PathBuf {
    let out = b.join(format!("{id}.out"));
    let err = b.join(format!("{id}.err"));
    let root = b.join("state").display().to_string();
    let mut args = vec!["--root", root.as_str()];
    if let Some(p) = profile {
        args.extend(["--profile", p]);
    }
    args.extend(["create", "--bundle", b.to_str().unwrap(), id]);
    let status = command(mode, b, &args, &[])
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out).unwrap())
        .stderr(fs::File::create(&err).unwrap())
        .status()
        .unwrap();
    assert!(
        status.success(),
        "create {id}: {}",
        fs::read_to_string(&err).unwrap()
    );
    out
}

/// Deletes a container (`delete --force`) when dropped: a failed assertion
/// leaves nothing running.
struct Container<'a>(Mode, &'a Path, &'static str);

impl Drop for Container<'_> {
    fn drop(&mut self) {
        let _ = rt(self.0, self.1, None, &["delete", "--force", self.2]);
    }
}

/// What buildcell keeps about a container in its state directory.
fn saved(b: &Path, id: &str) -> Value {
    let path = b.join("state").join(id).join("state.json");
    serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap()
}

fn wait_stopped(mode: Mode, b: &Path, id: &str) {
    assert!(
        wait_until(15, || state_of(mode, b, id)["status"] == "stopped"),
        "{id} still running"
    );
}

fn alive(pid: i64) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

// ---------- 1. the runtime's binary through /proc/PID/exe ----------

/// CVE-2019-5736: a process inside opens the runtime's binary through
/// `/proc/PID/exe` of a process that still runs it, for writing, or O_PATH
/// to reopen it for writing once the runtime has exited. In a step that is
/// pid 1 (buildcell's reaping init) for the step's whole life; in a bundle,
/// pid 1 until `start` and each `exec`'s process until it execs (the
/// intermediate that enters the namespaces stays outside the pid
/// namespace). From the host, the binary's SHA-256 must not change.
///
/// What protects: the write needs write permission on the binary, owned by
/// host root, which container root (an unprivileged host uid) never has.
/// Before that, `/proc/PID/exe` itself is refused (ptrace access mode): as
/// host root every such process is non-dumpable (the init's change to the
/// mapped uid; `protect_runtime_binary` for an exec's), pid 1 of a step
/// holds capabilities the step lacks, and a rootless bundle's pid 1 is
/// outside the Landlock domain of an exec'd process: the control under
/// `build-no-landlock` opens it O_PATH and is stopped only by the owner.
#[test]
fn class1_proc_exe_cannot_overwrite_the_runtime_binary() {
    let bin = harness().bin.clone();
    let before = sha256_file(&bin);
    each_mode(|m| {
        let d = workdir(m, "esc1-step");
        let r = run(m, &d, &["step", "--", &probe(), "exe-write", "1"]);
        assert_eq!(
            r.stdout, "exe 1: open-write error 13; o-path error 13\n",
            "{r:?}"
        );
        let b = probe_bundle(m, "esc1", &[PROBE, "exe-scan", "2000"], |_| {});
        class1_bundle(m, &b);
        if m == Mode::User && buildcell::landlock::kernel_abi() >= 6 {
            // The control: without Landlock pid 1's exe opens O_PATH; only
            // the binary's owner stops the write.
            let b = probe_bundle(m, "esc1-noll", &["true"], |_| {});
            create(m, &b, Some("build-no-landlock"), "e2");
            let _c = Container(m, &b, "e2");
            let r = rt(m, &b, None, &["exec", "e2", PROBE, "exe-write", "1"]);
            assert_eq!(
                r.stdout, "exe 1: open-write error 13; o-path ok, reopen error 13\n",
                "{r:?}"
            );
            ok(rt(m, &b, None, &["delete", "--force", "e2"]));
        }
    });
    if is_root() {
        // Root engine mode: a bundle without a user namespace, to which
        // buildcell (host root, profile build) adds one.
        let b = root_engine_bundle("esc1-root-engine", &[PROBE, "exe-scan", "2000"], |_| {});
        class1_bundle(Mode::Root, &b);
    }
    assert_eq!(sha256_file(&bin), before, "the runtime binary changed");
}

/// The bundle half of class 1: pid 1 before start, then every exec'd
/// process caught while it is still buildcell.
fn class1_bundle(m: Mode, b: &Path) {
    let out = create(m, b, None, "e1");
    let _c = Container(m, b, "e1");
    let r = rt(m, b, None, &["exec", "e1", PROBE, "exe-write", "1"]);
    assert!(!r.stdout.contains("WRITABLE"), "{r:?}");
    if m == Mode::Root || buildcell::landlock::kernel_abi() >= 6 {
        assert_eq!(
            r.stdout, "exe 1: open-write error 13; o-path error 13\n",
            "{r:?}"
        );
    }
    // The init scans for 2 s while five execs go through.
    ok(rt(m, b, None, &["start", "e1"]));
    std::thread::sleep(std::time::Duration::from_millis(200));
    for _ in 0..5 {
        ok(rt(m, b, None, &["exec", "e1", "true"]));
    }
    wait_stopped(m, b, "e1");
    let scan = fs::read_to_string(&out).unwrap();
    let seen: usize = scan
        .lines()
        .find_map(|l| l.strip_prefix("seen "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{scan}"));
    assert!(seen >= 1, "no exec'd process caught as buildcell: {scan}");
    for line in scan.lines().filter(|l| l.starts_with("exe ")) {
        assert!(
            line.ends_with("open-write error 13; o-path error 13"),
            "{scan}"
        );
    }
    ok(rt(m, b, None, &["delete", "e1"]));
}

// ---------- 2. leaked fds ----------

/// CVE-2024-21626: an fd of the runtime (or of its caller) that refers to
/// a host directory, used as the working directory or opened through
/// `/proc/self/fd/N` or `/proc/1/fd/N`. Here the caller leaks one on
/// purpose: buildcell starts with a host directory open as fd 7.
///
/// What protects: every process inside closes all but stdio before it
/// runs anything: the step's user process, a bundle's init and an exec'd
/// process before their cwd is entered, and the step's pid 1 at its start
/// (seen from the host: no process of the sandbox holds the directory);
/// and `process.cwd` is resolved inside the root without magic links, so
/// `/proc/self/fd/N` is refused even while N is open (ELOOP).
#[test]
fn class2_leaked_fds_never_reach_a_host_directory() {
    let host = workdir(Mode::Root, "esc2-host-dir");
    fs::write(host.join("marker"), "HOST-DIRECTORY").unwrap();
    each_mode(|m| {
        // The step: only 0-2 in the process, no way through pid 1's fds,
        // and no process of the sandbox holds the leaked directory.
        let d = workdir(m, "esc2-step");
        let p = probe();
        let script = format!(
            "{p} fds; {p} fd-cwd 64; cat /proc/self/fd/7/marker /proc/1/fd/7/marker 2>/dev/null; echo ready; read x"
        );
        let mut c = command(m, &d, &["step", "--", "sh", "-c", &script], &[]);
        let leaked = leak_dir_fd(&mut c, &host);
        let mut child = KillOnDrop(
            c.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        drop(leaked);
        let mut out = BufReader::new(child.0.stdout.take().unwrap());
        let mut seen = String::new();
        while !seen.ends_with("ready\n") {
            let mut line = String::new();
            if out.read_line(&mut line).unwrap() == 0 {
                break;
            }
            seen.push_str(&line);
        }
        assert_eq!(
            seen, "fds: 0 1 2\nfd-cwd: 121 tried, 0 entered\nready\n",
            "{m:?}"
        );
        let sup = buildcell_pid(&child.0).as_raw();
        let init = first_child(sup);
        for pid in [init, first_child(init)] {
            assert!(!holds(pid, &host), "{m:?}: pid {pid} holds the leaked fd");
        }
        assert!(holds(sup, &host), "the control: buildcell itself got it");
        child.0.stdin.take().unwrap().write_all(b"\n").unwrap();
        assert!(child.0.wait().unwrap().success());

        let b = probe_bundle(m, "esc2", &["sleep", "30"], |_| {});
        class2_bundle(m, &b, &host);
    });
    if is_root() {
        // Root engine mode: a bundle without a user namespace, to which
        // buildcell (host root, profile build) adds one.
        let b = root_engine_bundle("esc2-root-engine", &["sleep", "30"], |_| {});
        class2_bundle(Mode::Root, &b, &host);
    }
}

/// The first child of `pid` (its `children` list).
fn first_child(pid: i32) -> i32 {
    let mut found = None;
    wait_until(5, || {
        found = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .ok()
            .and_then(|c| c.split_whitespace().next()?.parse().ok());
        found.is_some()
    });
    found.unwrap_or_else(|| panic!("pid {pid} has no child"))
}

/// Whether process `pid` has an fd open on `dir` (read from the host).
fn holds(pid: i32, dir: &Path) -> bool {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/fd: {e} (is the process gone?)"))
        .flatten()
        .any(|e| fs::read_link(e.path()).is_ok_and(|t| t == dir))
}

/// The bundle half of class 2: `create` and `exec` with the leaked fd, and
/// a cwd of `/proc/self/fd/N` for the init and for an exec.
fn class2_bundle(m: Mode, b: &Path, host: &Path) {
    let leaky = |args: &[&str]| -> Run {
        let root = b.join("state").display().to_string();
        let mut all = vec!["--root", root.as_str()];
        all.extend_from_slice(args);
        let mut c = command(m, b, &all, &[]);
        let _leaked = leak_dir_fd(&mut c, host);
        // A created container keeps its stdio: files, not pipes.
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let out = b.join(format!(".leaky-{n}-stdout"));
        let err = b.join(format!(".leaky-{n}-stderr"));
        let status = c
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out).unwrap())
            .stderr(fs::File::create(&err).unwrap())
            .status()
            .unwrap();
        Run {
            code: status.code().unwrap_or(-1),
            stdout: fs::read_to_string(&out).unwrap(),
            stderr: fs::read_to_string(&err).unwrap(),
        }
    };
    let r = leaky(&["create", "--bundle", b.to_str().unwrap(), "f1"]);
    let _c = Container(m, b, "f1");
    assert_eq!(r.code, 0, "{r:?}");
    // pid 1, waiting for start in buildcell, kept only the channel and the
    // start fifo.
    let init = state_of(m, b, "f1")["pid"].as_i64().unwrap() as i32;
    assert!(!holds(init, host), "the created init holds the leaked fd");
    let r = leaky(&["exec", "f1", PROBE, "fds"]);
    assert_eq!(r.stdout, "fds: 0 1 2\n", "{r:?}");
    let r = leaky(&["exec", "f1", PROBE, "fd-cwd", "64"]);
    assert_eq!(r.stdout, "fd-cwd: 121 tried, 0 entered\n", "{r:?}");
    let mut followed = Vec::new();
    for n in 3..9 {
        let cwd = format!("/proc/self/fd/{n}");
        let r = leaky(&["exec", "--cwd", &cwd, "f1", PROBE, "fds"]);
        assert_eq!(r.code, 125, "{r:?}");
        assert!(r.stderr.contains(&format!("process.cwd: {cwd}: ")), "{r:?}");
        followed.push(r.stderr);
    }
    // Some of those fds were open: their magic links were not followed.
    assert!(
        followed
            .iter()
            .any(|e| e.contains("Too many symbolic links")),
        "{followed:?}"
    );
    ok(rt(m, b, None, &["delete", "--force", "f1"]));
    let config = b.join("config.json");
    let good = fs::read_to_string(&config).unwrap();
    let mut followed = Vec::new();
    for n in 3..9 {
        let mut c: Value = serde_json::from_str(&good).unwrap();
        c["process"]["cwd"] = json!(format!("/proc/self/fd/{n}"));
        fs::write(&config, c.to_string()).unwrap();
        let r = leaky(&["run", "f2"]);
        assert_eq!(r.code, 125, "{r:?}");
        assert!(
            r.stderr
                .contains(&format!("process.cwd: /proc/self/fd/{n}: ")),
            "{r:?}"
        );
        followed.push(r.stderr);
    }
    fs::write(&config, good).unwrap();
    assert!(
        followed
            .iter()
            .any(|e| e.contains("Too many symbolic links")),
        "{followed:?}"
    );
}

// ---------- 3. symlink and rename races on mount destinations and masks ----------

/// CVE-2021-30465, CVE-2025-31133, CVE-2025-52565: an image whose mount
/// destinations, `/dev/null` (used to mask files) or `/dev/console` are
/// symlinks to host paths (a host directory, `/proc/sys/kernel/core_pattern`),
/// or a second container that swaps a mount destination with such a
/// symlink while the first one is set up. Afterwards the host directory
/// and `core_pattern` are unchanged and the host has no new mount.
///
/// What protects: every mount destination is resolved inside the root
/// (`openat2` `RESOLVE_IN_ROOT`, no magic links) and held as an fd, so an
/// absolute symlink lands inside the rootfs, whatever a race makes of the
/// path afterwards; a masked path that is a symlink is masked where it
/// leads inside the root; masking binds the container's `/dev/null` only
/// once it is checked to be the null device reached without a symlink
/// (else the bundle is refused); buildcell never binds anything at
/// `/dev/console` (a terminal is a pty of the container's own devpts).
#[test]
fn class3_symlinks_and_renames_keep_mounts_and_masks_inside() {
    let core = host_proc("/proc/sys/kernel/core_pattern");
    let mounts_before = host_mount_points();
    let targets = std::sync::Mutex::new(Vec::new());
    each_mode(|m| {
        let target = workdir(Mode::Root, &format!("esc3-host-target-{m:?}"));
        fs::write(target.join("marker"), "host").unwrap();
        let rootfs = class3_image(&format!("esc3-rootfs-{m:?}"), &target, pbundle_root_uid(m));
        let b = probe_bundle(m, "esc3", &["true"], |c| c["root"]["path"] = json!(rootfs));
        class3_bundle(m, &b, &target);
        let left: Vec<_> = fs::read_dir(&target)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, ["marker"], "{m:?}: written through to the host");
        targets.lock().unwrap().push(target);
    });
    let targets = targets.into_inner().unwrap();
    if is_root() {
        // Root engine mode: a bundle without a user namespace, to which
        // buildcell (host root, profile build) adds one.
        let target = workdir(Mode::Root, "esc3-host-target-engine");
        let rootfs = class3_image("esc3-rootfs-engine", &target, 0);
        let b = root_engine_bundle("esc3-root-engine", &["true"], |c| {
            c["root"]["path"] = json!(rootfs)
        });
        class3_bundle(Mode::Root, &b, &target);
    }
    assert_eq!(host_proc("/proc/sys/kernel/core_pattern"), core);
    let here = harness().dir.display().to_string();
    let new: Vec<String> = host_mount_points()
        .difference(&mounts_before)
        .filter(|p| {
            p.starts_with(&here)
                || p.starts_with("/etc")
                || p.starts_with("/proc")
                || targets
                    .iter()
                    .any(|t| p.starts_with(&t.display().to_string()))
        })
        .cloned()
        .collect();
    assert!(new.is_empty(), "mounted on the host: {new:?}");
}

/// An image (a private copy of the probe rootfs, owned by `owner`) whose
/// paths lead out: `/abs-dest` and `/dev/console` to the host directory
/// `target`, `/dev/null` to the host's `core_pattern`, `/masked-link` to a
/// directory inside, `/masked-out` to `target/masked`; `/race` to be
/// swapped.
fn class3_image(name: &str, target: &Path, owner: u32) -> PathBuf {
    use std::os::unix::fs::symlink;
    let rootfs = private_rootfs(name, owner);
    symlink(target, rootfs.join("abs-dest")).unwrap();
    symlink("/proc/sys/kernel/core_pattern", rootfs.join("dev/null")).unwrap();
    symlink(target, rootfs.join("dev/console")).unwrap();
    symlink("pts/ptmx", rootfs.join("dev/ptmx")).unwrap();
    fs::create_dir_all(rootfs.join("inside-secret")).unwrap();
    fs::write(rootfs.join("inside-secret/s"), "secret").unwrap();
    symlink("/inside-secret", rootfs.join("masked-link")).unwrap();
    symlink(target.join("masked"), rootfs.join("masked-out")).unwrap();
    fs::create_dir_all(rootfs.join("race")).unwrap();
    let st = std::process::Command::new("chown")
        .args([
            "-R",
            "-h",
            &format!("{owner}:{owner}"),
            rootfs.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(st.success());
    rootfs
}

/// The bundle half of class 3, on a bundle whose root is a [`class3_image`].
fn class3_bundle(m: Mode, b: &Path, target: &Path) {
    let config = b.join("config.json");
    let base: Value = serde_json::from_str(&fs::read_to_string(&config).unwrap()).unwrap();
    let write = |edit: &dyn Fn(&mut Value)| {
        let mut c = base.clone();
        edit(&mut c);
        fs::write(&config, c.to_string()).unwrap();
    };
    let args = |c: &mut Value, script: &str| c["process"]["args"] = json!(["sh", "-c", script]);
    // Buildcell's own /dev: a tmpfs at the symlinked destination lands in
    // the rootfs; masked symlinks are masked inside.
    write(&|c| {
        args(
            c,
            "echo inside > /abs-dest/f && cat /abs-dest/f; ls /masked-link | wc -l; cat /proc/keys | wc -c; ls /masked-out 2>&1; true",
        );
        c["mounts"].as_array_mut().unwrap().push(
            json!({"destination": "/abs-dest", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]}),
        );
        c["linux"]["maskedPaths"]
            .as_array_mut()
            .unwrap()
            .extend([json!("/masked-link"), json!("/masked-out")]);
    });
    let r = rt(m, b, None, &["run", "s1"]);
    assert_eq!(r.code, 0, "{r:?}");
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{r:?}");
    assert_eq!(&lines[..3], ["inside", "0", "0"], "{r:?}");
    assert!(lines[3].contains("No such file"), "{r:?}");
    // The image's /dev: its /dev/null leads to core_pattern. Masking a file
    // with it would bind the sysctl, writable, over /proc/keys: refused.
    let image_dev = |c: &mut Value| {
        c["mounts"].as_array_mut().unwrap().retain(|m| {
            m["destination"] == "/dev/pts"
                || !m["destination"].as_str().unwrap().starts_with("/dev")
        });
    };
    write(&|c| {
        args(c, "cat /proc/keys");
        image_dev(c);
    });
    let r = rt(m, b, None, &["run", "s2"]);
    assert!(r.code != 0, "{r:?}");
    assert!(
        r.stderr
            .contains("linux.maskedPaths: /dev/null in the container is not the null device"),
        "{r:?}"
    );
    // A terminal with the image's /dev/console leading to the host: the
    // pty is the container's own, nothing is bound at /dev/console.
    write(&|c| {
        args(
            c,
            "tty; grep -c ' /dev/console ' /proc/self/mountinfo; ls -l /dev/console; sleep 0.3",
        );
        image_dev(c);
        c["linux"]["maskedPaths"] = json!(["/masked-link"]);
        c["process"]["terminal"] = json!(true);
    });
    let sock = b.join("console.sock");
    let _ = fs::remove_file(&sock);
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&sock, fs::Permissions::from_mode(0o777)).unwrap();
    let (r, seen) = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut f = fs::File::from(receive_master(&listener));
            let mut seen = Vec::new();
            let _ = std::io::Read::read_to_end(&mut f, &mut seen);
            String::from_utf8_lossy(&seen).replace('\r', "")
        });
        let s = sock.display().to_string();
        let r = rt(m, b, None, &["run", "--console-socket", &s, "s3"]);
        (r, reader.join().unwrap())
    });
    assert_eq!(r.code, 0, "{r:?}");
    assert!(seen.starts_with("/dev/pts/0\n0\n"), "{seen:?}");
    assert!(seen.contains(&target.display().to_string()), "{seen:?}");
    // The rename race: one container swaps /race with a symlink to the
    // host directory as fast as it can, while others mount a tmpfs there.
    let racer = b.with_file_name(format!(
        "{}-racer",
        b.file_name().unwrap().to_string_lossy()
    ));
    let _ = fs::remove_dir_all(&racer);
    fs::create_dir_all(&racer).unwrap();
    chown_to(m, &racer);
    let mut rc = base.clone();
    rc["root"]["readonly"] = json!(false);
    let t = target.display().to_string();
    rc["process"]["args"] = json!([PROBE, "swap-race", "/race", t, "1500"]);
    fs::write(racer.join("config.json"), rc.to_string()).unwrap();
    write(&|c| {
        args(c, "echo x > /race/f");
        c["root"]["readonly"] = json!(false);
        c["mounts"].as_array_mut().unwrap().push(
            json!({"destination": "/race", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]}),
        );
    });
    let (raced, runs) = std::thread::scope(|s| {
        let r = s.spawn(|| rt(m, &racer, None, &["run", "racer"]));
        std::thread::sleep(std::time::Duration::from_millis(100));
        let runs: Vec<Run> = (0..10)
            .map(|i| rt(m, b, None, &["run", &format!("r{i}")]))
            .collect();
        (r.join().unwrap(), runs)
    });
    assert!(raced.stdout.starts_with("swap-race: "), "{raced:?}");
    let ran = runs.iter().filter(|r| r.code == 0).count();
    eprintln!("{m:?}: {} {ran} of 10 runs ran", raced.stdout.trim());
    for r in runs {
        // Each either ran (the tmpfs inside, wherever the path led) or was
        // refused in one line.
        assert!(r.code == 0 || r.stderr.contains("mounts:"), "{r:?}");
    }
    fs::write(&config, base.to_string()).unwrap();
}

// ---------- 4. writes into the host's /proc ----------

/// CVE-2025-52881 and its kin: writes into host-wide /proc files
/// (`/proc/sys/kernel/core_pattern`, `/proc/sysrq-trigger`), from inside,
/// or by making the runtime's own writes land there (a `linux.sysctl` name
/// the profile allows, `net.*`, redirected by a proc mounted inside
/// /proc/sys). The host's values are unchanged afterwards.
///
/// What protects: container root is not host root (user namespace), so
/// the kernel refuses writes to host-wide files (EACCES), read-only
/// `readonlyPaths` or not (the step has none); sysctls are written beneath
/// /proc/sys without crossing a mount (the redirect is refused, EXDEV:
/// without that only the user namespace stops it); binds of /proc are on
/// `build`'s never list and `kernel.*` sysctls are not allowed.
#[test]
fn class4_writes_to_host_proc_files_fail() {
    let core = host_proc("/proc/sys/kernel/core_pattern");
    // Host-wide files this kernel has (sysrq may be built out).
    let targets: Vec<&str> = [
        "/proc/sys/kernel/core_pattern",
        "/proc/sysrq-trigger",
        "/proc/sys/vm/drop_caches",
    ]
    .into_iter()
    .filter(|t| Path::new(t).exists())
    .collect();
    let script = |p: &str| {
        targets
            .iter()
            .map(|t| format!("{p} open-write {t}"))
            .collect::<Vec<_>>()
            .join("; ")
    };
    each_mode(|m| {
        let d = workdir(m, "esc4-step");
        let r = run(m, &d, &["step", "--", "sh", "-c", &script(&probe())]);
        assert_eq!(
            r.stdout,
            "open-write: error 13\n".repeat(targets.len()),
            "{r:?}"
        );
        let b = probe_bundle(m, "esc4", &["sh", "-c", &script(PROBE)], |_| {});
        class4_bundle(m, &b, targets.len());
    });
    if is_root() {
        // Root engine mode: a bundle without a user namespace, to which
        // buildcell (host root, profile build) adds one.
        let b = root_engine_bundle("esc4-root-engine", &["sh", "-c", &script(PROBE)], |_| {});
        class4_bundle(Mode::Root, &b, targets.len());
    }
    assert_eq!(host_proc("/proc/sys/kernel/core_pattern"), core);
}

/// The bundle half of class 4 (the bundle's process opens `n` host-wide
/// files for writing).
fn class4_bundle(m: Mode, b: &Path, n: usize) {
    let config = b.join("config.json");
    let base: Value = serde_json::from_str(&fs::read_to_string(&config).unwrap()).unwrap();
    let write = |edit: &dyn Fn(&mut Value)| {
        let mut c = base.clone();
        edit(&mut c);
        fs::write(&config, c.to_string()).unwrap();
    };
    // With /proc/sys and sysrq-trigger read-only (as given) and without:
    // the kernel's permission check (host root only) refuses before the
    // read-only mount would (EROFS, what a root engine's bundle would see
    // without a user namespace).
    let r = rt(m, b, None, &["run", "p1"]);
    assert_eq!(r.stdout, "open-write: error 13\n".repeat(n), "{r:?}");
    write(&|c| c["linux"]["readonlyPaths"] = json!([]));
    let r = rt(m, b, None, &["run", "p2"]);
    assert_eq!(r.stdout, "open-write: error 13\n".repeat(n), "{r:?}");
    // An exec'd process too: it enters the user namespace from outside and
    // must not keep the host ids it came with (host root's, which own
    // every host-wide sysctl).
    let script = base["process"]["args"][2].as_str().unwrap().to_string();
    write(&|c| {
        c["linux"]["readonlyPaths"] = json!([]);
        c["process"]["args"] = json!(["sleep", "30"]);
    });
    create(m, b, None, "p5");
    let _c = Container(m, b, "p5");
    ok(rt(m, b, None, &["start", "p5"]));
    let r = rt(m, b, None, &["exec", "p5", "sh", "-c", &script]);
    assert_eq!(r.stdout, "open-write: error 13\n".repeat(n), "{r:?}");
    ok(rt(m, b, None, &["delete", "--force", "p5"]));
    // The runtime's own sysctl write redirected: an allowed name, with a
    // second proc at /proc/sys/net/ipv4, would reach kernel.core_pattern.
    let value = "|/bin/false buildcell-escape-test";
    write(&|c| {
        c["mounts"]
            .as_array_mut()
            .unwrap()
            .push(json!({"destination": "/proc/sys/net/ipv4", "type": "proc", "source": "proc"}));
        c["linux"]["sysctl"] = json!({"net.ipv4.sys.kernel.core_pattern": value});
        c["linux"]["readonlyPaths"] = json!([]);
    });
    let checked = rt(m, b, None, &["policy", "check", b.to_str().unwrap()]);
    assert_eq!(checked.code, 0, "the name matches net.*: {checked:?}");
    let before = host_proc("/proc/sys/kernel/core_pattern");
    let r = rt(m, b, None, &["run", "p3"]);
    let after = host_proc("/proc/sys/kernel/core_pattern");
    if after != before {
        fs::write("/proc/sys/kernel/core_pattern", &before).unwrap();
    }
    assert_eq!(after, before, "the host's core_pattern was written: {r:?}");
    assert_eq!(r.code, 125, "{r:?}");
    assert!(
        r.stderr.contains("linux.sysctl: open (beneath /proc/sys, crossing no mount) /proc/sys/net/ipv4/sys/kernel/core_pattern")
            && r.stderr.contains("EXDEV"),
        "{r:?}"
    );
    // Asked for outright: refused before anything exists.
    write(&|c| {
        c["linux"]["sysctl"] = json!({"kernel.core_pattern": value});
        c["mounts"].as_array_mut().unwrap().push(json!(
            {"destination": "/host-core", "type": "bind", "source": "/proc/sys/kernel/core_pattern", "options": ["bind"]}
        ));
    });
    let r = rt(m, b, None, &["run", "p4"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr
            .contains("profile build refuses this bundle (2 violations)"),
        "{r:?}"
    );
    assert!(
        r.stderr.contains(
            "bind of /proc/sys/kernel/core_pattern exposes /proc, which profile build never allows"
        ),
        "{r:?}"
    );
    assert!(
        r.stderr
            .contains("linux.sysctl.kernel.core_pattern: not allowed"),
        "{r:?}"
    );
    fs::write(&config, base.to_string()).unwrap();
}

// ---------- 5. inheritable and ambient capabilities, setuid ----------

/// CVE-2022-29162: a process started with inheritable (or ambient)
/// capabilities passes them on across exec to a program with file
/// capabilities; setuid binaries, in the rootfs or in a bind mount, raise a
/// process's ids. The process of a step, of a bundle and of an `exec` has
/// CapInh and CapAmb 0 unless the bundle asks, and `build` lets it ask only
/// for capabilities it allows; a setuid binary run as uid 1000 leaves it
/// uid 1000.
///
/// What protects: buildcell writes all five sets (inheritable and ambient
/// emptied unless asked); the policy check; the rootfs is mounted nosuid
/// always; `no_new_privs`, which `build` forces even when the bundle says
/// `noNewPrivileges: false`, stops the setuid binary in a bind mount made
/// without nosuid: the control under `build-no-nnp` (no `no_new_privs`,
/// and no seccomp filter, whose installation sets it too) runs it as root.
#[test]
fn class5_no_inherited_ambient_or_setuid_privileges() {
    let status = "grep -E '^(CapInh|CapAmb|NoNewPrivs)' /proc/self/status";
    each_mode(|m| {
        let d = workdir(m, "esc5-step");
        let out = ok(sh(m, &d, status));
        assert_eq!(
            out,
            "CapInh:\t0000000000000000\nCapAmb:\t0000000000000000\nNoNewPrivs:\t1\n"
        );
        if is_root() {
            // A setuid binary in the working directory, owned by container
            // uid 1000: root inside would become uid 1000 if it counted.
            let f = d.join("suid-probe");
            fs::copy(&harness().probe, &f).unwrap();
            let host_uid = match m {
                Mode::Root => 1000,
                Mode::User => subuid_start(harness().user.as_deref().unwrap()).unwrap() + 999,
            };
            suid(&f, host_uid);
            let out = ok(sh(m, &d, "./suid-probe ids"));
            assert_eq!(out, "uid=0 euid=0 gid=0 egid=0\n");
        }
        let root = pbundle_root_uid(m);
        let rootfs = private_rootfs(&format!("esc5-rootfs-{m:?}"), root);
        fs::copy(&harness().probe, rootfs.join("suid-probe")).unwrap();
        suid(&rootfs.join("suid-probe"), root);
        let bind_dir = allowed_bind_dir(m, "esc5");
        let bind = &bind_dir.0;
        fs::copy(&harness().probe, bind.join("suid-probe")).unwrap();
        suid(&bind.join("suid-probe"), root);
        let b = probe_bundle(m, "esc5", &["true"], |c| {
            c["root"]["path"] = json!(rootfs);
            if m == Mode::User {
                // uid 1000 must be mapped: the test user's subordinate range.
                let sub = subuid_start(harness().user.as_deref().unwrap()).unwrap();
                let maps = json!([{"containerID": 0, "hostID": caller_uid(m), "size": 1},
                                  {"containerID": 1, "hostID": sub, "size": 65535}]);
                c["linux"]["uidMappings"] = maps.clone();
                c["linux"]["gidMappings"] = maps;
            }
            c["mounts"].as_array_mut().unwrap().push(json!(
                {"destination": "/mnt-suid", "type": "bind", "source": bind, "options": ["bind", "ro"]}
            ));
        });
        class5_bundle(m, &b);
    });
    if is_root() {
        // Root engine mode: a bundle without a user namespace, to which
        // buildcell (host root, profile build) adds one.
        // The same bundle as above, owned by host root (the idmapped rootfs
        // and bind show it as container root's).
        let rootfs = private_rootfs("esc5-rootfs-engine", 0);
        fs::copy(&harness().probe, rootfs.join("suid-probe")).unwrap();
        suid(&rootfs.join("suid-probe"), 0);
        let bind_dir = allowed_bind_dir(Mode::Root, "esc5-engine");
        let bind = &bind_dir.0;
        fs::copy(&harness().probe, bind.join("suid-probe")).unwrap();
        suid(&bind.join("suid-probe"), 0);
        let b = root_engine_bundle("esc5-root-engine", &["true"], |c| {
            c["root"]["path"] = json!(rootfs);
            c["mounts"].as_array_mut().unwrap().push(json!(
                {"destination": "/mnt-suid", "type": "bind", "source": bind, "options": ["bind", "ro"]}
            ));
        });
        class5_bundle(Mode::Root, &b);
    }
}

/// Make `f` a setuid file owned by host uid `uid`.
fn suid(f: &Path, uid: u32) {
    use std::os::unix::fs::PermissionsExt;
    nix::unistd::chown(
        f,
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(uid)),
    )
    .unwrap();
    fs::set_permissions(f, fs::Permissions::from_mode(0o4755)).unwrap();
}

/// A directory made for one test where `build` lets a bundle bind from
/// (under the caller's `$HOME/.local/share/containers`), removed when
/// dropped.
struct BindDir(PathBuf);

impl Drop for BindDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn allowed_bind_dir(m: Mode, name: &str) -> BindDir {
    let mut dir = home_of(m);
    for part in [".local", "share", "containers"] {
        dir.push(part);
        if !dir.exists() {
            fs::create_dir(&dir).unwrap();
            chown_to(m, &dir);
        }
    }
    let dir = dir.join(format!("buildcell-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir(&dir).unwrap();
    BindDir(dir)
}

/// The bundle half of class 5: the bundle's process and an exec'd one.
fn class5_bundle(m: Mode, b: &Path) {
    let config = b.join("config.json");
    let base: Value = serde_json::from_str(&fs::read_to_string(&config).unwrap()).unwrap();
    let write = |edit: &dyn Fn(&mut Value)| {
        let mut c = base.clone();
        edit(&mut c);
        fs::write(&config, c.to_string()).unwrap();
    };
    let script = "/suid-probe ids; /mnt-suid/suid-probe ids; grep -E '^(CapInh|CapAmb|NoNewPrivs)' /proc/self/status";
    let as_1000 = |c: &mut Value, nnp: bool| {
        c["process"]["args"] = json!(["sh", "-c", script]);
        c["process"]["user"] = json!({"uid": 1000, "gid": 1000});
        c["process"]["noNewPrivileges"] = json!(nnp);
    };
    // The bundle says noNewPrivileges: false; build forces it.
    write(&|c| as_1000(c, false));
    let out = ok(rt(m, b, None, &["run", "k1"]));
    assert_eq!(
        out,
        "uid=1000 euid=1000 gid=1000 egid=1000\n".repeat(2)
            + "CapInh:\t0000000000000000\nCapAmb:\t0000000000000000\nNoNewPrivs:\t1\n"
    );
    // The control: without no_new_privs the bind's setuid binary works;
    // the rootfs's does not (nosuid).
    let out = ok(rt(m, b, Some("build-no-nnp"), &["run", "k2"]));
    assert_eq!(
        out,
        "uid=1000 euid=1000 gid=1000 egid=1000\nuid=1000 euid=0 gid=1000 egid=1000\n\
         CapInh:\t0000000000000000\nCapAmb:\t0000000000000000\nNoNewPrivs:\t0\n"
    );
    // An exec'd process, as root and as uid 1000.
    write(&|c| c["process"]["args"] = json!(["sleep", "30"]));
    create(m, b, None, "k3");
    let _c = Container(m, b, "k3");
    ok(rt(m, b, None, &["start", "k3"]));
    let out = ok(rt(
        m,
        b,
        None,
        &[
            "exec",
            "k3",
            "sh",
            "-c",
            "grep -E '^(CapInh|CapAmb)' /proc/self/status",
        ],
    ));
    assert_eq!(
        out,
        "CapInh:\t0000000000000000\nCapAmb:\t0000000000000000\n"
    );
    let out = ok(rt(
        m,
        b,
        None,
        &[
            "exec",
            "--user",
            "1000:1000",
            "k3",
            "/mnt-suid/suid-probe",
            "ids",
        ],
    ));
    assert_eq!(out, "uid=1000 euid=1000 gid=1000 egid=1000\n");
    // Root of an exec is the container's root on the host too, never the
    // host ids `buildcell exec` came with.
    let pid_file = b.join("k3-exec.pid");
    let pf = pid_file.display().to_string();
    ok(rt(
        m,
        b,
        None,
        &["exec", "--detach", "--pid-file", &pf, "k3", "sleep", "5"],
    ));
    let pid = fs::read_to_string(&pid_file).unwrap();
    let status = fs::read_to_string(format!("/proc/{}/status", pid.trim())).unwrap();
    // Container root on the host: from the process's own uid map (the
    // bundle's range, or the one buildcell reserved for a root engine's).
    let map = fs::read_to_string(format!("/proc/{}/uid_map", pid.trim())).unwrap();
    let root: u32 = map
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.first() == Some(&"0"))
        .and_then(|f| f.get(1).and_then(|h| h.parse().ok()))
        .unwrap_or_else(|| panic!("{map}"));
    if m == Mode::User || b.to_string_lossy().contains("root-engine") {
        assert_ne!(root, 0, "{map}");
    } else {
        assert_eq!(root, pbundle_root_uid(m), "{map}");
    }
    for id in ["Uid", "Gid"] {
        let want = format!("{id}:\t{root}\t{root}\t{root}\t{root}");
        assert!(status.lines().any(|l| l == want), "{want}: {status}");
    }
    ok(rt(m, b, None, &["delete", "--force", "k3"]));
    // Asking: only what build allows, and then exactly that.
    let caps = |c: &mut Value, cap: &str| {
        let all = json!(["CAP_NET_BIND_SERVICE", cap]);
        c["process"]["capabilities"] = json!({"bounding": all, "permitted": all,
            "effective": all, "inheritable": all, "ambient": all});
        c["process"]["args"] = json!(["sh", "-c", "grep -E '^(CapInh|CapAmb)' /proc/self/status"]);
    };
    write(&|c| caps(c, "CAP_SYS_ADMIN"));
    let r = rt(m, b, None, &["run", "k4"]);
    assert_refused(&r, 1, "process.capabilities: CAP_SYS_ADMIN not allowed (in bounding, effective, permitted, inheritable, ambient)");
    write(&|c| caps(c, "CAP_NET_BIND_SERVICE"));
    let out = ok(rt(m, b, None, &["run", "k5"]));
    assert_eq!(
        out,
        "CapInh:\t0000000000000400\nCapAmb:\t0000000000000400\n"
    );
    fs::write(&config, base.to_string()).unwrap();
}

// ---------- 6. host daemons and the host network ----------

/// Reaching a daemon of the host: its unix socket under a bind-mounted
/// directory, an abstract unix socket made on the host, a TCP port on the
/// host's loopback, the host's interfaces.
///
/// What protects: a bind of a daemon's socket, or of a tree holding one,
/// is refused (`build`'s `mounts.never`: /run/docker.sock, containerd's,
/// podman's, ...; for `step` too). A socket of host root under a directory
/// a bundle may bind stays closed: connect needs write permission on the
/// socket, and container root is an unprivileged host uid (bundles' binds
/// are not idmapped). The sandbox has its own network namespace with only
/// `lo`: the host's loopback and abstract sockets are not in it; were the
/// network shared, Landlock's `scope_abstract_unix` still refuses the
/// abstract socket (`build-host-net`; the control without Landlock
/// connects).
///
/// Not covered, by design: `step` as host root idmaps its binds (container
/// root is host root on them), so a root-only socket under a `--mount`
/// directory *is* reachable; only `mounts.never` stands in the way there.
#[test]
fn class6_host_daemons_and_network_are_unreachable() {
    use std::os::linux::net::SocketAddrExt;
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = tcp.local_addr().unwrap().to_string();
    let name = format!("buildcell-esc6-{}", std::process::id());
    let abs = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let _abstract = std::os::unix::net::UnixListener::bind_addr(&abs).unwrap();
    let links = "awk -F: 'NR > 2 { gsub(/ /, \"\", $1); print $1 }' /proc/net/dev";
    each_mode(|m| {
        // A root-only socket in a directory `build` lets a bundle bind.
        let dir_guard = allowed_bind_dir(m, "esc6");
        let dir = &dir_guard.0;
        let sock = dir.join("d.sock");
        let _daemon = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&sock, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(
            std::os::unix::net::UnixStream::connect(&sock).is_ok(),
            "the control"
        );

        let d = workdir(m, "esc6-step");
        let p = probe();
        let script = format!("{links}; {p} tcp {addr}; {p} unix-abstract {name}; true");
        let out = ok(sh(m, &d, &script));
        assert_eq!(out, "lo\ntcp: error 111\nunix-abstract: error 111\n");
        for bad in ["/run", "/var/run", "/etc"] {
            let r = run(
                m,
                &d,
                &["step", "--mount", &format!("{bad}:/tmp/h"), "--", "true"],
            );
            assert_refused(&r, 125, "which profile build never allows in a container");
        }
        let mount = format!("{}:/tmp/s", dir.display());
        let r = run(
            m,
            &d,
            &["step", "--mount", &mount, "--", &p, "unix", "/tmp/s/d.sock"],
        );
        if m == Mode::User {
            assert_eq!(r.stdout, "unix: error 13\n", "{r:?}");
        }
        // The host's network: refused by build; where a profile shares it,
        // Landlock still scopes abstract sockets.
        let r = run(m, &d, &["step", "--net", "--", &p, "unix-abstract", &name]);
        assert_refused(
            &r,
            125,
            "no network namespace, so the host's network would be shared",
        );
        if buildcell::landlock::kernel_abi() >= 6 {
            let r = run(
                m,
                &d,
                &[
                    "--profile",
                    "build-host-net",
                    "step",
                    "--net",
                    "--",
                    &p,
                    "unix-abstract",
                    &name,
                ],
            );
            assert_eq!(r.stdout, "unix-abstract: error 1\n", "{r:?}");
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
            assert_eq!(r.stdout, "unix-abstract: ok\n", "the control: {r:?}");
        }

        let script = format!(
            "{links}; {PROBE} tcp {addr}; {PROBE} unix-abstract {name}; {PROBE} unix /tmp/sock/d.sock; true"
        );
        let b = probe_bundle(m, "esc6", &["sh", "-c", &script], |c| {
            c["mounts"].as_array_mut().unwrap().push(json!(
                {"destination": "/tmp/sock", "type": "bind", "source": dir, "options": ["bind", "ro"]}
            ));
        });
        class6_bundle(m, &b, "unix: error 13\n");
        drop(_daemon);
    });
    if is_root() {
        // Root engine mode: a bundle without a user namespace, to which
        // buildcell (host root, profile build) adds one.
        // Its binds are idmapped (host root shows as container root), so a
        // root-only socket under a bind would be reachable, as for a step
        // as host root: only `mounts.never` protects there (README); the
        // network and abstract sockets are checked here.
        let script = format!("{links}; {PROBE} tcp {addr}; {PROBE} unix-abstract {name}; true");
        let b = root_engine_bundle("esc6-root-engine", &["sh", "-c", &script], |_| {});
        class6_bundle(Mode::Root, &b, "");
    }
    drop(tcp);
}

/// The bundle half of class 6.
fn class6_bundle(m: Mode, b: &Path, unix: &str) {
    let out = ok(rt(m, b, None, &["run", "n1"]));
    assert_eq!(
        out,
        format!("lo\ntcp: error 111\nunix-abstract: error 111\n{unix}")
    );
    let config = b.join("config.json");
    let base: Value = serde_json::from_str(&fs::read_to_string(&config).unwrap()).unwrap();
    let mut c = base.clone();
    c["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .retain(|n| n["type"] != "network");
    // Sources must exist (docker's socket does not, on a test host): the
    // trees that hold the daemons' sockets, and buildcell's own state.
    for src in ["/run", "/var/run", "/run/buildcell"] {
        c["mounts"].as_array_mut().unwrap().push(json!(
            {"destination": format!("/h{}", src.replace('/', "-")), "type": "bind", "source": src, "options": ["bind"]}
        ));
    }
    fs::write(&config, c.to_string()).unwrap();
    let r = rt(m, b, None, &["run", "n2"]);
    fs::write(&config, base.to_string()).unwrap();
    assert_refused(&r, 1, "profile build refuses this bundle (4 violations)");
    for want in [
        "no network namespace, so the host's network would be shared",
        "bind of /run exposes /run/docker.sock, which profile build never allows",
        "bind of /run/buildcell exposes /run/buildcell",
    ] {
        assert!(r.stderr.contains(want), "{want}: {r:?}");
    }
}

// ---------- 7. the audit supervisor, and the dangerous system calls ----------

/// The calls `build`'s seccomp filter must refuse, each with harmless
/// arguments, and what the kernel itself answers without the filter (as
/// container root without CAP_SYS_ADMIN): the control shows the filter is
/// what refuses each one.
const DANGEROUS: [(&str, &str); 11] = [
    ("io_uring_setup", "error 14"),
    ("userfaultfd", "ok"),
    ("perf_event_open", "error 14"),
    ("bpf", "error 22"),
    ("keyctl", "error 95"),
    ("add_key", "error 14"),
    ("open_tree", "ok"),
    ("mount_setattr", "error 22"),
    ("ptrace", "error 3"),
    ("process_vm_readv", "ok"),
    // Last: it moves the probe into a new user namespace.
    ("unshare-user", "ok"),
];

/// The new mount API needs CAP_SYS_ADMIN where the mount namespace belongs:
/// tried from a nested user and mount namespace, where only the filter is
/// left to refuse it.
const MOUNT_API: [(&str, &str); 4] = [
    ("unshare-user-mount", "ok"),
    ("fsopen", "ok"),
    ("fsmount", "error 9"),
    ("move_mount", "error 2"),
];

/// The probe's `syscall` lines expected under `build` (`refused`) or
/// without a seccomp filter.
fn syscall_lines(refused: bool) -> (Vec<String>, String) {
    let names: Vec<String> = DANGEROUS.iter().map(|(n, _)| n.to_string()).collect();
    let mut want = String::new();
    for (n, r) in DANGEROUS {
        want += &format!("{n}: {}\n", if refused { "error 1" } else { r });
    }
    for (n, r) in MOUNT_API {
        want += &format!("{n}: {}\n", if refused { "error 1" } else { r });
    }
    (names, want)
}

/// The probe command lines that print [`syscall_lines`].
fn syscall_script(p: &str) -> String {
    let (names, _) = syscall_lines(true);
    let mount: Vec<&str> = MOUNT_API.iter().skip(1).map(|(n, _)| *n).collect();
    format!(
        "{p} syscall {}; {p} syscall --in-userns {}; true",
        names.join(" "),
        mount.join(" ")
    )
}

/// Taking over the audit supervisor from inside (signals, ptrace,
/// process_vm_readv, /proc/PID/mem), and the system calls that widen the
/// kernel's attack surface or regain capabilities against Landlock:
/// io_uring_setup, userfaultfd, perf_event_open, bpf, keyctl, add_key, the
/// new mount API, unshare(CLONE_NEWUSER).
///
/// What protects: the supervisor (buildcell itself for a step and `run`,
/// the detached one of `create`) is outside the sandbox's pid namespace:
/// its pid means nothing inside (ESRCH, no /proc entry). ptrace and
/// process_vm_readv, and every dangerous call, are refused by `build`'s
/// seccomp filter (EPERM) before the kernel looks at their arguments: the
/// control under `no-seccomp` gets the kernel's own answers.
#[test]
fn class7_the_audit_supervisor_and_dangerous_syscalls_are_out_of_reach() {
    each_mode(|m| {
        // The step's supervisor is buildcell itself: its pid is written
        // into the working directory once known.
        let d = workdir(m, "esc7-step");
        let pidfile = d.join("sup.pid");
        let script = format!("{} reach @{}", probe(), pidfile.display());
        let child = KillOnDrop(
            command(m, &d, &["step", "--", "sh", "-c", &script], &[])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let sup = buildcell_pid(&child.0).as_raw();
        fs::write(&pidfile, sup.to_string()).unwrap();
        let out = finish(child_output(child));
        assert_eq!(out.stdout, REACH_NOTHING, "{out:?}");
        let (_, refused) = syscall_lines(true);
        let (_, kernel) = syscall_lines(false);
        let out = ok(sh(m, &d, &syscall_script(&probe())));
        assert_eq!(out, refused);
        let out = ok(run(
            m,
            &d,
            &[
                "--profile",
                "no-seccomp",
                "step",
                "--",
                "sh",
                "-c",
                &syscall_script(&probe()),
            ],
        ));
        assert_eq!(out, kernel, "the control");

        let b = probe_bundle(m, "esc7", &["sh", "-c", &syscall_script(PROBE)], |_| {});
        class7_bundle(m, &b);
    });
    if is_root() {
        // Root engine mode: a bundle without a user namespace, to which
        // buildcell (host root, profile build) adds one.
        let b = root_engine_bundle(
            "esc7-root-engine",
            &["sh", "-c", &syscall_script(PROBE)],
            |_| {},
        );
        class7_bundle(Mode::Root, &b);
    }
}

/// What `probe reach SUPERVISOR` prints inside: nothing of it is there.
const REACH_NOTHING: &str = "kill: error 3\npidfd_open: error 3\nptrace: error 1\n\
    process_vm_readv: error 1\n/proc/stat: error 2\n/proc/mem: error 2\n";

/// Wait for a child's output (the `KillOnDrop` disarmed).
fn child_output(mut child: KillOnDrop) -> std::process::Output {
    let mut stdout = Vec::new();
    if let Some(mut out) = child.0.stdout.take() {
        std::io::Read::read_to_end(&mut out, &mut stdout).unwrap();
    }
    let status = child.0.wait().unwrap();
    std::process::Output {
        status,
        stdout,
        stderr: Vec::new(),
    }
}

/// The bundle half of class 7: the bundle's process (the config's args are
/// the syscall script), then an exec'd one against the detached supervisor.
fn class7_bundle(m: Mode, b: &Path) {
    let (_, refused) = syscall_lines(true);
    let out = ok(rt(m, b, None, &["run", "v1"]));
    assert_eq!(out, refused);
    let config = b.join("config.json");
    let base = fs::read_to_string(&config).unwrap();
    let mut c: Value = serde_json::from_str(&base).unwrap();
    c["process"]["args"] = json!(["sleep", "30"]);
    fs::write(&config, c.to_string()).unwrap();
    create(m, b, None, "v2");
    let _c = Container(m, b, "v2");
    fs::write(&config, base).unwrap();
    ok(rt(m, b, None, &["start", "v2"]));
    let st = saved(b, "v2");
    let sup = st["supervisor_pid"].as_i64().unwrap();
    let init = st["oci"]["pid"].as_i64().unwrap();
    // From the host: the supervisor is not in the container's pid
    // namespace.
    let ns = |pid: i64| fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap();
    assert_ne!(ns(sup), ns(init));
    let r = rt(
        m,
        b,
        None,
        &["exec", "v2", PROBE, "reach", &sup.to_string()],
    );
    assert_eq!(r.stdout, REACH_NOTHING, "{r:?}");
    let r = rt(
        m,
        b,
        None,
        &["exec", "v2", "sh", "-c", &syscall_script(PROBE)],
    );
    assert_eq!(r.stdout, refused, "{r:?}");
    assert!(alive(sup) && alive(init));
    ok(rt(m, b, None, &["delete", "--force", "v2"]));
}

// ---------- 8. execs that try to escape the audit log ----------

/// A build step making its own execs unaudited: `execveat` of a memfd
/// (fexecve), a program run through the dynamic loader (ld.so maps it, no
/// exec of its own), an exec from a second thread, and execs after the
/// audit supervisor is killed. Each is recorded or refused, never run
/// unrecorded: every line an exec'd `/bin/echo` printed has its record.
///
/// What protects: the exec-audit seccomp filter notifies every
/// execve/execveat of every thread (inherited, and it cannot be removed);
/// the record is written at the exec stop, before the program's first
/// instruction; the loader is itself an exec, recorded with the program in
/// its argv; when the supervisor dies the sandbox dies with it (a step's
/// pid 1 has PDEATHSIG; a bundle's init is traced with PTRACE_O_EXITKILL)
/// and a notification nobody answers fails the exec.
#[test]
fn class8_no_exec_escapes_the_audit_log() {
    const LDSO: &str = "/lib64/ld-linux-x86-64.so.2";
    const LOOP: &str = "i=0; while :; do i=$((i+1)); /bin/echo exec-$i; done";
    each_mode(|m| {
        let d = workdir(m, "esc8-step");
        let log = log_path(m, "esc8");
        let p = probe();
        let script = format!(
            "{p} memfd-exec /bin/echo via-memfd; {LDSO} /bin/echo via-ldso; {p} thread-exec /bin/echo via-thread; true"
        );
        let r = audited(m, &d, &log, &["--", "sh", "-c", &script]);
        assert_eq!(r.stdout, "via-memfd\nvia-ldso\nvia-thread\n", "{r:?}");
        let x = execs(&log);
        assert_one_memfd_exec(&x, &["/bin/echo", "via-memfd"]);
        assert_eq!(ran(&x, &[LDSO, "/bin/echo", "via-ldso"]), 1, "{x:?}");
        assert_eq!(ran(&x, &["/bin/echo", "via-thread"]), 1, "{x:?}");

        // The supervisor (buildcell) killed while the step execs in a loop.
        let log = log_path(m, "esc8-kill");
        let args = [
            "step",
            "--audit-log",
            log.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            LOOP,
        ];
        let mut child = KillOnDrop(
            command(m, &d, &args, &[])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let mut out = BufReader::new(child.0.stdout.take().unwrap());
        let mut printed = String::new();
        while printed.lines().count() < 50 {
            assert!(out.read_line(&mut printed).unwrap() > 0, "{printed}");
        }
        let sup = buildcell_pid(&child.0);
        nix::sys::signal::kill(sup, nix::sys::signal::Signal::SIGKILL).unwrap();
        // End of file: every process of the sandbox is gone.
        std::io::Read::read_to_string(&mut out, &mut printed).unwrap();
        let _ = child.0.wait();
        every_exec_recorded(&printed, &log);

        let b = probe_bundle(m, "esc8", &["sh", "-c", LOOP], |_| {});
        class8_bundle(m, &b);
    });
    if is_root() {
        // Root engine mode: a bundle without a user namespace, to which
        // buildcell (host root, profile build) adds one.
        let b = root_engine_bundle("esc8-root-engine", &["sh", "-c", LOOP], |_| {});
        class8_bundle(Mode::Root, &b);
    }
}

/// Every `exec-N` line in `printed` (each from an exec'd /bin/echo) has its
/// record in `log` (a log cut off by a kill: whole lines only).
fn every_exec_recorded(printed: &str, log: &Path) {
    use buildcell::audit::record::{Body, Record};
    let recorded: std::collections::BTreeSet<String> = fs::read_to_string(log)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Record>(l).ok())
        .filter_map(|r| match r.body {
            Body::Exec(e) if e.result == "ok" && e.argv.len() == 2 && e.argv[0] == "/bin/echo" => {
                Some(e.argv[1].clone())
            }
            _ => None,
        })
        .collect();
    let lines: Vec<&str> = printed.lines().filter(|l| l.starts_with("exec-")).collect();
    assert!(lines.len() >= 20, "{printed}");
    let missing: Vec<&&str> = lines.iter().filter(|l| !recorded.contains(**l)).collect();
    assert!(missing.is_empty(), "ran without a record: {missing:?}");
}

/// The bundle half of class 8: the exec tricks through `exec`, then the
/// detached supervisor killed while the init execs in a loop.
fn class8_bundle(m: Mode, b: &Path) {
    let out = create(m, b, None, "a1");
    let _c = Container(m, b, "a1");
    let log = PathBuf::from(saved(b, "a1")["audit_log"].as_str().unwrap());
    ok(rt(m, b, None, &["start", "a1"]));
    let r = rt(
        m,
        b,
        None,
        &["exec", "a1", PROBE, "memfd-exec", "/bin/echo", "via-memfd"],
    );
    assert_eq!(r.stdout, "via-memfd\n", "{r:?}");
    let r = rt(
        m,
        b,
        None,
        &["exec", "a1", "/lib64/ld-linux-x86-64.so.2", PROBE, "ids"],
    );
    assert_eq!(r.stdout, "uid=0 euid=0 gid=0 egid=0\n", "{r:?}");
    let r = rt(
        m,
        b,
        None,
        &[
            "exec",
            "a1",
            PROBE,
            "thread-exec",
            "/bin/echo",
            "via-thread",
        ],
    );
    assert_eq!(r.stdout, "via-thread\n", "{r:?}");
    assert!(wait_until(10, || fs::read_to_string(&out)
        .unwrap()
        .lines()
        .count()
        >= 50));
    let st = saved(b, "a1");
    let (sup, init) = (
        st["supervisor_pid"].as_i64().unwrap(),
        st["oci"]["pid"].as_i64().unwrap(),
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sup as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(
        wait_until(10, || !alive(init)),
        "the container outlived its supervisor"
    );
    wait_stopped(m, b, "a1");
    let x = execs_lenient(&log);
    assert_one_memfd_exec(&x, &["/bin/echo", "via-memfd"]);
    assert_eq!(
        ran(&x, &["/lib64/ld-linux-x86-64.so.2", PROBE, "ids"]),
        1,
        "{x:?}"
    );
    assert_eq!(ran(&x, &["/bin/echo", "via-thread"]), 1, "{x:?}");
    every_exec_recorded(&fs::read_to_string(&out).unwrap(), &log);
    ok(rt(m, b, None, &["delete", "--force", "a1"]));
}

/// The exec records of a log that may be cut off.
fn execs_lenient(log: &Path) -> Vec<buildcell::audit::record::Exec> {
    use buildcell::audit::record::{Body, Record};
    fs::read_to_string(log)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Record>(l).ok())
        .filter_map(|r| match r.body {
            Body::Exec(e) => Some(e),
            _ => None,
        })
        .collect()
}
