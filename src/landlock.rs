//! Landlock: what a container's process may reach of the filesystem, which
//! TCP ports it may connect to or bind, and whether it may signal or reach
//! the abstract unix sockets of processes outside its domain.
//!
//! A [`LandlockPlan`] is a value (the policy builds it from a profile; `step`
//! from its `--landlock-*` flags). The runtime asks [`evaluate`] before it
//! creates anything, so a kernel that lacks what the profile requires is
//! refused early. The container's process calls [`apply`] (or [`prepare`] and
//! then [`Prepared::restrict_self`], when privileges change in between) right
//! before the exec-audit filter and seccomp. Either way a [`Report`] says what
//! is enforced and what is not.
//!
//! The rule for [`Compat::Require`] (the default): the run is refused when a
//! *class* the plan asks for (fs, tcp_connect, tcp_bind, scope_signal,
//! scope_abstract_unix) cannot be enforced at all, or when a path listed for
//! the filesystem is missing. Finer filesystem rights that a kernel adds over
//! its ABI versions (reparenting in 2, truncate in 3, device ioctl in 5,
//! pathname unix socket connect in 9) do not refuse the run: the class is
//! enforced, and what this kernel cannot control is listed in
//! [`Report::partial`]. [`Compat::BestEffort`] enforces what the kernel can
//! and lists the rest in [`Report::not_enforced`]; it never runs silently
//! weaker.
//!
//! `BUILDCELL_LANDLOCK_ABI=N` (for tests only) caps the ABI buildcell uses to
//! N, to behave as on an older kernel: only the rights of ABI N are asked of
//! the kernel (the landlock crate then has nothing newer to handle), and the
//! report records the cap. It can only lower what is enforced: in Require
//! mode that means a refusal.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

use landlock::{
    Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, NetPort, PathBeneath, PathFd,
    PathFdError, Ruleset, RulesetAttr, RulesetCreated, RulesetCreatedAttr, RulesetError,
    RulesetStatus, Scope, ABI,
};

/// The environment variable that caps the Landlock ABI (tests only).
pub const TEST_ABI_ENV: &str = "BUILDCELL_LANDLOCK_ABI";

/// What the profile asks of the kernel's Landlock, for one container.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LandlockPlan {
    pub compat: Compat,
    /// Filesystem: None = the filesystem is not restricted by Landlock.
    pub fs: Option<FsRules>,
    /// TCP ports the process may connect to; None = not restricted; Some(empty) = no TCP connect at all.
    pub tcp_connect: Option<Vec<u16>>,
    /// TCP ports it may bind; same convention.
    pub tcp_bind: Option<Vec<u16>>,
    /// ABI 6: refuse connecting to abstract unix sockets created outside the domain.
    pub scope_abstract_unix: bool,
    /// ABI 6: refuse signals to processes outside the domain.
    pub scope_signal: bool,
}

/// How to treat what the kernel cannot enforce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compat {
    /// Refuse to run (the landlock crate's `HardRequirement`).
    #[default]
    Require,
    /// Enforce what the kernel can, report the rest (`BestEffort`).
    BestEffort,
}

/// The filesystem part of a plan. Everything not beneath one of these paths
/// is denied (for the rights the kernel's ABI knows).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FsRules {
    /// Paths inside the container (absolute) that may be read and executed beneath.
    pub read_exec: Vec<PathBuf>,
    /// Paths that get every filesystem right beneath (read, write, create, remove, rename, truncate, ioctl_dev ...).
    ///
    /// Device files count: writing `/dev/null` needs the write right on it,
    /// so a profile that restricts the filesystem should list `/dev` here.
    pub read_write: Vec<PathBuf>,
}

/// One class of restriction a plan can ask for, each all or nothing on a
/// given kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    Fs,
    TcpConnect,
    TcpBind,
    ScopeSignal,
    ScopeAbstractUnix,
}

