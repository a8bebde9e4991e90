//! The pool of host id ranges for the user namespaces buildcell adds to the
//! containers of an engine running as root (looks-like-root), and the
//! reservations that keep two live containers from ever sharing ids.
//!
//! **Pool.** The subordinate ranges of the user `buildcell` in /etc/subuid
//! and /etc/subgid (every line), cut into slots of 65536 ids; slot *k* is
//! the *k*-th uid slot with the *k*-th gid slot. Without such a user, the
//! built-in pool: 1879048192 (0x70000000) upwards, 4094 slots, ending at
//! 2147352575 (0x7ffdffff): above every range `useradd` hands out
//! (100000..600100000 by default) and the ranges systemd-nspawn picks
//! from (524288..1879048191), below systemd's "foreign" range
//! (0x7ffe0000..0x7ffeffff) and below 2^31, which tools and the kernel's
//! own messages print as negative numbers. Steps run as host root reserve from the same
//! pool ([`reserve_for_step`], holders in [`STEPS_DIR`]). The range all
//! steps shared before (the first 65536 ids of the `buildcell` user, or
//! 1000000000) is left out of it. `BUILDCELL_ID_POOL=START:COUNT` replaces the pool
//! (the same ids for uids and gids; meant for tests).
//!
//! **Reservations.** One file per reserved slot in [`RANGES_DIR`], host-wide
//! (engines pass different `--root`s, and a range must be unique across
//! all of them), named `u<uid>-g<gid>`, holding the slot and the container
//! that holds it: its state directory, where a file `idrange` names the
//! slot back. Every reservation, release and reclaim happens under an
//! exclusive `flock` of `RANGES_DIR/.lock`. A slot is free when no live
//! reservation overlaps its uids or its gids; a reservation whose state
//! directory is gone, or no longer names it (removed and made again for
//! another container), is reclaimed by the next reservation.

use std::fs;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::userns::RANGE_SIZE;

/// Where the reservations live (host-wide, whatever `--root` says).
pub const RANGES_DIR: &str = "/run/buildcell/ranges";
/// Replaces the pool: `START:COUNT` (ids; uids and gids alike).
pub const POOL_ENV: &str = "BUILDCELL_ID_POOL";
/// First id of the built-in pool.
pub const BUILTIN_START: u32 = 0x7000_0000;
/// Slots of the built-in pool (its last id is 0x7ffdffff).
pub const BUILTIN_SLOTS: u32 = 4094;

/// One range: container ids 0..65535 = host `uid_start..` / `gid_start..`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    pub uid_start: u32,
    pub gid_start: u32,
}

impl Slot {
    /// The state annotation / audit text: `added: 0 START 65536` (uid and
    /// gid maps alike), or both maps when they differ.
    pub fn describe(&self) -> String {
        if self.uid_start == self.gid_start {
            format!("added: 0 {} {RANGE_SIZE}", self.uid_start)
        } else {
            format!(
                "added: uid 0 {} {RANGE_SIZE}; gid 0 {} {RANGE_SIZE}",
                self.uid_start, self.gid_start
            )
        }
    }
}

/// Contiguous runs of slots: `(first id, number of slots)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Runs(Vec<(u32, u32)>);

impl Runs {
    fn len(&self) -> u64 {
        self.0.iter().map(|(_, n)| u64::from(*n)).sum()
    }

    fn nth(&self, mut i: u64) -> Option<u32> {
        for (start, n) in &self.0 {
            if i < u64::from(*n) {
                return Some(start + (i as u32) * RANGE_SIZE);
            }
            i -= u64::from(*n);
        }
        None
    }

    /// Ranges `(start, count)` cut into slots, leaving out every slot that
    /// overlaps `exclude` (a range of RANGE_SIZE ids).
    fn from_ranges(ranges: &[(u32, u32)], exclude: u32) -> Runs {
        let mut runs = Vec::new();
        for &(start, count) in ranges {
            let slots = count / RANGE_SIZE;
            let mut run: Option<(u32, u32)> = None;
            for k in 0..slots {
                let Some(s) = start.checked_add(k * RANGE_SIZE) else {
                    break;
                };
                if s.checked_add(RANGE_SIZE - 1).is_none() {
                    break;
                }
                let overlaps = overlap(s, exclude);
                match (&mut run, overlaps) {
                    (_, true) => runs.extend(run.take()),
                    (Some((_, n)), false) => *n += 1,
                    (None, false) => run = Some((s, 1)),
                }
            }
            runs.extend(run);
        }
        Runs(runs)
    }
}

