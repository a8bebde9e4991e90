//! cgroups: create a container's cgroup, apply its limits, move processes
//! in, freeze, signal and remove it; cgroup v1, v2 and the v1+v2 "hybrid"
//! layout, written directly against the cgroup files (no systemd, no D-Bus).
//!
//! - [`Layout::detect`] reads `/proc/self/mountinfo` at each call: the v1
//!   hierarchies (one per mount of a `cgroup` filesystem, co-mounted
//!   controllers such as `cpu,cpuacct` share one), the `cgroup2` mount, or
//!   both (hybrid: v1 controllers, unified mount without controllers; buildcell
//!   then uses v1 only).
//! - [`CgroupPath`] is OCI `linux.cgroupsPath`: absolute (under each
//!   hierarchy's mount point), relative (under the caller's own cgroup, from
//!   `/proc/self/cgroup`) or absent (`<own cgroup>/<container id>`), as runc's
//!   cgroupfs driver does; the systemd form `slice:prefix:name` is refused.
//! - [`Cgroup`] is the handle: serialisable (the state file keeps it between
//!   CLI calls) or found again with [`Cgroup::open`].
//!
//! Device rules on cgroup v2 are a BPF device program attached to the
//! cgroup (`bpf.rs`), made at create; `update` cannot change them.

mod bpf;
mod resources;
mod v1;
mod v2;

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

pub use resources::{shares_to_weight, Cpu, DeviceKind, DeviceRule, Memory, Resources};

/// How long freeze and thaw wait for the state to settle.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long remove retries a busy cgroup (processes still exiting).
const REMOVE_TIMEOUT: Duration = Duration::from_secs(3);

/// The v1 controllers buildcell knows by name; a named hierarchy
/// (`name=systemd`) is joined too, as runc does.
const V1_CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "net_prio",
    "blkio",
    "perf_event",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
];

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("linux.cgroupsPath {path:?}: {reason}")]
    InvalidPath { path: String, reason: String },
    #[error("cgroup resources: {0}")]
    InvalidResource(String),
    #[error("cgroups: {0}")]
    NoCgroupFs(String),
    /// The cgroup directory cannot be created for lack of privilege (EACCES,
    /// EPERM, EROFS): a rootless caller may go on without limits.
    #[error("cgroup: cannot create {}: {}; buildcell needs root (or a delegated cgroup) to apply cgroup limits", path.display(), errno_text(source))]
    PermissionDenied { path: PathBuf, source: io::Error },
    #[error("cgroup {controller}: {op} {}: {}", path.display(), errno_text(source))]
    Io {
        controller: String,
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("cgroup {controller}: writing {value} to {}: {}", path.display(), errno_text(source))]
    Write {
        controller: String,
        value: String,
        path: PathBuf,
        source: io::Error,
    },
    #[error("cgroup {controller}: {what} is set but the {controller} controller is not available for {}", path.display())]
    MissingController {
        controller: String,
        what: String,
        path: PathBuf,
    },
    #[error("cgroup v2 device rules: cannot attach the device program to {}: {source}; buildcell needs CAP_BPF and CAP_SYS_ADMIN (host root) for them", path.display())]
    DeviceProgram {
        path: PathBuf,
        source: crate::sys::SysError,
    },
    #[error("cgroup v1: linux.resources.unified is set ({0}); it applies to cgroup v2 only")]
    UnifiedOnV1(String),
    #[error("cgroup freezer: {} did not become {state} within {secs} s", path.display())]
    FreezeTimeout {
        path: PathBuf,
        state: &'static str,
        secs: u64,
    },
    #[error("cgroup freezer: no freezer for {0} (no v1 freezer hierarchy or no cgroup.freeze)")]
    NoFreezer(String),
    #[error("cgroup {0} does not exist in any hierarchy")]
    NotFound(String),
    #[error("cgroup: signalling pid {pid}: {errno}")]
    Signal { pid: i32, errno: nix::errno::Errno },
}

impl CgroupError {
    /// Whether the caller lacks the privilege to create cgroups (rootless).
    pub fn is_permission_denied(&self) -> bool {
        matches!(self, CgroupError::PermissionDenied { .. })
    }
}

/// The text of an errno without the "(os error N)" suffix.
fn errno_text(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => nix::errno::Errno::from_raw(n).desc().to_string(),
        None => e.to_string(),
    }
}

// ---------------------------------------------------------------------------
// Layout

