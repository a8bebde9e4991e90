//! User namespace id maps: who the sandbox's root is on the host.
//!
//! The plan is chosen in the parent before `clone` ([`IdMapPlan::choose`]),
//! and written by the parent once the child exists ([`IdMapPlan::write`]).
//! Container root is never host root: as host root, container ids 0..65535
//! map to an unprivileged host range.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::unistd::{Gid, Uid, User};

/// Container ids mapped when a range is available: 0..65535.
pub const RANGE_SIZE: u32 = 65536;
/// Host range used for container root when buildcell runs as host root and
/// /etc/subuid has no entry for a `buildcell` user.
pub const ROOT_DEFAULT_START: u32 = 1_000_000_000;

#[derive(Debug, thiserror::Error)]
pub enum UsernsError {
    #[error("write `{path}`: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("{helper} {args}: {detail}")]
    Helper {
        helper: String,
        args: String,
        detail: String,
    },
}

/// A contiguous host range from /etc/subuid or /etc/subgid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubRange {
    pub start: u32,
    pub count: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdMapPlan {
    /// Only the caller's own ids, mapped to 0 (no helper or no range).
    Single { uid: u32, gid: u32, reason: String },
    /// 0 = the caller, 1.. from the caller's subordinate ranges, written by
    /// the setuid helpers newuidmap/newgidmap.
    Helpers {
        uid: u32,
        gid: u32,
        subuid: SubRange,
        subgid: SubRange,
        newuidmap: PathBuf,
        newgidmap: PathBuf,
    },
    /// Host root: 0..65535 inside = `start..start+65535` outside, written
    /// directly.
    HostRoot { uid_start: u32, gid_start: u32 },
    /// The maps a bundle's config.json gives (`linux.uidMappings`,
    /// `gidMappings`): `(inside, outside, count)` triples, written directly
    /// by root and, for a map of the caller's own id alone, by anyone
    /// (then setgroups is denied, as in runc); through newuidmap/newgidmap
    /// otherwise.
    Explicit {
        uid: Vec<(u32, u32, u32)>,
        gid: Vec<(u32, u32, u32)>,
    },
}

fn triples_text(t: &[(u32, u32, u32)], sep: &str) -> String {
    t.iter()
        .map(|(i, o, c)| format!("{i} {o} {c}"))
        .collect::<Vec<_>>()
        .join(sep)
}

impl IdMapPlan {
    /// Decide how to map ids for the current caller.
    pub fn choose() -> IdMapPlan {
        let uid = Uid::current().as_raw();
        let gid = Gid::current().as_raw();
        let user = User::from_uid(Uid::current()).ok().flatten();
        let name = user.as_ref().map(|u| u.name.clone());
        if uid == 0 && in_initial_userns() {
            let (uid_start, gid_start) = step_host_range();
            return IdMapPlan::HostRoot {
                uid_start,
                gid_start,
            };
        }
        let single = |reason: String| IdMapPlan::Single { uid, gid, reason };
        let (Some(newuidmap), Some(newgidmap)) =
            (find_helper("newuidmap"), find_helper("newgidmap"))
        else {
            return single("newuidmap/newgidmap not found (install the uidmap package)".into());
        };
        let subuid = lookup_range(Path::new("/etc/subuid"), name.as_deref(), uid);
        let subgid = lookup_range(Path::new("/etc/subgid"), name.as_deref(), uid);
        match (subuid, subgid) {
            (Some(subuid), Some(subgid)) => IdMapPlan::Helpers {
                uid,
                gid,
                subuid,
                subgid,
                newuidmap,
                newgidmap,
            },
            _ => single(format!(
                "no range for {} in /etc/subuid and /etc/subgid",
                name.unwrap_or_else(|| uid.to_string())
            )),
        }
    }

    /// The maps as the kernel's uid_map / gid_map files print them
    /// (`inside outside count` per line, `;`-joined), for the audit record.
    pub fn map_text(&self) -> (String, String) {
        match self {
            IdMapPlan::Single { uid, gid, .. } => (format!("0 {uid} 1"), format!("0 {gid} 1")),
            IdMapPlan::HostRoot {
                uid_start,
                gid_start,
            } => (
                format!("0 {uid_start} {RANGE_SIZE}"),
                format!("0 {gid_start} {RANGE_SIZE}"),
            ),
            IdMapPlan::Helpers {
                uid,
                gid,
                subuid,
                subgid,
                ..
            } => {
                let rest = |r: &SubRange| r.count.min(RANGE_SIZE - 1);
                (
                    format!("0 {uid} 1; 1 {} {}", subuid.start, rest(subuid)),
                    format!("0 {gid} 1; 1 {} {}", subgid.start, rest(subgid)),
                )
            }
            IdMapPlan::Explicit { uid, gid } => (triples_text(uid, "; "), triples_text(gid, "; ")),
        }
    }

