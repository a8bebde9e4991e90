//! The cgroup facility on this host's real cgroup filesystems, as root:
//! limits in the files, processes moved in, freeze/thaw, kill, removal in
//! every hierarchy; and the core v2 files (procs, freeze, kill) on the
//! cgroup2 mount (the unified mount of a hybrid host). Not root: SKIPPED
//! outside CI, a failure on CI.

// Resources built field by field read better here.
#![allow(clippy::field_reassign_with_default)]

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use buildcell::cgroups::{
    Cgroup, CgroupError, CgroupPath, DeviceKind, DeviceRule, FreezerState, Layout, Resources,
    Version,
};
use nix::sys::signal::Signal;

fn need_root() -> bool {
    if common::is_root() {
        return true;
    }
    common::skip("cgroup tests need root");
    false
}

/// Children killed and cgroups removed even when an assertion fails.
struct Cleanup {
    children: Vec<Child>,
    extra_pids: Vec<i32>,
    cgroups: Vec<Cgroup>,
    dirs: Vec<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.extra_pids {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*p), Signal::SIGKILL);
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for cg in &self.cgroups {
            let _ = cg.thaw();
            let _ = cg.remove();
        }
        for d in &self.dirs {
            let _ = fs::remove_dir(d);
        }
    }
}

/// `sh` that waits for a line on stdin, then starts a busy loop in the
/// background and becomes `sleep`: after the line, two processes, both
/// forked inside whatever cgroup the shell was moved to.
fn spawn_waiting_shell(trap_term: bool) -> Child {
    let script = if trap_term {
        "trap '' TERM; read x; (while :; do :; done) & echo $!; exec sleep 100"
    } else {
        "read x; (while :; do :; done) & echo $!; exec sleep 100"
    };
    Command::new("sh")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn sh")
}

/// Lets the shell go on; returns the busy loop's pid.
fn release(child: &mut Child) -> i32 {
    use std::io::BufRead;
    child
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"go\n")
        .expect("write to sh");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .expect("read the busy loop's pid");
    line.trim().parse().expect("busy loop pid")
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat; after ')' the first field is 3 (state).
    f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn proc_state(pid: i32) -> String {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("State:"))
        .unwrap_or("")
        .to_string()
}

/// Gone, or a zombie waiting for a parent that is not us.
fn dead(pid: i32) -> bool {
    let s = proc_state(pid);
    s.is_empty() || s.contains("Z (zombie)")
}

/// The busy loop burns CPU only while thawed.
fn assert_frozen(busy: i32, frozen: bool) {
    let a = cpu_ticks(busy);
    std::thread::sleep(Duration::from_millis(300));
    let b = cpu_ticks(busy);
    if frozen {
        assert_eq!(a, b, "pid {busy} ran while frozen ({})", proc_state(busy));
    } else {
        assert!(
            b > a,
            "pid {busy} did not run after thaw ({})",
            proc_state(busy)
        );
    }
}

fn read(p: impl AsRef<Path>) -> String {
    let p = p.as_ref();
    fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_string()
}

