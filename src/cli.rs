//! The command line: clap definitions and the translation of flags into a
//! [`StepRequest`] and [`StepOptions`]. No kernel work happens here: `step`
//! runs in [`crate::step`], the OCI operations in [`crate::container`].

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::audit::{self};
use crate::error::Error;
use crate::landlock::{Compat, FsRules, LandlockPlan};
use crate::spec::{self, parse_size, StepRequest, UserMount};
use crate::step::{AuditOptions, StepOptions};

#[derive(Parser, Debug)]
#[command(
    name = "buildcell",
    disable_version_flag = true,
    about = "A hardened sandbox runtime for build steps",
    long_about = "A hardened sandbox runtime for build steps: rootless, in fresh namespaces, \
                  with capabilities dropped, no_new_privs and seccomp. Also an OCI runtime \
                  with runc's command line (create, start, state, kill, delete, run, ...)."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// runc's global flags (accepted before or after the subcommand).
#[derive(Args, Debug, Default)]
pub struct GlobalArgs {
    /// Directory of container state (default /run/buildcell as root,
    /// $XDG_RUNTIME_DIR/buildcell rootless).
    #[arg(long, global = true, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Also write errors to this file.
    #[arg(long, global = true, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// Format of --log: text or json (one JSON object per line).
    #[arg(long, global = true, value_name = "FORMAT", default_value = "text")]
    pub log_format: String,
    /// Use systemd for cgroups: refused (no systemd on build hosts).
    #[arg(long, global = true)]
    pub systemd_cgroup: bool,
    /// More messages (setup steps with times) on stderr.
    #[arg(long, global = true)]
    pub debug: bool,
    /// Accepted for runc compatibility; buildcell detects rootless mode.
    #[arg(long, global = true, value_name = "true|false|auto", num_args = 0..=1, default_missing_value = "true")]
    pub rootless: Option<String>,
    /// The security profile (profiles/NAME.toml) that applies; default: the
    /// config's default_profile, or NAME when called as buildcell-NAME, or
    /// build. See `buildcell policy list`.
    #[arg(long, global = true, value_name = "NAME")]
    pub profile: Option<String>,
    /// Print the version (with the `commit:` line docker reads).
    #[arg(long, short = 'v')]
    pub version: bool,
}

