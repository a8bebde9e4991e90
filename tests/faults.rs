//! Faults: buildcell killed (SIGKILL) at every fault point of `create`,
//! `start`, `exec` and `delete` (`buildcell::fault::POINTS`, armed through
//! the debug build's switch), the audit log's file system full, the audit
//! supervisor killed, and a host "reboot" (every process killed, the state
//! tmpfs gone). After each, `delete --force` must succeed and leave
//! nothing: state directory, cgroups in every hierarchy, mounts, processes,
//! the supervisor, id range reservations. README.md, "Faults".

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use buildcell::fault::{Victim, ADDED_USERNS_ONLY, POINTS};
use common::*;
use serde_json::{json, Value};

/// How a container is made: the three ways the runtime sets one up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    /// Host root, a root engine's bundle without a user namespace:
    /// buildcell adds one (reserved id range, idmapped rootfs).
    LooksLikeRoot,
    /// The same on an overlayfs rootfs (what every engine sends): buildcell
    /// mounts the overlay again on idmapped layers, with a work directory
    /// of its own in the engine's (`buildcell-UID-GID`).
    LooksLikeRootOverlay,
    /// Host root, a bundle with a user namespace of its own.
    RootOwnNs,
    /// The unprivileged test user (rootless).
    Rootless,
}

impl Variant {
    fn mode(self) -> Mode {
        match self {
            Variant::Rootless => Mode::User,
            _ => Mode::Root,
        }
    }
    fn tag(self) -> &'static str {
        match self {
            Variant::LooksLikeRoot => "llr",
            Variant::LooksLikeRootOverlay => "ovl",
            Variant::RootOwnNs => "own",
            Variant::Rootless => "usr",
        }
    }
}

/// A bundle running `sleep 1000` for `v`.
fn fault_bundle(v: Variant, name: &str) -> PathBuf {
    let args = ["sleep", "1000"];
    match v {
        Variant::LooksLikeRoot => root_engine_bundle(name, &args, |_| {}),
        Variant::LooksLikeRootOverlay => {
            let merged = overlay_rootfs(name);
            root_engine_bundle(name, &args, |c| c["root"]["path"] = json!(merged))
        }
        _ => pbundle(v.mode(), name, &args, |_| {}),
    }
}

/// An overlayfs over the probe rootfs at `DIR/NAME-ovl/merged`, mounted
/// as containers/storage does (volatile); [`every_point`] unmounts it.
fn overlay_rootfs(name: &str) -> PathBuf {
    mount_overlay(&harness().dir.join(format!("{name}-ovl")), &probe_rootfs())
}

/// buildcell's own overlay work directories (`buildcell-UID-GID`) in the
/// engine's work directory of an overlay rootfs made by [`overlay_rootfs`].
fn overlay_workdirs(rootfs: &Path) -> Vec<String> {
    if !rootfs.ends_with("merged") {
        return Vec::new();
    }
    let work = rootfs.parent().unwrap().join("work");
    fs::read_dir(work)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("buildcell-")
        })
        .map(|p| format!("overlay work directory {}", p.display()))
        .collect()
}

/// Give the bundle's process the marker `FAULT_ID=id` (found in
/// /proc/PID/environ of whatever it leaves running).
fn mark(bundle: &Path, id: &str) {
    let path = bundle.join("config.json");
    let mut c: Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    let env = c["process"]["env"].as_array_mut().unwrap();
    env.retain(|e| !e.as_str().unwrap_or("").starts_with("FAULT_ID="));
    env.push(json!(format!("FAULT_ID={id}")));
    fs::write(&path, serde_json::to_string_pretty(&c).unwrap()).unwrap();
}

fn killed(r: &Run) -> bool {
    // Directly: no exit code (the signal); through runuser: 128 + 9.
    r.code == -1 || r.code == 137
}

/// Host processes whose command line or environment names `id`: the
/// container's (`FAULT_ID=id`), and buildcell's own (its init before it
/// execs, the detached audit supervisor, all forked from `buildcell ...
/// ID`).
fn processes_of(id: &str) -> Vec<String> {
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let pid = e.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) || pid == me {
            continue;
        }
        let read = |f: &str| fs::read(format!("/proc/{pid}/{f}")).unwrap_or_default();
        let has = |data: Vec<u8>| data.split(|b| *b == 0).any(|w| ends_with_id(w, id));
        // A zombie is gone but for its exit status (its parent, the test's
        // runuser or the host's init, reaps it).
        let st = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = st.rfind(')').is_some_and(|i| st[i + 2..].starts_with('Z'));
        if !zombie && (has(read("cmdline")) || has(read("environ"))) {
            let cmd = String::from_utf8_lossy(&read("cmdline")).replace('\0', " ");
            found.push(format!("{pid}: {cmd}"));
        }
    }
    found
}

/// A word that is `id` or `...=id` or ends with `/id`.
fn ends_with_id(word: &[u8], id: &str) -> bool {
    let w = String::from_utf8_lossy(word);
    w == id || w.ends_with(&format!("={id}")) || w.ends_with(&format!("/{id}"))
}

