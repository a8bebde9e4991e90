//! Load (issue 7): many containers and build steps at once, and a long
//! create/start/delete loop, against the real binary in real namespaces.
//! Every command must succeed; afterwards nothing of this test may be left
//! (state entries, cgroup directories in every v1 hierarchy and the unified
//! one, mounts, `/run/buildcell/ranges` entries, processes) and the host's
//! MemAvailable must come back (see [`MEM_TOLERANCE_KIB`]). While the
//! containers run, the open fds of their audit supervisors are counted: the
//! count may not grow with the number of execs or exec'd processes.
//!
//! Short by default (`cargo test`: 10 containers and 10 steps at once, 100
//! cycles); `BUILDCELL_LONG=1` runs issue 7's sizes (50 at once, 2,000
//! cycles). Throughput and percentiles against runc and crun: bench/load.py.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;

/// Leak tolerance of MemAvailable (after a sync and drop_caches as root):
/// 100 MiB. Other engineers' compiles move it by more than that on this
/// shared host, so a reading outside it is retried for up to 20 s: a leak
/// stays, their transient use goes away.
const MEM_TOLERANCE_KIB: i64 = 100 * 1024;

struct Sizes {
    /// Containers (and, as many again, `step`s) at once.
    at_once: usize,
    /// `exec`s into each container, and execs of /bin/true in each.
    execs: usize,
    loop_execs: usize,
    /// create/start/delete cycles, and the workers running them.
    cycles: usize,
    workers: usize,
}

fn sizes() -> Sizes {
    if std::env::var("BUILDCELL_LONG").is_ok_and(|v| v == "1") {
        Sizes {
            at_once: 50,
            execs: 5,
            loop_execs: 200,
            cycles: 2000,
            workers: 10,
        }
    } else {
        Sizes {
            at_once: 10,
            execs: 3,
            loop_execs: 100,
            cycles: 100,
            workers: 4,
        }
    }
}

fn mem_available_kib() -> i64 {
    if is_root() {
        nix::unistd::sync();
        let _ = fs::write("/proc/sys/vm/drop_caches", "3");
    }
    fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// Cgroup directories, in every hierarchy this process sees, whose name
/// holds `needle`.
fn cgroups_named(needle: &str) -> Vec<PathBuf> {
    let mut roots = BTreeSet::new();
    for l in fs::read_to_string("/proc/self/mountinfo").unwrap().lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        let Some(sep) = f.iter().position(|x| *x == "-") else {
            continue;
        };
        if matches!(f.get(sep + 1), Some(&"cgroup") | Some(&"cgroup2")) {
            roots.insert(PathBuf::from(f[4]));
        }
    }
    let mut found = Vec::new();
    let mut stack: Vec<PathBuf> = roots.into_iter().collect();
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                if e.file_name().to_string_lossy().contains(needle) {
                    found.push(e.path());
                }
                stack.push(e.path());
            }
        }
    }
    found
}

/// This process's own cgroup directories, one per hierarchy it sees.
fn own_cgroup_dirs() -> BTreeSet<PathBuf> {
    // "ID:CONTROLLERS:PATH" lines; cgroup2 has ID 0 and no controllers.
    let own: Vec<(Vec<String>, String)> = fs::read_to_string("/proc/self/cgroup")
        .unwrap()
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctl, path) = (f.next()?, f.next()?, f.next()?);
            Some((ctl.split(',').map(String::from).collect(), path.to_string()))
        })
        .collect();
    let mut dirs = BTreeSet::new();
    for l in fs::read_to_string("/proc/self/mountinfo").unwrap().lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        let Some(sep) = f.iter().position(|x| *x == "-") else {
            continue;
        };
        let (fstype, opts) = (f[sep + 1], f.get(sep + 3).copied().unwrap_or(""));
        let opts: Vec<&str> = opts.split(',').collect();
        let path = own.iter().find(|(ctl, _)| match fstype {
            "cgroup2" => ctl.iter().all(|c| c.is_empty()),
            "cgroup" => ctl
                .iter()
                .any(|c| !c.is_empty() && opts.contains(&c.as_str())),
            _ => false,
        });
        if let Some((_, path)) = path {
            dirs.insert(PathBuf::from(format!(
                "{}{}",
                f[4],
                path.trim_end_matches('/')
            )));
        }
    }
    dirs
}

