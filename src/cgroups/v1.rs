//! cgroup v1: one directory per hierarchy; each limit goes to the
//! hierarchy of its controller.

use std::path::{Path, PathBuf};

use super::resources::{pids_value, v1_bytes};
use super::{
    mkdir_all, read_file, wait_until, write_each, write_file, Cgroup, CgroupDir, CgroupError,
    FreezerState, Resources,
};

/// Creates the directory of one hierarchy; in the cpuset hierarchy every new
/// level gets its parent's `cpuset.cpus` and `cpuset.mems` (a new cpuset
/// cgroup starts empty and no process could join it).
pub(super) fn create_dir(d: &CgroupDir, created: &mut Vec<PathBuf>) -> Result<(), CgroupError> {
    let is_cpuset = d.controllers.iter().any(|c| c == "cpuset");
    let name = d.controllers.join(",");
    mkdir_all(&name, &d.path, created, &mut |dir: &Path| {
        if is_cpuset {
            copy_cpuset_from_parent(dir)
        } else {
            Ok(())
        }
    })
}

pub(super) fn copy_cpuset_from_parent(dir: &Path) -> Result<(), CgroupError> {
    let Some(parent) = dir.parent() else {
        return Ok(());
    };
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let mine = dir.join(file);
        if !read_file("cpuset", &mine)?.trim().is_empty() {
            continue;
        }
        let theirs = read_file("cpuset", &parent.join(file))?;
        let theirs = theirs.trim();
        if !theirs.is_empty() {
            write_file("cpuset", &mine, theirs)?;
        }
    }
    Ok(())
}

fn need<'a>(cg: &'a Cgroup, controller: &str, what: &str) -> Result<&'a Path, CgroupError> {
    cg.dir_of(controller)
        .ok_or_else(|| CgroupError::MissingController {
            controller: controller.to_string(),
            what: what.to_string(),
            path: cg
                .dirs()
                .first()
                .map_or_else(PathBuf::new, |d| d.path.clone()),
        })
}

/// Writes what `r` sets, in the order runc uses: cpuset, memory, pids, cpu,
/// devices.
pub(super) fn apply(cg: &Cgroup, r: &Resources) -> Result<(), CgroupError> {
    if let Some(cpus) = &r.cpu.cpus {
        write_file(
            "cpuset",
            &need(cg, "cpuset", "cpu.cpus")?.join("cpuset.cpus"),
            cpus,
        )?;
    }
    if let Some(mems) = &r.cpu.mems {
        write_file(
            "cpuset",
            &need(cg, "cpuset", "cpu.mems")?.join("cpuset.mems"),
            mems,
        )?;
    }

    let m = &r.memory;
    if m.limit.is_some() || m.swap.is_some() || m.reservation.is_some() {
        let dir = need(cg, "memory", "memory")?;
        set_memory_and_swap(dir, m.limit, m.swap)?;
        if let Some(res) = m.reservation {
            write_file(
                "memory",
                &dir.join("memory.soft_limit_in_bytes"),
                &v1_bytes(res),
            )?;
        }
    }

    if let Some(p) = r.pids_limit {
        write_file(
            "pids",
            &need(cg, "pids", "pids.limit")?.join("pids.max"),
            &pids_value(p),
        )?;
    }

    let c = &r.cpu;
    if c.shares.is_some() || c.quota.is_some() || c.period.is_some() {
        let dir = need(cg, "cpu", "cpu")?;
        if let Some(s) = c.shares {
            write_file("cpu", &dir.join("cpu.shares"), &s.to_string())?;
        }
        let quota_file = dir.join("cpu.cfs_quota_us");
        let period_file = dir.join("cpu.cfs_period_us");
        let quota = c.quota.map(|q| if q < 0 { -1 } else { q }.to_string());
        match (c.period, &quota) {
            (Some(p), q) => {
                // A new period can be refused (EINVAL) while the old quota
                // exceeds it; then the quota goes first (as runc does).
                match write_file("cpu", &period_file, &p.to_string()) {
                    Ok(()) => {
                        if let Some(q) = q {
                            write_file("cpu", &quota_file, q)?;
                        }
                    }
                    Err(CgroupError::Write { source, .. })
                        if source.raw_os_error() == Some(libc::EINVAL) && q.is_some() =>
                    {
                        if let Some(q) = q {
                            write_file("cpu", &quota_file, q)?;
                        }
                        write_file("cpu", &period_file, &p.to_string())?;
                    }
                    Err(e) => return Err(e),
                }
            }
            (None, Some(q)) => write_file("cpu", &quota_file, q)?,
            (None, None) => {}
        }
    }

    if let Some(rules) = &r.devices {
        let dir = need(cg, "devices", "devices")?;
        let deny = dir.join("devices.deny");
        let allow = dir.join("devices.allow");
        write_file("devices", &deny, "a")?;
        // Consecutive rules of one kind through one open file, in order.
        let mut i = 0;
        while i < rules.len() {
            let kind = rules[i].allow;
            let run: Vec<String> = rules[i..]
                .iter()
                .take_while(|r| r.allow == kind)
                .map(|r| r.render_v1())
                .collect();
            i += run.len();
            write_each("devices", if kind { &allow } else { &deny }, &run)?;
        }
    }
    Ok(())
}