#[derive(Subcommand, Debug)]
#[command(defer = true)]
pub enum Command {
    /// Run a build step in the sandbox: the host filesystem read-only, the
    /// current directory read-write, no network, fresh namespaces.
    Step(Box<StepArgs>),
    /// Audit logs: create a signing key, verify logs, show records.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Security profiles: check a bundle, show or list profiles.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Create a container from a bundle; it waits for `start`.
    Create(CreateCmd),
    /// Create and start a container, wait for it, then delete it.
    Run(RunCmd),
    /// Start the user process of a created container.
    Start { id: String },
    /// Print the state of a container as JSON.
    State { id: String },
    /// Send a signal (number or name, default TERM) to a container.
    Kill {
        /// Signal every process of the container.
        #[arg(long, short = 'a')]
        all: bool,
        id: String,
        #[arg(default_value = "TERM")]
        signal: String,
    },
    /// Delete a container's state (and the container, with --force).
    Delete {
        /// Kill a running container first; an unknown id is not an error.
        #[arg(long, short = 'f')]
        force: bool,
        id: String,
    },
    /// List containers.
    List {
        #[arg(long, short = 'f', default_value = "table")]
        format: String,
        #[arg(long, short = 'q')]
        quiet: bool,
    },
    /// Run a new process in a running container.
    Exec(ExecCmd),
    /// Freeze every process of a container.
    Pause { id: String },
    /// Thaw a paused container.
    Resume { id: String },
    /// List a container's processes (host pids).
    Ps {
        #[arg(long, short = 'f', default_value = "table")]
        format: String,
        id: String,
        /// ps(1) options: not supported, the list is buildcell's own.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// Change a container's cgroup limits.
    Update(UpdateCmd),
    /// Write a config.json for a bundle (rootless-ready: a user namespace
    /// mapping your ids to root), with a read-only `rootfs` and `sh`.
    Spec {
        /// Directory to write config.json in. (`--rootless` is accepted
        /// for runc compatibility: the config is always rootless-ready.)
        #[arg(long, short = 'b', default_value = ".")]
        bundle: PathBuf,
    },
    /// Print the OCI features JSON of this binary on this kernel.
    Features,
    /// Refused: buildcell does not checkpoint containers.
    Checkpoint {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        rest: Vec<String>,
    },
    /// Refused: buildcell does not restore containers.
    Restore {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        rest: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
#[command(defer = true)]
pub enum PolicyCommand {
    /// Check a bundle (or a config.json) against the profile that would
    /// apply; print every violation, one per line; exit 1 if any.
    Check {
        /// A bundle directory or a config.json file.
        path: PathBuf,
    },
    /// Print a profile resolved (everything it extends merged), as JSON.
    Show { name: String },
    /// List the profiles visible to this user, and where each comes from.
    List,
}

#[derive(Args, Debug)]
pub struct CreateCmd {
    /// The bundle directory (holding config.json).
    #[arg(long, short = 'b', default_value = ".")]
    pub bundle: PathBuf,
    /// Write the container's host pid here.
    #[arg(long, value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    /// Unix socket to send the terminal's master fd to.
    #[arg(long, value_name = "SOCKET")]
    pub console_socket: Option<PathBuf>,
    /// Accepted for runc compatibility (no session keyring is made).
    #[arg(long)]
    pub no_new_keyring: bool,
    /// Accepted for runc compatibility; pivot_root is always used.
    #[arg(long)]
    pub no_pivot: bool,
    /// Pass fds 3..3+N (after LISTEN_FDS's, when set) to the container's
    /// process, as runc does.
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: u32,
    pub id: String,
}

#[derive(Args, Debug)]
pub struct ExecCmd {
    /// An OCI process JSON file (args, env, cwd, user, capabilities...).
    #[arg(long, short = 'p', value_name = "FILE")]
    pub process: Option<PathBuf>,
    /// Start the process, write its pid, exit: the caller reaps it.
    #[arg(long, short = 'd')]
    pub detach: bool,
    #[arg(long, value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    /// Give the process a terminal (its master goes to --console-socket).
    #[arg(long, short = 't')]
    pub tty: bool,
    #[arg(long, value_name = "SOCKET")]
    pub console_socket: Option<PathBuf>,
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<PathBuf>,
    #[arg(long, short = 'e', value_name = "K=V")]
    pub env: Vec<String>,
    /// The user inside the container: a uid, or uid:gid.
    #[arg(long, short = 'u', value_name = "UID[:GID]")]
    pub user: Option<String>,
    #[arg(long = "additional-gids", short = 'g', value_name = "GID")]
    pub additional_gids: Vec<u32>,
    /// Add a capability to the bounding, effective and permitted sets.
    #[arg(long = "cap", short = 'c', value_name = "CAP")]
    pub caps: Vec<String>,
    #[arg(long)]
    pub no_new_privs: bool,
    /// Pass fds 3..3+N (after LISTEN_FDS's, when set) to the process.
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: u32,
    pub id: String,
    /// The command and its arguments (without --process).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

#[derive(Args, Debug)]
pub struct UpdateCmd {
    /// A LinuxResources JSON file, or `-` for stdin.
    #[arg(long, short = 'r', value_name = "FILE")]
    pub resources: Option<PathBuf>,
    /// Memory limit in bytes (runc's single-value flags follow).
    #[arg(long)]
    pub memory: Option<String>,
    #[arg(long)]
    pub memory_swap: Option<String>,
    #[arg(long)]
    pub memory_reservation: Option<String>,
    #[arg(long)]
    pub pids_limit: Option<i64>,
    #[arg(long)]
    pub cpu_shares: Option<u64>,
    #[arg(long)]
    pub cpu_quota: Option<i64>,
    #[arg(long)]
    pub cpu_period: Option<u64>,
    #[arg(long)]
    pub cpuset_cpus: Option<String>,
    #[arg(long)]
    pub cpuset_mems: Option<String>,
    pub id: String,
}

#[derive(Args, Debug)]
pub struct RunCmd {
    #[command(flatten)]
    pub create: CreateCmd,
    /// Create and start the container, then return (it keeps running,
    /// audited by its detached supervisor, like `create` + `start`).
    #[arg(long, short = 'd')]
    pub detach: bool,
}

#[derive(Subcommand, Debug)]
#[command(defer = true)]
pub enum AuditCommand {
    /// Create a forward-secure sealing key (KEY, mode 0600; its signing key
    /// changes every epoch and older ones cannot be recovered from it) and
    /// its public key (KEY.pub, what auditors hold).
    Keygen {
        /// Where to write the secret key; refused if it exists.
        key: PathBuf,
        /// Epoch length (e.g. 15m, 1h, 30s): a thief of the key file can
        /// forge at most the current epoch. Default 15m; the key lasts 2^20
        /// epochs (29.9 years of 15-minute epochs).
        #[arg(long, value_name = "DURATION", conflicts_with = "plain")]
        epoch: Option<String>,
        /// A plain Ed25519 key instead (not forward-secure; the format of
        /// keys made before sealing existed).
        #[arg(long)]
        plain: bool,
    },
    /// Check logs: hash chain, signatures, completeness. Prints `OK: ...` or
    /// the first record at fault; exit 0 only when every log is complete and
    /// intact.
    Verify {
        #[arg(required = true)]
        logs: Vec<PathBuf>,
        /// Public key file to check the signed checkpoints with.
        #[arg(long, value_name = "PUB")]
        key: Option<PathBuf>,
        /// The index beside the logs: also check that no log it lists was
        /// deleted, truncated or replaced.
        #[arg(long, value_name = "INDEX")]
        index: Option<PathBuf>,
    },
    /// Print a log's exec records as a table (time, pid, cwd, command).
    Show {
        /// The log file (its own id: `--log` is a global flag).
        #[arg(id = "audit_log", value_name = "LOG")]
        log: PathBuf,
        /// Print the matching records as JSON Lines instead.
        #[arg(long)]
        json: bool,
        /// Only records of this host pid.
        #[arg(long)]
        pid: Option<i32>,
        /// Only exec records whose command line contains this text.
        #[arg(long, value_name = "TEXT")]
        command: Option<String>,
    },
}

#[derive(Args, Debug)]
pub struct StepArgs {
    /// Set K=V in the step's environment, or copy K from the caller's
    /// environment (repeatable). Otherwise only PATH, HOME and TERM are set.
    #[arg(long = "env", short = 'e', value_name = "K=V|K")]
    pub env: Vec<String>,
    /// Bind-mount a host path (repeatable); read-only unless `:rw` is given.
    #[arg(long = "mount", value_name = "SRC:DST[:ro|rw]")]
    pub mount: Vec<String>,
    /// Working directory inside the sandbox (default: the current directory,
    /// which is mounted read-write at the same path).
    #[arg(long, value_name = "DIR")]
    pub workdir: Option<PathBuf>,
    /// Hostname inside the sandbox.
    #[arg(long, default_value = "buildcell", value_name = "NAME")]
    pub hostname: String,
    /// Memory limit (e.g. 512m, 2g) of the step's cgroup. Rootless, without
    /// a delegated cgroup, it is not applied, and a line says so.
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// Limit on the number of processes in the step's cgroup (rootless, as
    /// `--memory`).
    #[arg(long, value_name = "N")]
    pub pids: Option<u64>,
    /// Share the host's network instead of an isolated one with only `lo`.
    #[arg(long)]
    pub net: bool,
    /// Seccomp profile (Docker/OCI JSON) instead of the embedded default.
    #[arg(long, value_name = "FILE")]
    pub seccomp: Option<PathBuf>,
    /// Give the step a build secret: FILE's content appears read-only at
    /// /run/secrets/NAME (a tmpfs) and its value is replaced by
    /// <redacted:NAME> wherever it would appear in the audit log.
    #[arg(long, value_name = "NAME=FILE")]
    pub secret: Vec<String>,
    /// Write the audit log of every command the step executes here
    /// (default: a new file in /var/log/buildcell as root,
    /// $XDG_STATE_HOME/buildcell/audit otherwise). It must lie outside
    /// anything the step can write.
    #[arg(long, value_name = "FILE")]
    pub audit_log: Option<PathBuf>,
    /// Sign the log's checkpoints with this key (default:
    /// /etc/buildcell/audit.key as root, $XDG_CONFIG_HOME/buildcell/audit.key
    /// otherwise, when it exists; see `buildcell audit keygen`).
    #[arg(long, value_name = "KEY")]
    pub audit_key: Option<PathBuf>,
    /// Largest audit log the step may produce (e.g. 64m); reaching it stops
    /// the step, as any failed record does. Default 1g.
    #[arg(long, value_name = "SIZE")]
    pub audit_max_size: Option<String>,
    /// Landlock (a developer and test aid until profiles set it): allow
    /// writing beneath PATH (repeatable; inside the sandbox, relative to the
    /// current directory). With it, the step may read and execute anywhere
    /// but write only beneath the working directory, /tmp, /dev and each
    /// PATH.
    #[arg(long = "landlock-write", value_name = "PATH")]
    pub landlock_write: Vec<PathBuf>,
    /// Landlock: allow TCP connect to PORT only (repeatable); `none` allows
    /// no TCP connect at all.
    #[arg(long = "landlock-connect", value_name = "PORT|none")]
    pub landlock_connect: Vec<String>,
    /// Landlock: refuse signals to processes outside the step's Landlock
    /// domain (such as the sandbox's pid 1) and connections to abstract
    /// unix sockets made outside it.
    #[arg(long = "landlock-scope")]
    pub landlock_scope: bool,
    /// Landlock: enforce what this kernel can and say what it cannot,
    /// instead of refusing to run (the default is to require it all).
    #[arg(long = "landlock-best-effort")]
    pub landlock_best_effort: bool,
    /// Print each setup step and its time to stderr (and what Landlock
    /// enforces).
    #[arg(long, short = 'v')]
    pub verbose: bool,
    /// The command to run and its arguments (after `--`).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub command: Vec<OsString>,
}

/// The command line, parsed. Each subcommand's arguments are built only
/// when it is the one called (`defer` above): building all of them cost
/// ~0.2 ms of every call, and the engines call buildcell several times per
/// container. The parser itself is not freed, for the same reason: this
/// process ends soon, or lives on as a supervisor with it in its heap.
fn parse() -> Result<Cli, clap::Error> {
    use clap::{CommandFactory, FromArgMatches};
    let mut command = Cli::command();
    let parsed = command
        .try_get_matches_from_mut(std::env::args_os())
        .and_then(|mut matches| Cli::from_arg_matches_mut(&mut matches));
    let parsed = parsed.map_err(|e| e.format(&mut command));
    std::mem::forget(command);
    parsed
}

/// Entry point of the binary: parse, run, print one error line, return the
/// exit status.
pub fn main() -> i32 {
    let cli = match parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                    125
                } else {
                    0
                };
            }
            // One line: clap's message up to its usage and tips (a missing
            // argument's name is on the line after the message).
            let text = e.to_string();
            let message = text
                .split("\n\n")
                .next()
                .unwrap_or("invalid arguments")
                .trim_start_matches("error: ")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            eprintln!("buildcell: {message} (see buildcell --help)");
            return 125;
        }
    };
    let g = cli.global;
    if g.version {
        print_version();
        return 0;
    }
    let Some(command) = cli.command else {
        eprintln!("buildcell: no command given (see buildcell --help)");
        return 125;
    };
    let log = LOG.get_or_init(|| ErrorLog {
        path: g.log.clone(),
        json: g.log_format == "json",
    });
    // runc's commands exit 1 on their own errors (engines only test for
    // non-zero); `step` keeps the shell-like 125/126/127.
    let oci = !matches!(
        command,
        Command::Step(_) | Command::Audit(_) | Command::Policy(_)
    );
    // `run` and `exec` report a command that cannot be executed as 126/127
    // (the process's own status, as a shell would); every other failure of
    // runc's commands is 1.
    let keeps_exec_status = matches!(command, Command::Run(_) | Command::Exec(_));
    let result = oci_or_step(&g, command);
    match result {
        Ok(code) => code,
        Err(e) => {
            let line = e.to_string();
            eprintln!("buildcell: {line}");
            log.error(&line);
            match (&e, oci) {
                (Error::Child { .. }, true) if keeps_exec_status => e.exit_code(),
                (_, true) => 1,
                _ => e.exit_code(),
            }
        }
    }
}

