//! Looks-like-root, with the real binary as host root: a bundle without a
//! user namespace (what podman, buildah, containerd and dockerd send when
//! they run as root) gets one, with container ids 0..65535 mapped to a
//! host range reserved for that container; its rootfs and binds are
//! idmapped, so the image looks root-owned inside and what it writes is
//! stored as host root. Root only: as a regular user there is nothing to
//! add (a rootless bundle already runs in the caller's user namespace).

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::*;
use serde_json::{json, Value};

const ANNOTATION: &str = "org.buildcell.userns";
const RANGES: &str = "/run/buildcell/ranges";

fn root_only() -> bool {
    harness();
    if !is_root() {
        skip("looks-like-root is about buildcell running as host root");
        return false;
    }
    true
}

/// A busybox rootfs of its own for test `name`, owned by host root, with
/// `/home/user` owned by 1000:1000.
fn rootfs(name: &str) -> PathBuf {
    let dir = harness().dir.join(format!("llr-rootfs-{name}"));
    let _ = fs::remove_dir_all(&dir);
    make_busybox_rootfs(
        &dir,
        &["proc", "dev", "sys", "tmp", "etc", "root", "home/user"],
        &[
            "sh", "echo", "cat", "id", "sleep", "ls", "stat", "touch", "mkdir", "rm", "chown",
            "ps", "grep", "head", "wc", "true", "hostname",
        ],
    );
    std::os::unix::fs::chown(dir.join("home/user"), Some(1000), Some(1000)).unwrap();
    dir
}

/// A bundle for test `name`: `buildcell spec`'s config without its user
/// namespace and maps (as a root engine sends it), `args`, then `edit`.
fn bundle(name: &str, root: &Path, args: &[&str], edit: impl FnOnce(&mut Value)) -> PathBuf {
    let dir = workdir(Mode::Root, &format!("llr-{name}"));
    ok(run(Mode::Root, &dir, &["spec"]));
    let path = dir.join("config.json");
    let mut c: Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    c["root"]["path"] = json!(root);
    c["process"]["args"] = json!(args);
    // The capabilities a root engine gives (podman's default set, less
    // mknod and raw sockets).
    let caps = json!([
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FOWNER",
        "CAP_FSETID",
        "CAP_KILL",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETPCAP",
        "CAP_NET_BIND_SERVICE",
        "CAP_SYS_CHROOT",
        "CAP_AUDIT_WRITE"
    ]);
    for set in ["bounding", "effective", "permitted"] {
        c["process"]["capabilities"][set] = caps.clone();
    }
    without_user_namespace(&mut c);
    edit(&mut c);
    fs::write(&path, serde_json::to_string_pretty(&c).unwrap()).unwrap();
    dir
}

/// `buildcell --root B/state ARGS` with `env`; stdout and stderr through
/// files (a created container keeps its create's stdio open).
fn rt_env(b: &Path, env: &[(&str, &str)], args: &[&str]) -> Run {
    rt_files(b, env, args).0
}

/// [`rt_env`], and the file its stdout went to (a created container's
/// output lands there too).
fn rt_files(b: &Path, env: &[(&str, &str)], args: &[&str]) -> (Run, PathBuf) {
    let root = b.join("state").display().to_string();
    let mut all = vec!["--root", root.as_str()];
    // engine-compat (looks-like-root as under build, but binds from
    // /var/tmp, joined pid namespaces and the host's network allowed),
    // unless the test names a profile.
    if !args.contains(&"--profile") {
        all.extend_from_slice(&["--profile", "engine-compat"]);
    }
    all.extend_from_slice(args);
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let out = b.join(format!(".rt-{n}-stdout"));
    let err = b.join(format!(".rt-{n}-stderr"));
    let status = command(Mode::Root, b, &all, env)
        .stdin(std::process::Stdio::null())
        .stdout(fs::File::create(&out).unwrap())
        .stderr(fs::File::create(&err).unwrap())
        .status()
        .expect("start buildcell");
    let run = Run {
        code: status.code().unwrap_or(-1),
        stdout: fs::read_to_string(&out).unwrap(),
        stderr: fs::read_to_string(&err).unwrap(),
    };
    (run, out)
}