/// Cgroup directories named `id` in every v1 hierarchy and the unified one.
fn cgroups_of(id: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, id: &str, out: &mut Vec<PathBuf>) {
        for e in fs::read_dir(dir).into_iter().flatten().flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let p = e.path();
            if e.file_name() == id {
                out.push(p.clone());
            }
            walk(&p, id, out);
        }
    }
    let mut out = Vec::new();
    for h in fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        // cpu and cpuacct are links to cpu,cpuacct: walk each tree once.
        if h.file_type().is_ok_and(|t| t.is_dir()) {
            walk(&h.path(), id, &mut out);
        }
    }
    out
}

/// Host mounts (mount table of this process and of pid 1) on or under
/// the container's rootfs, naming the container, or of an overlay work
/// directory of buildcell's (`buildcell-UID-GID`).
fn mounts_of(id: &str, rootfs: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for table in ["/proc/self/mountinfo", "/proc/1/mountinfo"] {
        for l in fs::read_to_string(table).unwrap().lines() {
            let f: Vec<&str> = l.split_whitespace().collect();
            let point = Path::new(f[4]);
            let fstype = f.iter().skip_while(|w| **w != "-").nth(1).copied();
            // The engine's own overlay mount (made by the test) is not ours.
            let engines =
                point == rootfs && fstype == Some("overlay") && rootfs.ends_with("merged");
            let workdir = f.iter().any(|w| {
                w.split([',', '/', '=']).any(|n| {
                    let mut p = n.split('-');
                    p.next() == Some("buildcell")
                        && p.next().is_some_and(|x| x.parse::<u32>().is_ok())
                        && p.next().is_some_and(|x| x.parse::<u32>().is_ok())
                        && p.next().is_none()
                })
            });
            if (point.starts_with(rootfs) && !engines) || l.contains(id) || workdir {
                out.push(format!("{table}: {l}"));
            }
        }
    }
    out
}

/// Reservations under /run/buildcell/ranges held for `state_dir`.
fn ranges_of(state_dir: &Path) -> Vec<String> {
    let want = state_dir.display().to_string();
    fs::read_dir("/run/buildcell/ranges")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let text = fs::read_to_string(e.path()).ok()?;
            let v: Value = serde_json::from_str(&text).ok()?;
            (v["dir"].as_str() == Some(want.as_str()))
                .then(|| format!("{}: {text}", e.path().display()))
        })
        .collect()
}

/// Everything the container `id` of `bundle` may have left; empty when
/// nothing is.
fn leftovers(bundle: &Path, id: &str) -> Vec<String> {
    let mut out = Vec::new();
    let state_dir = bundle.join("state").join(id);
    if state_dir.exists() {
        out.push(format!("state directory {}", state_dir.display()));
    }
    out.extend(
        cgroups_of(id)
            .iter()
            .map(|p| format!("cgroup {}", p.display())),
    );
    let c: Value =
        serde_json::from_str(&fs::read_to_string(bundle.join("config.json")).unwrap()).unwrap();
    let rootfs = PathBuf::from(c["root"]["path"].as_str().unwrap());
    out.extend(
        mounts_of(id, &rootfs)
            .into_iter()
            .map(|m| format!("mount {m}")),
    );
    out.extend(overlay_workdirs(&rootfs));
    out.extend(processes_of(id).into_iter().map(|p| format!("process {p}")));
    out.extend(
        ranges_of(&state_dir)
            .into_iter()
            .map(|r| format!("id range {r}")),
    );
    out
}