fn print_version() {
    println!("buildcell version {}", env!("CARGO_PKG_VERSION"));
    println!("commit: {}", env!("BUILDCELL_COMMIT"));
    println!("spec: {}", crate::container::OCI_VERSION);
}

/// The --log of this call, for warnings from deep inside (a failed
/// poststart hook).
static LOG: std::sync::OnceLock<ErrorLog> = std::sync::OnceLock::new();

/// A warning: on stderr, and in --log at level "warning".
pub fn warn(msg: &str) {
    eprintln!("buildcell: warning: {msg}");
    if let Some(log) = LOG.get() {
        log.write("warning", msg);
    }
}

/// `--log FILE [--log-format json]`: errors also go there, one line each.
struct ErrorLog {
    path: Option<PathBuf>,
    json: bool,
}

impl ErrorLog {
    fn error(&self, msg: &str) {
        self.write("error", msg);
    }

    fn write(&self, level: &str, msg: &str) {
        use std::io::Write;
        let Some(path) = &self.path else { return };
        let line = if self.json {
            serde_json::json!({"level": level, "msg": msg, "time": audit::record::now()})
                .to_string()
        } else {
            format!("{} level={level} msg={msg:?}", audit::record::now())
        };
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = f.write_all(format!("{line}\n").as_bytes());
        }
    }
}

