//! `exec`: a new process in a running container, from `--process` JSON or
//! the command line over the container's own config, audited by the
//! container's supervisor.

use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;
use oci_spec::runtime::Spec;

use crate::audit::{self};
use crate::error::Error;
use crate::fault;
use crate::launch::{self, Timer};
use crate::spec::{self};

use super::bundle::{bounding_caps, bundle_seccomp};
use super::create::PassedFds;
use super::state::{ContainerDir, Status};
use super::supervisor::short_socket_path;
use super::{cgroup_of, state, status_of, usage, write_pid_file, CONTROL_SOCKET};

/// `exec` arguments.
pub struct ExecArgs {
    pub id: String,
    /// Fds passed on to the process (see [`passed_fds`](super::passed_fds)).
    pub extra_fds: PassedFds,
    pub process: Option<PathBuf>,
    pub detach: bool,
    pub pid_file: Option<PathBuf>,
    pub tty: bool,
    pub console_socket: Option<PathBuf>,
    pub cwd: Option<PathBuf>,
    pub env: Vec<String>,
    pub user: Option<String>,
    pub additional_gids: Vec<u32>,
    pub caps: Vec<String>,
    pub no_new_privs: bool,
    pub args: Vec<String>,
}

/// Parse `exec --process`'s JSON (`name` is the file, for messages);
/// errors name the JSON path. Pure, so that hostile input can be fuzzed
/// (`fuzz/fuzz_targets/exec_process.rs`).
pub fn parse_process(data: &[u8], name: &str) -> Result<oci_spec::runtime::Process, Error> {
    let de = &mut serde_json::Deserializer::from_slice(data);
    serde_path_to_error::deserialize(de)
        .map_err(|e| usage(format!("--process {name}: at {}: {}", e.path(), e.inner())))
}

/// The process `exec` runs: `--process FILE`, or the container's own
/// process with the command line and flags applied (as runc does).
pub(super) fn exec_process(a: &ExecArgs, base: &Spec) -> Result<oci_spec::runtime::Process, Error> {
    if let Some(path) = &a.process {
        let data =
            std::fs::read(path).map_err(|e| usage(format!("--process {}: {e}", path.display())))?;
        return parse_process(&data, &path.display().to_string());
    }
    if a.args.is_empty() {
        return Err(usage("exec: give --process FILE or a command after the id"));
    }
    let mut p = base.process().clone().unwrap_or_default();
    p.set_args(Some(a.args.clone()));
    p.set_terminal(Some(a.tty));
    if let Some(cwd) = &a.cwd {
        p.set_cwd(cwd.clone());
    }
    let mut env = p.env().clone().unwrap_or_default();
    env.extend(a.env.iter().cloned());
    p.set_env(Some(env));
    if let Some(u) = &a.user {
        let (uid, gid) = match u.split_once(':') {
            Some((uid, gid)) => (uid, Some(gid)),
            None => (u.as_str(), None),
        };
        let bad = || usage(format!("--user {u:?}: give UID[:GID] as numbers"));
        let mut user = p.user().clone();
        user.set_uid(uid.parse().map_err(|_| bad())?);
        if let Some(g) = gid {
            user.set_gid(g.parse().map_err(|_| bad())?);
        }
        if !a.additional_gids.is_empty() {
            user.set_additional_gids(Some(a.additional_gids.clone()));
        }
        p.set_user(user);
    }
    if a.no_new_privs {
        p.set_no_new_privileges(Some(true));
    }
    if !a.caps.is_empty() {
        let mut caps = p.capabilities().clone().unwrap_or_default();
        for name in &a.caps {
            let cap: oci_spec::runtime::Capability = name
                .trim_start_matches("CAP_")
                .parse()
                .map_err(|_| usage(format!("--cap {name:?}: not a capability")))?;
            for set in [
                caps.bounding().clone(),
                caps.effective().clone(),
                caps.permitted().clone(),
            ]
            .iter()
            .enumerate()
            {
                let mut s = set.1.clone().unwrap_or_default();
                s.insert(cap);
                match set.0 {
                    0 => caps.set_bounding(Some(s)),
                    1 => caps.set_effective(Some(s)),
                    _ => caps.set_permitted(Some(s)),
                };
            }
        }
        p.set_capabilities(Some(caps));
    }
    Ok(p)
}