/// Each point of `POINTS` armed in turn for one variant: the command
/// dies (or fails, when the point is in a process it forked), `delete
/// --force` exits 0, nothing is left. Returns the points run.
fn every_point(v: Variant) -> usize {
    let m = v.mode();
    let b = fault_bundle(v, &format!("faults-{}", v.tag()));
    let _overlay = (v == Variant::LooksLikeRootOverlay)
        .then(|| Unmount(harness().dir.join(format!("faults-{}-ovl/merged", v.tag()))));
    let mut failures = Vec::new();
    for (i, (point, victim)) in POINTS.iter().enumerate() {
        let id = format!("f{i}-{}-{}", v.tag(), point.replace(':', "."));
        mark(&b, &id);
        let bs = b.display().to_string();
        let armed = [("BUILDCELL_FAULT", *point)];
        let (cmd, _) = point.split_once(':').unwrap();
        let create = ["create", "--bundle", bs.as_str(), id.as_str()];
        let r = match cmd {
            "create" | "init" | "supervisor" => rt_env(m, &b, None, &create, &armed),
            _ => {
                ok(rt(m, &b, None, &create));
                let r = match cmd {
                    "start" => rt_env(m, &b, None, &["start", &id], &armed),
                    _ => {
                        ok(rt(m, &b, None, &["start", &id]));
                        match cmd {
                            "exec" | "exec-process" => bc(
                                m,
                                &b,
                                Some(&b.join("state")),
                                "exec",
                                &["exec", &id, "/bin/echo", "exec-ran"],
                                &armed,
                            ),
                            "delete" => rt_env(m, &b, None, &["delete", "--force", &id], &armed),
                            other => panic!("fault point of an unknown command: {other}"),
                        }
                    }
                };
                r
            }
        };
        let added = matches!(v, Variant::LooksLikeRoot | Variant::LooksLikeRootOverlay);
        let reached = added || !ADDED_USERNS_ONLY.contains(point);
        let died_right = match victim {
            // Not on this variant's path: the command runs through.
            _ if !reached => r.code == 0,
            Victim::Runtime => killed(&r),
            // The init, the supervisor or the exec'd process dies: the
            // command fails in one line.
            Victim::Child => r.code != 0 && !killed(&r) && r.stderr.lines().count() == 1,
        };
        if !died_right {
            failures.push(format!("{point}: not the expected death: {r:?}"));
        }
        // What `state` must say now: a half-made or half-deleted container
        // is stopped; the exec fifo counts only while an init waits on it.
        let want: &[&str] = match *point {
            _ if !reached => &["created"],
            "create:saved" | "start:before-fifo" => &["created"],
            "start:after-fifo" => &["running"],
            // A create whose init dies fails and removes what it made.
            "delete:state-removed"
            | "init:mounts-done"
            | "init:before-ready"
            | "supervisor:started" => &["(none)"],
            p if p.starts_with("exec") => &["running"],
            _ => &["stopped"],
        };
        let st = rt(m, &b, None, &["state", &id]);
        let status = match st.code {
            0 => serde_json::from_str::<Value>(&st.stdout).unwrap()["status"]
                .as_str()
                .unwrap()
                .to_string(),
            _ if st.stderr.trim() == format!("buildcell: container {id} does not exist") => {
                "(none)".into()
            }
            _ => format!("{st:?}"),
        };
        if !want.contains(&status.as_str()) {
            failures.push(format!("{point}: state says {status}, not {want:?}"));
        }
        let log = fs::read_to_string(b.join("state").join(&id).join("state.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .and_then(|st| st["audit_log"].as_str().map(PathBuf::from));
        let d = rt(m, &b, None, &["delete", "--force", &id]);
        // An exec whose buildcell died runs only once its supervisor holds
        // its listener (after the hand-over), and then with its record.
        if cmd.starts_with("exec") {
            let printed = fs::read_to_string(b.join("exec.out")).unwrap();
            let recorded = log.as_ref().map_or(0, |l| {
                let (_, ran) = records(l, "/bin/echo");
                ran.iter().filter(|a| *a == "exec-ran").count()
            });
            let ran = printed.contains("exec-ran");
            if ran && (*point != "exec:handed-over" || recorded != 1) {
                failures.push(format!(
                    "{point}: the exec ran ({recorded} records): {printed:?}"
                ));
            }
        }
        if d.code != 0 {
            failures.push(format!("{point}: delete --force failed: {d:?}"));
        }
        let left = leftovers(&b, &id);
        if !left.is_empty() {
            failures.push(format!("{point}: left behind:\n  {}", left.join("\n  ")));
            // Clean by hand so that the next points start from nothing.
            for c in cgroups_of(&id) {
                let _ = fs::write(c.join("cgroup.kill"), "1");
                let _ = fs::remove_dir(&c);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} fault points failed ({v:?}):\n{}",
        failures.len(),
        POINTS.len(),
        failures.join("\n")
    );
    POINTS.len()
}

#[test]
fn every_fault_point_looks_like_root() {
    if !is_root() {
        return skip("looks-like-root needs host root");
    }
    eprintln!("{} points", every_point(Variant::LooksLikeRoot));
}

#[test]
fn every_fault_point_looks_like_root_overlay() {
    if !is_root() {
        return skip("looks-like-root needs host root");
    }
    eprintln!("{} points", every_point(Variant::LooksLikeRootOverlay));
}

#[test]
fn every_fault_point_root_with_own_user_namespace() {
    if !is_root() {
        return skip("needs host root");
    }
    eprintln!("{} points", every_point(Variant::RootOwnNs));
}

#[test]
fn every_fault_point_rootless() {
    if !harness().modes.contains(&Mode::User) {
        return skip("no unprivileged user to run as");
    }
    eprintln!("{} points", every_point(Variant::Rootless));
}

// ---------- helpers for the scenarios below ----------

/// `buildcell [--root ROOT] ARGS` as the caller of `m` in `cwd`, stdout
/// and stderr in `cwd/NAME.out` and `.err` (a created container keeps
/// them: its stdio is buildcell's).
fn bc(
    m: Mode,
    cwd: &Path,
    root: Option<&Path>,
    name: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Run {
    let out = cwd.join(format!("{name}.out"));
    let err = cwd.join(format!("{name}.err"));
    let mut all: Vec<String> = Vec::new();
    if let Some(r) = root {
        all.extend(["--root".into(), r.display().to_string()]);
    }
    all.extend(args.iter().map(|a| a.to_string()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    captured(command(m, cwd, &all, env), &out, &err)
}

/// A mount point, unmounted on drop.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// A tmpfs of `size` at `dir`, owned by the caller of `m`.
struct Tmpfs;

impl Tmpfs {
    #[allow(clippy::new_ret_no_self)]
    fn new(m: Mode, dir: &Path, size: &str) -> Unmount {
        let _ = nix::mount::umount2(dir, nix::mount::MntFlags::MNT_DETACH);
        fs::create_dir_all(dir).unwrap();
        let opts = format!("size={size},mode=0700,uid={}", caller_uid(m));
        nix::mount::mount(
            Some("tmpfs"),
            dir,
            Some("tmpfs"),
            nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
            Some(opts.as_str()),
        )
        .unwrap();
        Unmount(dir.to_path_buf())
    }
}

/// `buildcell audit verify LOG`: exit status and its one line.
fn verify(log: &Path) -> (i32, String) {
    let h = harness();
    let out = std::process::Command::new(&h.bin)
        .args(["audit", "verify"])
        .arg(log)
        .output()
        .unwrap();
    let r = finish(out);
    (
        r.code,
        format!("{}{}", r.stdout, r.stderr).trim().to_string(),
    )
}

/// Every line of `log` parses as a record, seq 0, 1, 2... (but a last
/// line without its newline: a writer killed mid-write): (number of whole
/// records, the `/bin/echo X` (or `touch X`) arguments recorded as run).
fn records(log: &Path, prog: &str) -> (usize, Vec<String>) {
    use buildcell::audit::record::{Body, Record};
    let text = fs::read_to_string(log).unwrap();
    let mut ran = Vec::new();
    let mut n = 0;
    let whole = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    for (i, l) in whole.lines().enumerate() {
        let r: Record =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("line {}: {e}: {l}", i + 1));
        assert_eq!(r.seq, i as u64, "{l}");
        if let Body::Exec(e) = r.body {
            if e.result == "ok" && e.argv.len() == 2 && e.argv[0].ends_with(prog) {
                ran.push(e.argv[1].clone());
            }
        }
        n += 1;
    }
    (n, ran)
}

/// The verdict on a log that lost its end: every record verifies, and it
/// says it was cut off after its last record.
fn assert_cut_off(log: &Path, n: usize) {
    let (code, line) = verify(log);
    assert_eq!(code, 1, "{line}");
    let want = format!(
        "{}: {n} records, no signed checkpoint, cut off after seq {} (no end record",
        log.display(),
        n - 1
    );
    // A last line cut mid-write (the writer killed) is named as such.
    let torn = format!(
        "{}: line {}: truncated: the last line is incomplete; the log is cut off after seq {}",
        log.display(),
        n + 1,
        n - 1
    );
    let want = match fs::read_to_string(log).unwrap().ends_with('\n') {
        true => want,
        false => torn,
    };
    assert!(
        line.starts_with("FAIL: ") && line.contains(&want),
        "{line}\nwant: {want}"
    );
}

// ---------- the audit log's file system fills up ----------

/// A step that execs `touch m.I` 300 times, its log on a 32 KiB tmpfs
/// (about 50 records): the exec after the fill is refused (its file never
/// appears), the step is stopped with one line naming the log (exit 125),
/// every record written before verifies, and the verdict says the log is
/// cut off.
#[test]
fn a_full_log_file_system_stops_the_step() {
    if !is_root() {
        return skip("mounting the small file system needs root");
    }
    each_mode(|m| {
        let h = harness();
        let fsdir = h.dir.join(format!("logfs-step-{m:?}"));
        let _fs = Tmpfs::new(m, &fsdir, "32k");
        let log = fsdir.join("step.log");
        let d = workdir(m, "full-log-step");
        let script = "i=0; while [ $i -lt 300 ]; do touch m.$i; i=$((i+1)); done; touch done";
        let r = bc(
            m,
            &d,
            None,
            "step",
            &[
                "step",
                "--audit-log",
                log.to_str().unwrap(),
                "--",
                "sh",
                "-c",
                script,
            ],
            &[],
        );
        assert_eq!(r.code, 125, "{r:?}");
        // The step's own stderr is buildcell's too (its shell says the
        // refused exec failed); buildcell's own error is one line. The
        // shell, killed with the sandbox, may have written only the start
        // of its message ("sh: 1: ", seen in CI): buildcell's line then
        // follows that half line.
        let ours: Vec<&str> = r
            .stderr
            .lines()
            .filter_map(|l| l.find("buildcell:").map(|at| &l[at..]))
            .collect();
        assert_eq!(ours.len(), 1, "{r:?}");
        assert!(
            ours[0].contains(&format!("audit log {}", log.display())),
            "{r:?}"
        );
        let made: Vec<String> = (0..300)
            .map(|i| format!("m.{i}"))
            .take_while(|f| d.join(f).exists())
            .collect();
        let files = fs::read_dir(&d)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("m."))
            .count();
        assert!(!made.is_empty() && made.len() < 300, "{} files", made.len());
        assert_eq!(
            files,
            made.len(),
            "a file after a gap: an exec ran after a refused one"
        );
        assert!(!d.join("done").exists());
        let (n, ran) = records(&log, "touch");
        // Each file made has its record, and the exec after the last
        // record did not run.
        assert_eq!(ran, made, "records vs files");
        assert_cut_off(&log, n);
        eprintln!(
            "{m:?}: {} execs recorded and run, then refused; {n} records",
            made.len()
        );
    });
}

/// The same for a bundle's container (rootless: the audit directory is
/// `$XDG_STATE_HOME/buildcell/audit`, put on the small file system; host
/// root's is /var/log/buildcell, not chosen by the caller): the detached
/// supervisor stops the container, `state` says why naming the log, the
/// exec after the fill never runs, the records verify as cut off, and
/// `delete --force` leaves nothing.
#[test]
fn a_full_log_file_system_stops_a_bundle_container() {
    if !is_root() || !harness().modes.contains(&Mode::User) {
        return skip("needs root (to mount) and the unprivileged user");
    }
    let m = Mode::User;
    let h = harness();
    let fsdir = h.dir.join("logfs-bundle");
    let _fs = Tmpfs::new(m, &fsdir, "32k");
    let script = "i=0; while [ $i -lt 300 ]; do /bin/echo m.$i; i=$((i+1)); done; /bin/echo done; sleep 1000";
    let b = pbundle(m, "full-log-bundle", &["sh", "-c", script], |_| {});
    let env = [("XDG_STATE_HOME", fsdir.to_str().unwrap())];
    let root = b.join("state");
    let bs = b.display().to_string();
    let r = bc(
        m,
        &b,
        Some(&root),
        "c1",
        &["create", "--bundle", &bs, "c1"],
        &env,
    );
    assert_eq!(r.code, 0, "{r:?}");
    let r = bc(m, &b, Some(&root), "start", &["start", "c1"], &env);
    assert_eq!(r.code, 0, "{r:?}");
    let state = || -> Value {
        serde_json::from_str(&bc(m, &b, Some(&root), "state", &["state", "c1"], &env).stdout)
            .unwrap()
    };
    assert!(
        wait_until(15, || state()["status"] == "stopped"),
        "{}",
        state()
    );
    let log = fs::read_dir(fsdir.join("buildcell/audit"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "log"))
        .expect("the container's log");
    let why = state()["annotations"]["org.buildcell.audit.failure"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        why.contains(&format!("audit log {}", log.display())),
        "{why}"
    );
    let printed = fs::read_to_string(b.join("c1.out")).unwrap();
    let printed: Vec<String> = printed.lines().map(String::from).collect();
    assert!(
        !printed.is_empty() && printed.len() < 300 && !printed.contains(&"done".into()),
        "{printed:?}"
    );
    let (n, ran) = records(&log, "/bin/echo");
    assert_eq!(
        ran, printed,
        "every line printed has its record, nothing ran after"
    );
    assert_cut_off(&log, n);
    let r = bc(
        m,
        &b,
        Some(&root),
        "delete",
        &["delete", "--force", "c1"],
        &env,
    );
    assert_eq!(r.code, 0, "{r:?}");
    let left = leftovers(&b, "c1");
    assert!(left.is_empty(), "{left:?}");
    eprintln!(
        "bundle: {} execs recorded and run, then refused; {n} records",
        printed.len()
    );
}

// ---------- the audit supervisor is killed ----------

fn all_variants(f: impl Fn(Variant)) {
    for v in [
        Variant::LooksLikeRoot,
        Variant::RootOwnNs,
        Variant::Rootless,
    ] {
        let usable = match v.mode() {
            Mode::Root => is_root(),
            Mode::User => harness().modes.contains(&Mode::User),
        };
        if usable {
            eprintln!("--- {v:?}");
            f(v);
        }
    }
}

fn saved_state(b: &Path, id: &str) -> Value {
    let path = b.join("state").join(id).join("state.json");
    serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap()
}

fn sigkill(pid: i64) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// SIGKILL to the detached supervisor of a running container while a
/// process `exec`'d into it execs `/bin/echo` in a loop, and of a created
/// one before `start`: from the host, no exec runs after (`exec` is
/// refused and prints nothing, `start` runs nothing, every line the loop
/// printed has its record), the container is stopped (state, processes),
/// its log verifies as cut off, and `delete --force` leaves nothing.
#[test]
fn a_killed_supervisor_stops_its_container() {
    all_variants(|v| {
        let m = v.mode();
        let b = fault_bundle(v, &format!("sup-killed-{}", v.tag()));
        let bs = b.display().to_string();
        let root = b.join("state");
        // Running, with an exec'd process that execs in a loop.
        let id = format!("sk-run-{}", v.tag());
        mark(&b, &id);
        let r = bc(
            m,
            &b,
            Some(&root),
            "create",
            &["create", "--bundle", &bs, &id],
            &[],
        );
        assert_eq!(r.code, 0, "{r:?}");
        assert_eq!(
            bc(m, &b, Some(&root), "start", &["start", &id], &[]).code,
            0
        );
        let fid = format!("FAULT_ID={id}");
        let looping = "i=0; while :; do /bin/echo l.$i; i=$((i+1)); done";
        let r = bc(
            m,
            &b,
            Some(&root),
            "loop",
            &["exec", "--detach", "--env", &fid, &id, "sh", "-c", looping],
            &[],
        );
        assert_eq!(r.code, 0, "{r:?}");
        let out = b.join("loop.out");
        assert!(wait_until(10, || fs::read_to_string(&out)
            .unwrap()
            .lines()
            .count()
            >= 20));
        let st = saved_state(&b, &id);
        let log = PathBuf::from(st["audit_log"].as_str().unwrap());
        sigkill(st["supervisor_pid"].as_i64().unwrap());
        let r = bc(
            m,
            &b,
            Some(&root),
            "after",
            &["exec", &id, "/bin/echo", "after"],
            &[],
        );
        assert_ne!(r.code, 0, "{r:?}");
        assert!(
            !r.stdout.contains("after"),
            "an exec ran after the supervisor died: {r:?}"
        );
        let state = |id: &str| -> Value {
            serde_json::from_str(&bc(m, &b, Some(&root), "state", &["state", id], &[]).stdout)
                .unwrap()
        };
        assert!(
            wait_until(10, || state(&id)["status"] == "stopped"),
            "{}",
            state(&id)
        );
        assert!(
            wait_until(5, || processes_of(&id).is_empty()),
            "{:?}",
            processes_of(&id)
        );
        // A partial last line: the loop's echo killed mid-write.
        let printed: Vec<String> = fs::read_to_string(&out)
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        let (n, ran) = records(&log, "/bin/echo");
        let missing: Vec<_> = printed.iter().filter(|l| !ran.contains(l)).collect();
        assert!(missing.is_empty(), "printed without a record: {missing:?}");
        assert_cut_off(&log, n);
        assert_eq!(
            bc(m, &b, Some(&root), "del", &["delete", "--force", &id], &[]).code,
            0
        );
        let left = leftovers(&b, &id);
        assert!(left.is_empty(), "{left:?}");
        eprintln!(
            "{v:?}: {} execs printed, all recorded; {n} records, cut off",
            printed.len()
        );

        // Created, not started: the process must never run.
        let id = format!("sk-created-{}", v.tag());
        let b2 = fault_bundle(v, &format!("sup-killed2-{}", v.tag()));
        let bs2 = b2.display().to_string();
        let root2 = b2.join("state");
        let cfg = b2.join("config.json");
        let mut c: Value = serde_json::from_str(&fs::read_to_string(&cfg).unwrap()).unwrap();
        c["process"]["args"] = json!(["/bin/echo", "started"]);
        fs::write(&cfg, c.to_string()).unwrap();
        mark(&b2, &id);
        let r = bc(
            m,
            &b2,
            Some(&root2),
            "create",
            &["create", "--bundle", &bs2, &id],
            &[],
        );
        assert_eq!(r.code, 0, "{r:?}");
        let st = saved_state(&b2, &id);
        sigkill(st["supervisor_pid"].as_i64().unwrap());
        let state2 = || -> Value {
            serde_json::from_str(&bc(m, &b2, Some(&root2), "state", &["state", &id], &[]).stdout)
                .unwrap()
        };
        assert!(
            wait_until(10, || state2()["status"] == "stopped"),
            "{}",
            state2()
        );
        let r = bc(m, &b2, Some(&root2), "start", &["start", &id], &[]);
        assert_ne!(r.code, 0, "{r:?}");
        std::thread::sleep(std::time::Duration::from_millis(100));
        let printed = fs::read_to_string(b2.join("create.out")).unwrap();
        assert!(!printed.contains("started"), "{printed}");
        assert_eq!(
            bc(
                m,
                &b2,
                Some(&root2),
                "del",
                &["delete", "--force", &id],
                &[]
            )
            .code,
            0
        );
        let left = leftovers(&b2, &id);
        assert!(left.is_empty(), "{left:?}");
    });
}

// ---------- the host reboots mid-step ----------

/// A "reboot": state roots on tmpfs, containers running (`c1`), created
/// (`c2`) and running under a second root (`c3`), and a step execing in a
/// loop; then every process of buildcell and of the containers killed
/// (supervisors first, so none writes its end record), the second root's
/// tmpfs unmounted and a fresh one mounted. `list`/`state` tell the truth
/// (c1, c2 stopped; c3 unknown, in one line), `delete --force` cleans
/// what remains, every log verifies up to its last record and says it was
/// cut off.
#[test]
fn a_reboot_mid_step_leaves_the_truth() {
    all_variants(|v| {
        let m = v.mode();
        let h = harness();
        let b = fault_bundle(v, &format!("reboot-{}", v.tag()));
        let bs = b.display().to_string();
        let root_a = h.dir.join(format!("reboot-a-{}", v.tag()));
        let root_b = h.dir.join(format!("reboot-b-{}", v.tag()));
        let _a = Tmpfs::new(m, &root_a, "4m");
        let mut fs_b = Tmpfs::new(m, &root_b, "4m");
        let ids: Vec<String> = ["c1", "c2", "c3"]
            .iter()
            .map(|c| format!("rb-{c}-{}", v.tag()))
            .collect();
        let root_of = |i: usize| if i == 2 { &root_b } else { &root_a };
        let mut logs = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            mark(&b, id);
            let r = bc(
                m,
                &b,
                Some(root_of(i)),
                id,
                &["create", "--bundle", &bs, id],
                &[],
            );
            assert_eq!(r.code, 0, "{r:?}");
            if i != 1 {
                let r = bc(m, &b, Some(root_of(i)), "start", &["start", id], &[]);
                assert_eq!(r.code, 0, "{r:?}");
            }
            let st: Value = serde_json::from_str(
                &fs::read_to_string(root_of(i).join(id).join("state.json")).unwrap(),
            )
            .unwrap();
            logs.push((
                PathBuf::from(st["audit_log"].as_str().unwrap()),
                st["supervisor_pid"].as_i64().unwrap(),
            ));
        }
        // A step execing in a loop.
        let d = workdir(m, &format!("reboot-step-{}", v.tag()));
        let step_log = log_path(m, &format!("reboot-step-{}", v.tag()));
        let step_id = format!("rb-step-{}", v.tag());
        let looping = format!("export FAULT_ID={step_id}; while :; do /bin/true; done");
        let step = command(
            m,
            &d,
            &[
                "step",
                "--audit-log",
                step_log.to_str().unwrap(),
                "--",
                "sh",
                "-c",
                &looping,
            ],
            &[],
        )
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
        let mut step = KillOnDrop(step);
        let step_pid = buildcell_pid(&step.0);
        assert!(wait_until(10, || fs::read_to_string(&step_log)
            .is_ok_and(|t| t.lines().count() > 20)));

        // The power goes: the supervisors and the step's buildcell first,
        // then whatever is left of the containers.
        for (_, sup) in &logs {
            sigkill(*sup);
        }
        sigkill(step_pid.as_raw().into());
        for id in &ids {
            for p in processes_of(id) {
                sigkill(p.split(':').next().unwrap().parse().unwrap());
            }
        }
        let _ = step.0.wait();
        assert!(wait_until(5, || ids
            .iter()
            .chain([&step_id])
            .all(|id| processes_of(id).is_empty())));
        drop(fs_b);
        fs_b = Tmpfs::new(m, &root_b, "4m");

        // list and state tell the truth.
        let list = bc(
            m,
            &b,
            Some(&root_a),
            "list",
            &["list", "--format", "json"],
            &[],
        );
        assert_eq!(list.code, 0, "{list:?}");
        let list: Value = serde_json::from_str(&list.stdout).unwrap();
        let got: Vec<(String, String, i64)> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["id"].as_str().unwrap().to_string(),
                    s["status"].as_str().unwrap().to_string(),
                    s["pid"].as_i64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (ids[0].clone(), "stopped".into(), 0),
                (ids[1].clone(), "stopped".into(), 0)
            ]
        );
        let r = bc(m, &b, Some(&root_b), "state", &["state", &ids[2]], &[]);
        assert_eq!(r.code, 1, "{r:?}");
        assert_eq!(
            r.stderr.trim(),
            format!("buildcell: container {} does not exist", ids[2]),
            "{r:?}"
        );
        let r = bc(m, &b, Some(&root_b), "list", &["list", "--quiet"], &[]);
        assert_eq!((r.code, r.stdout.as_str()), (0, ""), "{r:?}");

        // delete --force cleans what remains.
        for (i, id) in ids.iter().enumerate() {
            let r = bc(
                m,
                &b,
                Some(root_of(i)),
                "del",
                &["delete", "--force", id],
                &[],
            );
            assert_eq!(r.code, 0, "{r:?}");
        }
        for id in &ids[..2] {
            let mut left = leftovers(&b, id);
            left.extend(
                fs::read_dir(&root_a)
                    .unwrap()
                    .flatten()
                    .map(|e| format!("{:?}", e.path())),
            );
            assert!(left.is_empty(), "{left:?}");
        }
        // c3's state went with the tmpfs, so nothing knows its cgroup any
        // more; a real reboot takes the cgroups too. Only they may remain.
        for c in cgroups_of(&ids[2]) {
            let _ = fs::remove_dir(&c);
        }
        let left = leftovers(&b, &ids[2]);
        assert!(left.is_empty(), "{left:?}");

        // Every log verifies up to its last record and says it was cut off.
        for log in logs.iter().map(|(l, _)| l).chain([&step_log]) {
            let (n, _) = records(log, "/bin/true");
            assert_cut_off(log, n);
        }
        drop(fs_b);
    });
}

/// `list` never waits for a call under way: a `create` held in its
/// createRuntime hook (2 s) shows as `creating` at once; once it is done,
/// `created` (before, `list` waited for the lock; a hook that hangs hung
/// it).
#[test]
fn list_does_not_wait_for_a_create_under_way() {
    if !is_root() {
        return skip("needs host root");
    }
    let m = Mode::Root;
    let b = pbundle(m, "list-creating", &["sleep", "1000"], |c| {
        c["hooks"] = json!({"createRuntime": [{"path": "/bin/sleep", "args": ["sleep", "2"]}]});
    });
    let bs = b.display().to_string();
    let root = b.join("state");
    // `build` allows only the engines' hooks.
    let mut all = vec![
        "--root",
        root.to_str().unwrap(),
        "--profile",
        "engine-compat",
    ];
    all.extend(["create", "--bundle", &bs, "lc1"]);
    let mut create = KillOnDrop(
        command(m, &b, &all, &[])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(wait_until(5, || root.join("lc1/state.json").exists()));
    let list = || -> Vec<(String, String)> {
        let r = bc(
            m,
            &b,
            Some(&root),
            "list",
            &["list", "--format", "json"],
            &[],
        );
        let v: Value = serde_json::from_str(&r.stdout).unwrap_or_else(|_| panic!("{r:?}"));
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["id"].as_str().unwrap().into(),
                    s["status"].as_str().unwrap().into(),
                )
            })
            .collect()
    };
    let t = std::time::Instant::now();
    assert_eq!(list(), vec![("lc1".to_string(), "creating".to_string())]);
    assert!(
        t.elapsed() < std::time::Duration::from_secs(1),
        "{:?}",
        t.elapsed()
    );
    assert!(create.0.wait().unwrap().success());
    assert_eq!(list(), vec![("lc1".to_string(), "created".to_string())]);
    ok(rt(m, &b, None, &["delete", "--force", "lc1"]));
    assert!(leftovers(&b, "lc1").is_empty());
}