    /// One line for `--verbose`.
    pub fn describe(&self) -> String {
        match self {
            IdMapPlan::Single { uid, gid, reason } => format!(
                "mapping only uid {uid}/gid {gid} to 0 ({reason}); chown to other ids will fail inside"
            ),
            IdMapPlan::Helpers { uid, subuid, .. } => format!(
                "mapping 0 -> {uid}, 1..{} -> {}.. (newuidmap/newgidmap)",
                subuid.count.min(RANGE_SIZE - 1),
                subuid.start
            ),
            IdMapPlan::HostRoot { uid_start, .. } => format!(
                "host root: mapping 0..{} -> {uid_start}.. (container root is not host root)",
                RANGE_SIZE - 1
            ),
            IdMapPlan::Explicit { uid, .. } => {
                format!("the bundle's maps: uid {}", triples_text(uid, ", "))
            }
        }
    }

    /// Write the maps of the process `pid` (in its new user namespace).
    pub fn write(&self, pid: i32) -> Result<(), UsernsError> {
        match self {
            IdMapPlan::Single { uid, gid, .. } => {
                write_proc(pid, "uid_map", &format!("0 {uid} 1\n"))?;
                write_proc(pid, "setgroups", "deny")?;
                write_proc(pid, "gid_map", &format!("0 {gid} 1\n"))
            }
            IdMapPlan::HostRoot {
                uid_start,
                gid_start,
            } => {
                write_proc(pid, "uid_map", &format!("0 {uid_start} {RANGE_SIZE}\n"))?;
                write_proc(pid, "gid_map", &format!("0 {gid_start} {RANGE_SIZE}\n"))
            }
            IdMapPlan::Helpers {
                uid,
                gid,
                subuid,
                subgid,
                newuidmap,
                newgidmap,
            } => {
                run_helper(newuidmap, pid, *uid, *subuid)?;
                run_helper(newgidmap, pid, *gid, *subgid)
            }
            IdMapPlan::Explicit { uid, gid } => {
                if nix::unistd::geteuid().is_root() {
                    write_proc(pid, "uid_map", &(triples_text(uid, "\n") + "\n"))?;
                    write_proc(pid, "gid_map", &(triples_text(gid, "\n") + "\n"))
                } else {
                    let helper = |name: &str| {
                        find_helper(name).ok_or_else(|| UsernsError::Helper {
                            helper: name.into(),
                            args: String::new(),
                            detail: "not found; install the uidmap package".into(),
                        })
                    };
                    // A map of the caller's own id alone is written
                    // directly, as the kernel lets any process do (gid_map
                    // only once setgroups is denied, as runc does too):
                    // no newuidmap/newgidmap process to start, ~1.7 ms
                    // each. Anything more needs the setuid helpers.
                    let own = |t: &[(u32, u32, u32)], id: u32| matches!(t, [(_, o, 1)] if *o == id);
                    if own(uid, nix::unistd::geteuid().as_raw()) {
                        write_proc(pid, "uid_map", &(triples_text(uid, "\n") + "\n"))?;
                    } else {
                        run_helper_args(&helper("newuidmap")?, pid, uid)?;
                    }
                    if own(gid, nix::unistd::getegid().as_raw()) {
                        write_proc(pid, "setgroups", "deny")?;
                        write_proc(pid, "gid_map", &(triples_text(gid, "\n") + "\n"))
                    } else {
                        run_helper_args(&helper("newgidmap")?, pid, gid)
                    }
                }
            }
        }
    }
}

fn write_proc(pid: i32, file: &str, content: &str) -> Result<(), UsernsError> {
    let path = format!("/proc/{pid}/{file}");
    fs::write(&path, content).map_err(|source| UsernsError::Write { path, source })
}

fn run_helper(helper: &Path, pid: i32, own: u32, range: SubRange) -> Result<(), UsernsError> {
    let rest = range.count.min(RANGE_SIZE - 1);
    run_helper_args(helper, pid, &[(0, own, 1), (1, range.start, rest)])
}