impl Feature {
    /// The name in [`Report`] (`enforced`, `not_enforced`).
    pub fn name(self) -> &'static str {
        match self {
            Feature::Fs => "fs",
            Feature::TcpConnect => "tcp_connect",
            Feature::TcpBind => "tcp_bind",
            Feature::ScopeSignal => "scope_signal",
            Feature::ScopeAbstractUnix => "scope_abstract_unix",
        }
    }

    /// What it is, for people.
    pub fn describe(self) -> &'static str {
        match self {
            Feature::Fs => "filesystem rules",
            Feature::TcpConnect => "TCP connect rules",
            Feature::TcpBind => "TCP bind rules",
            Feature::ScopeSignal => "signal scoping",
            Feature::ScopeAbstractUnix => "abstract unix socket scoping",
        }
    }

    /// The first Landlock ABI that enforces it.
    pub fn min_abi(self) -> u32 {
        match self {
            Feature::Fs => 1,
            Feature::TcpConnect | Feature::TcpBind => 4,
            Feature::ScopeSignal | Feature::ScopeAbstractUnix => 6,
        }
    }
}

impl LandlockPlan {
    /// The classes this plan asks for, in report order.
    pub fn features(&self) -> Vec<Feature> {
        [
            (self.fs.is_some(), Feature::Fs),
            (self.tcp_connect.is_some(), Feature::TcpConnect),
            (self.tcp_bind.is_some(), Feature::TcpBind),
            (self.scope_signal, Feature::ScopeSignal),
            (self.scope_abstract_unix, Feature::ScopeAbstractUnix),
        ]
        .into_iter()
        .filter_map(|(on, f)| on.then_some(f))
        .collect()
    }
}

/// Filesystem rights newer than ABI 1, and what their absence means once
/// the filesystem is restricted.
const LATER_FS_RIGHTS: [(u32, &str); 4] = [
    (
        2,
        "moving or linking a file into another directory is always refused",
    ),
    (3, "truncate is not restricted"),
    (5, "ioctl on device files is not restricted"),
    (9, "connecting to pathname unix sockets is not restricted"),
];

/// What was and was not enforced, for `state` and the audit record.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct Report {
    /// The kernel's Landlock ABI (0 = not available); lower when capped by
    /// `BUILDCELL_LANDLOCK_ABI` (see `abi_cap`).
    pub abi: u32,
    /// Classes enforced: "fs", "tcp_connect", "tcp_bind", "scope_signal",
    /// "scope_abstract_unix".
    pub enforced: Vec<String>,
    /// One line each: "tcp_connect: needs Landlock ABI 4, kernel has ABI 2",
    /// "fs: /outputs does not exist in the container". Empty in Require mode
    /// (anything listed here refuses the run there).
    pub not_enforced: Vec<String>,
    /// Limits of an enforced class on this kernel that refuse nothing, one
    /// line each: "fs: truncate is not restricted (needs Landlock ABI 3,
    /// kernel has ABI 2)".
    pub partial: Vec<String>,
    /// The cap set by `BUILDCELL_LANDLOCK_ABI` (tests only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abi_cap: Option<u32>,
}

impl Report {
    /// The report as lines for `--verbose`.
    pub fn lines(&self) -> Vec<String> {
        let cap = match self.abi_cap {
            Some(c) => format!(" (capped at {c} by {TEST_ABI_ENV})"),
            None => String::new(),
        };
        let enforced = match self.enforced.is_empty() {
            true => "nothing".to_string(),
            false => self.enforced.join(", "),
        };
        let mut lines = vec![format!(
            "Landlock ABI {}{cap}; enforced: {enforced}",
            self.abi
        )];
        lines.extend(
            self.not_enforced
                .iter()
                .map(|l| format!("not enforced: {l}")),
        );
        lines.extend(self.partial.iter().map(|l| format!("partial: {l}")));
        lines
    }
}

