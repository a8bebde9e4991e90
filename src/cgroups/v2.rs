//! cgroup v2: one directory; controllers enabled in the ancestors'
//! `cgroup.subtree_control`; freezing through `cgroup.freeze`.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

use super::resources::{pids_value, shares_to_weight, v2_cpu_max, v2_max, v2_swap};
use super::{
    mkdir_all, parse_flat_key, read_file, wait_until, write_file, CgroupDir, CgroupError,
    FreezerState, Layout, Resources,
};

/// Whether a device list ends by allowing everything (a privileged
/// container): it needs no device program.
pub(super) fn allows_all_devices(rules: &[super::DeviceRule]) -> bool {
    match rules.iter().rposition(|d| d.is_allow_all()) {
        Some(i) => rules[i + 1..].iter().all(|d| d.allow),
        None => false,
    }
}

/// Device rules on v2: a BPF device program attached to the cgroup's
/// directory (none for a list that allows everything).
pub(super) fn apply_devices(dir: &Path, rules: &[super::DeviceRule]) -> Result<(), CgroupError> {
    if allows_all_devices(rules) {
        return Ok(());
    }
    super::attach_device_rules(dir, rules)
}

/// The controllers `r` writes to.
fn needed_controllers(r: &Resources) -> BTreeSet<String> {
    let mut n = BTreeSet::new();
    let m = &r.memory;
    if m.limit.is_some() || m.swap.is_some() || m.reservation.is_some() {
        n.insert("memory".to_string());
    }
    if r.pids_limit.is_some() {
        n.insert("pids".into());
    }
    let c = &r.cpu;
    if c.shares.is_some() || c.quota.is_some() || c.period.is_some() {
        n.insert("cpu".into());
    }
    if c.cpus.is_some() || c.mems.is_some() {
        n.insert("cpuset".into());
    }
    for k in r.unified.keys() {
        if let Some((ctrl, _)) = k.split_once('.') {
            if ctrl != "cgroup" {
                n.insert(ctrl.to_string());
            }
        }
    }
    n
}