/// Whether two ranges of RANGE_SIZE ids starting at `a` and `b` overlap.
fn overlap(a: u32, b: u32) -> bool {
    let (a, b) = (u64::from(a), u64::from(b));
    a < b + u64::from(RANGE_SIZE) && b < a + u64::from(RANGE_SIZE)
}

/// Where container ranges come from.
#[derive(Debug, Clone)]
pub struct Pool {
    uids: Runs,
    gids: Runs,
    /// What the pool is, for messages (names the file to edit).
    pub source: String,
    /// What to do when it is exhausted.
    pub fix: String,
}

impl Pool {
    /// The pool of this host: `BUILDCELL_ID_POOL`, else the `buildcell`
    /// user's subordinate ranges, else the built-in pool. `step_uid` and
    /// `step_gid` start the range of `buildcell step` (left out).
    pub fn load(step_uid: u32, step_gid: u32) -> Result<Pool, String> {
        if let Ok(text) = std::env::var(POOL_ENV) {
            return Pool::from_env(&text, step_uid, step_gid);
        }
        let read = |p: &str| fs::read_to_string(p).unwrap_or_default();
        Ok(Pool::from_subid(
            &read("/etc/subuid"),
            &read("/etc/subgid"),
            step_uid,
            step_gid,
        )
        .unwrap_or_else(|| Pool::builtin(step_uid, step_gid)))
    }

    fn from_env(text: &str, step_uid: u32, step_gid: u32) -> Result<Pool, String> {
        let bad = || {
            format!("{POOL_ENV}={text:?}: give START:COUNT (host ids, COUNT at least {RANGE_SIZE})")
        };
        let (s, c) = text.split_once(':').ok_or_else(bad)?;
        let start: u32 = s.trim().parse().map_err(|_| bad())?;
        let count: u32 = c.trim().parse().map_err(|_| bad())?;
        Ok(Pool {
            uids: Runs::from_ranges(&[(start, count)], step_uid),
            gids: Runs::from_ranges(&[(start, count)], step_gid),
            source: format!("{POOL_ENV}={text}"),
            fix: format!("delete containers that are done, or widen {POOL_ENV}"),
        })
    }

    /// The `buildcell` user's lines of /etc/subuid and /etc/subgid (text
    /// given); None when the user has no line in either.
    fn from_subid(subuid: &str, subgid: &str, step_uid: u32, step_gid: u32) -> Option<Pool> {
        let lines = |text: &str| -> Vec<(u32, u32)> {
            text.lines()
                .filter_map(|l| {
                    let mut f = l.trim().split(':');
                    (f.next()? == "buildcell").then_some(())?;
                    Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
                })
                .collect()
        };
        let (u, g) = (lines(subuid), lines(subgid));
        if u.is_empty() && g.is_empty() {
            return None;
        }
        Some(Pool {
            uids: Runs::from_ranges(&u, step_uid),
            gids: Runs::from_ranges(&g, step_gid),
            source: "/etc/subuid and /etc/subgid (user buildcell)".into(),
            fix: format!(
                "delete containers that are done, or give the user buildcell more subordinate ids in /etc/subuid and /etc/subgid (usermod --add-subuids FIRST-LAST --add-subgids FIRST-LAST buildcell; {RANGE_SIZE} per container, the first {RANGE_SIZE} are buildcell step's)"
            ),
        })
    }

    fn builtin(step_uid: u32, step_gid: u32) -> Pool {
        let r = [(BUILTIN_START, BUILTIN_SLOTS * RANGE_SIZE)];
        Pool {
            uids: Runs::from_ranges(&r, step_uid),
            gids: Runs::from_ranges(&r, step_gid),
            source: format!(
                "the built-in pool ({BUILTIN_START}.., {BUILTIN_SLOTS} ranges; no user buildcell in /etc/subuid)"
            ),
            fix: "delete containers that are done, or give a user buildcell subordinate ids in /etc/subuid and /etc/subgid".into(),
        }
    }

