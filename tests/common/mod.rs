//! Shared harness for the tests that run the real `buildcell` binary.
//!
//! Every test runs in each mode this machine allows: as host root, and as an
//! unprivileged user (`BUILDCELL_TEST_USER`, default `bctest`, driven with
//! `runuser` when the tests run as root; the invoking user otherwise). A mode
//! that cannot run prints why; under CI (`CI=true`) a missing mode fails.

#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use serde_json::{json, Value};

use buildcell::audit::record::{Body, Exec, Record};

/// Who runs buildcell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Host root (container root maps to an unprivileged range).
    Root,
    /// An unprivileged user: `bctest` through runuser, or the invoking user.
    User,
}

pub struct Harness {
    /// World-readable copy of the binaries (the target dir may not be
    /// reachable by the test user).
    pub dir: PathBuf,
    pub bin: PathBuf,
    pub probe: PathBuf,
    /// `Some(name)` when the User mode goes through runuser.
    pub user: Option<String>,
    pub user_uid: u32,
    pub modes: Vec<Mode>,
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn on_ci() -> bool {
    std::env::var("CI")
        .map(|v| v == "true" || v == "1")
        .unwrap_or(false)
}

/// Skip (with the reason printed) outside CI, fail on CI.
pub fn skip(reason: &str) {
    if on_ci() {
        panic!("required on CI but cannot run: {reason}");
    }
    // Straight to fd 2, past the test harness's capture: a skip must show.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED: {reason}");
}

pub fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        // Not under /tmp: the sandbox gets its own /tmp, and the probe must
        // stay reachable inside.
        remove_stale_harness_dirs();
        let dir = PathBuf::from("/var/tmp").join(format!("buildcell-it-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let bin_src = PathBuf::from(env!("CARGO_BIN_EXE_buildcell"));
        let probe_src = bin_src
            .parent()
            .unwrap()
            .join("examples")
            .join("probe");
        assert!(
            probe_src.exists(),
            "{} missing: run the tests with `cargo test` (it builds the examples)",
            probe_src.display()
        );
        let bin = dir.join("buildcell");
        let probe = dir.join("probe");
        fs::copy(&bin_src, &bin).unwrap();
        fs::copy(&probe_src, &probe).unwrap();
        write_test_policy(&dir);
        let mut modes = Vec::new();
        let mut user = None;
        let mut user_uid = nix::unistd::getuid().as_raw();
        if is_root() {
            modes.push(Mode::Root);
            let name = std::env::var("BUILDCELL_TEST_USER").unwrap_or_else(|_| "bctest".into());
            match nix::unistd::User::from_name(&name) {
                Ok(Some(u)) => {
                    user_uid = u.uid.as_raw();
                    user = Some(name);
                    modes.push(Mode::User);
                }
                _ => skip(&format!(
                    "user {name} does not exist: the unprivileged half of the tests needs it (ci/test.sh creates it)"
                )),
            }
        } else {
            modes.push(Mode::User);
            skip("not root: the host-root half of the tests needs root");
        }
        Harness {
            dir,
            bin,
            probe,
            user,
            user_uid,
            modes,
        }
    })
}