/// The `buildcell-step-PID` cgroup directories under this process's own
/// cgroups (where the steps it runs make theirs).
fn own_step_cgroups() -> BTreeSet<PathBuf> {
    let own = own_cgroup_dirs();
    cgroups_named("buildcell-step-")
        .into_iter()
        .filter(|p| p.parent().is_some_and(|d| own.contains(d)))
        .collect()
}

/// The `/run/buildcell/ranges` entries held for a state directory under `dir`.
fn ranges_under(dir: &Path) -> Vec<String> {
    let needle = dir.display().to_string();
    fs::read_dir("/run/buildcell/ranges")
        .map(|rd| {
            rd.flatten()
                .filter(|e| fs::read_to_string(e.path()).is_ok_and(|t| t.contains(needle.as_str())))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn fd_count(pid: i32) -> Option<usize> {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|d| d.count())
}

/// Whether `pid` is gone or a zombie (the container's init has exited).
fn exited(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => true,
    }
}

fn saved_state(b: &Path, id: &str) -> serde_json::Value {
    serde_json::from_str(&fs::read_to_string(b.join("state").join(id).join("state.json")).unwrap())
        .unwrap()
}

/// Wait until `state ID` says stopped (up to 30 s).
fn wait_stopped(m: Mode, b: &Path, id: &str) {
    assert!(
        wait_until(30, || state_of(m, b, id)["status"] == "stopped"),
        "{id} still not stopped"
    );
}

fn percentile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// Containers at once, each with `execs` exec'd shells of `loop_execs`
/// execs: the detached supervisor's fd count after each exec is the same
/// as after start, and stays close to it while they run.
fn containers_and_execs(m: Mode, tag: &str, s: &Sizes) {
    let b = pbundle(m, &format!("{tag}-held"), &["/bin/sleep", "300"], |_| {});
    let script = format!(
        "i=0; while [ $i -lt {} ]; do /bin/true; i=$((i+1)); done",
        s.loop_execs
    );
    std::thread::scope(|sc| {
        for i in 0..s.at_once {
            let (b, script) = (&b, &script);
            sc.spawn(move || {
                let id = format!("{tag}-held-{i}");
                ok(rt(m, b, None, &["create", &id]));
                ok(rt(m, b, None, &["start", &id]));
                let sup = saved_state(b, &id)["supervisor_pid"].as_i64().unwrap() as i32;
                let started = fd_count(sup).expect("supervisor runs");
                let peak = AtomicUsize::new(started);
                // The count at rest: after the first exec'd shell has
                // exited and the supervisor has closed what served it (it
                // may open something once, at the first exec, for good).
                let mut base = 0;
                let done = std::sync::atomic::AtomicBool::new(false);
                // Failures are collected, not panicked on, inside the
                // scope: the sampler must stop whatever happens.
                let mut failed = None;
                std::thread::scope(|inner| {
                    inner.spawn(|| {
                        while !done.load(Ordering::Relaxed) {
                            if let Some(n) = fd_count(sup) {
                                peak.fetch_max(n, Ordering::Relaxed);
                            }
                            std::thread::sleep(Duration::from_millis(10));
                        }
                    });
                    for k in 0..s.execs {
                        let r = rt(m, b, None, &["exec", &id, "/bin/sh", "-c", script]);
                        if r.code != 0 {
                            failed = Some(format!("{id} exec {k}: {r:?}"));
                            break;
                        }
                        // `exec` returns when its process has exited; the
                        // supervisor closes that process's listener just
                        // after: back to the count at rest within 5 s, or
                        // it leaked.
                        if k == 0 {
                            std::thread::sleep(Duration::from_millis(300));
                            base = fd_count(sup).unwrap_or(0);
                            if base > started + 1 {
                                failed = Some(format!(
                                    "{id}: supervisor {sup} holds {base} fds after its first exec'd shell, {started} after start"
                                ));
                                break;
                            }
                            continue;
                        }
                        if !wait_until(5, || fd_count(sup) == Some(base)) {
                            failed = Some(format!(
                                "{id}: supervisor {sup} holds {:?} fds after {} exec'd shells, {base} after the first",
                                fd_count(sup),
                                k + 1
                            ));
                            break;
                        }
                    }
                    done.store(true, Ordering::Relaxed);
                });
                if let Some(why) = failed {
                    let _ = rt(m, b, None, &["delete", "--force", &id]);
                    panic!("{why}");
                }
                let peak = peak.load(Ordering::Relaxed);
                // A hand-over in flight: its socket, the listener, the
                // process's pidfd.
                assert!(
                    peak <= base.max(started) + 3,
                    "{id}: supervisor {sup} had {peak} fds open while serving execs, {base} at rest"
                );
                ok(rt(m, b, None, &["kill", &id, "KILL"]));
                wait_stopped(m, b, &id);
                ok(rt(m, b, None, &["delete", &id]));
                assert!(
                    wait_until(10, || !Path::new(&format!("/proc/{sup}")).exists()),
                    "{id}: supervisor {sup} outlived its container"
                );
            });
        }
    });
    // Every exec of every container is in its log: nothing lost under load.
    for i in 0..s.at_once {
        let log = saved_log(m, &format!("{tag}-held-{i}"));
        let n = execs(&log)
            .iter()
            .filter(|e| e.argv == ["/bin/true"])
            .count();
        assert_eq!(n, s.execs * s.loop_execs, "{}", log.display());
    }
    assert!(entries(&b).is_empty(), "state left: {:?}", entries(&b));
}

/// The audit log of container `id` (default directory of `m`).
fn saved_log(m: Mode, id: &str) -> PathBuf {
    newest_log(m, id)
}

/// `at_once` foreground `run`s of an exec loop and as many `buildcell
/// step`s, all started together; every one exits 0.
fn steps_at_once(m: Mode, tag: &str, s: &Sizes) {
    let script = format!(
        "i=0; while [ $i -lt {} ]; do /bin/true; i=$((i+1)); done",
        s.loop_execs
    );
    let b = pbundle(
        m,
        &format!("{tag}-run"),
        &["/bin/sh", "-c", &script],
        |_| {},
    );
    let wd = workdir(m, &format!("{tag}-steps"));
    let t0 = Instant::now();
    std::thread::scope(|sc| {
        for i in 0..s.at_once {
            let (b, wd, script) = (&b, &wd, &script);
            sc.spawn(move || {
                let id = format!("{tag}-run-{i}");
                let r = rt(m, b, None, &["run", &id]);
                assert_eq!(r.code, 0, "{id}: {r:?}");
            });
            sc.spawn(move || {
                let log = log_path(m, &format!("{tag}-step-{i}"));
                let r = audited(m, wd, &log, &["--", "sh", "-c", script]);
                assert_eq!(r.code, 0, "step {i}: {r:?}");
                assert_eq!(ran(&execs(&log), &["/bin/true"]), s.loop_execs, "step {i}");
            });
        }
    });
    let secs = t0.elapsed().as_secs_f64();
    eprintln!(
        "{m:?}: {} runs + {} steps of {} execs at once: {secs:.1} s, {:.1} per second",
        s.at_once,
        s.at_once,
        s.loop_execs,
        (2 * s.at_once) as f64 / secs
    );
    assert!(entries(&b).is_empty(), "state left: {:?}", entries(&b));
}

/// `cycles` create/start/(exit)/delete of /bin/true by `workers` threads.
fn cycles(m: Mode, tag: &str, s: &Sizes) {
    let b = pbundle(m, &format!("{tag}-cyc"), &["/bin/true"], |_| {});
    let next = AtomicUsize::new(0);
    let times = Mutex::new(Vec::new());
    let t0 = Instant::now();
    std::thread::scope(|sc| {
        for _ in 0..s.workers {
            sc.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= s.cycles {
                    return;
                }
                let id = format!("{tag}-cyc-{i}");
                let t = Instant::now();
                let r = rt(m, &b, None, &["create", &id]);
                assert_eq!(r.code, 0, "create {id}: {r:?}");
                let init = saved_state(&b, &id)["oci"]["pid"].as_i64().unwrap() as i32;
                let r = rt(m, &b, None, &["start", &id]);
                assert_eq!(r.code, 0, "start {id}: {r:?}");
                assert!(wait_until(30, || exited(init)), "{id}: init {init} runs on");
                let r = rt(m, &b, None, &["delete", &id]);
                assert_eq!(r.code, 0, "delete {id}: {r:?}");
                times
                    .lock()
                    .unwrap()
                    .push(t.elapsed().as_secs_f64() * 1000.0);
            });
        }
    });
    let secs = t0.elapsed().as_secs_f64();
    let mut t = times.into_inner().unwrap();
    assert_eq!(t.len(), s.cycles);
    eprintln!(
        "{m:?}: {} cycles by {} workers: {:.1} per second, p50 {:.0} ms, p99 {:.0} ms",
        s.cycles,
        s.workers,
        s.cycles as f64 / secs,
        percentile(&mut t, 0.5),
        percentile(&mut t, 0.99)
    );
    assert!(entries(&b).is_empty(), "state left: {:?}", entries(&b));
}