/// A bundle in the host's pid namespace, as `podman --pid host` asks
/// (allowed by engine-compat only), with the host's /proc bound (a new
/// instance needs a pid namespace of its own).
fn in_host_pid_namespace(c: &mut Value) {
    let ns = c["linux"]["namespaces"].as_array_mut().unwrap();
    ns.retain(|n| n["type"] != "pid");
    for mnt in c["mounts"].as_array_mut().unwrap() {
        if mnt["destination"] == "/proc" {
            *mnt = json!({"destination": "/proc", "type": "bind", "source": "/proc",
                          "options": ["rbind", "nosuid", "nodev", "noexec"]});
        }
    }
}

/// A buildcell call on the bundle `b` under engine-compat (the profile
/// that allows the host's pid namespace), its output in `b/NAME.out`.
fn engine_compat(b: &Path, name: &str, args: &[&str]) -> Run {
    let mut all = vec!["--profile", "engine-compat"];
    all.extend_from_slice(args);
    bc(Mode::Root, b, Some(&b.join("state")), name, &all, &[])
}

/// Container `id` created and started in the host's pid namespace,
/// running `script`, which starts a background process first and prints
/// `bg PID`: its bundle and that pid.
fn started_in_host_pid_namespace(name: &str, id: &str, script: &str) -> (PathBuf, i32) {
    let b = root_engine_bundle(name, &["sh", "-c", script], in_host_pid_namespace);
    mark(&b, id);
    let bs = b.display().to_string();
    let r = engine_compat(&b, "create", &["create", "--bundle", &bs, id]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(engine_compat(&b, "start", &["start", id]).code, 0);
    let out = b.join("create.out");
    assert!(wait_until(10, || fs::read_to_string(&out)
        .unwrap_or_default()
        .contains("bg ")));
    let bg = fs::read_to_string(&out)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("bg ")?.trim().parse().ok())
        .unwrap();
    (b, bg)
}

