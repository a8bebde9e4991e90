//! Audit records: one JSON object per line, documented field by field in
//! the README ("Audit log format"). Plain JSON Lines, so a SIEM or `jq`
//! reads them without buildcell.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// `prev` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What a line says, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Body {
    /// What ran: first record of every log.
    Start(Start),
    /// One exec attempt inside the sandbox.
    Exec(Exec),
    /// A signature over the chain head.
    Checkpoint(Checkpoint),
    /// How the step ended.
    End(End),
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Start {
    pub buildcell_version: String,
    pub container_id: String,
    /// Bundle path, or `null` for `buildcell step`.
    pub bundle: Option<String>,
    /// SHA-256 of config.json (or of the in-memory spec of `step`).
    pub config_sha256: String,
    pub profile: Option<String>,
    pub profile_sha256: Option<String>,
    pub uid_map: String,
    pub gid_map: String,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    pub host: String,
    /// Id of the signing key, `null` when the log is not signed.
    pub key_id: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Exec {
    /// Host pid and pid inside the sandbox.
    pub pid: i32,
    pub pid_inside: Option<i32>,
    pub ppid: Option<i32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub host_uid: Option<u32>,
    pub host_gid: Option<u32>,
    pub cwd: Option<String>,
    /// The path as given to execve, and what the kernel loaded (inside the
    /// container's root).
    pub path: Option<String>,
    pub resolved: Option<String>,
    pub argv: Vec<String>,
    /// Set when argv was cut: the SHA-256 of the whole argv (NUL-joined).
    pub argv_truncated_sha256: Option<String>,
    pub env_names: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// `ok`, or the errno name of a failed attempt.
    pub result: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub key_id: String,
    /// Ed25519 signature (hex) over [`super::checkpoint_message`], or over
    /// [`super::fss::checkpoint_message`] with the epoch key when sealed.
    pub sig: String,
    /// Set when signed with a forward-secure sealing key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal: Option<Seal>,
}

/// What a verifier needs to tie a sealed checkpoint's epoch key to the
/// sealing key's public root (see [`super::fss`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Seal {
    pub epoch: u64,
    /// The epoch's Ed25519 public key and its Merkle proof up to the
    /// period's root (leaf first).
    pub epoch_key: String,
    pub epoch_proof: Vec<String>,
    /// The period's Ed25519 public key, its signature over the period's
    /// root, and its Merkle proof up to the public root.
    pub period_key: String,
    pub period_cert: String,
    pub period_proof: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct End {
    pub exit_status: Option<i32>,
    pub records: u64,
    pub execs: u64,
}

/// A whole line: the common fields around the body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub seq: u64,
    pub time: String,
    #[serde(flatten)]
    pub body: Body,
    pub prev: String,
}

/// Now, UTC, RFC 3339 with nanoseconds (`2026-12-01T00:19:47.123456789Z`).
pub fn now() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format_time(d.as_secs(), d.subsec_nanos())
}

/// Seconds since the epoch as RFC 3339 UTC (civil-from-days, no time zone
/// database needed).
pub fn format_time(secs: u64, nanos: u32) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Seconds since the epoch of an RFC 3339 UTC time as [`format_time`]
/// writes it (`YYYY-MM-DDTHH:MM:SS[.fraction]Z`, years 1970 to 9999);
/// `None` for anything else.
pub fn parse_time(t: &str) -> Option<u64> {
    let b = t.as_bytes();
    if b.len() < 20
        || b.get(4) != Some(&b'-')
        || b.get(7) != Some(&b'-')
        || b.get(10) != Some(&b'T')
        || b.get(13) != Some(&b':')
        || b.get(16) != Some(&b':')
        || b.last() != Some(&b'Z')
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = t.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let frac = t.get(19..t.len() - 1)?;
    let frac_ok = frac.is_empty()
        || (frac.len() >= 2
            && frac.starts_with('.')
            && frac[1..].bytes().all(|c| c.is_ascii_digit()));
    if !(1970..=9999).contains(&y)
        || !(1..=12).contains(&m)
        || !(1..=31).contains(&d)
        || hh > 23
        || mm > 59
        || ss > 60
        || !frac_ok
    {
        return None;
    }
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_back() {
        for secs in [0u64, 951_782_400, 1_796_084_387, 4_102_444_800] {
            assert_eq!(parse_time(&format_time(secs, 123)), Some(secs));
        }
        assert_eq!(parse_time("2026-12-01T00:19:47Z"), Some(1_796_084_387));
        for bad in [
            "",
            "2026-13-01T00:00:00Z",
            "2026-12-01 00:19:47Z",
            "2026-12-01T00:19:47.Z",
            "+026-12-01T00:19:47Z",
            "2026-12-01T00:19:47.5",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn times() {
        assert_eq!(format_time(0, 0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            format_time(1_796_084_387, 5),
            "2026-12-01T00:19:47.000000005Z"
        );
        assert_eq!(
            format_time(951_782_400, 0),
            "2000-02-29T00:00:00.000000000Z"
        );
    }

    #[test]
    fn record_shape() {
        let r = Record {
            seq: 3,
            time: "t".into(),
            body: Body::End(End {
                exit_status: Some(0),
                records: 3,
                execs: 1,
            }),
            prev: GENESIS.into(),
        };
        let line = serde_json::to_string(&r).unwrap();
        assert!(
            line.starts_with(r#"{"seq":3,"time":"t","type":"end","#),
            "{line}"
        );
        assert_eq!(serde_json::from_str::<Record>(&line).unwrap(), r);
    }
}