/// memory.limit_in_bytes and memory.memsw.limit_in_bytes in an order the
/// kernel accepts (memsw may never be below the memory limit), as runc's
/// setMemoryAndSwap. The memsw file exists only with swap accounting; without
/// it the swap limit is skipped, as runc does.
fn set_memory_and_swap(
    dir: &Path,
    limit: Option<i64>,
    swap: Option<i64>,
) -> Result<(), CgroupError> {
    let mem_file = dir.join("memory.limit_in_bytes");
    let swap_file = dir.join("memory.memsw.limit_in_bytes");
    let has_swap = swap_file.exists();
    // Memory unlimited without a swap value: swap unlimited too, or the
    // kernel refuses a memory limit above the current memsw one.
    let swap = match (limit, swap) {
        (Some(l), None) if l < 0 && has_swap => Some(-1),
        _ => swap,
    };
    let swap = swap.filter(|_| has_swap);
    match (limit, swap) {
        (Some(l), Some(s)) => {
            let cur: i64 = read_file("memory", &mem_file)?
                .trim()
                .parse()
                .unwrap_or(i64::MAX);
            if s < 0 || cur < s {
                write_file("memory", &swap_file, &v1_bytes(s))?;
                write_file("memory", &mem_file, &v1_bytes(l))?;
            } else {
                write_file("memory", &mem_file, &v1_bytes(l))?;
                write_file("memory", &swap_file, &v1_bytes(s))?;
            }
        }
        (Some(l), None) => write_file("memory", &mem_file, &v1_bytes(l))?,
        (None, Some(s)) => write_file("memory", &swap_file, &v1_bytes(s))?,
        (None, None) => {}
    }
    Ok(())
}

pub(super) fn freezer_state(dir: &Path) -> Result<FreezerState, CgroupError> {
    let s = read_file("freezer", &dir.join("freezer.state"))?;
    Ok(match s.trim() {
        "FROZEN" => FreezerState::Frozen,
        "FREEZING" => FreezerState::Freezing,
        _ => FreezerState::Thawed,
    })
}

/// Writes FROZEN or THAWED and waits until freezer.state says so; FROZEN is
/// written again every 100 ms while FREEZING (tasks can escape a first
/// attempt). A freeze that does not settle is undone.
pub(super) fn set_freezer(dir: &Path, freeze: bool) -> Result<(), CgroupError> {
    let file = dir.join("freezer.state");
    let (value, want) = if freeze {
        ("FROZEN", FreezerState::Frozen)
    } else {
        ("THAWED", FreezerState::Thawed)
    };
    write_file("freezer", &file, value)?;
    let ok = wait_until(
        || Ok(freezer_state(dir)? == want),
        || write_file("freezer", &file, value),
    )?;
    if ok {
        return Ok(());
    }
    if freeze {
        let _ = write_file("freezer", &file, "THAWED");
    }
    Err(CgroupError::FreezeTimeout {
        path: file,
        state: value,
        secs: super::FREEZE_TIMEOUT.as_secs(),
    })
}