/// A container without a pid namespace of its own (the host's, as
/// `podman --pid host` asks; allowed by engine-compat only) does not die
/// with its init. Its supervisor then traces every task of the container
/// (attached at each fork), so SIGKILL to the supervisor kills them all,
/// a background process included, not only the init.
#[test]
fn a_killed_supervisor_stops_a_container_without_its_own_pid_namespace() {
    if !is_root() {
        skip("a container in the host's pid namespace needs host root");
        return;
    }
    let id = "sk-hostpid";
    let (b, bg) = started_in_host_pid_namespace(
        "sup-killed-hostpid",
        id,
        "sleep 1000 & echo bg $!; i=0; while :; do /bin/true; i=$((i+1)); sleep 0.05; done",
    );
    let st = saved_state(&b, id);
    let init = st["oci"]["pid"].as_i64().unwrap() as i32;
    let alive = |pid: i32| {
        Path::new(&format!("/proc/{pid}")).exists()
            && !fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z ")
    };
    assert!(
        alive(init) && alive(bg),
        "init {init}, background sleep {bg}"
    );
    sigkill(st["supervisor_pid"].as_i64().unwrap());
    assert!(
        wait_until(10, || !alive(init) && !alive(bg)),
        "after the supervisor died: init {init} alive {}, background sleep {bg} alive {}",
        alive(init),
        alive(bg)
    );
    assert_eq!(engine_compat(&b, "del", &["delete", "--force", id]).code, 0);
    let left = leftovers(&b, id);
    assert!(left.is_empty(), "{left:?}");
}