/// The harness directories of earlier test runs whose process is gone
/// (each test binary makes one; they would pile up).
fn remove_stale_harness_dirs() {
    let Ok(entries) = fs::read_dir("/var/tmp") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("buildcell-it-") else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// The config every test's buildcell reads (`BUILDCELL_CONFIG`), so that
/// a host's /etc/buildcell never changes a test: the shipped profiles as
/// built in, plus the test-only ones below in `DIR/profiles`.
fn write_test_policy(dir: &Path) {
    let profiles = dir.join("profiles");
    fs::create_dir_all(&profiles).unwrap();
    fs::write(
        dir.join("config.toml"),
        format!(
            "profile_dirs = [{:?}]\nselectable_by_annotation = [\"strict\"]\n",
            profiles.display().to_string()
        ),
    )
    .unwrap();
    // `build` without buildcell's seccomp filter: the tests that show what
    // the filter itself blocks.
    fs::write(
        profiles.join("no-seccomp.toml"),
        "extends = \"build\"\n[seccomp]\nprofile = \"none\"\n",
    )
    .unwrap();
    // The permissive engine-compat without Landlock: tests/landlock.rs
    // sets Landlock by flags and needs a control without it.
    fs::write(
        profiles.join("no-landlock.toml"),
        "extends = \"engine-compat\"\n[landlock]\nmode = \"off\"\n",
    )
    .unwrap();
    // OpenShift style: a random uid with gid 0.
    fs::write(
        profiles.join("random-user.toml"),
        "extends = \"build\"\n[process]\nuser = \"random\"\nrandom_uids = [2000, 2999]\n",
    )
    .unwrap();
    // Every audit record synced before its exec goes on.
    fs::write(
        profiles.join("sync-record.toml"),
        "extends = \"build\"\n[audit]\nsync = \"record\"\n",
    )
    .unwrap();
    // looks-like-root refusing instead of adding, and a profile that runs a
    // root bundle without a user namespace as host root (as runc).
    fs::write(
        profiles.join("userns-require.toml"),
        "extends = \"engine-compat\"\n[namespaces]\nuser_namespace = \"require\"\n",
    )
    .unwrap();
    fs::write(
        profiles.join("no-userns.toml"),
        "extends = \"engine-compat\"\n[namespaces]\nnew = [\"mount\"]\n",
    )
    .unwrap();
    // setuid binaries take effect: no forced no_new_privs, no seccomp
    // filter of buildcell's (installing one sets no_new_privs).
    fs::write(
        profiles.join("setuid-allowed.toml"),
        "extends = \"engine-compat\"\n[process]\nno_new_privileges = false\n[seccomp]\nprofile = \"none\"\n",
    )
    .unwrap();
    // `build` with one protection removed each: the controls of the
    // escape tests (tests/escape.rs), which show that protection is what
    // stops the escape.
    for (name, body) in [
        ("build-no-landlock", "[landlock]\nmode = \"off\"\n"),
        // Without seccomp too: seccompiler's apply_filter sets
        // no_new_privs itself.
        (
            "build-no-nnp",
            "[process]\nno_new_privileges = false\n[seccomp]\nprofile = \"none\"\n",
        ),
        ("build-host-net", "[network]\nmode = \"host\"\n"),
    ] {
        fs::write(
            profiles.join(format!("{name}.toml")),
            format!("extends = \"build\"\n{body}"),
        )
        .unwrap();
    }
    for p in [&profiles, dir] {
        fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// Run `f` once per available mode.
pub fn each_mode(f: impl Fn(Mode)) {
    for m in &harness().modes {
        eprintln!("--- mode {m:?}");
        f(*m);
    }
}

/// Uid that runs buildcell in `mode`.
pub fn caller_uid(mode: Mode) -> u32 {
    match mode {
        Mode::Root => 0,
        Mode::User => harness().user_uid,
    }
}

/// A fresh directory owned by the caller of `mode`, to run steps in.
pub fn workdir(mode: Mode, name: &str) -> PathBuf {
    let h = harness();
    let d = h.dir.join(format!("{name}-{mode:?}"));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    chown_to(mode, &d);
    d
}

pub fn chown_to(mode: Mode, path: &Path) {
    if is_root() {
        let uid = caller_uid(mode);
        nix::unistd::chown(path, Some(nix::unistd::Uid::from_raw(uid)), None).unwrap();
    }
}

/// The start of a `step` with no seccomp filter at all: the `no-seccomp`
/// profile and an allow-all `--seccomp` file written into `dir` (a test
/// then sees the kernel's own answers, or i386 syscalls that the default
/// filter kills). Run it with `dir` as the working directory.
pub fn step_without_seccomp(mode: Mode, dir: &Path) -> Vec<&'static str> {
    let allow = dir.join("allow.json");
    fs::write(&allow, r#"{"defaultAction": "SCMP_ACT_ALLOW"}"#).unwrap();
    chown_to(mode, &allow);
    vec!["--profile", "no-seccomp", "step", "--seccomp", "allow.json"]
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// The command that starts buildcell as the caller of `mode`, with a clean
/// environment (PATH, HOME, plus `env`).
pub fn command(mode: Mode, cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let h = harness();
    let mut c = match (mode, &h.user) {
        (Mode::User, Some(name)) => {
            let mut c = Command::new("runuser");
            c.args(["-u", name, "--"]);
            c.arg(&h.bin);
            c
        }
        _ => Command::new(&h.bin),
    };
    c.args(args).current_dir(cwd).env_clear();
    c.env(
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    );
    c.env("HOME", home_of(mode));
    c.env("BUILDCELL_CONFIG", h.dir.join("config.toml"));
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

pub fn home_of(mode: Mode) -> PathBuf {
    match (mode, &harness().user) {
        (Mode::User, Some(name)) => nix::unistd::User::from_name(name)
            .ok()
            .flatten()
            .map(|u| u.dir)
            .unwrap_or_else(|| "/nonexistent".into()),
        (Mode::User, None) => std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| "/nonexistent".into()),
        (Mode::Root, _) => "/root".into(),
    }
}

pub fn finish(out: Output) -> Run {
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `buildcell ARGS` in `cwd`, stdin empty.
pub fn run_env(mode: Mode, cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let out = command(mode, cwd, args, env)
        .stdin(Stdio::null())
        .output()
        .expect("start buildcell");
    finish(out)
}

pub fn run(mode: Mode, cwd: &Path, args: &[&str]) -> Run {
    run_env(mode, cwd, args, &[])
}

/// `buildcell step -- sh -c SCRIPT` in `cwd`.
pub fn sh(mode: Mode, cwd: &Path, script: &str) -> Run {
    run(mode, cwd, &["step", "--", "sh", "-c", script])
}

/// Assert a run succeeded and return its stdout.
pub fn ok(r: Run) -> String {
    assert_eq!(r.code, 0, "{r:?}");
    r.stdout
}

/// Processes on the host whose command line starts with `needle`.
pub fn host_processes(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        if !e
            .file_name()
            .to_string_lossy()
            .chars()
            .all(|c| c.is_ascii_digit())
        {
            continue;
        }
        if let Ok(cmd) = fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.starts_with(needle) {
                found.push(format!("{} {}", e.file_name().to_string_lossy(), cmd));
            }
        }
    }
    found
}

/// The first subordinate uid of the test user (host uid of container uid 1).
pub fn subuid_start(user: &str) -> Option<u32> {
    let text = fs::read_to_string("/etc/subuid").ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == user).then(|| f.next()?.parse().ok())?
    })
}