    /// Number of slots.
    pub fn len(&self) -> u64 {
        self.uids.len().min(self.gids.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn slot(&self, i: u64) -> Option<Slot> {
        Some(Slot {
            uid_start: self.uids.nth(i)?,
            gid_start: self.gids.nth(i)?,
        })
    }
}

/// A reservation file's content.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Reservation {
    slot: Slot,
    /// The holder's state directory (`<root>/<id>`).
    dir: PathBuf,
}

/// The file in a holder's state directory that names its slot.
const MARKER: &str = "idrange";

impl Reservation {
    /// Whether its container still exists: its state directory names it.
    fn live(&self) -> bool {
        fs::read_to_string(self.dir.join(MARKER)).is_ok_and(|m| m == file_name(&self.slot))
    }
}

fn file_name(slot: &Slot) -> String {
    format!("u{}-g{}", slot.uid_start, slot.gid_start)
}

/// The reservation directory, locked exclusively while the guard lives.
struct Locked {
    dir: PathBuf,
    _lock: fs::File,
}

fn lock(dir: &Path) -> Result<Locked, String> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("id ranges: {}: {e}", dir.display()))?;
    let path = dir.join(".lock");
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("id ranges: {}: {e}", path.display()))?;
    loop {
        #[allow(deprecated)]
        match nix::fcntl::flock(f.as_raw_fd(), nix::fcntl::FlockArg::LockExclusive) {
            Ok(()) => break,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(format!("id ranges: lock {}: {e}", path.display())),
        }
    }
    Ok(Locked {
        dir: dir.to_path_buf(),
        _lock: f,
    })
}

impl Locked {
    /// Every reservation, after removing those whose container is gone.
    fn live(&self) -> Vec<Reservation> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let name = e.file_name();
            if !name.to_string_lossy().starts_with('u') {
                continue;
            }
            let r = fs::read(e.path())
                .ok()
                .and_then(|d| serde_json::from_slice::<Reservation>(&d).ok());
            match r {
                Some(r) if r.live() => out.push(r),
                // Gone, replaced, or not a file buildcell wrote whole
                // (written by rename, so a torn file is never seen).
                _ => {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        out
    }
}

/// Reserve a free slot of `pool` for the container whose state directory
/// is `holder` (it must exist). One line when the pool is exhausted.
pub fn reserve(pool: &Pool, holder: &Path) -> Result<Slot, String> {
    reserve_in(Path::new(RANGES_DIR), pool, holder)
}

fn reserve_in(dir: &Path, pool: &Pool, holder: &Path) -> Result<Slot, String> {
    let holder = std::path::absolute(holder).unwrap_or_else(|_| holder.to_path_buf());
    let locked = lock(dir)?;
    let live = locked.live();
    let busy = |s: &Slot| {
        live.iter().any(|r| {
            overlap(r.slot.uid_start, s.uid_start) || overlap(r.slot.gid_start, s.gid_start)
        })
    };
    let slot = (0..pool.len())
        .filter_map(|i| pool.slot(i))
        .find(|s| !busy(s))
        .ok_or_else(|| {
            format!(
                "no free id range for the container's user namespace: all {} ranges of {RANGE_SIZE} ids of {} are held by live containers; {}",
                pool.len(),
                pool.source,
                pool.fix
            )
        })?;
    let marker = holder.join(MARKER);
    fs::write(&marker, file_name(&slot))
        .map_err(|e| format!("id ranges: {}: {e}", marker.display()))?;
    let r = Reservation { slot, dir: holder };
    let path = dir.join(file_name(&slot));
    let tmp = dir.join(format!(".{}.tmp", file_name(&slot)));
    let write = || -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec(&r).unwrap_or_default())?;
        fs::rename(&tmp, &path)
    };
    write().map_err(|e| format!("id ranges: {}: {e}", path.display()))?;
    Ok(slot)
}

/// Release the slot held by the container whose state directory is
/// `holder` (a slot held by another container is left alone).
pub fn release(slot: &Slot, holder: &Path) {
    release_in(Path::new(RANGES_DIR), slot, holder)
}

fn release_in(dir: &Path, slot: &Slot, holder: &Path) {
    let holder = std::path::absolute(holder).unwrap_or_else(|_| holder.to_path_buf());
    let Ok(_locked) = lock(dir) else { return };
    let path = dir.join(file_name(slot));
    let ours = fs::read(&path)
        .ok()
        .and_then(|d| serde_json::from_slice::<Reservation>(&d).ok())
        .is_some_and(|r| r.dir == holder);
    if ours {
        let _ = fs::remove_file(&path);
    }
}

/// Where the holders of `buildcell step`'s reservations live: one
/// directory per running step, named by its pid.
pub const STEPS_DIR: &str = "/run/buildcell/steps";

/// A range reserved for one `buildcell step` run as host root; released,
/// and its holder directory removed, when dropped.
pub struct StepRange {
    pub slot: Slot,
    holder: PathBuf,
}

impl Drop for StepRange {
    fn drop(&mut self) {
        release(&self.slot, &self.holder);
        let _ = fs::remove_dir_all(&self.holder);
    }
}

