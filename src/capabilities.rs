//! Capabilities of the user process: the bounding set is cut down to the
//! plan's list, inheritable and ambient are emptied, and permitted/effective
//! keep only the plan's list. Root inside then gets exactly the bounding set
//! across `execve`, and nothing from setuid files (`no_new_privs`, nosuid).

use caps::{CapSet, Capability, CapsHashSet};

use crate::spec::{CapSets, UserPlan};

#[derive(Debug, thiserror::Error)]
#[error("capabilities: {op} {set}: {source}")]
pub struct CapError {
    op: &'static str,
    set: &'static str,
    source: caps::errors::CapsError,
}

/// Reduce the calling thread's capabilities to `keep` (bounding, permitted
/// and effective; inheritable and ambient emptied), staying root.
pub fn restrict_to(keep: &[Capability]) -> Result<(), CapError> {
    let sets = CapSets {
        bounding: keep.to_vec(),
        effective: keep.to_vec(),
        permitted: keep.to_vec(),
        ..Default::default()
    };
    apply(&sets, &UserPlan::default())
}

fn err(op: &'static str, set: &'static str) -> impl FnOnce(caps::errors::CapsError) -> CapError {
    move |source| CapError { op, set, source }
}

/// Become `user` with exactly the five sets of `sets`: the bounding set is
/// cut first (that needs CAP_SETPCAP), then the ids change with the
/// permitted set kept across the switch, then the sets are written.
pub fn apply(sets: &CapSets, user: &UserPlan) -> Result<(), CapError> {
    let bounding: CapsHashSet = sets.bounding.iter().copied().collect();
    for cap in caps::all() {
        if !bounding.contains(&cap) {
            // A capability this kernel does not know is not in the bounding
            // set to begin with; EINVAL for it is not an error.
            if caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) {
                caps::drop(None, CapSet::Bounding, cap).map_err(err("drop from", "bounding"))?;
            }
        }
    }
    set_ids(user)?;
    caps::clear(None, CapSet::Ambient).map_err(err("clear", "ambient"))?;
    let set = |list: &[Capability]| list.iter().copied().collect::<CapsHashSet>();
    caps::set(None, CapSet::Inheritable, &set(&sets.inheritable))
        .map_err(err("set", "inheritable"))?;
    caps::set(None, CapSet::Effective, &set(&sets.effective)).map_err(err("set", "effective"))?;
    caps::set(None, CapSet::Permitted, &set(&sets.permitted)).map_err(err("set", "permitted"))?;
    caps::set(None, CapSet::Effective, &set(&sets.effective)).map_err(err("set", "effective"))?;
    // The kernel allows an ambient capability only when it is permitted
    // and inheritable; `runc spec` lists ambient ones without inheritable,
    // and runc skips those too.
    for cap in sets
        .ambient
        .iter()
        .filter(|c| sets.inheritable.contains(c) && sets.permitted.contains(c))
    {
        caps::raise(None, CapSet::Ambient, *cap).map_err(err("raise", "ambient"))?;
    }
    Ok(())
}

/// Switch to the user's uid, gid and supplementary groups, keeping the
/// permitted capabilities (the sets are written right after).
fn set_ids(user: &UserPlan) -> Result<(), CapError> {
    use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};
    let sys = |op: &'static str| {
        move |e: nix::errno::Errno| CapError {
            op,
            set: "ids",
            source: caps::errors::CapsError::from(format!("{e}")),
        }
    };
    let groups: Vec<Gid> = user
        .additional_gids
        .iter()
        .map(|g| Gid::from_raw(*g))
        .collect();
    match setgroups(&groups) {
        Ok(()) => {}
        // setgroups is denied in a user namespace with a single-id map
        // written without newgidmap; there the only group is the one gid
        // mapped, so the supplementary groups are left out (as in runc).
        Err(nix::errno::Errno::EPERM)
            if groups.is_empty()
                || std::fs::read_to_string("/proc/self/setgroups")
                    .is_ok_and(|s| s.trim() == "deny") => {}
        Err(e) => return Err(sys("setgroups")(e)),
    }
    let gid = Gid::from_raw(user.gid);
    setresgid(gid, gid, gid).map_err(sys("setresgid"))?;
    // For uid 0 too: a process that entered the container's user namespace
    // (`exec`) keeps the host ids it came with until it sets its own. As
    // host root that is host uid 0, unmapped inside but still the owner of
    // every host-root file, socket and sysctl the container can reach
    // (`/proc/sys/kernel/core_pattern` where /proc/sys is not read-only).
    nix::sys::prctl::set_keepcaps(true).map_err(sys("keep capabilities"))?;
    let uid = Uid::from_raw(user.uid);
    setresuid(uid, uid, uid).map_err(sys("setresuid"))?;
    nix::sys::prctl::set_keepcaps(false).map_err(sys("keep capabilities"))?;
    if let Some(mask) = user.umask {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
    }
    Ok(())
}

/// The bit mask of a capability list, as /proc/PID/status prints it.
pub fn mask(list: &[Capability]) -> u64 {
    list.iter().fold(0, |m, c| m | c.bitmask())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oci_default_mask() {
        let m = mask(&[
            Capability::CAP_AUDIT_WRITE,
            Capability::CAP_KILL,
            Capability::CAP_NET_BIND_SERVICE,
        ]);
        assert_eq!(m, 0x2000_0420);
    }
}