fn oci_or_step(g: &GlobalArgs, command: Command) -> Result<i32, Error> {
    use crate::container as c;
    if g.systemd_cgroup {
        return Err(usage(
            "--systemd-cgroup: buildcell does not use systemd (build hosts have none); configure the engine with cgroupfs",
        ));
    }
    if !matches!(g.log_format.as_str(), "text" | "json") {
        return Err(usage(format!(
            "--log-format {:?}: use text or json",
            g.log_format
        )));
    }
    let root = || g.root.clone().unwrap_or_else(c::state::default_root);
    let create_args = |a: &CreateCmd| -> Result<c::CreateArgs, Error> {
        Ok(c::CreateArgs {
            extra_fds: c::passed_fds(a.preserve_fds)?,
            id: a.id.clone(),
            bundle: a.bundle.clone(),
            pid_file: a.pid_file.clone(),
            console_socket: a.console_socket.clone(),
            profile: crate::policy::Choice::from_env(g.profile.clone()),
        })
    };
    match command {
        Command::Step(mut args) => {
            // --debug, as for runc's commands: the setup timeline.
            args.verbose |= g.debug;
            step(*args, &crate::policy::Choice::from_env(g.profile.clone()))
        }
        Command::Audit(cmd) => audit(cmd),
        Command::Policy(cmd) => policy(cmd, &crate::policy::Choice::from_env(g.profile.clone())),
        Command::Create(a) => c::create(&root(), &create_args(&a)?, false, g.debug),
        Command::Run(a) => {
            let args = create_args(&a.create)?;
            if a.detach {
                // As runc run -d: create (the detached audit supervisor
                // and all), then start, and leave it running. A failed
                // start leaves nothing behind.
                c::create(&root(), &args, false, g.debug)?;
                return match c::start(&root(), &args.id) {
                    Ok(code) => Ok(code),
                    Err(e) => {
                        let _ = c::delete(&root(), &args.id, true);
                        Err(e)
                    }
                };
            }
            c::create(&root(), &args, true, g.debug)
        }
        Command::Start { id } => c::start(&root(), &id),
        Command::State { id } => c::state(&root(), &id),
        Command::Kill { all, id, signal } => c::kill(&root(), &id, &signal, all),
        Command::Delete { force, id } => c::delete(&root(), &id, force),
        Command::List { format, quiet } => c::list(&root(), format == "json", quiet),
        Command::Exec(e) => {
            let a = c::ExecArgs {
                extra_fds: c::passed_fds(e.preserve_fds)?,
                id: e.id,
                process: e.process,
                detach: e.detach,
                pid_file: e.pid_file,
                tty: e.tty,
                console_socket: e.console_socket,
                cwd: e.cwd,
                env: e.env,
                user: e.user,
                additional_gids: e.additional_gids,
                caps: e.caps,
                no_new_privs: e.no_new_privs,
                args: e.args,
            };
            c::exec(&root(), &a, g.debug)
        }
        Command::Pause { id } => c::pause(&root(), &id, true),
        Command::Resume { id } => c::pause(&root(), &id, false),
        Command::Ps { format, id, ps_args } => {
            if !ps_args.is_empty() {
                return Err(usage("ps: ps(1) options are not supported; use --format json|table"));
            }
            c::ps(&root(), &id, format == "json")
        }
        Command::Update(u) => c::update(&root(), &u.id, &update_resources(&u)?),
        Command::Spec { bundle } => {
            let path = bundle.join("config.json");
            if path.exists() {
                return Err(usage(format!(
                    "{}: exists; remove it first",
                    path.display()
                )));
            }
            let spec = spec::default_bundle_spec(
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw(),
                crate::userns::host_root(),
            );
            let text = serde_json::to_string_pretty(&spec).map_err(|e| usage(e.to_string()))?;
            std::fs::write(&path, text + "\n")
                .map_err(|e| usage(format!("{}: {e}", path.display())))?;
            Ok(0)
        }
        Command::Features => {
            println!("{}", c::features());
            Ok(0)
        }
        Command::Checkpoint { .. } | Command::Restore { .. } => Err(usage(
            "checkpoint/restore is not supported by buildcell (build steps are not migrated); delete and re-run the step",
        )),
    }
}

/// `buildcell policy ...`.
pub fn policy(cmd: PolicyCommand, choice: &crate::policy::Choice) -> Result<i32, Error> {
    use crate::policy;
    let config = policy::Config::load()?;
    match cmd {
        PolicyCommand::List => {
            let sel = policy::select(choice.flag.as_deref(), &choice.argv0, None, &config)?;
            for (name, source) in policy::list(&config) {
                let mark = if name == sel.name { "*" } else { " " };
                let selectable = if config.selectable_by_annotation.contains(&name) {
                    " (selectable by annotation)"
                } else {
                    ""
                };
                println!("{mark} {name:<16} {source}{selectable}");
            }
            Ok(0)
        }
        PolicyCommand::Show { name } => {
            let sel = policy::Selection {
                name,
                why: "policy show".into(),
            };
            let loaded = policy::load(&sel, &config)?;
            println!("# profile {} (sha256 {})", sel.name, loaded.sha256);
            println!("# from {}", loaded.sources.join(" <- "));
            println!("{}", loaded.to_json());
            Ok(0)
        }
        PolicyCommand::Check { path } => {
            let dir = if path.is_dir() {
                path.clone()
            } else {
                path.parent().map(Path::to_path_buf).unwrap_or_default()
            };
            let file = if path.is_dir() {
                path.join("config.json")
            } else {
                path.clone()
            };
            let mut bundle = crate::container::load_config(&file, &dir)?;
            let eval = policy::evaluate(
                &mut bundle.spec,
                Some(&bundle.dir),
                choice,
                !crate::container::rootless(),
            )?;
            println!(
                "# profile {} ({}), sha256 {}",
                eval.loaded.profile.name, eval.selection.why, eval.loaded.sha256
            );
            for n in &eval.notes {
                println!("# default: {n}");
            }
            for v in &eval.violations {
                println!("{v}");
            }
            if eval.violations.is_empty() {
                println!("# ok: no violations");
                Ok(0)
            } else {
                Ok(1)
            }
        }
    }
}