/// The cgroup version a [`Cgroup`] lives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Version {
    V1,
    V2,
}

/// One mounted v1 hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct V1Hierarchy {
    /// Where it is mounted, e.g. `/sys/fs/cgroup/memory`.
    pub mountpoint: PathBuf,
    /// The cgroup the mount shows as its root (mountinfo field 4; `/` on a
    /// host, the container's cgroup inside a container).
    pub root: String,
    /// Its controllers, sorted, e.g. `["cpu", "cpuacct"]` or `["name=systemd"]`.
    pub controllers: Vec<String>,
}

impl V1Hierarchy {
    /// The hierarchy's name, its controllers joined by commas.
    pub fn name(&self) -> String {
        self.controllers.join(",")
    }
}

/// The unified (v2) mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct V2Mount {
    pub mountpoint: PathBuf,
    /// mountinfo's root field of the mount.
    pub root: String,
}

/// How cgroups are mounted on this host, as this process sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    V1 {
        hierarchies: Vec<V1Hierarchy>,
    },
    V2 {
        unified: V2Mount,
    },
    /// v1 controllers plus a cgroup2 mount (usually `/sys/fs/cgroup/unified`)
    /// holding no useful controller; buildcell uses the v1 hierarchies.
    Hybrid {
        hierarchies: Vec<V1Hierarchy>,
        unified: V2Mount,
    },
}

impl Layout {
    /// Reads `/proc/self/mountinfo` (never cached).
    pub fn detect() -> Result<Layout, CgroupError> {
        let text = crate::sys::read_proc("/proc/self/mountinfo").map_err(|e| {
            CgroupError::NoCgroupFs(format!("reading /proc/self/mountinfo: {}", errno_text(&e)))
        })?;
        Layout::from_mountinfo(&text)
    }

    /// A v2 layout rooted at `mountpoint` (a real or a fake tree), for tests
    /// and for callers that manage a cgroup2 mount themselves.
    pub fn v2_at(mountpoint: impl Into<PathBuf>) -> Layout {
        Layout::V2 {
            unified: V2Mount {
                mountpoint: mountpoint.into(),
                root: "/".into(),
            },
        }
    }

    /// Parses the text of a mountinfo file.
    pub fn from_mountinfo(text: &str) -> Result<Layout, CgroupError> {
        let mut hierarchies: Vec<V1Hierarchy> = Vec::new();
        let mut unified: Option<V2Mount> = None;
        for line in text.lines() {
            let Some(m) = parse_mountinfo_line(line) else {
                continue;
            };
            match m.fstype.as_str() {
                "cgroup" => {
                    let mut controllers: Vec<String> = m
                        .super_options
                        .split(',')
                        .filter(|o| V1_CONTROLLERS.contains(o) || o.starts_with("name="))
                        .map(String::from)
                        .collect();
                    controllers.sort();
                    controllers.dedup();
                    // The same hierarchy mounted twice (a bind): keep the first.
                    if controllers.is_empty()
                        || hierarchies.iter().any(|h| h.controllers == controllers)
                    {
                        continue;
                    }
                    hierarchies.push(V1Hierarchy {
                        mountpoint: m.mountpoint,
                        root: m.root,
                        controllers,
                    });
                }
                "cgroup2" if unified.is_none() => {
                    unified = Some(V2Mount {
                        mountpoint: m.mountpoint,
                        root: m.root,
                    });
                }
                _ => {}
            }
        }
        let has_v1_controller = hierarchies
            .iter()
            .any(|h| h.controllers.iter().any(|c| !c.starts_with("name=")));
        match (has_v1_controller, unified) {
            (true, Some(unified)) => Ok(Layout::Hybrid {
                hierarchies,
                unified,
            }),
            (true, None) => Ok(Layout::V1 { hierarchies }),
            (false, Some(unified)) => Ok(Layout::V2 { unified }),
            (false, None) => Err(CgroupError::NoCgroupFs(
                "no cgroup or cgroup2 filesystem is mounted (see /proc/self/mountinfo)".into(),
            )),
        }
    }

    /// The version buildcell uses on this layout (v1 on hybrid).
    pub fn version(&self) -> Version {
        match self {
            Layout::V2 { .. } => Version::V2,
            _ => Version::V1,
        }
    }
}

struct MountinfoLine {
    root: String,
    mountpoint: PathBuf,
    fstype: String,
    super_options: String,
}

