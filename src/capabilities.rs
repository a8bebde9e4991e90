//! Capabilities of the user process: the bounding set is cut down to the
//! plan's list, inheritable and ambient are emptied, and permitted/effective
//! keep only the plan's list. Root inside then gets exactly the bounding set
//! across `execve`, and nothing from setuid files (`no_new_privs`, nosuid).

use caps::{CapSet, Capability, CapsHashSet};

#[derive(Debug, thiserror::Error)]
#[error("capabilities: {op} {set}: {source}")]
pub struct CapError {
    op: &'static str,
    set: &'static str,
    source: caps::errors::CapsError,
}

/// Reduce the calling thread's capabilities to `keep`.
pub fn restrict_to(keep: &[Capability]) -> Result<(), CapError> {
    let keep: CapsHashSet = keep.iter().copied().collect();
    // The bounding set first: dropping from it needs CAP_SETPCAP, which the
    // effective set still holds at this point.
    for cap in caps::all() {
        if !keep.contains(&cap) {
            // A capability this kernel does not know is not in the bounding
            // set to begin with; EINVAL for it is not an error.
            if caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) {
                caps::drop(None, CapSet::Bounding, cap).map_err(|source| CapError {
                    op: "drop from",
                    set: "bounding",
                    source,
                })?;
            }
        }
    }
    caps::clear(None, CapSet::Ambient).map_err(|source| CapError {
        op: "clear",
        set: "ambient",
        source,
    })?;
    caps::clear(None, CapSet::Inheritable).map_err(|source| CapError {
        op: "clear",
        set: "inheritable",
        source,
    })?;
    caps::set(None, CapSet::Effective, &keep).map_err(|source| CapError {
        op: "set",
        set: "effective",
        source,
    })?;
    caps::set(None, CapSet::Permitted, &keep).map_err(|source| CapError {
        op: "set",
        set: "permitted",
        source,
    })?;
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
