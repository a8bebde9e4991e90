//! The typed resources buildcell applies to a cgroup, converted from OCI
//! `linux.resources`, and the pure rendering of each value into the text a
//! cgroup file takes (v1 and v2).
//!
//! `None` always means "leave unchanged": the engines send zeros for what
//! they do not set (docker's `update` sends reservation, kernel and cpu
//! zeros), so the conversion turns those zeros into `None`. The one
//! exception is pids: a present `pids` section with a limit of 0 or less is
//! "no limit" (`max`), as in runc.

use std::collections::BTreeMap;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType, LinuxResources};
use serde::{Deserialize, Serialize};

use super::CgroupError;

/// Resource limits of a cgroup; every field is optional ("leave as is").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    pub memory: Memory,
    /// `pids.max`; `Some(n)` with `n <= 0` writes `max`.
    pub pids_limit: Option<i64>,
    pub cpu: Cpu,
    /// Device rules in the OCI order. `Some` (even empty) resets the list to
    /// "deny all" first, then applies each rule in order.
    pub devices: Option<Vec<DeviceRule>>,
    /// `linux.resources.unified`: raw cgroup v2 files and values (refused on
    /// a v1 layout, as runc does).
    pub unified: BTreeMap<String, String>,
}

/// Memory limits in bytes; `-1` is "unlimited".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memory {
    /// v1 `memory.limit_in_bytes`, v2 `memory.max`.
    pub limit: Option<i64>,
    /// OCI `swap` is memory **plus** swap: v1 `memory.memsw.limit_in_bytes`
    /// (when the kernel has swap accounting), v2 `memory.swap.max` = swap -
    /// limit.
    pub swap: Option<i64>,
    /// v1 `memory.soft_limit_in_bytes`, v2 `memory.low`.
    pub reservation: Option<i64>,
}

/// CPU limits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cpu {
    /// v1 `cpu.shares`; v2 `cpu.weight` through [`shares_to_weight`].
    pub shares: Option<u64>,
    /// CFS quota in µs per period; `-1` is "unlimited".
    pub quota: Option<i64>,
    /// CFS period in µs.
    pub period: Option<u64>,
    /// `cpuset.cpus`, e.g. `0-1`.
    pub cpus: Option<String>,
    /// `cpuset.mems`, e.g. `0`.
    pub mems: Option<String>,
}

/// The kind of device a rule applies to (the cgroup kinds: `a`, `b`, `c`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeviceKind {
    All,
    Block,
    Char,
}

/// One device cgroup rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRule {
    pub allow: bool,
    pub kind: DeviceKind,
    /// `None` is any (`*`).
    pub major: Option<i64>,
    /// `None` is any (`*`).
    pub minor: Option<i64>,
    /// Some of `r`, `w`, `m`, each at most once, never empty.
    pub access: String,
}

impl DeviceRule {
    /// Builds a rule, checking the access string.
    pub fn new(
        allow: bool,
        kind: DeviceKind,
        major: Option<i64>,
        minor: Option<i64>,
        access: &str,
    ) -> Result<DeviceRule, CgroupError> {
        let access = if access.is_empty() { "rwm" } else { access };
        let mut seen = [false; 3];
        for c in access.chars() {
            let i = match c {
                'r' => 0,
                'w' => 1,
                'm' => 2,
                _ => {
                    return Err(CgroupError::InvalidResource(format!(
                        "device rule access {access:?}: only r, w and m are allowed"
                    )))
                }
            };
            if seen[i] {
                return Err(CgroupError::InvalidResource(format!(
                    "device rule access {access:?}: {c} given twice"
                )));
            }
            seen[i] = true;
        }
        for (what, n) in [("major", major), ("minor", minor)] {
            if let Some(n) = n {
                // -1 is the OCI spelling of "any" for some engines.
                if n < -1 || n > u32::MAX as i64 {
                    return Err(CgroupError::InvalidResource(format!(
                        "device rule {what} number {n} is out of range"
                    )));
                }
            }
        }
        let any = |n: Option<i64>| n.filter(|&n| n >= 0);
        Ok(DeviceRule {
            allow,
            kind,
            major: any(major),
            minor: any(minor),
            access: access.to_string(),
        })
    }