#[test]
fn full_lifecycle_on_this_host() {
    if !need_root() {
        return;
    }
    let layout = Layout::detect().unwrap();
    eprintln!("layout: {layout:?}");
    let parent = format!("buildcell-test-{}", std::process::id());
    let path = CgroupPath::parse(&format!("/{parent}/lifecycle")).unwrap();
    let mut r = Resources::default();
    r.memory.limit = Some(32 << 20);
    r.pids_limit = Some(16);
    r.cpu.shares = Some(512);
    r.devices = Some(vec![
        DeviceRule::new(false, DeviceKind::All, None, None, "rwm").unwrap(),
        DeviceRule::new(true, DeviceKind::Char, Some(1), Some(3), "rwm").unwrap(),
        DeviceRule::new(true, DeviceKind::Char, Some(1), Some(5), "r").unwrap(),
    ]);
    let mut cleanup = Cleanup {
        children: vec![],
        extra_pids: vec![],
        cgroups: vec![],
        dirs: vec![],
    };
    let cg = Cgroup::create_in(&layout, &path, &r).unwrap();
    cleanup.cgroups.push(cg.clone());
    for d in cg.dirs() {
        assert!(d.path.is_dir(), "{}", d.path.display());
        cleanup.dirs.push(d.path.parent().unwrap().to_path_buf());
    }

    match cg.version() {
        Version::V1 => {
            let mem = cg.dir_of("memory").unwrap();
            assert_eq!(read(mem.join("memory.limit_in_bytes")), "33554432");
            assert_eq!(read(cg.dir_of("pids").unwrap().join("pids.max")), "16");
            assert_eq!(read(cg.dir_of("cpu").unwrap().join("cpu.shares")), "512");
            let list = read(cg.dir_of("devices").unwrap().join("devices.list"));
            let lines: Vec<&str> = list.lines().collect();
            assert_eq!(lines, ["c 1:3 rwm", "c 1:5 r"], "devices.list");
            // Every mounted v1 hierarchy is joined.
            let (Layout::V1 { hierarchies } | Layout::Hybrid { hierarchies, .. }) = &layout else {
                unreachable!()
            };
            assert_eq!(cg.dirs().len(), hierarchies.len());
            // cpuset was filled from the parent.
            if let Some(cs) = cg.dir_of("cpuset") {
                assert!(!read(cs.join("cpuset.cpus")).is_empty());
                assert!(!read(cs.join("cpuset.mems")).is_empty());
            }
        }
        Version::V2 => {
            let d = &cg.dirs()[0].path;
            assert_eq!(read(d.join("memory.max")), "33554432");
            assert_eq!(read(d.join("pids.max")), "16");
            assert_eq!(read(d.join("cpu.weight")), "20");
        }
    }

    // update: zeros and absent values leave the rest alone.
    let mut u = Resources::default();
    u.memory.limit = Some(48 << 20);
    cg.update(&u).unwrap();
    match cg.version() {
        Version::V1 => {
            let mem = cg.dir_of("memory").unwrap();
            assert_eq!(read(mem.join("memory.limit_in_bytes")), "50331648");
            assert_eq!(read(cg.dir_of("pids").unwrap().join("pids.max")), "16");
        }
        Version::V2 => assert_eq!(read(cg.dirs()[0].path.join("memory.max")), "50331648"),
    }
    // A refusal names the file, the value and the errno.
    let mut bad = Resources::default();
    bad.cpu.cpus = Some("4096".into());
    let e = cg.update(&bad).unwrap_err().to_string();
    assert!(
        e.starts_with("cgroup cpuset: writing 4096 to ") && e.contains("cpuset.cpus: "),
        "{e}"
    );

    // The serialised handle and open() find the same cgroup.
    let saved = serde_json::to_string(&cg).unwrap();
    assert_eq!(serde_json::from_str::<Cgroup>(&saved).unwrap(), cg);
    assert_eq!(Cgroup::open_in(&layout, &path).unwrap(), cg);

    // Move a shell in; what it forks afterwards is in too.
    let mut sh = spawn_waiting_shell(false);
    let sh_pid = sh.id() as i32;
    cg.add_pid(sh_pid).unwrap();
    let busy = release(&mut sh);
    cleanup.extra_pids.push(busy);
    cleanup.children.push(sh);
    let pids = cg.pids().unwrap();
    assert!(pids.contains(&sh_pid) && pids.contains(&busy), "{pids:?}");
    assert_eq!(pids.len(), 2, "{pids:?}");
    let own = fs::read_to_string(format!("/proc/{busy}/cgroup")).unwrap();
    assert!(own.contains(&format!("/{parent}/lifecycle")), "{own}");

    // A child cgroup made by the container: pids() and remove() recurse.
    let first = &cg.dirs()[0].path;
    let sub = first.join("sub");
    fs::create_dir(&sub).unwrap();
    if cg.version() == Version::V1 && cg.dirs()[0].controllers == ["cpuset"] {
        for f in ["cpuset.cpus", "cpuset.mems"] {
            fs::write(sub.join(f), read(first.join(f))).unwrap();
        }
    }
    fs::write(sub.join("cgroup.procs"), busy.to_string()).unwrap();
    assert_eq!(cg.pids().unwrap().len(), 2);

    // Freeze: the busy loop stops burning CPU; thaw: it goes on.
    cg.freeze().unwrap();
    assert_eq!(cg.freezer_state().unwrap(), FreezerState::Frozen);
    if cg.version() == Version::V1 {
        assert_eq!(
            read(cg.dir_of("freezer").unwrap().join("freezer.state")),
            "FROZEN"
        );
    }
    eprintln!("frozen busy loop: {}", proc_state(busy));
    assert_frozen(busy, true);
    cg.thaw().unwrap();
    assert_eq!(cg.freezer_state().unwrap(), FreezerState::Thawed);
    assert_frozen(busy, false);

    // With processes in it, the cgroup is not removed by the quick path,
    // in no hierarchy.
    assert!(!cg.remove_if_empty());
    for d in cg.dirs() {
        assert!(d.path.is_dir(), "{} removed", d.path.display());
    }
    // Killed (SIGKILL to all, frozen meanwhile) and removed: everything
    // dies, nothing is left.
    cg.kill_and_remove().unwrap();
    let status = cleanup.children.last_mut().unwrap().wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "{status:?}");
    assert!(common::wait_until(5, || dead(busy)), "{}", proc_state(busy));
    for d in cg.dirs() {
        assert!(!d.path.exists(), "{} still there", d.path.display());
    }
    // Already gone: not an error.
    cg.remove().unwrap();
    assert!(matches!(
        Cgroup::open_in(&layout, &path),
        Err(CgroupError::NotFound(_))
    ));
}