fn parse_mountinfo_line(line: &str) -> Option<MountinfoLine> {
    let (left, right) = line.split_once(" - ")?;
    let mut l = left.split(' ');
    let root = crate::mounts::unescape_octal(l.nth(3)?);
    let mountpoint = PathBuf::from(crate::mounts::unescape_octal(l.next()?));
    let mut r = right.split(' ');
    let fstype = r.next()?.to_string();
    let _source = r.next()?;
    let super_options = r.next().unwrap_or("").to_string();
    Some(MountinfoLine {
        root,
        mountpoint,
        fstype,
        super_options,
    })
}

/// One line of `/proc/PID/cgroup`: hierarchy id, controllers, path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcCgroup {
    pub id: u32,
    /// Sorted; empty for the v2 line (`0::/path`).
    pub controllers: Vec<String>,
    pub path: String,
}

/// Parses `/proc/PID/cgroup`; malformed lines are skipped.
pub fn parse_proc_cgroup(text: &str) -> Vec<ProcCgroup> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let id = parts.next()?.parse().ok()?;
            let ctrl = parts.next()?;
            let path = parts.next()?.to_string();
            let mut controllers: Vec<String> = ctrl
                .split(',')
                .filter(|c| !c.is_empty())
                .map(String::from)
                .collect();
            controllers.sort();
            Some(ProcCgroup {
                id,
                controllers,
                path,
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Paths

/// OCI `linux.cgroupsPath`, checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CgroupPath {
    /// `/a/b`: under each hierarchy's mount point.
    Absolute(PathBuf),
    /// `a/b`: under the caller's own cgroup in each hierarchy.
    Relative(PathBuf),
}

impl CgroupPath {
    /// From `linux.cgroupsPath` (None or empty: `<own cgroup>/<id>`).
    pub fn from_spec(cgroups_path: Option<&Path>, id: &str) -> Result<CgroupPath, CgroupError> {
        match cgroups_path {
            Some(p) if !p.as_os_str().is_empty() => CgroupPath::parse(&p.to_string_lossy()),
            _ => {
                if id.is_empty() || id.contains('/') || id == "." || id == ".." {
                    return Err(CgroupError::InvalidPath {
                        path: String::new(),
                        reason: format!("container id {id:?} cannot name a cgroup"),
                    });
                }
                Ok(CgroupPath::Relative(PathBuf::from(id)))
            }
        }
    }

    /// Parses a cgroupsPath string.
    pub fn parse(s: &str) -> Result<CgroupPath, CgroupError> {
        let bad = |reason: &str| CgroupError::InvalidPath {
            path: s.to_string(),
            reason: reason.to_string(),
        };
        if !s.contains('/') && s.split(':').count() == 3 {
            return Err(bad(
                "this is a systemd unit path (slice:prefix:name) and buildcell has no systemd cgroup driver; give a cgroupfs path such as /buildcell/ID (podman: --cgroup-manager=cgroupfs; docker/containerd: cgroupfs driver)",
            ));
        }
        if s.contains('\0') {
            return Err(bad("contains a NUL byte"));
        }
        let mut clean = PathBuf::new();
        for c in Path::new(s).components() {
            match c {
                Component::RootDir | Component::CurDir => {}
                Component::Normal(n) => clean.push(n),
                Component::ParentDir => return Err(bad("\"..\" is not allowed")),
                Component::Prefix(_) => return Err(bad("not a Linux path")),
            }
        }
        if clean.as_os_str().is_empty() {
            return Err(bad("names the root cgroup, which cannot be a container's"));
        }
        if s.starts_with('/') {
            Ok(CgroupPath::Absolute(clean))
        } else {
            Ok(CgroupPath::Relative(clean))
        }
    }

    fn display(&self) -> String {
        match self {
            CgroupPath::Absolute(p) => format!("/{}", p.display()),
            CgroupPath::Relative(p) => p.display().to_string(),
        }
    }

    /// The directory of this cgroup in one hierarchy: `mountpoint` + path
    /// for an absolute path; `mountpoint` + (own cgroup less the mount's root)
    /// + path for a relative one.
    fn resolve_in(&self, mountpoint: &Path, mount_root: &str, own: Option<&str>) -> PathBuf {
        match self {
            CgroupPath::Absolute(p) => mountpoint.join(p),
            CgroupPath::Relative(p) => {
                let own = own.unwrap_or("/");
                let rel = strip_mount_root(own, mount_root);
                mountpoint.join(rel).join(p)
            }
        }
    }
}

/// The caller's cgroup relative to the mount: `/docker/x/y` under a mount
/// whose root is `/docker/x` is `y`; otherwise the whole path.
fn strip_mount_root(own: &str, mount_root: &str) -> PathBuf {
    let own_p = Path::new(own);
    let rel = Path::new(mount_root)
        .strip_prefix("/")
        .ok()
        .filter(|r| !r.as_os_str().is_empty())
        .and_then(|r| own_p.strip_prefix("/").ok()?.strip_prefix(r).ok())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| own_p.strip_prefix("/").unwrap_or(own_p).to_path_buf());
    // Never let /proc/self/cgroup take us out of the mount.
    rel.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect()
}