/// `buildcell audit ...`.
pub fn audit(cmd: AuditCommand) -> Result<i32, Error> {
    use crate::audit::{keys, record, verify};
    match cmd {
        AuditCommand::Keygen { key, epoch, plain } => {
            let (public, id) = if plain {
                keys::generate_plain(&key).map_err(|e| usage(format!("audit keygen: {e}")))?
            } else {
                let secs = match &epoch {
                    Some(t) => keys::parse_duration(t).ok_or_else(|| {
                        usage(format!("--epoch {t:?}: not a duration (e.g. 15m, 1h, 30s)"))
                    })?,
                    None => crate::audit::fss::DEFAULT_EPOCH_SECS,
                };
                let (public, p) = crate::audit::fss::generate(
                    &key,
                    secs,
                    crate::audit::fss::DEFAULT_PERIODS,
                    crate::audit::fss::DEFAULT_PERIOD_EPOCHS,
                )
                .map_err(|e| usage(format!("audit keygen: {e}")))?;
                println!(
                    "sealing key: epochs of {secs} s, the last one ends {}",
                    record::format_time(p.epoch_start(p.epochs()), 0)
                );
                (public, p.key_id())
            };
            println!(
                "secret key {} (keep it where no build step can read it)",
                key.display()
            );
            println!(
                "public key {} (give it to auditors), key id {id}",
                public.display()
            );
            Ok(0)
        }
        AuditCommand::Verify { logs, key, index } => {
            let key = match &key {
                Some(p) => Some(keys::load_public(p).map_err(|e| usage(format!("--key: {e}")))?),
                None => None,
            };
            let mut code = 0;
            for log in &logs {
                let data = match std::fs::read(log) {
                    Ok(d) => d,
                    Err(e) => {
                        println!("FAIL: {}: cannot read: {e}", log.display());
                        code = 1;
                        continue;
                    }
                };
                match verify::verify(&data, key.as_ref()) {
                    Ok(v) if v.complete => {
                        println!("OK: {}: {}", log.display(), verify::summary(&v))
                    }
                    Ok(v) => {
                        println!("FAIL: {}: {}", log.display(), verify::summary(&v));
                        code = 1;
                    }
                    Err(f) => {
                        println!("FAIL: {}: {f}", log.display());
                        code = 1;
                    }
                }
            }
            if let Some(index) = &index {
                match crate::audit::index::verify(index) {
                    Ok(n) => println!(
                        "OK: {}: index intact, {n} logs present and matching",
                        index.display()
                    ),
                    Err(e) => {
                        println!("FAIL: {e}");
                        code = 1;
                    }
                }
            }
            Ok(code)
        }
        AuditCommand::Show {
            log,
            json,
            pid,
            command,
        } => {
            let data = std::fs::read_to_string(&log)
                .map_err(|e| usage(format!("audit show {}: {e}", log.display())))?;
            let filter = ShowFilter { json, pid, command };
            audit_show(&data, &log.display().to_string(), &filter, &mut |line| {
                println!("{line}")
            })?;
            Ok(0)
        }
    }
}

/// What `audit show` prints of a log.
#[derive(Debug, Clone, Default)]
pub struct ShowFilter {
    /// The matching records as JSON Lines instead of a table.
    pub json: bool,
    /// Only exec records of this host pid.
    pub pid: Option<i32>,
    /// Only exec records whose command line contains this text.
    pub command: Option<String>,
}

/// What `audit show` prints for a log's text (`name` is the file, for
/// messages), one line at a time to `out`: a table of its exec records, or
/// the records as JSON Lines. Pure but for `out`, so that hostile logs can
/// be fuzzed (`fuzz/fuzz_targets/audit_verify.rs`).
pub fn audit_show(
    data: &str,
    name: &str,
    filter: &ShowFilter,
    out: &mut dyn FnMut(String),
) -> Result<(), Error> {
    use crate::audit::record;
    if !filter.json {
        out(format!("{:<30} {:>8} {:<24} COMMAND", "TIME", "PID", "CWD"));
    }
    for (i, line) in data.lines().enumerate() {
        let rec: record::Record = serde_json::from_str(line).map_err(|e| {
            usage(format!(
                "audit show {name}: line {}: not a record: {e}",
                i + 1
            ))
        })?;
        let record::Body::Exec(x) = &rec.body else {
            continue;
        };
        let cmdline = x.argv.join(" ");
        if filter.pid.is_some_and(|p| p != x.pid)
            || filter
                .command
                .as_ref()
                .is_some_and(|c| !cmdline.contains(c.as_str()))
        {
            continue;
        }
        if filter.json {
            out(line.to_string());
        } else {
            out(format!(
                "{:<30} {:>8} {:<24} {cmdline}",
                rec.time,
                x.pid,
                x.cwd.as_deref().unwrap_or("?")
            ));
        }
    }
    Ok(())
}

fn usage(msg: impl Into<String>) -> Error {
    Error::Usage(msg.into())
}