fn words(dir: &Path, file: &str) -> Result<BTreeSet<String>, CgroupError> {
    let path = dir.join(file);
    match std::fs::read_to_string(&path) {
        Ok(t) => Ok(t.split_whitespace().map(String::from).collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(BTreeSet::new()),
        Err(e) => Err(super::io_err("v2", "reading", &path, e)),
    }
}

/// Enables in `dir`'s subtree_control every controller it has (as runc
/// does), failing only for a controller `needed` names.
fn enable_controllers(dir: &Path, needed: &BTreeSet<String>) -> Result<(), CgroupError> {
    let available = words(dir, "cgroup.controllers")?;
    let enabled = words(dir, "cgroup.subtree_control")?;
    let file = dir.join("cgroup.subtree_control");
    for c in available.difference(&enabled) {
        if let Err(e) = write_file(c, &file, &format!("+{c}")) {
            if needed.contains(c) {
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Creates the v2 directory, enabling controllers from the mount point down
/// to its parent, and checks that every controller `r` needs is enabled in
/// the parent.
pub(super) fn create_dir(
    layout: &Layout,
    d: &CgroupDir,
    r: &Resources,
    created: &mut Vec<PathBuf>,
) -> Result<(), CgroupError> {
    let Layout::V2 { unified } = layout else {
        return mkdir_all("v2", &d.path, created, &mut |_: &Path| Ok(()));
    };
    let needed = needed_controllers(r);
    let mut cur = unified.mountpoint.clone();
    let rel = d.path.strip_prefix(&unified.mountpoint).unwrap_or(&d.path);
    for comp in rel.components() {
        enable_controllers(&cur, &needed)?;
        cur.push(comp);
        mkdir_all("v2", &cur, created, &mut |_: &Path| Ok(()))?;
    }
    if let Some(parent) = d.path.parent() {
        let enabled = words(parent, "cgroup.subtree_control")?;
        if let Some(missing) = needed.difference(&enabled).next() {
            return Err(CgroupError::MissingController {
                controller: missing.clone(),
                what: format!("a {missing} limit"),
                path: parent.join("cgroup.subtree_control"),
            });
        }
    }
    Ok(())
}

/// Writes what `r` sets.
pub(super) fn apply(dir: &Path, r: &Resources) -> Result<(), CgroupError> {
    let c = &r.cpu;
    if let Some(cpus) = &c.cpus {
        write_file("cpuset", &dir.join("cpuset.cpus"), cpus)?;
    }
    if let Some(mems) = &c.mems {
        write_file("cpuset", &dir.join("cpuset.mems"), mems)?;
    }

    let m = &r.memory;
    if let Some(swap) = m.swap {
        let limit = match m.limit {
            Some(l) => Some(l),
            None => {
                let cur = read_file("memory", &dir.join("memory.max"))?;
                cur.trim().parse::<i64>().ok()
            }
        };
        let value = v2_swap(swap, limit)?;
        let file = dir.join("memory.swap.max");
        if let Err(e) = write_file("memory", &file, &value) {
            // No swap accounting: only "unlimited" may be skipped silently.
            let absent = matches!(&e, CgroupError::Write { source, .. } if source.kind() == io::ErrorKind::NotFound);
            if !(absent && value == "max") {
                return Err(e);
            }
        }
    }
    if let Some(l) = m.limit {
        write_file("memory", &dir.join("memory.max"), &v2_max(l))?;
    }
    if let Some(res) = m.reservation {
        write_file("memory", &dir.join("memory.low"), &v2_max(res))?;
    }

    if let Some(p) = r.pids_limit {
        write_file("pids", &dir.join("pids.max"), &pids_value(p))?;
    }

    if let Some(s) = c.shares {
        write_file(
            "cpu",
            &dir.join("cpu.weight"),
            &shares_to_weight(s).to_string(),
        )?;
    }
    let cpu_max = dir.join("cpu.max");
    let current = if c.quota.is_none() && c.period.is_some() {
        read_file("cpu", &cpu_max)?
    } else {
        String::new()
    };
    if let Some(v) = v2_cpu_max(c.quota, c.period, &current) {
        write_file("cpu", &cpu_max, &v)?;
    }

    for (k, v) in &r.unified {
        let ctrl = k.split_once('.').map_or(k.as_str(), |(c, _)| c);
        write_file(ctrl, &dir.join(k), v)?;
    }
    Ok(())
}

fn frozen(dir: &Path) -> Result<Option<u64>, CgroupError> {
    Ok(parse_flat_key(
        &read_file("freezer", &dir.join("cgroup.events"))?,
        "frozen",
    ))
}

pub(super) fn freezer_state(dir: &Path) -> Result<FreezerState, CgroupError> {
    let file = dir.join("cgroup.freeze");
    let want = match std::fs::read_to_string(&file) {
        Ok(t) => t.trim() == "1",
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(CgroupError::NoFreezer(dir.display().to_string()))
        }
        Err(e) => return Err(super::io_err("freezer", "reading", &file, e)),
    };
    Ok(match (want, frozen(dir)? == Some(1)) {
        (_, true) => FreezerState::Frozen,
        (true, false) => FreezerState::Freezing,
        (false, false) => FreezerState::Thawed,
    })
}

/// Writes cgroup.freeze and waits until cgroup.events says `frozen 1` (or
/// `frozen 0`). A freeze that does not settle is undone.
pub(super) fn set_freeze(dir: &Path, freeze: bool) -> Result<(), CgroupError> {
    let file = dir.join("cgroup.freeze");
    if !file.exists() {
        return Err(CgroupError::NoFreezer(dir.display().to_string()));
    }
    let value = if freeze { "1" } else { "0" };
    write_file("freezer", &file, value)?;
    let want = u64::from(freeze);
    let ok = wait_until(|| Ok(frozen(dir)? == Some(want)), || Ok(()))?;
    if ok {
        return Ok(());
    }
    if freeze {
        let _ = write_file("freezer", &file, "0");
    }
    Err(CgroupError::FreezeTimeout {
        path: dir.join("cgroup.events"),
        state: if freeze { "frozen" } else { "thawed" },
        secs: super::FREEZE_TIMEOUT.as_secs(),
    })
}