/// Where a cgroup lives in every hierarchy, computed from a layout and the
/// caller's `/proc/self/cgroup` text.
pub fn resolve(layout: &Layout, path: &CgroupPath, proc_self_cgroup: &str) -> Vec<CgroupDir> {
    let own = parse_proc_cgroup(proc_self_cgroup);
    match layout {
        Layout::V1 { hierarchies } | Layout::Hybrid { hierarchies, .. } => hierarchies
            .iter()
            .map(|h| {
                let own_path = own
                    .iter()
                    .find(|l| l.id != 0 && l.controllers == h.controllers)
                    .map(|l| l.path.as_str());
                CgroupDir {
                    controllers: h.controllers.clone(),
                    path: path.resolve_in(&h.mountpoint, &h.root, own_path),
                }
            })
            .collect(),
        Layout::V2 { unified } => {
            let own_path = own
                .iter()
                .find(|l| l.id == 0 && l.controllers.is_empty())
                .map(|l| l.path.as_str());
            vec![CgroupDir {
                controllers: Vec::new(),
                path: path.resolve_in(&unified.mountpoint, &unified.root, own_path),
            }]
        }
    }
}

// ---------------------------------------------------------------------------
// The handle

/// The directory of a cgroup in one hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupDir {
    /// The v1 hierarchy's controllers (`["cpu", "cpuacct"]`); empty on v2.
    pub controllers: Vec<String>,
    pub path: PathBuf,
}

impl CgroupDir {
    fn name(&self) -> String {
        if self.controllers.is_empty() {
            "v2".into()
        } else {
            self.controllers.join(",")
        }
    }
}

/// Freezer state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FreezerState {
    Thawed,
    Freezing,
    Frozen,
}

/// A container's cgroup: one directory per v1 hierarchy, or one on v2.
/// Serialise it into the container's state to find it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cgroup {
    version: Version,
    dirs: Vec<CgroupDir>,
}

impl Cgroup {
    /// Creates the cgroup on the layout of this host and applies `resources`.
    pub fn create(path: &CgroupPath, resources: &Resources) -> Result<Cgroup, CgroupError> {
        Cgroup::create_in(&Layout::detect()?, path, resources)
    }

    /// Creates the cgroup on `layout` (the caller's own cgroup read from
    /// `/proc/self/cgroup`) and applies `resources`. On any failure, the
    /// directories this call created are removed again.
    pub fn create_in(
        layout: &Layout,
        path: &CgroupPath,
        resources: &Resources,
    ) -> Result<Cgroup, CgroupError> {
        let own = read_own_cgroup()?;
        let dirs = resolve(layout, path, &own);
        let version = layout.version();
        // Refuse what cannot be applied before creating anything.
        match version {
            Version::V1 => {
                if !resources.unified.is_empty() {
                    let keys: Vec<_> = resources.unified.keys().cloned().collect();
                    return Err(CgroupError::UnifiedOnV1(keys.join(", ")));
                }
            }
            Version::V2 => {}
        }
        let mut created = Vec::new();
        let result = (|| {
            for d in &dirs {
                match version {
                    Version::V1 => v1::create_dir(d, &mut created)?,
                    Version::V2 => v2::create_dir(layout, d, resources, &mut created)?,
                }
            }
            let cg = Cgroup { version, dirs };
            cg.update(resources)?;
            if let (Version::V2, Some(rules)) = (version, &resources.devices) {
                v2::apply_devices(cg.v2_dir()?, rules)?;
            }
            Ok(cg)
        })();
        if result.is_err() {
            for dir in created.iter().rev() {
                let _ = fs::remove_dir(dir);
            }
        }
        result
    }