/// `buildcell step`: the flags checked and turned into [`StepOptions`]
/// (nothing exists yet); the step itself is [`crate::step::run`].
fn step(args: StepArgs, choice: &crate::policy::Choice) -> Result<i32, Error> {
    let request = step_request(&args)?;
    let memory = match &args.memory {
        Some(m) => Some(parse_size(m).map_err(|e| usage(format!("--memory {m:?}: {e}")))? as i64),
        None => None,
    };
    let pids = match args.pids {
        Some(0) => return Err(usage("--pids 0: give a positive number of processes")),
        Some(p) => Some(i64::try_from(p).map_err(|_| {
            usage(format!(
                "--pids {p}: above the largest limit a cgroup takes ({}); ask for less",
                i64::MAX
            ))
        })?),
        None => None,
    };
    let landlock = step_landlock(&args, &request.cwd)?;
    let mut secrets: Vec<spec::Secret> = Vec::new();
    for s in &args.secret {
        let secret = parse_secret(s, &request.cwd)?;
        if secrets.iter().any(|x| x.name == secret.name) {
            return Err(usage(format!(
                "--secret {s:?}: the name {} is given twice",
                secret.name
            )));
        }
        secrets.push(secret);
    }
    let max_size = match &args.audit_max_size {
        Some(t) => parse_size(t).map_err(|e| usage(format!("--audit-max-size {t:?}: {e}")))?,
        None => audit::DEFAULT_AUDIT_LIMIT,
    };
    crate::step::run(
        StepOptions {
            request,
            memory,
            pids,
            seccomp: args.seccomp,
            landlock,
            secrets,
            audit: AuditOptions {
                log: args.audit_log,
                key: args.audit_key,
                max_size,
            },
            verbose: args.verbose,
        },
        choice,
    )
}

/// The `--landlock-*` flags as a Landlock plan (None when none is given).
pub fn step_landlock(args: &StepArgs, cwd: &Path) -> Result<Option<LandlockPlan>, Error> {
    let fs = match args.landlock_write.is_empty() {
        true => None,
        false => {
            let mut read_write = vec![cwd.to_path_buf(), "/tmp".into(), "/dev".into()];
            read_write.extend(args.landlock_write.iter().map(|p| cwd.join(p)));
            Some(FsRules {
                read_exec: vec!["/".into()],
                read_write,
            })
        }
    };
    let tcp_connect = match args.landlock_connect.as_slice() {
        [] => None,
        [none] if none == "none" => Some(Vec::new()),
        ports => {
            let mut list = Vec::new();
            for p in ports {
                match p.parse::<u16>() {
                    Ok(n) if n > 0 => list.push(n),
                    _ => {
                        return Err(usage(format!(
                            "--landlock-connect {p:?}: expected a TCP port (1-65535), or none alone"
                        )))
                    }
                }
            }
            Some(list)
        }
    };
    let plan = LandlockPlan {
        compat: match args.landlock_best_effort {
            true => Compat::BestEffort,
            false => Compat::Require,
        },
        fs,
        tcp_connect,
        tcp_bind: None,
        scope_abstract_unix: args.landlock_scope,
        scope_signal: args.landlock_scope,
    };
    if plan.features().is_empty() {
        if args.landlock_best_effort {
            return Err(usage(
                "--landlock-best-effort: no Landlock restriction asked for; add --landlock-write, --landlock-connect or --landlock-scope",
            ));
        }
        return Ok(None);
    }
    Ok(Some(plan))
}

/// `NAME=FILE` of `--secret`.
fn parse_secret(text: &str, cwd: &Path) -> Result<spec::Secret, Error> {
    let bad = |why: String| usage(format!("--secret {text:?}: {why}"));
    let (name, file) = text
        .split_once('=')
        .ok_or_else(|| bad("expected NAME=FILE".into()))?;
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        || name.starts_with('.')
    {
        return Err(bad(
            "NAME must be 1-64 of A-Z a-z 0-9 _ . - and not start with a dot".into(),
        ));
    }
    let path = cwd.join(file);
    let value =
        std::fs::read(&path).map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
    if value.len() > 512 * 1024 {
        return Err(bad("larger than 512 KiB".into()));
    }
    Ok(spec::Secret {
        name: name.into(),
        value,
    })
}

/// Size cap of a step's audit log (fails closed when reached).
pub const DEFAULT_AUDIT_LIMIT: u64 = 1 << 30;

/// Check the flags against the host and turn them into a [`StepRequest`].
pub fn step_request(args: &StepArgs) -> Result<StepRequest, Error> {
    if args.command.is_empty() {
        return Err(usage(
            "step: no command given; usage: buildcell step [OPTIONS] -- CMD [ARGS...]",
        ));
    }
    if let Some(flag) = args.command[0].to_str().filter(|a| a.starts_with('-')) {
        return Err(usage(format!(
            "step: unknown option {flag:?}; see buildcell step --help (the command goes after --)"
        )));
    }
    let mut argv = Vec::new();
    for (i, a) in args.command.iter().enumerate() {
        let s = a.to_str().ok_or_else(|| {
            usage(format!(
                "step: argument {i} of the command ({a:?}) is not valid UTF-8; OCI configs carry only UTF-8 strings"
            ))
        })?;
        argv.push(s.to_string());
    }
    let cwd = std::env::current_dir().map_err(|e| {
        usage(format!(
            "step: cannot determine the current directory ({e}); was it removed? cd into the project directory"
        ))
    })?;
    if cwd == Path::new("/") {
        return Err(usage("step: the working directory is /, and buildcell mounts the working directory read-write; cd into a project directory"));
    }
    if nix::unistd::access(
        &cwd,
        nix::unistd::AccessFlags::R_OK | nix::unistd::AccessFlags::X_OK,
    )
    .is_err()
    {
        return Err(usage(format!(
            "step: working directory {} is not readable by uid {}; it is mounted read-write into the sandbox, so run from a directory you can read",
            cwd.display(),
            nix::unistd::getuid()
        )));
    }
    let mut env = Vec::new();
    for e in &args.env {
        match e.split_once('=') {
            Some(("", _)) => return Err(usage(format!("--env {e:?}: the variable name is empty"))),
            Some(_) => env.push(e.clone()),
            None => match std::env::var(e) {
                Ok(v) => env.push(format!("{e}={v}")),
                Err(_) => {
                    return Err(usage(format!(
                        "--env {e}: not set in the caller's environment; use --env {e}=VALUE"
                    )))
                }
            },
        }
    }
    let mut mounts = Vec::new();
    for m in &args.mount {
        mounts.push(parse_mount(m, &cwd)?);
    }
    let workdir = match &args.workdir {
        None => cwd.clone(),
        Some(w) if w.is_absolute() => w.clone(),
        Some(w) => cwd.join(w),
    };
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .filter(|h| h.is_absolute());
    if args.hostname.is_empty() || args.hostname.len() > 64 {
        return Err(usage(format!(
            "--hostname {:?}: must be 1 to 64 characters",
            args.hostname
        )));
    }
    Ok(StepRequest {
        args: argv,
        env,
        mounts,
        cwd,
        workdir,
        home,
        hostname: args.hostname.clone(),
        share_net: args.net,
        terminal: nix::unistd::isatty(0).unwrap_or(false),
    })
}

