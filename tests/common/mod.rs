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
        let bin = dir.join("bin");
        fs::create_dir_all(&bin).unwrap();
        for d in ["proc", "dev", "sys", "tmp", "etc", "root"] {
            fs::create_dir_all(dir.join(d)).unwrap();
        }

        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("busybox-static is needed (ci/test.sh installs it)");
        fs::copy(busybox, bin.join("busybox")).unwrap();
        fs::set_permissions(bin.join("busybox"), fs::Permissions::from_mode(0o755)).unwrap();
        for applet in [
            "sh", "echo", "cat", "id", "sleep", "ls", "grep", "true", "false", "hostname", "stat",
            "head", "touch", "mount", "awk", "mkdir", "rmdir", "wc", "tty", "test",
        ] {
            let _ = symlink("busybox", bin.join(applet));
        }
        dir
    })
    .clone()
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