/// `exec`: run a new process in a running container. Its exec-audit
/// listener goes to the container's supervisor; with `--detach` the pid
/// goes to `--pid-file` and the caller reaps it, otherwise buildcell waits
/// and exits with its status.
pub fn exec(root: &Path, a: &ExecArgs, verbose: bool) -> Result<i32, Error> {
    let timer = Timer::new(verbose);
    let dir = ContainerDir::open(root, &a.id)?;
    let saved = dir.load()?;
    let status = status_of(&dir, &saved);
    if !matches!(status, Status::Running | Status::Created) {
        return Err(usage(format!(
            "cannot exec in container {}: it is {status}",
            a.id
        )));
    }
    let config_path = dir.dir.join("config.json");
    let data = std::fs::read(&config_path)
        .map_err(|e| usage(format!("{}: {e}", config_path.display())))?;
    let base: Spec = serde_json::from_slice(&data)
        .map_err(|e| usage(format!("{}: {e}", config_path.display())))?;
    let mut process = exec_process(a, &base)?;
    // The profile the container was created under binds its execs too.
    let profile = crate::policy::load_saved(&dir.dir).ok_or_else(|| {
        usage(format!(
            "{}: missing or unreadable; the container's profile is unknown, so nothing is exec'd (delete and re-create it)",
            dir.dir.join(crate::policy::STATE_FILE).display()
        ))
    })?;
    let violations = crate::policy::check::check_process(&profile, &process, "process");
    if !violations.is_empty() {
        return Err(crate::policy::PolicyError::Violations {
            profile: profile.name.clone(),
            what: "exec process",
            violations,
        }
        .into());
    }
    crate::policy::check::apply_process_defaults(&profile, &mut process);
    let mut plan = spec::plan_process(&process, "process")?;
    a.extra_fds.apply(&mut plan);
    if plan.terminal && a.console_socket.is_none() {
        return Err(usage(
            "process.terminal is true but no --console-socket was given",
        ));
    }
    let mut seccomp = bundle_seccomp(&base, Some(&process))?;
    seccomp.extend(crate::policy::seccomp_filters(
        &profile,
        &bounding_caps(Some(&process)),
    )?);
    let cgroup = cgroup_of(&saved);
    // On cgroup v1 the process moves itself in (cgroups::SelfJoin); on v2
    // the runtime moves it (see launch::exec).
    let entry = crate::cgroups::Entry {
        join: match &cgroup {
            Some(cg) => cg.self_join().map_err(|e| usage(e.to_string()))?,
            None => None,
        },
        into: None,
    };
    let by_itself = entry.by_itself();
    let place = |pid: i32| match &cgroup {
        Some(cg) if !by_itself => cg.add_pid(pid).map_err(|e| usage(e.to_string())),
        _ => Ok(()),
    };
    // The process is forked by an intermediate that exits at once: as a
    // child subreaper, buildcell gets it back to wait for it.
    if !a.detach {
        nix::sys::prctl::set_child_subreaper(true)
            .map_err(|e| usage(format!("exec: child subreaper: {e}")))?;
    }
    let console = a.console_socket.as_deref().filter(|_| plan.terminal);
    // The container's Landlock plan: an exec'd process gets the same
    // domain rules as the init.
    let landlock =
        crate::policy::landlock_plan(&profile, &crate::policy::rw_bind_destinations(&base));
    let spawned = launch::exec(
        saved.oci.pid,
        &plan,
        &seccomp,
        landlock.as_ref(),
        true,
        console,
        launch::Placement { entry, then: place },
        timer,
    )
    .map_err(|e| {
        // The init may have died while we joined it.
        if state::init_alive(&saved) {
            e
        } else {
            usage(format!("cannot exec in container {}: it is stopped", a.id))
        }
    })?;
    let pid = spawned.pid;
    if let Some(listener) = &spawned.listener {
        let (_dirfd, socket) = short_socket_path(&dir.dir, CONTROL_SOCKET)?;
        // The process's own credential-named variables are redacted from
        // the container's log from now on, like the init's.
        let secrets: Vec<(String, String)> = process
            .env()
            .iter()
            .flatten()
            .filter_map(|e| e.split_once('='))
            .filter(|(name, _)| audit::redact::is_secret_name(name) || profile.redacts_env(name))
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        fault::point("exec:ready");
        if let Err(e) = audit::supervisor::hand_over(&socket, listener, &secrets) {
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            return Err(usage(format!(
                "exec refused: {e}; no command runs unaudited"
            )));
        }
    }
    fault::point("exec:handed-over");
    drop(spawned.listener);
    if let Some(p) = &a.pid_file {
        write_pid_file(p, pid.as_raw())?;
    }
    // Other calls on this container (kill, delete) must not wait for us.
    drop(dir);
    if a.detach {
        return Ok(0);
    }
    let code = crate::reaper::supervise(pid, &spawned.signals, false);
    if let Some((step, message, exit_code)) = spawned.channel.take_failure() {
        return Err(Error::Child {
            step,
            message,
            exit_code,
        });
    }
    Ok(code)
}
