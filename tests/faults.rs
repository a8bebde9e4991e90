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
        _ => pbundle(v.mode(), name, &args, |_| {}),
    }
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

/// Host mounts (mount table of this process and of pid 1) naming the
/// container, its rootfs, or an overlay work directory of buildcell's.
fn mounts_of(id: &str, rootfs: &Path) -> Vec<String> {
    let rootfs = rootfs.display().to_string();
    let mut out = Vec::new();
    for table in ["/proc/self/mountinfo", "/proc/1/mountinfo"] {
        for l in fs::read_to_string(table).unwrap().lines() {
            let workdir = l.split_whitespace().any(|w| {
                w.rsplit('/').next().is_some_and(|n| {
                    let mut p = n.split('-');
                    p.next() == Some("buildcell")
                        && p.next().is_some_and(|x| x.parse::<u32>().is_ok())
                        && p.next().is_some_and(|x| x.parse::<u32>().is_ok())
                })
            });
            if l.contains(id) || l.contains(&rootfs) || workdir {
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
                            "exec" | "exec-process" => {
                                rt_env(m, &b, None, &["exec", &id, "/bin/true"], &armed)
                            }
                            "delete" => rt_env(m, &b, None, &["delete", "--force", &id], &armed),
                            other => panic!("fault point of an unknown command: {other}"),
                        }
                    }
                };
                r
            }
        };
        let reached = v == Variant::LooksLikeRoot || !ADDED_USERNS_ONLY.contains(point);
        let died_right = match victim {
            // Not on this variant's path: the command runs through.
            _ if !reached => r.code == 0,
            Victim::Runtime => killed(&r),
            // The init or the exec'd process dies: the command fails in one
            // line. The supervisor: `create` may finish first.
            Victim::Child if cmd == "supervisor" => true,
            Victim::Child => r.code != 0 && !killed(&r) && r.stderr.lines().count() == 1,
        };
        if !died_right {
            failures.push(format!("{point}: not the expected death: {r:?}"));
        }
        let d = rt(m, &b, None, &["delete", "--force", &id]);
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