fn rt(b: &Path, args: &[&str]) -> Run {
    rt_env(b, &[], args)
}

fn state(b: &Path, id: &str) -> Value {
    serde_json::from_str(&ok(rt(b, &["state", id]))).unwrap()
}

/// The host uid start of the range the container got, from `state`.
fn added_start(s: &Value) -> u32 {
    let a = s["annotations"][ANNOTATION]
        .as_str()
        .unwrap_or_else(|| panic!("no {ANNOTATION} annotation: {s}"));
    let f: Vec<&str> = a.split_whitespace().collect();
    assert_eq!(f[..2], ["added:", "0"], "{a}");
    assert_eq!(f[3], "65536", "{a}");
    f[2].parse().unwrap()
}

/// The four uids (real, effective, saved, fs) of a host process.
fn host_uids(pid: i64) -> Vec<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .unwrap()
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect()
}

fn comm(pid: i64) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn reservation(start: u32) -> PathBuf {
    Path::new(RANGES).join(format!("u{start}-g{start}"))
}

/// Whether the range starting at `start` is reserved for the container
/// `id` of bundle `b` (another test may take it as soon as it is free).
fn held_by(start: u32, b: &Path, id: &str) -> bool {
    fs::read_to_string(reservation(start))
        .is_ok_and(|t| t.contains(&format!("\"{}\"", b.join("state").join(id).display())))
}

#[test]
fn a_root_bundle_runs_as_an_unprivileged_range_that_looks_like_root() {
    if !root_only() {
        return;
    }
    let rootfs = rootfs("main");
    let out = workdir(Mode::Root, "llr-volume");
    fs::set_permissions(&out, fs::Permissions::from_mode(0o755)).unwrap();
    let b = bundle("main", &rootfs, &["sleep", "60"], |c| {
        c["mounts"].as_array_mut().unwrap().push(json!(
            {"destination": "/out", "type": "bind", "source": out, "options": ["rbind", "rw"]}));
        c["linux"]["sysctl"] = json!({"net.ipv4.ping_group_range": "0 2147483647"});
    });
    ok(rt(&b, &["create", "llr-main"]));
    let s = state(&b, "llr-main");
    let start = added_start(&s);
    let pid = s["pid"].as_i64().unwrap();
    assert!(held_by(start, &b, "llr-main"), "no reservation for {start}");
    ok(rt(&b, &["start", "llr-main"]));
    assert!(wait_until(5, || comm(pid) == "sleep"));
    // From the host: the container's processes run as the range's first
    // uid, never as host root.
    assert_eq!(host_uids(pid), vec![start; 4]);
    let map = fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap();
    assert_eq!(
        map.split_whitespace().collect::<Vec<_>>(),
        ["0", &start.to_string(), "65536"]
    );
    // Inside: root, the image's owners as they are on disk.
    let script = "id -u; stat -c '%u:%g' / /bin/busybox /home/user; \
                  touch /out/by-root && mkdir /out/dir && chown 1000:1000 /out/dir; \
                  touch /written-to-rootfs 2>&1 | wc -l; \
                  cat /proc/sys/net/ipv4/ping_group_range";
    let got = ok(rt(&b, &["exec", "llr-main", "sh", "-c", script]));
    let lines: Vec<&str> = got.lines().collect();
    assert_eq!(lines[..5], ["0", "0:0", "0:0", "1000:1000", "1"], "{got}");
    // docker's "0 2147483647" means every group: clamped to the mapped ones.
    assert_eq!(
        lines[5].split_whitespace().collect::<Vec<_>>(),
        ["0", "65535"],
        "{got}"
    );
    // What it writes through the idmapped bind belongs to host root (and
    // to host 1000 where it chowned to 1000), as the engine expects.
    let md = fs::metadata(out.join("by-root")).unwrap();
    assert_eq!((md.uid(), md.gid()), (0, 0));
    let md = fs::metadata(out.join("dir")).unwrap();
    assert_eq!((md.uid(), md.gid()), (1000, 1000));
    // The audit log's start record holds the added maps.
    let log = newest_log(Mode::Root, "llr-main");
    let first: Value =
        serde_json::from_str(fs::read_to_string(&log).unwrap().lines().next().unwrap()).unwrap();
    assert_eq!(first["uid_map"], format!("0 {start} 65536"), "{first}");
    assert_eq!(first["gid_map"], format!("0 {start} 65536"), "{first}");
    assert_eq!(
        first["annotations"][ANNOTATION],
        format!("added: 0 {start} 65536")
    );
    // delete releases the range.
    ok(rt(&b, &["delete", "--force", "llr-main"]));
    assert!(
        !held_by(start, &b, "llr-main"),
        "range {start} not released"
    );
}