    /// Finds an existing cgroup again from its path (resolved as at create:
    /// a relative path depends on the caller's own cgroup, so prefer the
    /// serialised [`Cgroup`] when the caller may have moved).
    pub fn open(path: &CgroupPath) -> Result<Cgroup, CgroupError> {
        Cgroup::open_in(&Layout::detect()?, path)
    }

    /// [`Cgroup::open`] on a given layout. Hierarchies where the directory
    /// does not exist are left out; none existing is [`CgroupError::NotFound`].
    pub fn open_in(layout: &Layout, path: &CgroupPath) -> Result<Cgroup, CgroupError> {
        let own = read_own_cgroup()?;
        let dirs: Vec<CgroupDir> = resolve(layout, path, &own)
            .into_iter()
            .filter(|d| d.path.is_dir())
            .collect();
        if dirs.is_empty() {
            return Err(CgroupError::NotFound(path.display()));
        }
        Ok(Cgroup {
            version: layout.version(),
            dirs,
        })
    }

    pub fn version(&self) -> Version {
        self.version
    }

    /// The cgroup's directories (one per v1 hierarchy, or the v2 one).
    pub fn dirs(&self) -> &[CgroupDir] {
        &self.dirs
    }

    /// The directory of a v1 controller, or the v2 directory.
    pub fn dir_of(&self, controller: &str) -> Option<&Path> {
        match self.version {
            Version::V2 => self.dirs.first().map(|d| d.path.as_path()),
            Version::V1 => self
                .dirs
                .iter()
                .find(|d| d.controllers.iter().any(|c| c == controller))
                .map(|d| d.path.as_path()),
        }
    }

    /// Moves process `pid` (all its threads) into the cgroup, in every
    /// hierarchy.
    pub fn add_pid(&self, pid: i32) -> Result<(), CgroupError> {
        for d in &self.dirs {
            write_file(&d.name(), &d.path.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// On cgroup v1, the `tasks` file of every hierarchy, opened for the
    /// new process to move itself in ([`SelfJoin::join`]); `None` on v2,
    /// where a new init is cloned in ([`Cgroup::clone_target`]) and an
    /// exec'd process moved in with [`Cgroup::add_pid`].
    ///
    /// Why: a write of another process's pid into `cgroup.procs` takes the
    /// kernel's thread-group lock for writing, which waits for an RCU grace
    /// period when no other move happened just before: 6-15 ms measured on
    /// this kind of host, for each container. A single-threaded process
    /// writing `0` (itself) into `tasks` moves without that lock. The files
    /// are opened here, by the runtime: the kernel checks a move against
    /// the credentials the file was opened with.
    pub fn self_join(&self) -> Result<Option<SelfJoin>, CgroupError> {
        if self.version != Version::V1 {
            return Ok(None);
        }
        let mut files = Vec::with_capacity(self.dirs.len());
        for d in &self.dirs {
            let path = d.path.join("tasks");
            let f = fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| io_err(&d.name(), "opening", &path, e))?;
            files.push((path, f));
        }
        Ok(Some(SelfJoin(files)))
    }

    /// How a new init gets in without anybody writing its pid into
    /// `cgroup.procs`: [`Cgroup::self_join`] on v1, [`Cgroup::clone_target`]
    /// on v2.
    pub fn entry(&self) -> Result<Entry, CgroupError> {
        Ok(Entry {
            join: self.self_join()?,
            into: self.clone_target()?,
        })
    }

    /// On cgroup v2, the cgroup's directory, opened for `clone3` to make
    /// the new init in (`CLONE_INTO_CGROUP`: nobody then writes its pid
    /// into `cgroup.procs`, see [`Cgroup::self_join`] for why that
    /// matters); `None` on v1.
    pub fn clone_target(&self) -> Result<Option<CloneTarget>, CgroupError> {
        if self.version != Version::V2 {
            return Ok(None);
        }
        let path = self.v2_dir()?;
        let f = fs::File::open(path).map_err(|e| io_err("cgroup2", "opening", path, e))?;
        Ok(Some(CloneTarget {
            dir: f.into(),
            path: path.to_path_buf(),
        }))
    }

    /// Every process in the cgroup and its descendants, sorted, in any
    /// hierarchy (a process moved out of one hierarchy by someone else still
    /// counts).
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        let mut all = BTreeSet::new();
        for d in &self.dirs {
            collect_pids(&d.name(), &d.path, &mut all)?;
        }
        Ok(all.into_iter().collect())
    }

    /// Applies `resources`, writing only what is set (see [`Resources`]).
    pub fn update(&self, resources: &Resources) -> Result<(), CgroupError> {
        match self.version {
            Version::V1 => {
                if !resources.unified.is_empty() {
                    let keys: Vec<_> = resources.unified.keys().cloned().collect();
                    return Err(CgroupError::UnifiedOnV1(keys.join(", ")));
                }
                v1::apply(self, resources)
            }
            // Device rules are made at create (a program attached once).
            Version::V2 => v2::apply(self.v2_dir()?, resources),
        }
    }

    /// Freezes every process, waiting until the kernel says frozen.
    pub fn freeze(&self) -> Result<(), CgroupError> {
        match self.version {
            Version::V1 => v1::set_freezer(self.v1_freezer()?, true),
            Version::V2 => v2::set_freeze(self.v2_dir()?, true),
        }
    }

    /// Thaws the cgroup, waiting until the kernel says thawed.
    pub fn thaw(&self) -> Result<(), CgroupError> {
        match self.version {
            Version::V1 => v1::set_freezer(self.v1_freezer()?, false),
            Version::V2 => v2::set_freeze(self.v2_dir()?, false),
        }
    }

    /// The freezer state now.
    pub fn freezer_state(&self) -> Result<FreezerState, CgroupError> {
        match self.version {
            Version::V1 => v1::freezer_state(self.v1_freezer()?),
            Version::V2 => v2::freezer_state(self.v2_dir()?),
        }
    }

    /// Sends `signal` to every process of the cgroup (`kill --all`). SIGKILL
    /// on v2 uses `cgroup.kill` when the kernel has it. Otherwise the cgroup
    /// is frozen while signalling (nothing forks meanwhile) when a freezer is
    /// there, then thawed, unless it was frozen before and the signal is not
    /// SIGKILL. Processes already gone are not an error.
    pub fn kill_all(&self, signal: Signal) -> Result<(), CgroupError> {
        if self.version == Version::V2 && signal == Signal::SIGKILL {
            let dir = self.v2_dir()?;
            let kill = dir.join("cgroup.kill");
            if kill.exists() {
                return write_file("v2", &kill, "1");
            }
        }
        let was_frozen = matches!(self.freezer_state(), Ok(FreezerState::Frozen));
        let froze = was_frozen || self.freeze().is_ok();
        let result = (|| {
            for pid in self.pids()? {
                match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal) {
                    Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                    Err(errno) => return Err(CgroupError::Signal { pid, errno }),
                }
            }
            Ok(())
        })();
        if froze && (!was_frozen || signal == Signal::SIGKILL) {
            self.thaw()?;
        }
        result
    }