    /// The rule as the v1 devices controller takes it, e.g. `c 1:3 rwm` or
    /// `a *:* rwm` (without the allow/deny, which is the file written to).
    pub fn render_v1(&self) -> String {
        let kind = match self.kind {
            DeviceKind::All => 'a',
            DeviceKind::Block => 'b',
            DeviceKind::Char => 'c',
        };
        let num = |n: Option<i64>| n.map_or_else(|| "*".to_string(), |n| n.to_string());
        format!(
            "{kind} {}:{} {}",
            num(self.major),
            num(self.minor),
            self.access
        )
    }

    /// Whether this rule allows every device with every access, as the
    /// rule of a privileged container does.
    pub fn is_allow_all(&self) -> bool {
        self.allow && self.kind == DeviceKind::All
    }
}

impl TryFrom<&LinuxDeviceCgroup> for DeviceRule {
    type Error = CgroupError;

    fn try_from(d: &LinuxDeviceCgroup) -> Result<DeviceRule, CgroupError> {
        let kind = match d.typ().unwrap_or(LinuxDeviceType::A) {
            LinuxDeviceType::A => DeviceKind::All,
            LinuxDeviceType::B => DeviceKind::Block,
            LinuxDeviceType::C | LinuxDeviceType::U => DeviceKind::Char,
            LinuxDeviceType::P => {
                return Err(CgroupError::InvalidResource(
                    "device rule of type p (fifo): the devices cgroup only takes a, b and c".into(),
                ))
            }
        };
        DeviceRule::new(
            d.allow(),
            kind,
            d.major(),
            d.minor(),
            d.access().as_deref().unwrap_or("rwm"),
        )
    }
}

impl TryFrom<&LinuxResources> for Resources {
    type Error = CgroupError;

    /// Converts OCI `linux.resources`; zeros become `None` ("unchanged"),
    /// except a present `pids` section. Fields buildcell does not apply yet
    /// (blockIO, hugepageLimits, network, rdma, kernel memory, swappiness,
    /// realtime, idle, burst) are ignored.
    fn try_from(r: &LinuxResources) -> Result<Resources, CgroupError> {
        let nonzero_i = |v: Option<i64>| v.filter(|&v| v != 0);
        let nonzero_u = |v: Option<u64>| v.filter(|&v| v != 0);
        let nonempty = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
        let mut out = Resources::default();
        if let Some(m) = r.memory() {
            out.memory = Memory {
                limit: nonzero_i(m.limit()),
                swap: nonzero_i(m.swap()),
                reservation: nonzero_i(m.reservation()),
            };
        }
        if let Some(p) = r.pids() {
            out.pids_limit = Some(p.limit());
        }
        if let Some(c) = r.cpu() {
            out.cpu = Cpu {
                shares: nonzero_u(c.shares()),
                quota: nonzero_i(c.quota()),
                period: nonzero_u(c.period()),
                cpus: nonempty(c.cpus()),
                mems: nonempty(c.mems()),
            };
        }
        if let Some(devs) = r.devices() {
            out.devices = Some(
                devs.iter()
                    .map(DeviceRule::try_from)
                    .collect::<Result<_, _>>()?,
            );
        }
        if let Some(u) = r.unified() {
            for (k, v) in u {
                check_unified_key(k)?;
                out.unified.insert(k.clone(), v.clone());
            }
        }
        Ok(out)
    }
}

fn check_unified_key(k: &str) -> Result<(), CgroupError> {
    if k.is_empty() || k.contains('/') || k == "." || k == ".." || k.contains('\0') {
        return Err(CgroupError::InvalidResource(format!(
            "linux.resources.unified key {k:?} is not a file name"
        )));
    }
    Ok(())
}