/// `delete` of a stopped container whose cgroup still holds a process (its
/// init exited, a background process in the host's pid namespace did
/// not): the cgroup cannot be removed as it is (EBUSY), so the process is
/// killed first, and nothing of the container is left.
#[test]
fn delete_kills_what_outlived_the_init() {
    if !is_root() {
        skip("a container in the host's pid namespace needs host root");
        return;
    }
    let id = "outlived";
    let (b, bg) =
        started_in_host_pid_namespace("outlived-init", id, "sleep 1000 & echo bg $!; exit 0");
    let alive = |pid: i32| {
        fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| !s.contains(") Z ") && s.contains("(sleep)"))
    };
    let state = |name: &str| engine_compat(&b, name, &["state", id]).stdout;
    assert!(wait_until(10, || state("state").contains("\"stopped\"")));
    // `$!` is printed as soon as the shell forks it: the child may still
    // be the shell, its exec of sleep waiting on the audit supervisor, when
    // the init has already exited (a CI run saw that once). A sleep that
    // was killed never shows up.
    assert!(
        wait_until(10, || alive(bg)),
        "the background sleep {bg} is gone before delete"
    );
    assert!(!cgroups_of(id).is_empty(), "no cgroup to remove");
    let r = engine_compat(&b, "delete", &["delete", id]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!alive(bg), "delete left the background sleep {bg} running");
    let left = leftovers(&b, id);
    assert!(left.is_empty(), "{left:?}");
}