#[test]
fn ranges_never_overlap_are_released_reclaimed_and_an_empty_pool_is_one_line() {
    if !root_only() {
        return;
    }
    // A pool of two ranges of its own, far from the default one (and from
    // what an interrupted earlier run may still hold).
    let base = 3_000_000_000 + (std::process::id() % 8192) * 131_072;
    let pool_text = format!("{base}:131072");
    let pool = [("BUILDCELL_ID_POOL", pool_text.as_str())];
    let rootfs = rootfs("pool");
    let b = bundle("pool", &rootfs, &["sleep", "60"], |_| {});
    ok(rt_env(&b, &pool, &["create", "p1"]));
    ok(rt_env(&b, &pool, &["create", "p2"]));
    let (s1, s2) = (added_start(&state(&b, "p1")), added_start(&state(&b, "p2")));
    assert!(s1.abs_diff(s2) >= 65536, "overlapping ranges {s1} and {s2}");
    for s in [s1, s2] {
        assert!((base..base + 131_072).contains(&s), "{s}");
    }
    // Exhausted: one line naming the pool and what to do; nothing created.
    let r = rt_env(&b, &pool, &["create", "p3"]);
    assert_refused(&r, 1, "no free id range");
    assert!(
        r.stderr.contains(&format!("BUILDCELL_ID_POOL={pool_text}")),
        "{r:?}"
    );
    assert!(
        r.stderr.contains("delete containers that are done"),
        "{r:?}"
    );
    let mut left = entries(&b);
    left.sort();
    assert_eq!(left, ["p1", "p2"]);
    // delete releases: p3 gets p1's range.
    ok(rt_env(&b, &pool, &["delete", "--force", "p1"]));
    ok(rt_env(&b, &pool, &["create", "p3"]));
    assert_eq!(added_start(&state(&b, "p3")), s1);
    // A range whose container's state is gone (a crashed runtime, a state
    // directory removed by hand) is taken back.
    let p2_pid = state(&b, "p2")["pid"].as_i64().unwrap();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(p2_pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    fs::remove_dir_all(b.join("state/p2")).unwrap();
    assert!(reservation(s2).exists());
    ok(rt_env(&b, &pool, &["create", "p4"]));
    assert_eq!(added_start(&state(&b, "p4")), s2);
    for id in ["p3", "p4"] {
        ok(rt_env(&b, &pool, &["delete", "--force", id]));
    }
    assert!(!reservation(s1).exists() && !reservation(s2).exists());
    // p2's cgroups went with nobody's state (`<this process's cgroup>/p2`
    // in each hierarchy): removed here, so that no later container called
    // p2 finds them.
    fn remove_named(dir: &Path, name: &str, depth: u32) {
        for e in fs::read_dir(dir).into_iter().flatten().flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let path = e.path();
            if e.file_name() == name {
                for _ in 0..100 {
                    if fs::remove_dir(&path).is_ok() || !path.exists() {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            } else if depth > 0 {
                remove_named(&path, name, depth - 1);
            }
        }
    }
    remove_named(Path::new("/sys/fs/cgroup"), "p2", 4);
}

#[test]
fn require_refuses_and_a_profile_without_user_runs_as_host_root() {
    if !root_only() {
        return;
    }
    let rootfs = rootfs("policy");
    let b = bundle(
        "policy",
        &rootfs,
        &[
            "sh",
            "-c",
            "grep ^Uid /proc/self/status; cat /proc/self/uid_map",
        ],
        |_| {},
    );
    let r = rt(&b, &["--profile", "userns-require", "run", "r1"]);
    assert_refused(&r, 1, "user_namespace = \"require\"");
    assert!(entries(&b).is_empty());
    let out = ok(rt(&b, &["--profile", "no-userns", "run", "r2"]));
    assert!(out.starts_with("Uid:\t0\t0\t0\t0\n"), "{out}");
    assert!(out.contains("4294967295"), "{out}");
    // A bundle with its own user namespace keeps it under every policy.
    let own = workdir(Mode::Root, "llr-policy-own");
    ok(run(Mode::Root, &own, &["spec"]));
    let path = own.join("config.json");
    let mut c: Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    c["root"]["path"] = json!(rootfs);
    c["process"]["args"] = json!(["cat", "/proc/self/uid_map"]);
    c["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 200000, "size": 65536}]);
    // `buildcell spec` as host root writes no user namespace.
    c["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "user"}));
    c["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 200000, "size": 65536}]);
    fs::write(&path, c.to_string()).unwrap();
    let out = ok(rt(&own, &["--profile", "userns-require", "run", "r4"]));
    assert!(out.contains("200000"), "{out}");
}

#[test]
fn a_netns_joined_by_path_and_the_host_pid_namespace_still_work() {
    if !root_only() {
        return;
    }
    // A network namespace pinned on a file, as podman --network ns:PATH
    // and CNI use them: owned by the initial user namespace, so the
    // container cannot mount its sysfs; the runtime does.
    let dir = workdir(Mode::Root, "llr-netns");
    let ns = dir.join("netns");
    fs::write(&ns, "").unwrap();
    let made = std::process::Command::new("unshare")
        .arg(format!("--net={}", ns.display()))
        .arg("true")
        .status()
        .unwrap();
    assert!(made.success());
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let _u = Unmount(ns.clone());
    let rootfs = rootfs("netns");
    // No pid namespace either (docker --pid host): proc is the host's pid
    // namespace, made by the runtime.
    let script = "ls /sys/class/net; ps | grep -c . ; id -u; sleep 30";
    let b = bundle("netns", &rootfs, &["sh", "-c", script], |c| {
        let list = c["linux"]["namespaces"].as_array_mut().unwrap();
        list.retain(|n| n["type"] != "network" && n["type"] != "pid");
        list.push(json!({"type": "network", "path": ns}));
    });
    let (r, output) = rt_files(&b, &[], &["create", "n1"]);
    ok(r);
    let s = state(&b, "n1");
    let (pid, start) = (s["pid"].as_i64().unwrap(), added_start(&s));
    ok(rt(&b, &["start", "n1"]));
    assert!(wait_until(5, || comm(pid) == "sleep"));
    assert_eq!(host_uids(pid), vec![start; 4]);
    let out = fs::read_to_string(&output).unwrap_or_default();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.first(),
        Some(&"lo"),
        "only the joined netns's lo: {out}"
    );
    let procs: usize = lines[1].parse().unwrap();
    assert!(
        procs > 5,
        "the host's pid namespace shows its processes: {out}"
    );
    assert_eq!(lines[2], "0", "{out}");
    ok(rt(&b, &["delete", "--force", "n1"]));
}

#[test]
fn pod_containers_join_their_sandbox_pid_ipc_uts_and_net_namespaces() {
    if !root_only() {
        return;
    }
    // As the CRI plugin runs a pod: a sandbox with its own pid and IPC
    // namespaces (host network), and a container joining them by path.
    // Those namespaces belong to the sandbox's added user namespace, not
    // to the container's: proc and mqueue of *them* are made by the
    // runtime, and exec enters the user namespace last.
    let rootfs = rootfs("pod");
    let sb = bundle("pod-sandbox", &rootfs, &["sleep", "60"], |c| {
        c["linux"]["namespaces"] = json!([{"type": "pid"}, {"type": "ipc"}, {"type": "mount"}]);
    });
    ok(rt(&sb, &["create", "sandbox"]));
    ok(rt(&sb, &["start", "sandbox"]));
    let sandbox = state(&sb, "sandbox");
    let pause = sandbox["pid"].as_i64().unwrap();
    let app = bundle(
        "pod-app",
        &rootfs,
        &[
            "sh",
            "-c",
            "ps -o comm | grep -c sleep; ls -d /dev/mqueue; exec sleep 30",
        ],
        |c| {
            let mut list: Vec<Value> = ["pid", "ipc", "uts", "net"]
                .iter()
                .zip(["pid", "ipc", "uts", "network"])
                .map(|(f, t)| json!({"type": t, "path": format!("/proc/{pause}/ns/{f}")}))
                .collect();
            list.push(json!({"type": "mount"}));
            c["linux"]["namespaces"] = json!(list);
            // A pod's /dev/mqueue, as the CRI plugin asks for it.
            assert!(c["mounts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["type"] == "mqueue"));
        },
    );
    let (r, output) = rt_files(&app, &[], &["create", "app"]);
    ok(r);
    let s = state(&app, "app");
    let (pid, start) = (s["pid"].as_i64().unwrap(), added_start(&s));
    assert_ne!(start, added_start(&sandbox));
    ok(rt(&app, &["start", "app"]));
    assert!(wait_until(5, || comm(pid) == "sleep"));
    let out = fs::read_to_string(&output).unwrap_or_default();
    // Its proc is the sandbox's pid namespace: the sandbox's sleep.
    assert_eq!(out, "1\n/dev/mqueue\n", "{out}");
    for ns in ["pid", "ipc", "uts", "net"] {
        assert_eq!(
            fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap(),
            fs::read_link(format!("/proc/{pause}/ns/{ns}")).unwrap()
        );
    }
    let got = ok(rt(
        &app,
        &[
            "exec",
            "app",
            "sh",
            "-c",
            "id -u; ps -o comm | grep -c sleep",
        ],
    ));
    assert_eq!(got, "0\n2\n");
    assert_eq!(host_uids(pid), vec![start; 4]);
    ok(rt(&app, &["delete", "--force", "app"]));
    ok(rt(&sb, &["delete", "--force", "sandbox"]));
}

#[test]
fn an_overlay_rootfs_is_made_again_on_idmapped_layers() {
    if !root_only() {
        return;
    }
    // What every engine sends: an overlayfs rootfs, which cannot itself
    // be idmapped. Mounted here as containers/storage does (volatile:
    // a second mount may not share its work directory).
    let lower = rootfs("overlay");
    fs::write(lower.join("etc/from-image"), "image\n").unwrap();
    let d = workdir(Mode::Root, "llr-overlay-layers");
    let merged = mount_overlay(&d, &lower);
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let _u = Unmount(merged.clone());
    let script = "stat -c '%u:%g' /etc/from-image /home/user; echo new > /new; \
                  mkdir /newdir && chown 1000:1000 /newdir; rm /etc/from-image; ls /etc";
    let b = bundle("overlay", &merged, &["sh", "-c", script], |c| {
        c["root"]["readonly"] = json!(false);
    });
    let out = ok(rt(&b, &["run", "o1"]));
    assert!(out.starts_with("0:0\n1000:1000\n"), "{out}");
    assert!(!out.contains("from-image"), "{out}");
    // In the engine's upper layer, with the ids the engine expects.
    let md = |p: &str| fs::symlink_metadata(d.join("diff").join(p)).unwrap();
    assert_eq!((md("new").uid(), md("new").gid()), (0, 0));
    assert_eq!((md("newdir").uid(), md("newdir").gid()), (1000, 1000));
    // The removed image file is a whiteout (0/0 character device).
    use std::os::unix::fs::FileTypeExt;
    assert!(md("etc/from-image").file_type().is_char_device());
    // The engine's own mount shows the same, and the container's work
    // directory is gone with the container.
    assert_eq!(fs::read_to_string(merged.join("new")).unwrap(), "new\n");
    assert!(!merged.join("etc/from-image").exists());
    let left: Vec<_> = fs::read_dir(d.join("work"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().starts_with("buildcell"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_rootfs_that_cannot_be_idmapped_is_one_line_and_leaves_nothing() {
    if !root_only() {
        return;
    }
    // ramfs has no idmapped mounts.
    let src = rootfs("ramfs-src");
    let dir = workdir(Mode::Root, "llr-ramfs");
    nix::mount::mount(
        Some("ramfs"),
        &dir,
        Some("ramfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let _u = Unmount(dir.clone());
    let status = std::process::Command::new("cp")
        .args([
            "-a",
            &format!("{}/.", src.display()),
            &dir.display().to_string(),
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let b = bundle("ramfs", &dir, &["true"], |_| {});
    let before: Vec<_> = fs::read_dir(RANGES)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    let r = rt(&b, &["create", "f1"]);
    assert_refused(&r, 1, "ramfs");
    assert!(r.stderr.contains("run the engine rootless"), "{r:?}");
    assert!(r.stderr.contains("user_namespace = \"require\""), "{r:?}");
    assert!(entries(&b).is_empty());
    // Its range was given back (other tests may reserve meanwhile: only
    // none of ours is new).
    let after: Vec<_> = fs::read_dir(RANGES)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    for f in &after {
        if before.contains(f) {
            continue;
        }
        let text = fs::read_to_string(Path::new(RANGES).join(f)).unwrap_or_default();
        assert!(!text.contains("llr-ramfs"), "range kept: {text}");
    }
}

#[test]
fn a_setuid_root_binary_inside_gains_no_host_privilege() {
    if !root_only() {
        return;
    }
    // A setuid-root binary (the test probe, with the libraries it needs)
    // on a bind without nosuid, run by uid 1000 with no_new_privs off: it
    // becomes root of the container, which on the host is the range's
    // first uid.
    let rootfs = rootfs("suid");
    let probe = &harness().probe;
    let ldd = std::process::Command::new("ldd")
        .arg(probe)
        .output()
        .unwrap();
    for lib in String::from_utf8_lossy(&ldd.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
    {
        let to = rootfs.join(lib.trim_start_matches('/'));
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        fs::copy(lib, &to).unwrap();
    }
    let tools = workdir(Mode::Root, "llr-suid-tools");
    fs::copy(probe, tools.join("probe")).unwrap();
    fs::set_permissions(tools.join("probe"), fs::Permissions::from_mode(0o4755)).unwrap();
    let b = bundle("suid", &rootfs, &["/tools/probe", "sleep", "30"], |c| {
        c["mounts"].as_array_mut().unwrap().push(json!(
            {"destination": "/tools", "type": "bind", "source": tools, "options": ["rbind", "ro"]}));
        c["process"]["user"] = json!({"uid": 1000, "gid": 1000});
        c["process"]["noNewPrivileges"] = json!(false);
    });
    // A profile that neither forces no_new_privs nor stacks seccomp
    // (which sets it too): the setuid bit takes effect, as in the worst
    // case, and still gains nothing on the host.
    ok(rt(&b, &["--profile", "setuid-allowed", "create", "s1"]));
    let s = state(&b, "s1");
    let (pid, start) = (s["pid"].as_i64().unwrap(), added_start(&s));
    ok(rt(&b, &["start", "s1"]));
    assert!(wait_until(5, || comm(pid) == "probe"));
    // Real: the container's 1000; effective, saved, fs: the container's
    // root (the setuid bit worked), which is the range's first uid.
    assert_eq!(host_uids(pid), vec![start + 1000, start, start, start]);
    ok(rt(&b, &["delete", "--force", "s1"]));
}