/// `SRC:DST[:ro|rw]`, SRC relative to the current directory.
pub fn parse_mount(text: &str, cwd: &Path) -> Result<UserMount, Error> {
    let bad = |why: &str| usage(format!("--mount {text:?}: {why}"));
    let parts: Vec<&str> = text.split(':').collect();
    let (src, dst, mode) = match parts.as_slice() {
        [s, d] => (*s, *d, "ro"),
        [s, d, m] => (*s, *d, *m),
        _ => return Err(bad("expected SRC:DST or SRC:DST:ro or SRC:DST:rw")),
    };
    let readonly = match mode {
        "ro" => true,
        "rw" => false,
        other => return Err(bad(&format!("unknown mode {other:?}; use ro or rw"))),
    };
    if src.is_empty() || dst.is_empty() {
        return Err(bad("source and destination must not be empty"));
    }
    let source = cwd.join(src);
    if !source.exists() {
        return Err(bad(&format!(
            "source {} does not exist on the host",
            source.display()
        )));
    }
    let destination = PathBuf::from(dst);
    if !destination.is_absolute() {
        return Err(bad(
            "the destination must be an absolute path inside the sandbox",
        ));
    }
    if destination
        .components()
        .any(|c| c == std::path::Component::ParentDir)
    {
        return Err(bad("the destination must not contain `..`"));
    }
    Ok(UserMount {
        source,
        destination,
        readonly,
    })
}

/// The resources of `update`: a JSON file (`-` for stdin) and/or runc's
/// single-value flags, which win over the file.
fn update_resources(u: &UpdateCmd) -> Result<oci_spec::runtime::LinuxResources, Error> {
    let file = match &u.resources {
        Some(p) if p.as_os_str() == "-" => {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                .map_err(|e| usage(format!("update --resources -: {e}")))?;
            Some((s, "stdin".to_string()))
        }
        Some(p) => {
            let s = std::fs::read_to_string(p)
                .map_err(|e| usage(format!("update --resources {}: {e}", p.display())))?;
            Some((s, p.display().to_string()))
        }
        None => None,
    };
    resources_from(file.as_ref().map(|(t, n)| (t.as_str(), n.as_str())), u)
}

/// `update`'s resources from the `--resources` file's text and name (if
/// one was given) and `u`'s single-value flags, which win over the file
/// (`u.resources` itself is not read). Pure, so that hostile input can be
/// fuzzed (`fuzz/fuzz_targets/update_resources.rs`).
pub fn resources_from(
    file: Option<(&str, &str)>,
    u: &UpdateCmd,
) -> Result<oci_spec::runtime::LinuxResources, Error> {
    use serde_json::{json, Map, Value};
    let name = file.map_or("", |(_, n)| n);
    let mut v: Map<String, Value> = match file {
        Some((text, name)) => match serde_json::from_str(text)
            .map_err(|e| usage(format!("update --resources {name}: not JSON: {e}")))?
        {
            Value::Object(m) => m,
            other => {
                return Err(usage(format!(
                    "update --resources {name}: {} is not a LinuxResources object",
                    json_kind(&other)
                )))
            }
        },
        None => Map::new(),
    };
    let num = |flag: &str, t: &str| -> Result<i64, Error> {
        if t == "-1" {
            return Ok(-1);
        }
        parse_size(t)
            .map(|n| n as i64)
            .map_err(|e| usage(format!("update --{flag} {t:?}: {e}")))
    };
    // A flag's value goes into its section of the file's object (runc's
    // flags win over the file).
    let mut set = |section: &str, key: &str, value: Value| -> Result<(), Error> {
        let s = v.entry(section).or_insert(Value::Null);
        if s.is_null() {
            *s = json!({});
        }
        let kind = json_kind(s);
        let s = s.as_object_mut().ok_or_else(|| {
            usage(format!(
                "update --resources {name}: {section} is {kind}, not an object; cannot set {section}.{key}"
            ))
        })?;
        s.insert(key.into(), value);
        Ok(())
    };
    if let Some(m) = &u.memory {
        set("memory", "limit", json!(num("memory", m)?))?;
    }
    if let Some(m) = &u.memory_swap {
        set("memory", "swap", json!(num("memory-swap", m)?))?;
    }
    if let Some(m) = &u.memory_reservation {
        set(
            "memory",
            "reservation",
            json!(num("memory-reservation", m)?),
        )?;
    }
    if let Some(p) = u.pids_limit {
        set("pids", "limit", json!(p))?;
    }
    if let Some(x) = u.cpu_shares {
        set("cpu", "shares", json!(x))?;
    }
    if let Some(x) = u.cpu_quota {
        set("cpu", "quota", json!(x))?;
    }
    if let Some(x) = u.cpu_period {
        set("cpu", "period", json!(x))?;
    }
    if let Some(x) = &u.cpuset_cpus {
        set("cpu", "cpus", json!(x))?;
    }
    if let Some(x) = &u.cpuset_mems {
        set("cpu", "mems", json!(x))?;
    }
    let v = Value::Object(v);
    let text = v.to_string();
    let de = &mut serde_json::Deserializer::from_str(&text);
    serde_path_to_error::deserialize(de)
        .map_err(|e| usage(format!("update resources: at {}: {}", e.path(), e.inner())))
}