    /// The number of processes the kernel's OOM killer killed in this cgroup
    /// (v1 `memory.oom_control` `oom_kill`, v2 `memory.events`); `None` when
    /// the memory controller or the counter is not there.
    pub fn oom_kill_count(&self) -> Result<Option<u64>, CgroupError> {
        let (dir, file) = match self.version {
            Version::V1 => match self.dir_of("memory") {
                Some(d) => (d, "memory.oom_control"),
                None => return Ok(None),
            },
            Version::V2 => (self.v2_dir()?, "memory.events"),
        };
        let path = dir.join(file);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("memory", "reading", &path, e)),
        };
        Ok(parse_flat_key(&text, "oom_kill"))
    }

    /// Removes the cgroup if nothing is in it any more (the usual case once
    /// a container's init is gone with its pid namespace), with one `rmdir`
    /// per hierarchy: the kernel refuses (EBUSY) a cgroup that holds a
    /// process or a child cgroup. False at the first one that is not
    /// removed; what was removed stays removed (no process can be in it).
    pub fn remove_if_empty(&self) -> bool {
        self.dirs.iter().all(|d| match fs::remove_dir(&d.path) {
            Ok(()) => true,
            Err(e) => e.kind() == io::ErrorKind::NotFound,
        })
    }

    /// Kills every process left in the cgroup and removes it: at once when
    /// it is empty, otherwise after SIGKILL to all (see [`Self::kill_all`]),
    /// retrying while they exit (see [`Self::remove`]).
    pub fn kill_and_remove(&self) -> Result<(), CgroupError> {
        if self.remove_if_empty() {
            return Ok(());
        }
        let _ = self.kill_all(Signal::SIGKILL);
        self.remove()
    }

    /// Removes the cgroup (and any child cgroup the container made) in every
    /// hierarchy, retrying while processes are still exiting. A cgroup that is
    /// already gone is not an error. Parent directories are left alone.
    pub fn remove(&self) -> Result<(), CgroupError> {
        let mut first_err = None;
        for d in &self.dirs {
            if let Err(e) = remove_tree(&d.name(), &d.path) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn v2_dir(&self) -> Result<&Path, CgroupError> {
        self.dirs
            .first()
            .map(|d| d.path.as_path())
            .ok_or_else(|| CgroupError::NotFound("(empty cgroup handle)".into()))
    }

    fn v1_freezer(&self) -> Result<&Path, CgroupError> {
        self.dir_of("freezer").ok_or_else(|| {
            CgroupError::NoFreezer(
                self.dirs
                    .first()
                    .map_or_else(String::new, |d| d.path.display().to_string()),
            )
        })
    }
}

/// Attach the device program for `rules` to the cgroup v2 directory
/// `dir` (also a cgroup2 directory of a hybrid host, where the program
/// applies on top of the v1 `devices` controller).
pub fn attach_device_rules(dir: &Path, rules: &[DeviceRule]) -> Result<(), CgroupError> {
    use std::os::fd::AsFd;
    let err = |source| CgroupError::DeviceProgram {
        path: dir.to_path_buf(),
        source,
    };
    let d = fs::File::open(dir).map_err(|e| io_err("v2", "opening", dir, e))?;
    crate::sys::attach_device_program(d.as_fd(), &bpf::device_program(rules)).map_err(err)
}

// ---------------------------------------------------------------------------
// File helpers

fn read_own_cgroup() -> Result<String, CgroupError> {
    crate::sys::read_proc("/proc/self/cgroup")
        .map_err(|e| io_err("cgroups", "reading", Path::new("/proc/self/cgroup"), e))
}

fn io_err(controller: &str, op: &'static str, path: &Path, source: io::Error) -> CgroupError {
    CgroupError::Io {
        controller: controller.to_string(),
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// How a new process gets into its cgroup by itself (see
/// [`Cgroup::entry`]); both `None`: the runtime moves it with
/// [`Cgroup::add_pid`].
#[derive(Debug, Default)]
pub struct Entry {
    /// v1: the process moves itself in.
    pub join: Option<SelfJoin>,
    /// v2: the process is cloned in.
    pub into: Option<CloneTarget>,
}

impl Entry {
    /// Whether the process gets in without [`Cgroup::add_pid`].
    pub fn by_itself(&self) -> bool {
        self.join.is_some() || self.into.is_some()
    }
}

/// The `tasks` files of a v1 cgroup, open for writing (see
/// [`Cgroup::self_join`]); the process that calls [`SelfJoin::join`] moves
/// into every hierarchy. Closed when dropped.
#[derive(Debug)]
pub struct SelfJoin(Vec<(PathBuf, fs::File)>);

impl SelfJoin {
    /// Move the calling process into the cgroup. It must be
    /// single-threaded: `0` moves the calling thread only. The error names
    /// the file that refused it.
    pub fn join(&self) -> Result<(), String> {
        for (path, f) in &self.0 {
            (&*f)
                .write_all(b"0")
                .map_err(|e| format!("writing 0 to {}: {e}", path.display()))?;
        }
        Ok(())
    }

    /// The open files' descriptors (for a child that closes everything else).
    pub fn raw_fds(&self) -> Vec<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        self.0.iter().map(|(_, f)| f.as_raw_fd()).collect()
    }
}

/// A cgroup v2 directory, open for `clone3(CLONE_INTO_CGROUP)` (see
/// [`Cgroup::clone_target`]).
#[derive(Debug)]
pub struct CloneTarget {
    dir: std::os::fd::OwnedFd,
    path: PathBuf,
}

impl CloneTarget {
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.dir)
    }

    /// Where the kernel has no `CLONE_INTO_CGROUP` (before 5.7): move
    /// `pid` in through `cgroup.procs`, as [`Cgroup::add_pid`] does.
    pub fn add_pid(&self, pid: i32) -> Result<(), CgroupError> {
        write_file("cgroup2", &self.path.join("cgroup.procs"), &pid.to_string())
    }
}