/// cgroup v1 `cpu.shares` (2..262144, default 1024) to v2 `cpu.weight`
/// (1..10000, default 100), the conversion runc and crun use:
/// `1 + ((shares - 2) * 9999) / 262142`. Shares are clamped to the v1 range
/// first, so 0 and 1 give 1 instead of underflowing.
pub fn shares_to_weight(shares: u64) -> u64 {
    let s = shares.clamp(2, 262_144);
    1 + ((s - 2) * 9999) / 262_142
}

/// A v1 memory value: `-1` is unlimited.
pub(crate) fn v1_bytes(v: i64) -> String {
    if v < 0 {
        "-1".into()
    } else {
        v.to_string()
    }
}

/// A v2 memory or pids value: negative is `max`.
pub(crate) fn v2_max(v: i64) -> String {
    if v < 0 {
        "max".into()
    } else {
        v.to_string()
    }
}

/// `pids.max` for both versions: 0 or less is `max`.
pub(crate) fn pids_value(v: i64) -> String {
    if v <= 0 {
        "max".into()
    } else {
        v.to_string()
    }
}

/// OCI memory+swap to v2 `memory.swap.max` (swap only), as runc converts:
/// `-1` stays unlimited, otherwise swap - limit; `limit` is the memory
/// limit being set or already in force (`None` when unlimited).
pub(crate) fn v2_swap(swap: i64, limit: Option<i64>) -> Result<String, CgroupError> {
    if swap < 0 {
        return Ok("max".into());
    }
    match limit {
        None => Err(CgroupError::InvalidResource(format!(
            "memory.swap {swap}: a swap limit needs a memory limit"
        ))),
        Some(l) if l < 0 => Err(CgroupError::InvalidResource(format!(
            "memory.swap {swap}: a swap limit needs a memory limit (memory is unlimited)"
        ))),
        Some(l) if l > swap => Err(CgroupError::InvalidResource(format!(
            "memory.swap {swap} is below memory.limit {l}: swap is memory+swap and must be >= the memory limit"
        ))),
        Some(l) => Ok((swap - l).to_string()),
    }
}

