//! Seccomp profiles in Docker/OCI JSON form, compiled to BPF in the
//! parent (before `clone`, by [`bpf`]) and only applied in the child
//! (with `seccompiler`).
//!
//! The Docker/OCI format has one action per rule; a filter here has one
//! action for what its table matches and one for the rest. buildcell
//! therefore compiles one filter for the default action (allowing
//! everything some rule names) plus one filter per other action, and
//! installs them in that order. The kernel runs every
//! filter and takes the most restrictive answer; among equal actions the
//! filter installed last wins, so a rule's own errno beats the default's.

use std::collections::{BTreeMap, BTreeSet};

use seccompiler::{BpfProgram, SeccompAction};
use serde::Deserialize;

pub mod bpf;
use bpf::{Cond, Op};

/// A compiled BPF program, ready for `seccomp(SECCOMP_SET_MODE_FILTER)`.
pub type CompiledFilter = BpfProgram;

/// The profile `buildcell step` applies when `--seccomp` is not given.
pub const DEFAULT_PROFILE: &str = include_str!("../../seccomp/default.json");

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("seccomp profile {source_name}: {path}: {message}")]
    Invalid {
        source_name: String,
        path: String,
        message: String,
    },
    #[error("apply seccomp filter: {0}")]
    Apply(seccompiler::Error),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Profile {
    default_action: String,
    default_errno_ret: Option<u32>,
    architectures: Option<Vec<String>>,
    arch_map: Option<Vec<ArchMap>>,
    #[serde(default)]
    syscalls: Vec<Rule>,
    flags: Option<Vec<String>>,
    listener_path: Option<String>,
    listener_metadata: Option<String>,
    comment: Option<String>,
}