/// Writes `value` to a cgroup file in one write(2); the file must exist.
pub(crate) fn write_file(controller: &str, path: &Path, value: &str) -> Result<(), CgroupError> {
    let err = |source| CgroupError::Write {
        controller: controller.to_string(),
        value: value.to_string(),
        path: path.to_path_buf(),
        source,
    };
    let mut f = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(err)?;
    f.write_all(value.as_bytes()).map_err(err)
}

/// Write each of `values` to `path` with a write of its own, through one
/// open file (a v1 `devices.allow` takes one rule per write).
pub(crate) fn write_each(
    controller: &str,
    path: &Path,
    values: &[String],
) -> Result<(), CgroupError> {
    let err = |value: &str, source| CgroupError::Write {
        controller: controller.to_string(),
        value: value.to_string(),
        path: path.to_path_buf(),
        source,
    };
    let Some(first) = values.first() else {
        return Ok(());
    };
    let mut f = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(|e| err(first, e))?;
    for v in values {
        f.write_all(v.as_bytes()).map_err(|e| err(v, e))?;
    }
    Ok(())
}

pub(crate) fn read_file(controller: &str, path: &Path) -> Result<String, CgroupError> {
    fs::read_to_string(path).map_err(|e| io_err(controller, "reading", path, e))
}