/// The value of v2 `cpu.max` for a quota and period; `current` is the
/// content of `cpu.max` now (read when only the period changes, to keep the
/// quota). `None` when neither is set.
pub(crate) fn v2_cpu_max(quota: Option<i64>, period: Option<u64>, current: &str) -> Option<String> {
    let q = |q: i64| {
        if q < 0 {
            "max".to_string()
        } else {
            q.to_string()
        }
    };
    match (quota, period) {
        (None, None) => None,
        (Some(quota), None) => Some(q(quota)),
        (Some(quota), Some(p)) => Some(format!("{} {p}", q(quota))),
        (None, Some(p)) => {
            let cur = current.split_whitespace().next().unwrap_or("max");
            Some(format!("{cur} {p}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_to_weight_matches_runc() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(512), 20);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(0), 1);
        assert_eq!(shares_to_weight(1), 1);
        assert_eq!(shares_to_weight(u64::MAX), 10_000);
    }

    #[test]
    fn device_rules_render_like_the_kernel_expects() {
        let r = DeviceRule::new(true, DeviceKind::Char, Some(1), Some(3), "rwm").unwrap();
        assert_eq!(r.render_v1(), "c 1:3 rwm");
        let r = DeviceRule::new(false, DeviceKind::All, None, None, "").unwrap();
        assert_eq!(r.render_v1(), "a *:* rwm");
        let r = DeviceRule::new(true, DeviceKind::Block, Some(8), Some(-1), "r").unwrap();
        assert_eq!(r.render_v1(), "b 8:* r");
        assert!(DeviceRule::new(true, DeviceKind::Char, None, None, "rx").is_err());
        assert!(DeviceRule::new(true, DeviceKind::Char, None, None, "rr").is_err());
        assert!(DeviceRule::new(true, DeviceKind::Char, Some(-5), None, "r").is_err());
    }

    #[test]
    fn oci_conversion_turns_zeros_into_unchanged() {
        let json = r#"{
            "memory": {"limit": 33554432, "reservation": 0, "swap": 0, "kernel": 0},
            "cpu": {"shares": 0, "quota": 0, "period": 100000, "cpus": "", "mems": "0"},
            "pids": {"limit": 0},
            "devices": [
                {"allow": false, "access": "rwm"},
                {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
                {"allow": true, "type": "u", "major": 5, "access": "rw"}
            ]
        }"#;
        let oci: LinuxResources = serde_json::from_str(json).unwrap();
        let r = Resources::try_from(&oci).unwrap();
        assert_eq!(r.memory.limit, Some(33_554_432));
        assert_eq!(r.memory.reservation, None);
        assert_eq!(r.memory.swap, None);
        assert_eq!(r.cpu.shares, None);
        assert_eq!(r.cpu.quota, None);
        assert_eq!(r.cpu.period, Some(100_000));
        assert_eq!(r.cpu.cpus, None);
        assert_eq!(r.cpu.mems.as_deref(), Some("0"));
        assert_eq!(r.pids_limit, Some(0));
        assert_eq!(pids_value(0), "max");
        assert_eq!(pids_value(-1), "max");
        assert_eq!(pids_value(16), "16");
        let rendered: Vec<_> = r
            .devices
            .unwrap()
            .iter()
            .map(|d| (d.allow, d.render_v1()))
            .collect();
        assert_eq!(
            rendered,
            vec![
                (false, "a *:* rwm".to_string()),
                (true, "c 1:3 rwm".to_string()),
                (true, "c 5:* rw".to_string()),
            ]
        );
    }

    #[test]
    fn oci_conversion_refuses_bad_rules_and_keys() {
        let oci: LinuxResources =
            serde_json::from_str(r#"{"devices": [{"allow": true, "type": "p"}]}"#).unwrap();
        let e = Resources::try_from(&oci).unwrap_err().to_string();
        assert!(e.contains("type p"), "{e}");
        let oci: LinuxResources =
            serde_json::from_str(r#"{"unified": {"../memory.max": "1"}}"#).unwrap();
        assert!(Resources::try_from(&oci).is_err());
        let oci: LinuxResources = serde_json::from_str(r#"{}"#).unwrap();
        assert_eq!(Resources::try_from(&oci).unwrap(), Resources::default());
    }

    #[test]
    fn v2_swap_is_swap_minus_memory() {
        assert_eq!(v2_swap(-1, None).unwrap(), "max");
        assert_eq!(v2_swap(200, Some(100)).unwrap(), "100");
        assert_eq!(v2_swap(100, Some(100)).unwrap(), "0");
        assert!(v2_swap(50, Some(100)).is_err());
        assert!(v2_swap(50, None).is_err());
        assert!(v2_swap(50, Some(-1)).is_err());
    }

    #[test]
    fn v2_cpu_max_keeps_what_is_not_set() {
        assert_eq!(v2_cpu_max(None, None, "max 100000"), None);
        assert_eq!(v2_cpu_max(Some(50_000), None, "").as_deref(), Some("50000"));
        assert_eq!(
            v2_cpu_max(Some(-1), Some(20_000), "").as_deref(),
            Some("max 20000")
        );
        assert_eq!(
            v2_cpu_max(None, Some(20_000), "30000 100000\n").as_deref(),
            Some("30000 20000")
        );
        assert_eq!(
            v2_cpu_max(None, Some(20_000), "").as_deref(),
            Some("max 20000")
        );
        assert_eq!(v1_bytes(-1), "-1");
        assert_eq!(v2_max(-1), "max");
        assert_eq!(v2_max(4096), "4096");
    }
}