#[test]
fn default_path_is_under_own_cgroup() {
    if !need_root() {
        return;
    }
    let layout = Layout::detect().unwrap();
    let id = format!("buildcell-test-own-{}", std::process::id());
    let path = CgroupPath::from_spec(None, &id).unwrap();
    let cg = Cgroup::create_in(&layout, &path, &Resources::default()).unwrap();
    let _cleanup = Cleanup {
        children: vec![],
        extra_pids: vec![],
        cgroups: vec![cg.clone()],
        dirs: vec![],
    };
    let own = fs::read_to_string("/proc/self/cgroup").unwrap();
    for d in cg.dirs() {
        assert!(d.path.is_dir());
        assert!(d.path.ends_with(&id));
        let line = own
            .lines()
            .find(|l| {
                let mut p = l.splitn(3, ':');
                let (_, ctrl) = (p.next(), p.next().unwrap_or(""));
                let mut c: Vec<&str> = ctrl.split(',').filter(|s| !s.is_empty()).collect();
                c.sort();
                c == d.controllers
            })
            .unwrap();
        let own_path = line.splitn(3, ':').nth(2).unwrap();
        let rel = own_path.trim_start_matches('/');
        assert!(
            d.path.parent().unwrap().ends_with(rel),
            "{} not under own cgroup {own_path}",
            d.path.display()
        );
    }
    // Empty: removed at once, in every hierarchy.
    assert!(cg.remove_if_empty());
    for d in cg.dirs() {
        assert!(!d.path.exists());
    }
}