fn run_helper_args(
    helper: &Path,
    pid: i32,
    triples: &[(u32, u32, u32)],
) -> Result<(), UsernsError> {
    let mut args = vec![pid.to_string()];
    for (i, o, c) in triples {
        args.extend([i.to_string(), o.to_string(), c.to_string()]);
    }
    let err = |detail: String| UsernsError::Helper {
        helper: helper.display().to_string(),
        args: args.join(" "),
        detail,
    };
    let out = Command::new(helper)
        .args(&args)
        .output()
        .map_err(|e| err(e.to_string()))?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr)
            .trim()
            .replace('\n', "; ");
        return Err(err(format!("{} ({msg})", out.status)));
    }
    Ok(())
}

/// The first 65536 ids of the `buildcell` user's subordinate ranges, else
/// [`ROOT_DEFAULT_START`] (uid start, gid start): the range every step as
/// host root shared before steps reserved ranges of their own
/// ([`crate::idpool::reserve_for_step`]); still left out of the pool, so
/// that files earlier steps left under those ids never meet a container.
pub fn step_host_range() -> (u32, u32) {
    let sub = |file| {
        lookup_range(Path::new(file), Some("buildcell"), u32::MAX)
            .filter(|r| r.count >= RANGE_SIZE)
            .map(|r| r.start)
            .unwrap_or(ROOT_DEFAULT_START)
    };
    (sub("/etc/subuid"), sub("/etc/subgid"))
}

/// Whether buildcell runs as host root: uid 0 in the initial user
/// namespace (not uid 0 of a rootless engine's namespace).
pub fn host_root() -> bool {
    nix::unistd::geteuid().is_root() && in_initial_userns()
}

/// What `create` does with a bundle that has no user namespace when
/// buildcell runs as host root: from the profile
/// ([`crate::policy::user_namespace_policy`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UserNamespacePolicy {
    /// Add one: container ids 0..65535 = a host range reserved for the
    /// container, rootfs and binds idmapped (looks-like-root).
    #[default]
    Add,
    /// Refuse the bundle: it must bring its own user namespace (or come
    /// from a rootless engine, whose namespace it already runs in).
    Require,
    /// Run it as runc does: container root is host root.
    Off,
}

/// Whether this process is in the initial user namespace (its uid_map is the
/// identity over all ids).
pub fn in_initial_userns() -> bool {
    crate::sys::read_proc("/proc/self/uid_map")
        .map(|m| {
            let f: Vec<&str> = m.split_whitespace().collect();
            f == ["0", "0", "4294967295"]
        })
        .unwrap_or(false)
}

fn find_helper(name: &str) -> Option<PathBuf> {
    ["/usr/bin", "/bin", "/usr/sbin", "/sbin", "/usr/local/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// The first range for `name` (or the numeric `uid`) in a subid file.
pub fn lookup_range(file: &Path, name: Option<&str>, uid: u32) -> Option<SubRange> {
    let text = fs::read_to_string(file).ok()?;
    parse_subid(&text, name, uid)
}

/// Parse /etc/subuid syntax: `name_or_uid:start:count` per line.
pub fn parse_subid(text: &str, name: Option<&str>, uid: u32) -> Option<SubRange> {
    text.lines().find_map(|line| {
        let mut f = line.trim().split(':');
        let who = f.next()?;
        let start = f.next()?.parse().ok()?;
        let count: u32 = f.next()?.parse().ok()?;
        let matches = Some(who) == name || who.parse::<u32>().ok() == Some(uid);
        (matches && count > 0).then_some(SubRange { start, count })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subid_by_name_and_by_uid() {
        let text = "alice:100000:65536\n1001:200000:1000\n# junk\nbad:line\n";
        assert_eq!(
            parse_subid(text, Some("alice"), 5),
            Some(SubRange {
                start: 100000,
                count: 65536
            })
        );
        assert_eq!(
            parse_subid(text, Some("bob"), 1001),
            Some(SubRange {
                start: 200000,
                count: 1000
            })
        );
        assert_eq!(parse_subid(text, Some("carol"), 7), None);
    }

    #[test]
    fn map_text_matches_what_is_written() {
        let p = IdMapPlan::HostRoot {
            uid_start: 7,
            gid_start: 9,
        };
        assert_eq!(p.map_text(), ("0 7 65536".into(), "0 9 65536".into()));
    }

    #[test]
    fn zero_count_is_no_range() {
        assert_eq!(parse_subid("a:1:0\n", Some("a"), 1), None);
    }
}