/// Reserve a range of the pool for a step run as host root, so that no
/// two steps (nor a step and a container) share host ids. The holder is
/// `STEPS_DIR/<pid>`; holders of steps that were killed (their pid is
/// gone) are removed first, which frees their ranges.
pub fn reserve_for_step() -> Result<StepRange, String> {
    let steps = Path::new(STEPS_DIR);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(steps)
        .map_err(|e| format!("id ranges: {}: {e}", steps.display()))?;
    for e in fs::read_dir(steps).into_iter().flatten().flatten() {
        let dead = e
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
        if dead {
            let _ = fs::remove_dir_all(e.path());
        }
    }
    let holder = steps.join(std::process::id().to_string());
    let _ = fs::remove_dir_all(&holder);
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&holder)
        .map_err(|e| format!("id ranges: {}: {e}", holder.display()))?;
    let (step_uid, step_gid) = crate::userns::step_host_range();
    let pool = Pool::load(step_uid, step_gid)?;
    match reserve(&pool, &holder) {
        Ok(slot) => Ok(StepRange { slot, holder }),
        Err(e) => {
            let _ = fs::remove_dir_all(&holder);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEP: u32 = crate::userns::ROOT_DEFAULT_START;

    #[test]
    fn builtin_pool_is_above_common_ranges_and_below_special_ids() {
        let p = Pool::builtin(STEP, STEP);
        assert_eq!(p.len(), u64::from(BUILTIN_SLOTS));
        assert_eq!(p.slot(0).unwrap().uid_start, 1_879_048_192);
        let last = p.slot(p.len() - 1).unwrap().uid_start;
        assert_eq!(last + (RANGE_SIZE - 1), 0x7ffd_ffff);
        // The step's default range is not in it.
        const { assert!(STEP + RANGE_SIZE <= BUILTIN_START) };
    }

    #[test]
    fn subid_lines_of_buildcell_are_cut_into_slots_without_the_step_range() {
        let subuid = "alice:100000:65536\nbuildcell:300000:200000\nbuildcell:900000:65536\n";
        let subgid = "buildcell:300000:131072\nbuildcell:700000:131072\n";
        // The step uses the first line's first slot.
        let p = Pool::from_subid(subuid, subgid, 300000, 300000).unwrap();
        // uid slots: 365536, 431072 (200000 = 3 slots, first skipped), 900000
        // gid slots: 365536 (first skipped), 700000, 765536
        assert_eq!(p.len(), 3);
        assert_eq!(
            p.slot(0),
            Some(Slot {
                uid_start: 365536,
                gid_start: 365536
            })
        );
        assert_eq!(
            p.slot(2),
            Some(Slot {
                uid_start: 900000,
                gid_start: 765536
            })
        );
        assert!(Pool::from_subid("alice:1:65536\n", "", 0, 0).is_none());
        assert!(p.source.contains("/etc/subuid"));
    }

    #[test]
    fn env_pool_is_checked() {
        let p = Pool::from_env("3000000000:131072", STEP, STEP).unwrap();
        assert_eq!(p.len(), 2);
        assert!(Pool::from_env("x", STEP, STEP)
            .unwrap_err()
            .contains("START:COUNT"));
        assert!(Pool::from_env("4294967295:65536", STEP, STEP)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn reservations_never_overlap_and_are_released_and_reclaimed() {
        let base = std::env::temp_dir().join(format!("bc-idpool-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let ranges = base.join("ranges");
        let (a, b, c) = (base.join("a"), base.join("b"), base.join("c"));
        for d in [&a, &b, &c] {
            fs::create_dir_all(d).unwrap();
        }
        let pool = Pool::from_env("3000000000:131072", STEP, STEP).unwrap();
        let sa = reserve_in(&ranges, &pool, &a).unwrap();
        let sb = reserve_in(&ranges, &pool, &b).unwrap();
        assert_ne!(sa, sb);
        let e = reserve_in(&ranges, &pool, &c).unwrap_err();
        assert!(e.contains("all 2 ranges") && e.contains(POOL_ENV), "{e}");
        assert_eq!(e.lines().count(), 1);
        // Released by its holder only.
        release_in(&ranges, &sa, &b);
        assert!(reserve_in(&ranges, &pool, &c).is_err());
        release_in(&ranges, &sa, &a);
        assert_eq!(reserve_in(&ranges, &pool, &c).unwrap(), sa);
        // A holder whose directory is gone (or replaced) is reclaimed.
        fs::remove_dir_all(&b).unwrap();
        fs::create_dir_all(&b).unwrap();
        assert_eq!(reserve_in(&ranges, &pool, &a).unwrap(), sb);
        // Another pool overlapping these ids sees them as taken.
        let other = Pool::from_env("3000000000:65536", STEP, STEP).unwrap();
        assert!(reserve_in(&ranges, &other, &b).is_err());
        let _ = fs::remove_dir_all(&base);
    }
}