/// What a JSON value is, for messages.
fn json_kind(v: &serde_json::Value) -> &'static str {
    use serde_json::Value;
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update_flags(memory: Option<&str>) -> UpdateCmd {
        UpdateCmd {
            resources: None,
            memory: memory.map(String::from),
            memory_swap: None,
            memory_reservation: None,
            pids_limit: None,
            cpu_shares: None,
            cpu_quota: None,
            cpu_period: None,
            cpuset_cpus: None,
            cpuset_mems: None,
            id: "c".into(),
        }
    }

    /// Found by fuzz/fuzz_targets/update_resources.rs: `--resources` holding
    /// a JSON string (`""`) with `--memory` panicked on `v["memory"]`.
    #[test]
    fn fuzz_regression_update_resources_not_an_object() {
        let flags = update_flags(Some("64m"));
        let e = resources_from(Some((r#""""#, "r.json")), &flags)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("update --resources r.json: a string is not a LinuxResources object"),
            "{e}"
        );
        for text in ["[]", "5", "null", "true"] {
            assert!(resources_from(Some((text, "r.json")), &flags).is_err());
            assert!(resources_from(Some((text, "r.json")), &update_flags(None)).is_err());
        }
        let e = resources_from(Some((r#"{"memory": 5}"#, "r.json")), &flags)
            .unwrap_err()
            .to_string();
        assert!(e.contains("memory is a number, not an object"), "{e}");
        // A null section, or none, takes the flag.
        for text in [r#"{"memory": null}"#, "{}"] {
            let r = resources_from(Some((text, "r.json")), &flags).unwrap();
            assert_eq!(r.memory().as_ref().unwrap().limit(), Some(64 << 20));
        }
        let r = resources_from(None, &flags).unwrap();
        assert_eq!(r.memory().as_ref().unwrap().limit(), Some(64 << 20));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512m"), Ok(512 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("0").is_err());
        assert!(parse_size("12q").is_err());
        assert!(parse_size("m").is_err());
        assert!(parse_size("99999999999t").is_err());
        // Above i64::MAX it would be a negative, unlimited, cgroup limit.
        assert_eq!(parse_size("8388607t"), Ok(8_388_607 << 40));
        assert!(parse_size("8388608t").is_err());
        assert!(parse_size("9223372036854775808").is_err());
    }

    #[test]
    fn mounts() {
        let cwd = Path::new("/");
        let m = parse_mount("etc:/mnt/etc", cwd).unwrap();
        assert_eq!(m.source, Path::new("/etc"));
        assert!(m.readonly);
        assert!(!parse_mount("/etc:/x:rw", cwd).unwrap().readonly);
        for bad in [
            "/etc",
            "/etc:/x:maybe",
            "/nonexistent-src:/x",
            "/etc:rel",
            "/etc:/a/../b",
            "/etc:/x:rw:extra",
        ] {
            let e = parse_mount(bad, cwd).unwrap_err().to_string();
            assert!(e.starts_with(&format!("--mount {bad:?}")), "{e}");
        }
    }

    /// clap's own consistency checks over every subcommand, deferred ones
    /// included (they are otherwise built only when called).
    #[test]
    fn command_line_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    fn step_args(flags: &[&str]) -> StepArgs {
        let argv = ["buildcell", "step"]
            .iter()
            .chain(flags)
            .chain(&["--", "true"]);
        match Cli::try_parse_from(argv).unwrap().command {
            Some(Command::Step(a)) => *a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn landlock_flags() {
        let cwd = Path::new("/src/proj");
        assert_eq!(step_landlock(&step_args(&[]), cwd).unwrap(), None);
        let plan = step_landlock(
            &step_args(&[
                "--landlock-write",
                "out",
                "--landlock-write",
                "/cache",
                "--landlock-connect",
                "443",
                "--landlock-connect",
                "80",
            ]),
            cwd,
        )
        .unwrap()
        .unwrap();
        assert_eq!(plan.compat, Compat::Require);
        let fs = plan.fs.unwrap();
        assert_eq!(fs.read_exec, [Path::new("/")]);
        assert_eq!(
            fs.read_write,
            ["/src/proj", "/tmp", "/dev", "/src/proj/out", "/cache"].map(Path::new)
        );
        assert_eq!(plan.tcp_connect, Some(vec![443, 80]));
        assert_eq!(plan.tcp_bind, None);
        assert!(!plan.scope_signal && !plan.scope_abstract_unix);

        let plan = step_landlock(
            &step_args(&[
                "--landlock-connect",
                "none",
                "--landlock-scope",
                "--landlock-best-effort",
            ]),
            cwd,
        )
        .unwrap()
        .unwrap();
        assert_eq!(plan.compat, Compat::BestEffort);
        assert_eq!(plan.fs, None);
        assert_eq!(plan.tcp_connect, Some(vec![]));
        assert!(plan.scope_signal && plan.scope_abstract_unix);

        for bad in [
            &["--landlock-connect", "0"][..],
            &["--landlock-connect", "65536"],
            &["--landlock-connect", "none", "--landlock-connect", "80"],
            &["--landlock-best-effort"],
        ] {
            let e = step_landlock(&step_args(bad), cwd).unwrap_err().to_string();
            assert!(e.starts_with("--landlock-"), "{e}");
        }
    }
}