#[test]
fn v2_core_files_for_real() {
    if !need_root() {
        return;
    }
    let unified = match Layout::detect().unwrap() {
        Layout::V2 { unified } | Layout::Hybrid { unified, .. } => unified.mountpoint,
        Layout::V1 { .. } => {
            common::skip("no cgroup2 mount on this host");
            return;
        }
    };
    let layout = Layout::v2_at(&unified);
    let subtree = unified.join("cgroup.subtree_control");
    let subtree_before = read(&subtree);
    let parent = format!("buildcell-test-v2-{}", std::process::id());
    let path = CgroupPath::parse(&format!("/{parent}/c")).unwrap();
    let cg = Cgroup::create_in(&layout, &path, &Resources::default()).unwrap();
    let mut cleanup = Cleanup {
        children: vec![],
        extra_pids: vec![],
        cgroups: vec![cg.clone()],
        dirs: vec![unified.join(&parent)],
    };
    let dir = cg.dirs()[0].path.clone();
    assert_eq!(dir, unified.join(&parent).join("c"));

    let mut plain = spawn_waiting_shell(false);
    let mut stubborn = spawn_waiting_shell(true);
    let (plain_pid, stubborn_pid) = (plain.id() as i32, stubborn.id() as i32);
    cg.add_pid(plain_pid).unwrap();
    cg.add_pid(stubborn_pid).unwrap();
    let busy1 = release(&mut plain);
    let busy2 = release(&mut stubborn);
    cleanup.extra_pids.extend([busy1, busy2]);
    cleanup.children.extend([plain, stubborn]);
    let pids = cg.pids().unwrap();
    assert_eq!(pids.len(), 4, "{pids:?}");
    for p in [plain_pid, stubborn_pid, busy1, busy2] {
        assert!(pids.contains(&p), "{p} not in {pids:?}");
    }

    cg.freeze().unwrap();
    assert_eq!(cg.freezer_state().unwrap(), FreezerState::Frozen);
    assert!(read(dir.join("cgroup.events")).contains("frozen 1"));
    eprintln!("v2 frozen busy loop: {}", proc_state(busy1));
    assert_frozen(busy1, true);
    cg.thaw().unwrap();
    assert_eq!(cg.freezer_state().unwrap(), FreezerState::Thawed);
    assert_frozen(busy1, false);

    // SIGTERM through the freeze/signal/thaw path: the process ignoring
    // TERM stays, the others go.
    cg.kill_all(Signal::SIGTERM).unwrap();
    assert!(common::wait_until(5, || dead(plain_pid) && dead(busy1)));
    assert!(!dead(stubborn_pid), "{}", proc_state(stubborn_pid));
    assert_eq!(cg.freezer_state().unwrap(), FreezerState::Thawed);
    // SIGKILL through cgroup.kill.
    cg.kill_all(Signal::SIGKILL).unwrap();
    assert!(common::wait_until(5, || dead(stubborn_pid) && dead(busy2)));
    assert!(common::wait_until(5, || cg.pids().unwrap().is_empty()));
    for c in &mut cleanup.children {
        let _ = c.wait();
    }

    cg.remove().unwrap();
    assert!(!dir.exists());
    fs::remove_dir(unified.join(&parent)).unwrap();
    // Leave the host's unified root as it was (create enables what it has).
    let after = read(&subtree);
    for c in after.split_whitespace() {
        if !subtree_before.split_whitespace().any(|b| b == c) {
            let _ = fs::write(&subtree, format!("-{c}"));
        }
    }
}