/// `key value` lines (memory.events, memory.oom_control, cgroup.events).
pub(crate) fn parse_flat_key(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Creates `path` and any missing parent, recording each directory it made;
/// `after_mkdir` runs on each new one (v1 cpuset copies cpus/mems).
pub(crate) fn mkdir_all(
    controller: &str,
    path: &Path,
    created: &mut Vec<PathBuf>,
    after_mkdir: &mut dyn FnMut(&Path) -> Result<(), CgroupError>,
) -> Result<(), CgroupError> {
    // mkdir first (the usual case: the parent exists, the cgroup does
    // not); the parents only when it says they are missing.
    let mut made = fs::create_dir(path);
    if matches!(&made, Err(e) if e.kind() == io::ErrorKind::NotFound) {
        if let Some(parent) = path.parent() {
            mkdir_all(controller, parent, created, after_mkdir)?;
        }
        made = fs::create_dir(path);
    }
    match made {
        Ok(()) => {
            created.push(path.to_path_buf());
            after_mkdir(path)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS)
            ) =>
        {
            Err(CgroupError::PermissionDenied {
                path: path.to_path_buf(),
                source: e,
            })
        }
        Err(e) => Err(io_err(controller, "creating", path, e)),
    }
}

fn collect_pids(controller: &str, dir: &Path, out: &mut BTreeSet<i32>) -> Result<(), CgroupError> {
    let procs = dir.join("cgroup.procs");
    match fs::read_to_string(&procs) {
        Ok(t) => out.extend(t.lines().filter_map(|l| l.trim().parse::<i32>().ok())),
        // Gone meanwhile (removed, or never created in this hierarchy).
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(controller, "reading", &procs, e)),
    }
    for sub in subdirs(dir) {
        collect_pids(controller, &sub, out)?;
    }
    Ok(())
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// rmdir `dir`, retrying EBUSY while processes exit. Its children (the
/// cgroups a container made inside its own) are looked for only when the
/// rmdir says busy, and removed first, deepest first: most cgroups have
/// none, and listing a v1 directory walks all its control files. ENOENT
/// is success.
fn remove_tree(controller: &str, dir: &Path) -> Result<(), CgroupError> {
    let start = std::time::Instant::now();
    let mut delay = Duration::from_millis(5);
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && start.elapsed() < REMOVE_TIMEOUT => {
                let children = subdirs(dir);
                if children.is_empty() {
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_millis(100));
                }
                for sub in children {
                    remove_tree(controller, &sub)?;
                }
            }
            Err(e) => return Err(io_err(controller, "removing", dir, e)),
        }
    }
}

/// Polls `check` until it returns true or `FREEZE_TIMEOUT` passes;
/// `nudge` runs every ~100 ms (v1 re-writes FROZEN, as runc does).
pub(crate) fn wait_until(
    mut check: impl FnMut() -> Result<bool, CgroupError>,
    mut nudge: impl FnMut() -> Result<(), CgroupError>,
) -> Result<bool, CgroupError> {
    let start = std::time::Instant::now();
    let mut delay = Duration::from_micros(200);
    let mut last_nudge = start;
    loop {
        if check()? {
            return Ok(true);
        }
        if start.elapsed() >= FREEZE_TIMEOUT {
            return Ok(false);
        }
        if last_nudge.elapsed() >= Duration::from_millis(100) {
            nudge()?;
            last_nudge = std::time::Instant::now();
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests;