#[test]
fn load_leaves_nothing_behind() {
    let s = sizes();
    let h = harness();
    each_mode(|m| {
        let tag = format!(
            "ld{}{}",
            std::process::id(),
            if m == Mode::Root { "r" } else { "u" }
        );
        let mounts0 = host_mount_points();
        if is_root() {
            // The step cgroup check below must see this process's cgroups.
            assert!(!own_cgroup_dirs().is_empty(), "own cgroups not found");
        }
        let steps0 = own_step_cgroups();
        let mem0 = mem_available_kib();

        containers_and_execs(m, &tag, &s);
        steps_at_once(m, &tag, &s);
        cycles(m, &tag, &s);

        // Detached supervisors exit after their container: give the last
        // ones a moment, then nothing of this run may be left.
        assert!(
            wait_until(10, || host_processes(&h.bin.display().to_string())
                .is_empty()),
            "buildcell processes left: {:?}",
            host_processes(&h.bin.display().to_string())
        );
        let cg = cgroups_named(&tag);
        assert!(cg.is_empty(), "cgroups left: {cg:?}");
        // `step` makes buildcell-step-PID under its caller's cgroup (other
        // users of this host leave theirs under their own: a SIGKILLed step
        // cannot remove its own): none of those made during this run may
        // be left once its step is gone.
        let step_cg: Vec<_> = own_step_cgroups()
            .difference(&steps0)
            .filter(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                let pid = name["buildcell-step-".len()..].parse::<u32>().unwrap_or(0);
                !Path::new(&format!("/proc/{pid}")).exists()
            })
            .cloned()
            .collect();
        assert!(
            step_cg.is_empty(),
            "step cgroups of dead steps left: {step_cg:?}"
        );
        let mounts1 = host_mount_points();
        let ours: Vec<_> = mounts1
            .difference(&mounts0)
            .filter(|p| p.contains(&h.dir.display().to_string()) || p.contains("buildcell"))
            .collect();
        assert!(ours.is_empty(), "mounts left: {ours:?}");
        let r = ranges_under(&h.dir);
        assert!(r.is_empty(), "id ranges left: {r:?}");

        let mut mem1 = mem_available_kib();
        let start = Instant::now();
        while mem0 - mem1 > MEM_TOLERANCE_KIB && start.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_secs(1));
            mem1 = mem_available_kib();
        }
        eprintln!(
            "{m:?}: MemAvailable {mem0} KiB before, {mem1} KiB after ({:+} KiB)",
            mem1 - mem0
        );
        assert!(
            mem0 - mem1 <= MEM_TOLERANCE_KIB,
            "MemAvailable fell by {} KiB (tolerance {MEM_TOLERANCE_KIB} KiB)",
            mem0 - mem1
        );
    });
}