#[test]
fn read_only_cgroupfs_is_permission_denied() {
    if !need_root() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("buildcell-test-ro-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "ro", "tmpfs"])
        .arg(&dir)
        .status()
        .unwrap()
        .success();
    assert!(ok, "mount a read-only tmpfs");
    let layout = Layout::v2_at(&dir);
    let e = Cgroup::create_in(
        &layout,
        &CgroupPath::parse("/x").unwrap(),
        &Resources::default(),
    )
    .unwrap_err();
    let _ = Command::new("umount").arg(&dir).status();
    let _ = fs::remove_dir(&dir);
    assert!(e.is_permission_denied(), "{e}");
    assert!(e.to_string().contains("Read-only file system"), "{e}");
}

/// A step killed with SIGKILL cannot remove its own cgroup
/// (`buildcell-step-PID` in every hierarchy); its sandbox dies with it,
/// and the next step that gets a cgroup removes the empty leftover.
#[test]
fn a_killed_steps_cgroup_is_removed_by_the_next_step() {
    if !need_root() {
        return;
    }
    let m = common::Mode::Root;
    let d = common::workdir(m, "stale-step-cgroup");
    let mut child = common::command(m, &d, &["step", "--pids", "64", "--", "sleep", "60"], &[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = common::buildcell_pid(&child);
    let name = format!("buildcell-step-{pid}");
    let path = CgroupPath::from_spec(None, &name).unwrap();
    assert!(
        common::wait_until(10, || Cgroup::open(&path)
            .is_ok_and(|c| !c.pids().unwrap_or_default().is_empty())),
        "the step's cgroup {name} with its sandbox in it"
    );
    let dirs: Vec<PathBuf> = Cgroup::open(&path)
        .unwrap()
        .dirs()
        .iter()
        .map(|d| d.path.clone())
        .collect();
    nix::sys::signal::kill(pid, Signal::SIGKILL).unwrap();
    let _ = child.wait();
    // The sandbox dies with the step; its cgroup stays behind, empty.
    assert!(
        common::wait_until(10, || Cgroup::open(&path)
            .is_ok_and(|c| c.pids().is_ok_and(|p| p.is_empty()))),
        "the killed step's cgroup emptied"
    );
    assert!(dirs.iter().all(|d| d.is_dir()), "{dirs:?}");
    let r = common::run(m, &d, &["step", "--pids", "64", "--", "true"]);
    assert_eq!(r.code, 0, "{r:?}");
    let left: Vec<_> = dirs.iter().filter(|d| d.exists()).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// The cgroup v2 device program, on this host's cgroup2 mount (on a
/// hybrid host it applies on top of the v1 devices controller; on a v2
/// host it is the only device control): a process moved into a cgroup
/// with "deny all, allow /dev/null" can write /dev/null and cannot open
/// /dev/zero or /dev/full; the kernel's verdicts match the rules.
#[test]
fn v2_device_program_allows_and_denies_as_the_rules_say() {
    if !need_root() {
        return;
    }
    let Some(unified) = Layout::detect().ok().and_then(|l| match l {
        Layout::Hybrid { unified, .. } => Some(unified.mountpoint),
        Layout::V2 { unified } => Some(unified.mountpoint),
        Layout::V1 { .. } => None,
    }) else {
        common::skip("no cgroup2 mount");
        return;
    };
    let dir = unified.join(format!("buildcell-test-devices-{}", std::process::id()));
    let _ = fs::remove_dir(&dir);
    fs::create_dir(&dir).unwrap();
    let mut cleanup = Cleanup {
        children: vec![],
        extra_pids: vec![],
        cgroups: vec![],
        dirs: vec![dir.clone()],
    };
    let rules = vec![
        DeviceRule::new(false, DeviceKind::All, None, None, "rwm").unwrap(),
        DeviceRule::new(true, DeviceKind::Char, Some(1), Some(3), "rwm").unwrap(),
        // /dev/full read-only: its write is refused.
        DeviceRule::new(true, DeviceKind::Char, Some(1), Some(7), "r").unwrap(),
    ];
    buildcell::cgroups::attach_device_rules(&dir, &rules).unwrap();
    let mut child = Command::new("sh")
        .args([
            "-c",
            "read go; \
             if echo x > /dev/null; then echo null:ok; else echo null:denied; fi; \
             if head -c1 /dev/zero >/dev/null 2>&1; then echo zero:ok; else echo zero:denied; fi; \
             if head -c1 /dev/full >/dev/null 2>&1; then echo full-read:ok; else echo full-read:denied; fi; \
             if (echo x > /dev/full) 2>/dev/null; then echo full-write:ok; else echo full-write:denied; fi",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    fs::write(dir.join("cgroup.procs"), child.id().to_string()).unwrap();
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // /dev/full's write fails with ENOSPC when allowed; refused here, it
    // fails at open: both "denied", so only its read tells the rule apart.
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        [
            "null:ok",
            "zero:denied",
            "full-read:ok",
            "full-write:denied"
        ],
        "{text}"
    );
    cleanup.dirs.retain(|d| d != &dir);
    common::wait_until(5, || fs::remove_dir(&dir).is_ok());
    assert!(!dir.exists());
}