/// A Landlock failure: one line naming what failed and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LandlockError {
    /// Require mode, and the kernel cannot enforce a class the plan asks for.
    #[error(
        "profile needs {}; this kernel has {}; use a newer kernel or set landlock = \"best-effort\" in the profile (buildcell step: --landlock-best-effort)",
        needs_text(.needs),
        abi_text(*.abi)
    )]
    Missing { needs: Vec<Feature>, abi: u32 },
    /// A filesystem path of the plan is not absolute.
    #[error("fs: {} is not absolute; Landlock paths are paths inside the container, from /", .path.display())]
    RelativePath { path: PathBuf },
    /// Require mode, and a filesystem path does not exist in the container.
    #[error("{}; create it in the container or remove it from the Landlock paths", path_note(.path, None))]
    PathMissing { path: PathBuf },
    /// Require mode, and a filesystem path cannot be opened.
    #[error("{}; make it reachable in the container or remove it from the Landlock paths", path_note(.path, Some(.reason)))]
    PathOpen { path: PathBuf, reason: String },
    /// `BUILDCELL_LANDLOCK_ABI` is set to something else than a number.
    #[error("{TEST_ABI_ENV}={value:?}: not a Landlock ABI number; unset it (it only serves tests) or give a number such as 2")]
    TestAbi { value: String },
    /// The landlock crate or the kernel refused a step of the ruleset.
    #[error("{step}: {message}")]
    Ruleset { step: &'static str, message: String },
    /// Require mode, and the kernel did not fully enforce the ruleset.
    #[error("the kernel enforced the ruleset only partially ({status}); use a newer kernel or allow best effort")]
    NotFullyEnforced { status: String },
}