/// Kills (SIGKILL) the process group's leader on drop, so a failed
/// assertion leaves no sandbox running.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Poll `cond` every 20 ms for up to `secs` seconds.
pub fn wait_until(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Assert a one-line refusal: exit status `code`, stderr one line holding
/// `text`.
pub fn assert_refused(r: &Run, code: i32, text: &str) {
    assert_eq!(r.code, code, "{r:?}");
    assert!(r.stderr.contains(text), "expected {text:?}: {r:?}");
    assert_eq!(r.stderr.lines().count(), 1, "{r:?}");
}

/// A busybox rootfs shared by every test (read-only to containers).
pub fn rootfs() -> PathBuf {
    static ONCE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        let dir = harness().dir.join("busybox-rootfs");
        make_busybox_rootfs(
            &dir,
            &["proc", "dev", "sys", "tmp", "etc", "root"],
            &[
                "sh", "echo", "cat", "id", "sleep", "ls", "grep", "true", "false", "hostname",
                "stat", "head", "touch", "mount", "awk", "mkdir", "rmdir", "wc", "tty", "test",
            ],
        );
        dir
    })
    .clone()
}

/// A busybox rootfs at `dir`: the directories `dirs`, static busybox in
/// /bin and a link per applet of `applets`.
pub fn make_busybox_rootfs(dir: &Path, dirs: &[&str], applets: &[&str]) {
    let bin = dir.join("bin");
    fs::create_dir_all(&bin).unwrap();
    for d in dirs {
        fs::create_dir_all(dir.join(d)).unwrap();
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("busybox-static is needed (ci/test.sh installs it)");
    fs::copy(busybox, bin.join("busybox")).unwrap();
    fs::set_permissions(bin.join("busybox"), fs::Permissions::from_mode(0o755)).unwrap();
    for applet in applets {
        let _ = symlink("busybox", bin.join(applet));
    }
}

/// The containers left in a bundle's state root (`BUNDLE/state`).
pub fn entries(bundle: &Path) -> Vec<String> {
    fs::read_dir(bundle.join("state"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A bundle directory for `name` in `mode`: config.json from `buildcell
/// spec`, the shared rootfs, args replaced by `args`, then `edit`.
pub fn bundle(mode: Mode, name: &str, args: &[&str], edit: impl FnOnce(&mut Value)) -> PathBuf {
    let dir = workdir(mode, name);
    ok(run(mode, &dir, &["spec"]));
    let path = dir.join("config.json");
    let mut c: Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    c["root"]["path"] = json!(rootfs());
    c["process"]["args"] = json!(args);
    edit(&mut c);
    fs::write(&path, serde_json::to_string_pretty(&c).unwrap()).unwrap();
    dir
}

// ---------- audit logs ----------

/// A log path outside the step's working directory, writable by the caller.
pub fn log_path(m: Mode, name: &str) -> PathBuf {
    let d = harness().dir.join(format!("logs-{m:?}"));
    fs::create_dir_all(&d).unwrap();
    chown_to(m, &d);
    let p = d.join(format!("{name}.log"));
    let _ = fs::remove_file(&p);
    p
}

pub fn execs(log: &Path) -> Vec<Exec> {
    fs::read_to_string(log)
        .unwrap()
        .lines()
        .filter_map(|l| match serde_json::from_str::<Record>(l).unwrap().body {
            Body::Exec(e) => Some(e),
            _ => None,
        })
        .collect()
}

pub fn ran(execs: &[Exec], argv: &[&str]) -> usize {
    execs
        .iter()
        .filter(|e| e.result == "ok" && e.argv == argv)
        .count()
}

/// Exactly one record of `argv`, and what the kernel loaded for it was a
/// memfd (an `execveat`/`fexecve` of one is recorded like any exec).
pub fn assert_one_memfd_exec(execs: &[Exec], argv: &[&str]) {
    let memfd: Vec<_> = execs.iter().filter(|e| e.argv == argv).collect();
    assert_eq!(memfd.len(), 1, "one record of {argv:?}: {execs:?}");
    assert!(
        memfd[0]
            .resolved
            .as_deref()
            .unwrap_or("")
            .starts_with("/memfd:"),
        "{:?}",
        memfd[0]
    );
}

/// `buildcell step --audit-log LOG ARGS...` in `d`.
pub fn audited(m: Mode, d: &Path, log: &Path, args: &[&str]) -> Run {
    let mut all = vec!["step", "--audit-log", log.to_str().unwrap()];
    all.extend_from_slice(args);
    run(m, d, &all)
}

// ---------- bundles under a profile ----------

/// `buildcell --root BUNDLE/state [--profile P] ARGS...`, output in files
/// (a created container keeps its stdio open).
pub fn rt(mode: Mode, bundle: &Path, profile: Option<&str>, args: &[&str]) -> Run {
    rt_env(mode, bundle, profile, args, &[])
}

pub fn rt_env(
    mode: Mode,
    bundle: &Path,
    profile: Option<&str>,
    args: &[&str],
    env: &[(&str, &str)],
) -> Run {
    let root = bundle.join("state").display().to_string();
    let mut all = vec!["--root", root.as_str()];
    if let Some(p) = profile {
        all.extend_from_slice(&["--profile", p]);
    }
    all.extend_from_slice(args);
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let out = bundle.join(format!(".p-{n}-stdout"));
    let err = bundle.join(format!(".p-{n}-stderr"));
    captured(command(mode, bundle, &all, env), &out, &err)
}

/// Run `c` with no stdin and its output in the files `out` and `err`
/// (kept for a failing test's reader), then read back.
pub fn captured(mut c: Command, out: &Path, err: &Path) -> Run {
    let status = c
        .stdin(std::process::Stdio::null())
        .stdout(fs::File::create(out).unwrap())
        .stderr(fs::File::create(err).unwrap())
        .status()
        .expect("start buildcell");
    Run {
        code: status.code().unwrap_or(-1),
        stdout: fs::read_to_string(out).unwrap(),
        stderr: fs::read_to_string(err).unwrap(),
    }
}

/// A volatile overlayfs over `lower` at `DIR/merged`, with `DIR/diff` as
/// its upper and `DIR/work` as its work directory, as containers/storage
/// mounts an image (an old mount there is detached first).
pub fn mount_overlay(dir: &Path, lower: &Path) -> PathBuf {
    for sub in ["diff", "work", "merged"] {
        fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let merged = dir.join("merged");
    let _ = nix::mount::umount2(&merged, nix::mount::MntFlags::MNT_DETACH);
    let opts = format!(
        "lowerdir={},upperdir={},workdir={},volatile",
        lower.display(),
        dir.join("diff").display(),
        dir.join("work").display()
    );
    nix::mount::mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(opts.as_str()),
    )
    .unwrap();
    merged
}

/// A bundle from `buildcell spec` with a user namespace of its own also as
/// host root (where `spec` writes none and buildcell would add one): an
/// unprivileged range.
pub fn pbundle(
    mode: Mode,
    name: &str,
    args: &[&str],
    edit: impl FnOnce(&mut Value),
) -> std::path::PathBuf {
    bundle(mode, name, args, |c| {
        if mode == Mode::Root {
            let maps = json!([{"containerID": 0, "hostID": 200000, "size": 65536}]);
            c["linux"]["uidMappings"] = maps.clone();
            c["linux"]["gidMappings"] = maps;
            with_user_namespace(c);
        }
        edit(c)
    })
}

/// Add a user namespace to a bundle's config if it has none (`buildcell
/// spec` as host root writes none: buildcell adds one itself).
pub fn with_user_namespace(c: &mut Value) {
    let ns = c["linux"]["namespaces"].as_array_mut().unwrap();
    if !ns.iter().any(|n| n["type"] == "user") {
        ns.push(json!({"type": "user"}));
    }
}

/// `state ID` under the default profile, parsed.
pub fn state_of(mode: Mode, b: &Path, id: &str) -> Value {
    serde_json::from_str(&ok(rt(mode, b, None, &["state", id]))).unwrap()
}

// ---------- processes ----------

/// The host pid of buildcell itself (through runuser in user mode), once
/// it runs (waited for up to 5 s).
pub fn buildcell_pid(child: &std::process::Child) -> nix::unistd::Pid {
    let pid = child.id() as i32;
    let is_buildcell = |pid: i32| {
        fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "buildcell")
    };
    let mut found = None;
    wait_until(5, || {
        found = if is_buildcell(pid) {
            Some(pid)
        } else {
            // runuser's child.
            fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                .ok()
                .and_then(|c| c.split_whitespace().next()?.parse().ok())
                .filter(|c| is_buildcell(*c))
        };
        found.is_some()
    });
    nix::unistd::Pid::from_raw(found.expect("buildcell runs"))
}

// ---------- terminals ----------

/// Receive the fd an engine's console socket gets.
pub fn receive_master(listener: &std::os::unix::net::UnixListener) -> std::os::fd::OwnedFd {
    use std::os::fd::{AsRawFd, FromRawFd};
    let (conn, _) = listener.accept().unwrap();
    let mut buf = [0u8; 64];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let msg = nix::sys::socket::recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        nix::sys::socket::MsgFlags::empty(),
    )
    .unwrap();
    for c in msg.cmsgs().unwrap() {
        if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = c {
            // SAFETY: the fd was just received from the kernel; we own it.
            return unsafe { std::os::fd::OwnedFd::from_raw_fd(fds[0]) };
        }
    }
    panic!("no fd on the console socket");
}

// ---------- escape tests ----------

/// A busybox rootfs that also holds the probe at `/probe` and the shared
/// libraries it needs (with the dynamic loader at the path the probe names),
/// so that bundles can run it. Shared, read-only to containers.
pub fn probe_rootfs() -> PathBuf {
    static ONCE: OnceLock<PathBuf> = OnceLock::new();
    ONCE.get_or_init(|| {
        let h = harness();
        let dir = h.dir.join("probe-rootfs");
        let _ = fs::remove_dir_all(&dir);
        let cp = Command::new("cp")
            .args(["-a", rootfs().to_str().unwrap(), dir.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(cp.success());
        fs::copy(&h.probe, dir.join("probe")).unwrap();
        // `ldd` names each library and the loader by their host paths.
        let ldd = Command::new("ldd").arg(&h.probe).output().expect("ldd");
        for line in String::from_utf8_lossy(&ldd.stdout).lines() {
            let path = line
                .split_whitespace()
                .find(|w| w.starts_with('/'))
                .map(PathBuf::from);
            let Some(path) = path else { continue };
            let dest = dir.join(path.strip_prefix("/").unwrap());
            fs::create_dir_all(dest.parent().unwrap()).unwrap();
            // The loader's path may be a symlink (/lib64 -> /lib/...):
            // copy what it points to, under its own name.
            fs::copy(&path, &dest).unwrap();
        }
        dir
    })
    .clone()
}

/// A private, writable copy of [`probe_rootfs`] at `DIR/name`, every file
/// owned by host uid `owner` (the container's root, so it may write it).
pub fn private_rootfs(name: &str, owner: u32) -> PathBuf {
    let dir = harness().dir.join(name);
    let _ = fs::remove_dir_all(&dir);
    let cp = Command::new("cp")
        .args([
            "-a",
            probe_rootfs().to_str().unwrap(),
            dir.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(cp.success());
    if is_root() {
        let st = Command::new("chown")
            .args([
                "-R",
                "-h",
                &format!("{owner}:{owner}"),
                dir.to_str().unwrap(),
            ])
            .status()
            .unwrap();
        assert!(st.success());
    }
    dir
}

/// The newest audit log of container `id` in the default directory.
pub fn newest_log(mode: Mode, id: &str) -> PathBuf {
    let dir = if mode == Mode::Root {
        PathBuf::from("/var/log/buildcell")
    } else {
        home_of(mode).join(".local/state/buildcell/audit")
    };
    fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("{id}-"))
        })
        .max_by_key(|p| fs::metadata(p).unwrap().modified().unwrap())
        .unwrap_or_else(|| panic!("no audit log of {id} in {}", dir.display()))
}

/// Remove a config's user namespace and id maps (as a root engine sends
/// it; buildcell adds its own).
pub fn without_user_namespace(c: &mut Value) {
    c["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .retain(|n| n["type"] != "user");
    let linux = c["linux"].as_object_mut().unwrap();
    linux.remove("uidMappings");
    linux.remove("gidMappings");
}

/// The host uid of the container's root in a [`pbundle`] of `mode`.
pub fn pbundle_root_uid(mode: Mode) -> u32 {
    match mode {
        Mode::Root => 200000,
        Mode::User => caller_uid(mode),
    }
}

/// A root engine's bundle (what podman, docker and containerd hand a runtime
/// as host root): `buildcell spec`'s, the probe rootfs, `args`, then `edit`,
/// with no user namespace and no id maps: container root would be host
/// root unless buildcell adds a user namespace (looks-like-root).
pub fn root_engine_bundle(name: &str, args: &[&str], edit: impl FnOnce(&mut Value)) -> PathBuf {
    bundle(Mode::Root, name, args, |c| {
        c["root"]["path"] = json!(probe_rootfs());
        without_user_namespace(c);
        edit(c)
    })
}

/// The SHA-256 (hex) of a file's content.
pub fn sha256_file(path: &Path) -> String {
    buildcell::audit::sha256_hex(&fs::read(path).unwrap())
}

/// Make `c`'s process start with the host directory `dir` open as fd 7,
/// inheritable: an fd the caller (an engine) leaked into buildcell. Keep
/// the returned file until `c` is spawned.
pub fn leak_dir_fd(c: &mut Command, dir: &Path) -> fs::File {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let f = fs::File::open(dir).unwrap();
    let fd = f.as_raw_fd();
    // SAFETY: dup2 is async-signal-safe; `fd` stays open in the parent
    // (the caller keeps the file) until the child has run this.
    unsafe {
        c.pre_exec(move || {
            if libc::dup2(fd, 7) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    f
}

/// The host's mount points (from /proc/self/mountinfo).
pub fn host_mount_points() -> std::collections::BTreeSet<String> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4).map(String::from))
        .collect()
}

/// The current value of a host /proc file, for the tests that check it
/// never changes.
pub fn host_proc(path: &str) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}