/// Docker's `archMap` is accepted for compatibility; buildcell compiles for
/// the host's architecture only, so its content is not used.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
struct ArchMap {
    architecture: String,
    #[serde(default)]
    sub_architectures: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Rule {
    #[serde(default)]
    names: Vec<String>,
    name: Option<String>,
    action: String,
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Vec<Arg>,
    comment: Option<String>,
    includes: Option<Condition>,
    excludes: Option<Condition>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Arg {
    index: u8,
    value: u64,
    #[serde(default)]
    value_two: u64,
    op: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Condition {
    #[serde(default)]
    caps: Vec<String>,
    #[serde(default)]
    arches: Vec<String>,
    min_kernel: Option<String>,
}

const THIS_ARCH: &[&str] = &["SCMP_ARCH_X86_64", "amd64", "x86_64"];

/// Compile a Docker/OCI seccomp profile for x86_64. `granted_caps` are the
/// capabilities the process keeps (`CAP_*` names): rules that include or
/// exclude by capability are resolved against them, as Docker does.
pub fn compile(
    text: &str,
    source_name: &str,
    granted_caps: &[String],
) -> Result<Vec<CompiledFilter>, SeccompError> {
    compile_skipping(text, source_name, granted_caps, &|_| false)
}

/// As [`compile`], leaving out the syscall names for which `skip` is true
/// (an engine's profile names the calls of every architecture; libseccomp
/// ignores those this one lacks, and so does buildcell for bundles).
pub fn compile_skipping(
    text: &str,
    source_name: &str,
    granted_caps: &[String],
    skip: &dyn Fn(&str) -> bool,
) -> Result<Vec<CompiledFilter>, SeccompError> {
    let mut programs = Vec::new();
    for (mismatch, on_match, table) in tables(text, source_name, granted_caps, skip)? {
        programs.push(
            bpf::generate(&table, on_match.into(), mismatch.into()).map_err(|message| {
                SeccompError::Invalid {
                    source_name: source_name.to_string(),
                    path: "syscalls".into(),
                    message,
                }
            })?,
        );
    }
    Ok(programs)
}

/// The filters a profile makes, in the order they are installed: for
/// each, the action of a syscall its table does not match, the action of
/// one it matches, and the table.
fn tables(
    text: &str,
    source_name: &str,
    granted_caps: &[String],
    skip: &dyn Fn(&str) -> bool,
) -> Result<Vec<(SeccompAction, SeccompAction, bpf::Table)>, SeccompError> {
    let invalid = |path: String, message: String| SeccompError::Invalid {
        source_name: source_name.to_string(),
        path,
        message,
    };
    let de = &mut serde_json::Deserializer::from_str(text);
    let profile: Profile = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        invalid(
            if path == "." {
                "(top level)".into()
            } else {
                path
            },
            e.inner().to_string(),
        )
    })?;
    let _ = (
        &profile.arch_map,
        &profile.listener_metadata,
        &profile.comment,
    );
    if let Some(arches) = &profile.architectures {
        if !arches.is_empty() && !arches.iter().any(|a| THIS_ARCH.contains(&a.as_str())) {
            return Err(invalid(
                "architectures".into(),
                "does not include SCMP_ARCH_X86_64, the architecture of this host".into(),
            ));
        }
    }
    if let Some(flags) = profile.flags.as_ref().filter(|f| !f.is_empty()) {
        return Err(invalid(
            "flags".into(),
            format!("{flags:?}: seccomp filter flags are not supported yet; remove them"),
        ));
    }
    if profile.listener_path.is_some() {
        return Err(invalid(
            "listenerPath".into(),
            "seccomp notify listeners are not supported; remove it".into(),
        ));
    }
    let default = action(
        &profile.default_action,
        profile.default_errno_ret,
        || "defaultAction".into(),
        &invalid,
    )?;

    // Names x86_64 lacks get numbers from UNKNOWN up, with the JSON path
    // of their first mention: an error names it if one ends up in a filter.
    let mut unknown: Vec<(&str, String)> = Vec::new();
    // action -> syscall -> list of conditions (empty = always). Keyed by
    // the action's name, which orders the filters.
    let mut by_action: BTreeMap<String, (SeccompAction, Calls)> = BTreeMap::new();
    for (ri, rule) in profile.syscalls.iter().enumerate() {
        let _ = &rule.comment;
        if !applies(rule, granted_caps) {
            continue;
        }
        let act = action(
            &rule.action,
            rule.errno_ret,
            || format!("syscalls[{ri}].action"),
            &invalid,
        )?;
        let mut conds = Vec::new();
        for (ai, a) in rule.args.iter().enumerate() {
            let (op, value) = match a.op.as_str() {
                "SCMP_CMP_EQ" => (Op::Eq, a.value),
                "SCMP_CMP_NE" => (Op::Ne, a.value),
                "SCMP_CMP_LT" => (Op::Lt, a.value),
                "SCMP_CMP_LE" => (Op::Le, a.value),
                "SCMP_CMP_GT" => (Op::Gt, a.value),
                "SCMP_CMP_GE" => (Op::Ge, a.value),
                "SCMP_CMP_MASKED_EQ" => (Op::MaskedEq(a.value), a.value_two),
                other => {
                    return Err(invalid(
                        format!("syscalls[{ri}].args[{ai}].op"),
                        format!("unknown operator {other:?} (SCMP_CMP_EQ, _NE, _LT, _LE, _GT, _GE, _MASKED_EQ)"),
                    ))
                }
            };
            if a.index > 5 {
                return Err(invalid(
                    format!("syscalls[{ri}].args[{ai}].index"),
                    format!("{} is not a syscall argument index (0 to 5)", a.index),
                ));
            }
            conds.push(Cond {
                arg: a.index,
                op,
                value,
            });
        }
        let names = rule.names.iter().chain(rule.name.iter());
        let mut numbers = Vec::new();
        for (ni, name) in names.enumerate() {
            if skip(name) {
                continue;
            }
            numbers.push(match crate::syscalls::number(name) {
                Some(nr) => nr as u32,
                None => {
                    let i = unknown
                        .iter()
                        .position(|(n, _)| n == name)
                        .unwrap_or_else(|| {
                            unknown.push((name, format!("syscalls[{ri}].names[{ni}]")));
                            unknown.len() - 1
                        });
                    UNKNOWN + i as u32
                }
            });
        }
        if numbers.is_empty() {
            continue;
        }
        let calls = &mut by_action
            .entry(action_key(&act))
            .or_insert_with(|| (act.clone(), BTreeMap::new()))
            .1;
        for nr in numbers {
            calls.entry(nr).or_default().push(conds.clone());
        }
    }

    let default_key = action_key(&default);
    let mut filters: Vec<(SeccompAction, SeccompAction, Calls)> = Vec::new();
    // Filter 1: the default action for everything, except what the rules
    // allow (and what other-action rules name unconditionally, which filter
    // 2.. decide).
    let mut pass: Calls = BTreeMap::new();
    for (key, (act, calls)) in &by_action {
        if *key == default_key {
            continue;
        }
        for (nr, conds) in calls {
            if *act == SeccompAction::Allow || conds.iter().all(|c| c.is_empty()) {
                pass.entry(*nr).or_default().extend(conds.iter().cloned());
            }
        }
    }
    if default != SeccompAction::Allow {
        filters.push((default.clone(), SeccompAction::Allow, pass));
    }
    for (key, (act, calls)) in by_action {
        if key == default_key || act == SeccompAction::Allow {
            continue;
        }
        filters.push((SeccompAction::Allow, act, calls));
    }

    let mut out = Vec::new();
    for (mismatch, on_match, calls) in filters {
        // A syscall matches unconditionally (no rules) when any of its
        // mentions has no condition; otherwise when one rule's conditions
        // all hold.
        let mut table = bpf::Table::new();
        for (nr, conds) in calls {
            if let Some((name, path)) = nr.checked_sub(UNKNOWN).map(|i| &unknown[i as usize]) {
                return Err(invalid(
                    path.clone(),
                    format!("unknown syscall {name:?} on x86_64"),
                ));
            }
            let always = conds.iter().any(|c| c.is_empty());
            table.insert(nr, if always { Vec::new() } else { conds });
        }
        out.push((mismatch, on_match, table));
    }
    Ok(out)
}

/// Syscall number -> the condition lists under which a rule names it.
type Calls = BTreeMap<u32, Vec<Vec<Cond>>>;

/// The first of the numbers given to names x86_64 lacks (above every real
/// syscall number, below x32's bit).
const UNKNOWN: u32 = 0x1000_0000;

/// The order in which the filters of other actions are installed (among
/// equal actions, the last installed decides): the action as seccompiler's
/// JSON writes it, sorted as text.
fn action_key(a: &SeccompAction) -> String {
    match a {
        SeccompAction::Allow => r#""allow""#.into(),
        SeccompAction::Errno(n) => format!(r#"{{"errno":{n}}}"#),
        SeccompAction::KillThread => r#""kill_thread""#.into(),
        SeccompAction::KillProcess => r#""kill_process""#.into(),
        SeccompAction::Log => r#""log""#.into(),
        SeccompAction::Trace(n) => format!(r#"{{"trace":{n}}}"#),
        SeccompAction::Trap => r#""trap""#.into(),
    }
}

fn action(
    name: &str,
    errno: Option<u32>,
    path: impl Fn() -> String,
    invalid: &impl Fn(String, String) -> SeccompError,
) -> Result<SeccompAction, SeccompError> {
    Ok(match name {
        "SCMP_ACT_ALLOW" => SeccompAction::Allow,
        "SCMP_ACT_ERRNO" => SeccompAction::Errno(errno.unwrap_or(libc::EPERM as u32)),
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => SeccompAction::KillThread,
        "SCMP_ACT_KILL_PROCESS" => SeccompAction::KillProcess,
        "SCMP_ACT_TRAP" => SeccompAction::Trap,
        "SCMP_ACT_LOG" => SeccompAction::Log,
        "SCMP_ACT_TRACE" => SeccompAction::Trace(errno.unwrap_or(0)),
        other => {
            return Err(invalid(
                path(),
                format!("unknown action {other:?} (SCMP_ACT_ALLOW, _ERRNO, _KILL, _KILL_PROCESS, _TRAP, _LOG, _TRACE)"),
            ))
        }
    })
}

/// Docker's `includes`/`excludes`: a rule applies when the process has every
/// included capability, none of the excluded ones, and the arch matches.
fn applies(rule: &Rule, granted: &[String]) -> bool {
    let arch_ok = |c: &Condition| {
        c.arches.is_empty() || c.arches.iter().any(|a| THIS_ARCH.contains(&a.as_str()))
    };
    if let Some(inc) = &rule.includes {
        let _ = &inc.min_kernel;
        if !inc.caps.iter().all(|c| granted.contains(c)) || !arch_ok(inc) {
            return false;
        }
    }
    if let Some(exc) = &rule.excludes {
        if exc.caps.iter().any(|c| granted.contains(c)) {
            return false;
        }
        if !exc.arches.is_empty() && exc.arches.iter().any(|a| THIS_ARCH.contains(&a.as_str())) {
            return false;
        }
    }
    true
}

/// The capabilities a profile's rules include or exclude by: the only
/// input besides the text that changes what [`compile`] makes of it.
pub fn capabilities_named(text: &str) -> Result<BTreeSet<String>, serde_json::Error> {
    let profile: Profile = serde_json::from_str(text)?;
    Ok(profile
        .syscalls
        .iter()
        .flat_map(|r| r.includes.iter().chain(r.excludes.iter()))
        .flat_map(|c| c.caps.iter().cloned())
        .collect())
}

/// Names of every syscall in a profile that resolves on x86_64 (for tests and
/// `--verbose`).
pub fn rule_count(text: &str) -> usize {
    serde_json::from_str::<Profile>(text)
        .map(|p| {
            p.syscalls
                .iter()
                .flat_map(|r| r.names.iter().chain(r.name.iter()))
                .collect::<BTreeSet<_>>()
                .len()
        })
        .unwrap_or(0)
}

/// The exec-audit filter: `execve` and `execveat` of x86_64 and i386 go to
/// the supervisor (`SECCOMP_RET_USER_NOTIF`), x32 syscalls fail with ENOSYS,
/// any other architecture is killed, everything else is allowed (the
/// profile's own filter decides the rest).
pub fn exec_notify_program() -> CompiledFilter {
    const ARCH_X86_64: u32 = 0xc000_003e;
    const ARCH_I386: u32 = 0x4000_0003;
    const X32_BIT: u32 = 0x4000_0000;
    const RET_KILL_PROCESS: u32 = 0x8000_0000;
    const RET_USER_NOTIF: u32 = 0x7fc0_0000;
    const RET_ALLOW: u32 = 0x7fff_0000;
    const RET_ERRNO: u32 = 0x0005_0000;
    const LD_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JEQ: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const JGE: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
    const RET: u16 = 0x06; // BPF_RET | BPF_K
    let i = |code, jt, jf, k| seccompiler::sock_filter { code, jt, jf, k };
    vec![
        i(LD_ABS, 0, 0, 4),                            // 0: A = arch
        i(JEQ, 0, 6, ARCH_X86_64),                     // 1: x86_64 ? 2 : 8
        i(LD_ABS, 0, 0, 0),                            // 2: A = nr
        i(JGE, 3, 0, X32_BIT),                         // 3: x32 ? 7 : 4
        i(JEQ, 8, 0, 59),                              // 4: execve ? 13
        i(JEQ, 7, 0, 322),                             // 5: execveat ? 13
        i(RET, 0, 0, RET_ALLOW),                       // 6
        i(RET, 0, 0, RET_ERRNO | libc::ENOSYS as u32), // 7
        i(JEQ, 0, 5, ARCH_I386),                       // 8: i386 ? 9 : 14
        i(LD_ABS, 0, 0, 0),                            // 9: A = nr
        i(JEQ, 2, 0, 11),                              // 10: execve ? 13
        i(JEQ, 1, 0, 358),                             // 11: execveat ? 13
        i(RET, 0, 0, RET_ALLOW),                       // 12
        i(RET, 0, 0, RET_USER_NOTIF),                  // 13
        i(RET, 0, 0, RET_KILL_PROCESS),                // 14
    ]
}

/// Install the filters in order. Must run after `no_new_privs` (or with
/// CAP_SYS_ADMIN) and as the last step before exec.
pub fn apply(filters: &[CompiledFilter]) -> Result<(), SeccompError> {
    for f in filters {
        seccompiler::apply_filter(f).map_err(SeccompError::Apply)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps() -> Vec<String> {
        vec!["CAP_KILL".into()]
    }

    /// The programs bpf.rs writes decide every syscall of the shipped
    /// profile (with few capabilities and with all) exactly as the
    /// programs seccompiler wrote for the same tables, in far fewer
    /// instructions.
    #[test]
    fn programs_decide_as_seccompiler_would() {
        use seccompiler::{
            SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
            TargetArch,
        };
        let all: Vec<String> = caps::all().iter().map(|c| c.to_string()).collect();
        for granted in [caps(), all] {
            let known = |n: &str| !crate::syscalls::is_known(n);
            let filters = tables(DEFAULT_PROFILE, "default.json", &granted, &known).unwrap();
            for (mismatch, on_match, table) in filters {
                let ours = bpf::generate(&table, on_match.clone().into(), mismatch.clone().into())
                    .unwrap();
                let rules = table
                    .iter()
                    .map(|(nr, rules)| {
                        let rules = rules.iter().map(|r| {
                            let conds = r.iter().map(|c| {
                                let op = match c.op {
                                    Op::Eq => SeccompCmpOp::Eq,
                                    Op::Ne => SeccompCmpOp::Ne,
                                    Op::Lt => SeccompCmpOp::Lt,
                                    Op::Le => SeccompCmpOp::Le,
                                    Op::Gt => SeccompCmpOp::Gt,
                                    Op::Ge => SeccompCmpOp::Ge,
                                    Op::MaskedEq(m) => SeccompCmpOp::MaskedEq(m),
                                };
                                SeccompCondition::new(c.arg, SeccompCmpArgLen::Qword, op, c.value)
                                    .unwrap()
                            });
                            SeccompRule::new(conds.collect()).unwrap()
                        });
                        (i64::from(*nr), rules.collect())
                    })
                    .collect();
                let theirs: BpfProgram =
                    SeccompFilter::new(rules, mismatch, on_match, TargetArch::x86_64)
                        .unwrap()
                        .try_into()
                        .unwrap();
                // A whole profile: a few stretches of numbers, not one
                // test per syscall (182 instructions against 1,537).
                let most = if theirs.len() > 200 {
                    theirs.len() / 4
                } else {
                    theirs.len()
                };
                assert!(ours.len() <= most, "{} vs {}", ours.len(), theirs.len());
                let probes = bpf::probes(&table);
                for nr in (0..=470).chain([0x4000_0000, 0x4000_0038, u32::MAX]) {
                    for args in &probes {
                        assert_eq!(
                            bpf::run(&ours, bpf::AUDIT_ARCH_X86_64, nr, args),
                            bpf::run(&theirs, bpf::AUDIT_ARCH_X86_64, nr, args),
                            "syscall {nr} {args:x?}"
                        );
                    }
                }
                for arch in [0x4000_0003, 0] {
                    assert_eq!(
                        bpf::run(&ours, arch, 59, &[0; 6]),
                        bpf::run(&theirs, arch, 59, &[0; 6])
                    );
                }
            }
        }
    }

    #[test]
    fn default_profile_compiles() {
        let f = compile(DEFAULT_PROFILE, "default.json", &caps()).unwrap();
        assert!(!f.is_empty());
        assert!(rule_count(DEFAULT_PROFILE) > 250);
    }

    #[test]
    fn json_errors_name_the_path() {
        let e = compile(r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": 3}]}"#, "x.json", &caps())
            .unwrap_err()
            .to_string();
        assert!(e.contains("x.json: syscalls[0].action:"), "{e}");
        let e = compile(
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "bogus": 1}"#,
            "x.json",
            &caps(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("unknown field `bogus`"), "{e}");
        let e = compile("{not json", "x.json", &caps())
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("seccomp profile x.json:"), "{e}");
    }

    #[test]
    fn unknown_syscall_and_action_are_named() {
        let e = compile(
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read", "no_such_call"], "action": "SCMP_ACT_ALLOW"}]}"#,
            "x.json",
            &caps(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("syscalls[0].names[1]: unknown syscall \"no_such_call\""),
            "{e}"
        );
        let e = compile(r#"{"defaultAction": "SCMP_ACT_MAYBE"}"#, "x.json", &caps())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("defaultAction: unknown action \"SCMP_ACT_MAYBE\""),
            "{e}"
        );
    }

    #[test]
    fn syscalls_newer_than_the_headers_are_compiled_by_number() {
        // fchmodat2 (6.6) and mseal (6.10) are missing from Debian 12's
        // headers; build.rs lists them, so a profile that allows them
        // allows them instead of failing or leaving them to the default.
        assert_eq!(crate::syscalls::number("fchmodat2"), Some(452));
        assert_eq!(crate::syscalls::number("mseal"), Some(462));
        assert_eq!(crate::syscalls::number("read"), Some(0));
        let f = compile(
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["fchmodat2", "mseal"], "action": "SCMP_ACT_ALLOW"}]}"#,
            "x.json",
            &caps(),
        )
        .unwrap();
        let decide = |nr| bpf::run(&f[0], bpf::AUDIT_ARCH_X86_64, nr, &[0; 6]);
        let allow = 0x7fff_0000;
        assert_eq!(decide(452), allow);
        assert_eq!(decide(462), allow);
        for other in [0, 451, 453, 461, 463] {
            assert_ne!(decide(other), allow, "{other}");
        }
    }

    #[test]
    fn mixed_actions_make_one_filter_each() {
        let f = compile(
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
                {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
                {"names": ["ptrace"], "action": "SCMP_ACT_KILL_PROCESS"}]}"#,
            "x.json",
            &caps(),
        )
        .unwrap();
        assert_eq!(f.len(), 3);
    }

    #[test]
    fn capability_conditions() {
        let text = r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
            {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}}]}"#;
        let p: Profile = serde_json::from_str(text).unwrap();
        assert!(!applies(&p.syscalls[0], &caps()));
        assert!(applies(&p.syscalls[0], &["CAP_SYS_ADMIN".to_string()]));
    }

    #[test]
    fn foreign_architecture_is_refused() {
        let e = compile(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_AARCH64"]}"#,
            "x.json",
            &caps(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("architectures: does not include SCMP_ARCH_X86_64"),
            "{e}"
        );
    }
}