fn needs_text(needs: &[Feature]) -> String {
    needs
        .iter()
        .map(|f| format!("{} (Landlock ABI {})", f.describe(), f.min_abi()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn abi_text(abi: u32) -> String {
    match abi {
        0 => "ABI 0 (Landlock is off: not built in, or not in the lsm= boot parameter)".into(),
        n => format!("ABI {n}"),
    }
}

/// The line of a skipped path, as the report lists it.
fn path_note(path: &Path, reason: Option<&String>) -> String {
    match reason {
        None => format!("fs: {} does not exist in the container", path.display()),
        Some(r) => format!("fs: {} cannot be opened ({r})", path.display()),
    }
}

impl LandlockError {
    /// The report's line for a path skipped in best-effort mode.
    fn note(&self) -> String {
        match self {
            LandlockError::PathMissing { path } => path_note(path, None),
            LandlockError::PathOpen { path, reason } => path_note(path, Some(reason)),
            other => other.to_string(),
        }
    }
}

/// The kernel's Landlock ABI version (0 if Landlock is off), via
/// landlock_create_ruleset(NULL,0,LANDLOCK_CREATE_RULESET_VERSION).
pub fn kernel_abi() -> u32 {
    crate::sys::landlock_abi_version().unwrap_or(0)
}

/// `BUILDCELL_LANDLOCK_ABI`, when set: the highest ABI buildcell may use.
pub fn test_abi_cap() -> Result<Option<u32>, LandlockError> {
    match std::env::var_os(TEST_ABI_ENV) {
        None => Ok(None),
        Some(v) => parse_abi_cap(&v.to_string_lossy()).map(Some),
    }
}

fn parse_abi_cap(value: &str) -> Result<u32, LandlockError> {
    value.trim().parse().map_err(|_| LandlockError::TestAbi {
        value: value.into(),
    })
}

/// The ABI buildcell uses: the kernel's, capped by `BUILDCELL_LANDLOCK_ABI`.
pub fn effective_abi() -> Result<u32, LandlockError> {
    let kernel = kernel_abi();
    Ok(test_abi_cap()?.map_or(kernel, |cap| cap.min(kernel)))
}

/// The crate's ABI for a version number (saturating at the newest it
/// knows). Built from our own number, so with a cap the crate is asked for
/// nothing newer than the cap.
fn crate_abi(abi: u32) -> ABI {
    ABI::from(i32::try_from(abi).unwrap_or(i32::MAX))
}

/// Pure: what `plan` would leave unenforced on a kernel with ABI `abi`. With Compat::Require and anything missing → Err(LandlockError::Missing{..}) naming the missing feature and ABI ("landlock: profile needs TCP connect rules (Landlock ABI 4); this kernel has ABI 2; use a newer kernel or set landlock = \"best-effort\" in the profile"). Used by the runtime BEFORE anything is created, so refusals happen early.
///
/// Paths are checked for being absolute here; whether they exist is known
/// only inside the container ([`apply`]).
pub fn evaluate(plan: &LandlockPlan, abi: u32) -> Result<Report, LandlockError> {
    if let Some(fs) = &plan.fs {
        if let Some(p) = fs
            .read_exec
            .iter()
            .chain(&fs.read_write)
            .find(|p| !p.is_absolute())
        {
            return Err(LandlockError::RelativePath { path: p.clone() });
        }
    }
    let mut report = Report {
        abi,
        ..Default::default()
    };
    let mut missing = Vec::new();
    for f in plan.features() {
        if abi >= f.min_abi() {
            report.enforced.push(f.name().into());
        } else {
            report.not_enforced.push(format!(
                "{}: needs Landlock ABI {}, kernel has ABI {abi}",
                f.name(),
                f.min_abi()
            ));
            missing.push(f);
        }
    }
    if plan.fs.is_some() && abi >= Feature::Fs.min_abi() {
        for (min, what) in LATER_FS_RIGHTS {
            if abi < min {
                report.partial.push(format!(
                    "fs: {what} (needs Landlock ABI {min}, kernel has ABI {abi})"
                ));
            }
        }
    }
    if plan.compat == Compat::Require && !missing.is_empty() {
        return Err(LandlockError::Missing {
            needs: missing,
            abi,
        });
    }
    Ok(report)
}

/// A ruleset built for the current kernel, not yet enforced: made while the
/// process may still open every path of the plan, enforced later with
/// [`Prepared::restrict_self`].
pub struct Prepared {
    ruleset: Option<RulesetCreated>,
    report: Report,
    compat: Compat,
}

impl Prepared {
    /// What will be enforced.
    pub fn report(&self) -> &Report {
        &self.report
    }

    /// Enforce the ruleset on the calling thread and its future children.
    /// The caller has set no_new_privs, or holds CAP_SYS_ADMIN in its user
    /// namespace: Landlock does not set no_new_privs behind its back.
    pub fn restrict_self(self) -> Result<Report, LandlockError> {
        let Prepared {
            ruleset,
            mut report,
            compat,
        } = self;
        let Some(ruleset) = ruleset else {
            return Ok(report);
        };
        let status = ruleset.restrict_self().map_err(crate_error(
            "restrict_self",
            "the process needs no_new_privs or CAP_SYS_ADMIN, and may be in at most 16 nested Landlock domains",
        ))?;
        match (status.ruleset, compat) {
            (RulesetStatus::FullyEnforced, _) => {}
            (other, Compat::Require) => {
                return Err(LandlockError::NotFullyEnforced {
                    status: format!("{other:?}"),
                })
            }
            (RulesetStatus::PartiallyEnforced, Compat::BestEffort) => report
                .not_enforced
                .push("landlock: the kernel enforced the ruleset only partially".into()),
            (_, Compat::BestEffort) => {
                for class in std::mem::take(&mut report.enforced) {
                    report
                        .not_enforced
                        .push(format!("{class}: the kernel enforced no Landlock ruleset"));
                }
            }
        }
        Ok(report)
    }
}

/// In the container's process, right before seccomp and exec (no_new_privs is already set): build the ruleset for the current kernel and restrict_self. Paths in `fs` that do not exist inside the container are skipped and listed in the report's not_enforced ("fs: /outputs does not exist in the container") — never silently. In Require mode, anything not fully enforced is an error.
pub fn apply(plan: &LandlockPlan) -> Result<Report, LandlockError> {
    prepare(plan)?.restrict_self()
}

/// The first half of [`apply`]: evaluate for the current kernel, create the
/// ruleset and add its rules (opening each path), without enforcing it.
pub fn prepare(plan: &LandlockPlan) -> Result<Prepared, LandlockError> {
    let cap = test_abi_cap()?;
    let kernel = kernel_abi();
    let abi = cap.map_or(kernel, |c| c.min(kernel));
    let mut report = evaluate(plan, abi)?;
    report.abi_cap = cap;
    let on = |f: Feature| report.enforced.iter().any(|e| e == f.name());
    let (fs_on, connect_on, bind_on) = (
        on(Feature::Fs),
        on(Feature::TcpConnect),
        on(Feature::TcpBind),
    );
    let mut scopes = BitFlags::<Scope>::EMPTY;
    if on(Feature::ScopeSignal) {
        scopes |= Scope::Signal;
    }
    if on(Feature::ScopeAbstractUnix) {
        scopes |= Scope::AbstractUnixSocket;
    }
    if report.enforced.is_empty() {
        // Nothing this kernel can enforce (best effort): no ruleset at all.
        return Ok(Prepared {
            ruleset: None,
            report,
            compat: plan.compat,
        });
    }

    let v = crate_abi(abi);
    let level = match plan.compat {
        Compat::Require => CompatLevel::HardRequirement,
        Compat::BestEffort => CompatLevel::BestEffort,
    };
    const HANDLE: &str = "this kernel refused a right its ABI announces; report it as a bug";
    let mut ruleset = Ruleset::default().set_compatibility(level);
    if fs_on {
        ruleset = ruleset
            .handle_access(AccessFs::from_all(v))
            .map_err(crate_error("handle filesystem rights", HANDLE))?;
    }
    if connect_on {
        ruleset = ruleset
            .handle_access(AccessNet::ConnectTcp)
            .map_err(crate_error("handle TCP connect", HANDLE))?;
    }
    if bind_on {
        ruleset = ruleset
            .handle_access(AccessNet::BindTcp)
            .map_err(crate_error("handle TCP bind", HANDLE))?;
    }
    if !scopes.is_empty() {
        ruleset = ruleset
            .scope(scopes)
            .map_err(crate_error("scopes", HANDLE))?;
    }
    let mut created = ruleset
        .create()
        .map_err(crate_error(
            "create the ruleset",
            "the kernel refused a new Landlock ruleset (out of memory or file descriptors?)",
        ))?
        // The launch sets no_new_privs itself when the process asks for it;
        // Landlock must not change that.
        .no_new_privs(false);

    if let (true, Some(fs)) = (fs_on, &plan.fs) {
        let everything = AccessFs::from_all(v);
        let rules = (fs.read_exec.iter().map(|p| (p, AccessFs::from_read(v))))
            .chain(fs.read_write.iter().map(|p| (p, everything)));
        for (path, rights) in rules {
            let (fd, is_dir) = match open_path(path) {
                Ok(opened) => opened,
                Err(e) if plan.compat == Compat::Require => return Err(e),
                Err(e) => {
                    report.not_enforced.push(e.note());
                    continue;
                }
            };
            // Directory-only rights on a file are refused by the kernel:
            // give a file the rights a file can have.
            let rights = match is_dir {
                true => rights,
                false => rights & AccessFs::from_file(v),
            };
            created = created
                .add_rule(PathBeneath::new(fd, rights))
                .map_err(crate_error(
                    "add a filesystem rule",
                    "check the Landlock paths of the profile",
                ))?;
        }
    }

    let mut ports: BTreeMap<u16, BitFlags<AccessNet>> = BTreeMap::new();
    let net = [
        (connect_on, &plan.tcp_connect, AccessNet::ConnectTcp),
        (bind_on, &plan.tcp_bind, AccessNet::BindTcp),
    ];
    for (on, list, right) in net {
        if let (true, Some(list)) = (on, list) {
            for port in list {
                *ports.entry(*port).or_default() |= right;
            }
        }
    }
    for (port, rights) in ports {
        created = created
            .add_rule(NetPort::new(port, rights))
            .map_err(crate_error("add a TCP port rule", HANDLE))?;
    }

    Ok(Prepared {
        ruleset: Some(created),
        report,
        compat: plan.compat,
    })
}

/// Open `path` (O_PATH) inside the container; whether it is a directory.
fn open_path(path: &Path) -> Result<(PathFd, bool), LandlockError> {
    let fd = PathFd::new(path).map_err(|e| {
        let PathFdError::OpenCall { source, .. } = &e else {
            return LandlockError::PathOpen {
                path: path.into(),
                reason: e.to_string(),
            };
        };
        match source.raw_os_error() {
            Some(libc::ENOENT) => LandlockError::PathMissing { path: path.into() },
            _ => LandlockError::PathOpen {
                path: path.into(),
                reason: source.to_string(),
            },
        }
    })?;
    let st =
        nix::sys::stat::fstat(fd.as_fd().as_raw_fd()).map_err(|e| LandlockError::PathOpen {
            path: path.into(),
            reason: format!("fstat: {}", e.desc()),
        })?;
    let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
    Ok((fd, is_dir))
}

/// A crate error at `step`, with the crate's text and what to do.
fn crate_error(
    step: &'static str,
    hint: &'static str,
) -> impl FnOnce(RulesetError) -> LandlockError {
    move |e| LandlockError::Ruleset {
        step,
        message: format!("{e}; {hint}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_all(compat: Compat) -> LandlockPlan {
        LandlockPlan {
            compat,
            fs: Some(FsRules {
                read_exec: vec!["/".into()],
                read_write: vec!["/tmp".into()],
            }),
            tcp_connect: Some(vec![443]),
            tcp_bind: Some(vec![]),
            scope_abstract_unix: true,
            scope_signal: true,
        }
    }

    fn only(f: Feature, compat: Compat) -> LandlockPlan {
        let mut p = LandlockPlan {
            compat,
            ..Default::default()
        };
        match f {
            Feature::Fs => p.fs = Some(FsRules::default()),
            Feature::TcpConnect => p.tcp_connect = Some(vec![]),
            Feature::TcpBind => p.tcp_bind = Some(vec![8080]),
            Feature::ScopeSignal => p.scope_signal = true,
            Feature::ScopeAbstractUnix => p.scope_abstract_unix = true,
        }
        p
    }

    const ALL: [Feature; 5] = [
        Feature::Fs,
        Feature::TcpConnect,
        Feature::TcpBind,
        Feature::ScopeSignal,
        Feature::ScopeAbstractUnix,
    ];

    #[test]
    fn each_class_against_each_abi() {
        for f in ALL {
            for abi in 0..=7 {
                let supported = abi >= f.min_abi();
                // Best effort: never an error; the class is in exactly one list.
                let r = evaluate(&only(f, Compat::BestEffort), abi).unwrap();
                assert_eq!(r.abi, abi);
                if supported {
                    assert_eq!(r.enforced, vec![f.name()], "{f:?} abi {abi}");
                    assert!(r.not_enforced.is_empty(), "{f:?} abi {abi}");
                } else {
                    assert!(r.enforced.is_empty(), "{f:?} abi {abi}");
                    assert_eq!(
                        r.not_enforced,
                        vec![format!(
                            "{}: needs Landlock ABI {}, kernel has ABI {abi}",
                            f.name(),
                            f.min_abi()
                        )]
                    );
                }
                // Require: the same report, or a refusal naming the class.
                match evaluate(&only(f, Compat::Require), abi) {
                    Ok(r) => {
                        assert!(supported, "{f:?} abi {abi}");
                        assert_eq!(r.enforced, vec![f.name()]);
                        assert!(r.not_enforced.is_empty());
                    }
                    Err(e) => {
                        assert!(!supported, "{f:?} abi {abi}: {e}");
                        assert_eq!(
                            e,
                            LandlockError::Missing {
                                needs: vec![f],
                                abi
                            }
                        );
                        let text = e.to_string();
                        assert!(
                            text.contains(&format!("(Landlock ABI {})", f.min_abi())),
                            "{text}"
                        );
                        assert!(text.contains(f.describe()), "{text}");
                    }
                }
            }
        }
    }

    #[test]
    fn thresholds_are_the_kernel_documented_ones() {
        let mins: Vec<u32> = ALL.iter().map(|f| f.min_abi()).collect();
        assert_eq!(mins, [1, 4, 4, 6, 6]);
    }

    #[test]
    fn require_message_names_feature_abi_and_what_to_do() {
        let plan = LandlockPlan {
            tcp_connect: Some(vec![80]),
            ..Default::default()
        };
        let e = evaluate(&plan, 2).unwrap_err();
        assert_eq!(
            format!("landlock: {e}"),
            "landlock: profile needs TCP connect rules (Landlock ABI 4); this kernel has ABI 2; \
             use a newer kernel or set landlock = \"best-effort\" in the profile \
             (buildcell step: --landlock-best-effort)"
        );
        assert_eq!(e.to_string().lines().count(), 1);
    }

    #[test]
    fn require_names_every_missing_class_at_once() {
        let e = evaluate(&plan_all(Compat::Require), 3).unwrap_err();
        assert_eq!(
            e,
            LandlockError::Missing {
                needs: vec![
                    Feature::TcpConnect,
                    Feature::TcpBind,
                    Feature::ScopeSignal,
                    Feature::ScopeAbstractUnix
                ],
                abi: 3
            }
        );
        let text = e.to_string();
        assert!(text.contains("TCP connect rules (Landlock ABI 4), TCP bind rules (Landlock ABI 4), signal scoping (Landlock ABI 6), abstract unix socket scoping (Landlock ABI 6)"), "{text}");
        // Filesystem rules exist since ABI 1: not in the list.
        assert!(!text.contains("filesystem"), "{text}");
    }

    #[test]
    fn no_landlock_at_all_says_so() {
        let e = evaluate(&only(Feature::Fs, Compat::Require), 0).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("filesystem rules (Landlock ABI 1)"), "{text}");
        assert!(
            text.contains("this kernel has ABI 0 (Landlock is off"),
            "{text}"
        );
        let r = evaluate(&plan_all(Compat::BestEffort), 0).unwrap();
        assert!(r.enforced.is_empty());
        assert_eq!(r.not_enforced.len(), 5);
        assert!(r.partial.is_empty());
    }

    #[test]
    fn best_effort_lists_in_report_order() {
        let r = evaluate(&plan_all(Compat::BestEffort), 4).unwrap();
        assert_eq!(r.enforced, ["fs", "tcp_connect", "tcp_bind"]);
        assert_eq!(
            r.not_enforced,
            [
                "scope_signal: needs Landlock ABI 6, kernel has ABI 4",
                "scope_abstract_unix: needs Landlock ABI 6, kernel has ABI 4"
            ]
        );
        let r = evaluate(&plan_all(Compat::Require), 7).unwrap();
        assert_eq!(
            r.enforced,
            [
                "fs",
                "tcp_connect",
                "tcp_bind",
                "scope_signal",
                "scope_abstract_unix"
            ]
        );
        assert!(r.not_enforced.is_empty());
    }

    #[test]
    fn finer_fs_rights_are_partial_not_refusals() {
        let plan = only(Feature::Fs, Compat::Require);
        let partial = |abi| evaluate(&plan, abi).unwrap().partial;
        assert_eq!(partial(1).len(), 4);
        assert!(partial(1)[0].starts_with("fs: moving or linking a file into another directory is always refused (needs Landlock ABI 2, kernel has ABI 1)"));
        assert_eq!(
            partial(2),
            [
                "fs: truncate is not restricted (needs Landlock ABI 3, kernel has ABI 2)",
                "fs: ioctl on device files is not restricted (needs Landlock ABI 5, kernel has ABI 2)",
                "fs: connecting to pathname unix sockets is not restricted (needs Landlock ABI 9, kernel has ABI 2)"
            ]
        );
        assert_eq!(partial(5).len(), 1);
        assert_eq!(partial(7).len(), 1);
        assert!(partial(9).is_empty());
        // No fs in the plan: nothing to say about fs rights.
        let tcp = only(Feature::TcpConnect, Compat::Require);
        assert!(evaluate(&tcp, 4).unwrap().partial.is_empty());
    }

    #[test]
    fn nothing_asked_is_nothing_enforced() {
        for compat in [Compat::Require, Compat::BestEffort] {
            let plan = LandlockPlan {
                compat,
                ..Default::default()
            };
            for abi in 0..=7 {
                assert_eq!(
                    evaluate(&plan, abi).unwrap(),
                    Report {
                        abi,
                        ..Default::default()
                    }
                );
            }
        }
    }

    #[test]
    fn relative_paths_are_refused_early() {
        let mut plan = only(Feature::Fs, Compat::BestEffort);
        plan.fs.as_mut().unwrap().read_write.push("out".into());
        let e = evaluate(&plan, 7).unwrap_err();
        assert_eq!(e, LandlockError::RelativePath { path: "out".into() });
        assert!(e.to_string().starts_with("fs: out is not absolute"));
    }

    #[test]
    fn path_errors_and_their_report_lines() {
        let e = LandlockError::PathMissing {
            path: "/outputs".into(),
        };
        assert_eq!(e.note(), "fs: /outputs does not exist in the container");
        assert!(e
            .to_string()
            .starts_with("fs: /outputs does not exist in the container; create it"));
        let e = LandlockError::PathOpen {
            path: "/x".into(),
            reason: "Permission denied (os error 13)".into(),
        };
        assert_eq!(
            e.note(),
            "fs: /x cannot be opened (Permission denied (os error 13))"
        );
    }

    #[test]
    fn test_abi_cap_parses_numbers_only() {
        assert_eq!(parse_abi_cap("2"), Ok(2));
        assert_eq!(parse_abi_cap(" 0 "), Ok(0));
        let e = parse_abi_cap("two").unwrap_err();
        assert!(e
            .to_string()
            .starts_with("BUILDCELL_LANDLOCK_ABI=\"two\": not a Landlock ABI number"));
    }

    #[test]
    fn crate_abi_follows_our_number() {
        assert_eq!(crate_abi(0), ABI::Unsupported);
        assert_eq!(crate_abi(2), ABI::V2);
        assert_eq!(crate_abi(4), ABI::V4);
        // Newer than the crate knows: its newest, never a wrap-around.
        assert!(crate_abi(u32::MAX) >= ABI::V7);
        // With a cap of 2, the crate is asked for ABI 2's rights only.
        assert!(!AccessFs::from_all(crate_abi(2)).contains(AccessFs::Truncate));
        assert!(AccessNet::from_all(crate_abi(2)).is_empty());
    }

    #[test]
    fn report_lines_for_verbose() {
        let r = Report {
            abi: 2,
            enforced: vec!["fs".into()],
            not_enforced: vec!["tcp_connect: needs Landlock ABI 4, kernel has ABI 2".into()],
            partial: vec![
                "fs: truncate is not restricted (needs Landlock ABI 3, kernel has ABI 2)".into(),
            ],
            abi_cap: Some(2),
        };
        assert_eq!(
            r.lines(),
            [
                "Landlock ABI 2 (capped at 2 by BUILDCELL_LANDLOCK_ABI); enforced: fs",
                "not enforced: tcp_connect: needs Landlock ABI 4, kernel has ABI 2",
                "partial: fs: truncate is not restricted (needs Landlock ABI 3, kernel has ABI 2)"
            ]
        );
        let json = serde_json::to_value(Report::default()).unwrap();
        assert!(json.get("abi_cap").is_none(), "{json}");
    }
}
