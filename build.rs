//! Compile `seccomp/default.json` to BPF at build time, with the same code
//! the runtime uses (src/seccomp/), for the capability set of
//! `buildcell step`. Parsing the JSON at every start cost ~0.5 MiB of peak
//! RSS; the embedded BPF costs nothing. A profile that fails to compile
//! fails the build.

#[allow(dead_code)]
#[path = "src/seccomp/mod.rs"]
mod seccomp;

/// What `src/syscalls.rs` is in the crate, for `src/seccomp/` at build time.
mod syscalls {
    /// The number of x86_64 syscall `name`.
    pub fn number(name: &str) -> Option<i64> {
        super::syscall_table()
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, nr)| *nr)
    }
}

/// x86_64 syscalls newer than the kernel headers of Debian 12 (6.1), which
/// build hosts run on kernels that have them and engines' seccomp profiles
/// name: (name, number, first kernel).
const NEWER_SYSCALLS: &[(&str, i64, &str)] = &[
    ("uretprobe", 335, "6.11"),
    ("cachestat", 451, "6.5"),
    ("fchmodat2", 452, "6.6"),
    ("map_shadow_stack", 453, "6.6"),
    ("futex_wake", 454, "6.7"),
    ("futex_wait", 455, "6.7"),
    ("futex_requeue", 456, "6.7"),
    ("statmount", 457, "6.8"),
    ("listmount", 458, "6.8"),
    ("lsm_get_self_attr", 459, "6.8"),
    ("lsm_set_self_attr", 460, "6.8"),
    ("lsm_list_modules", 461, "6.8"),
    ("mseal", 462, "6.10"),
    ("setxattrat", 463, "6.13"),
    ("getxattrat", 464, "6.13"),
    ("listxattrat", 465, "6.13"),
    ("removexattrat", 466, "6.13"),
    ("open_tree_attr", 467, "6.15"),
    ("file_getattr", 468, "6.17"),
    ("file_setattr", 469, "6.17"),
];

use std::fmt::Write as _;

/// Must match the bounding set `buildcell step` grants (src/spec/mod.rs).
const STEP_CAPS: [&str; 3] = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"];

fn main() {
    println!("cargo:rerun-if-changed=seccomp/default.json");
    println!("cargo:rerun-if-changed=src/seccomp");
    // ci/build-release.sh links by this order: a new order must relink.
    println!("cargo:rerun-if-changed=ci/symbol-order.txt");
    // `buildcell --version` prints the commit (docker parses `commit:`).
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=BUILDCELL_COMMIT={commit}");
    // Rebuild when HEAD moves: watch HEAD and the ref it points to, where
    // git keeps them (a worktree's .git is a file).
    for args in [
        ["rev-parse", "--git-path", "HEAD"],
        ["symbolic-ref", "-q", "HEAD"],
    ] {
        if let Some(out) = std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
        {
            let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
            let path = if args[0] == "symbolic-ref" {
                std::process::Command::new("git")
                    .args(["rev-parse", "--git-path", &p])
                    .output()
                    .ok()
                    .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                    .unwrap_or_default()
            } else {
                p
            };
            if !path.is_empty() && std::path::Path::new(&path).exists() {
                println!("cargo:rerun-if-changed={path}");
            }
        }
    }
    syscall_names();
    built_in_profiles_json();
    let caps: Vec<String> = STEP_CAPS.iter().map(|s| s.to_string()).collect();
    let filters = seccomp::compile(seccomp::DEFAULT_PROFILE, "seccomp/default.json", &caps)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut out = String::new();
    writeln!(
        out,
        "/// `seccomp/default.json` compiled for {STEP_CAPS:?}."
    )
    .unwrap();
    writeln!(out, "pub const DEFAULT_BPF: &[&[(u16, u8, u8, u32)]] = &[").unwrap();
    for f in &filters {
        out.push_str("    &[");
        for i in f {
            write!(out, "({}, {}, {}, {}),", i.code, i.jt, i.jf, i.k).unwrap();
        }
        out.push_str("],\n");
    }
    out.push_str("];\n");
    // Rules that name no capability compile the same for every capability
    // set: then `create` and `run` use DEFAULT_BPF too (src/policy).
    let named = seccomp::capabilities_named(seccomp::DEFAULT_PROFILE)
        .unwrap_or_else(|e| panic!("seccomp/default.json: {e}"));
    writeln!(
        out,
        "/// Whether the rules of `seccomp/default.json` include or exclude by capability.\n\
         pub const DEFAULT_BPF_NAMES_CAPS: bool = {};",
        !named.is_empty()
    )
    .unwrap();
    let path = std::path::Path::new(&std::env::var("OUT_DIR").unwrap()).join("default_bpf.rs");
    std::fs::write(path, out).unwrap();
}

/// The x86_64 syscalls, name and number: the kernel headers'
/// (linux-libc-dev) plus [`NEWER_SYSCALLS`], sorted by name.
fn syscall_table() -> &'static [(String, i64)] {
    static TABLE: std::sync::OnceLock<Vec<(String, i64)>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let header = "/usr/include/x86_64-linux-gnu/asm/unistd_64.h";
        let text = std::fs::read_to_string(header).unwrap_or_else(|e| {
            panic!("{header}: {e}; install linux-libc-dev (the kernel headers)")
        });
        let mut table: Vec<(String, i64)> = text
            .lines()
            .filter_map(|l| l.strip_prefix("#define __NR_"))
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                Some((w.next()?.to_string(), w.next()?.parse().ok()?))
            })
            .collect();
        for (name, nr, _) in NEWER_SYSCALLS {
            match table.iter().find(|(n, _)| n == name) {
                Some((_, known)) if known != nr => {
                    panic!("syscall {name}: {nr} in build.rs, {known} in {header}")
                }
                Some(_) => {}
                None => table.push((name.to_string(), *nr)),
            }
        }
        table.sort_unstable();
        table
    })
}

/// The x86_64 syscalls for `src/syscalls.rs`: profiles name syscalls by
/// name, and a bundle's seccomp profile can leave out the names of other
/// architectures instead of failing on them.
fn syscall_names() {
    println!("cargo:rerun-if-changed=/usr/include/x86_64-linux-gnu/asm/unistd_64.h");
    let mut out = String::from(
        "/// x86_64 syscalls (name, number), sorted by name: the kernel headers at build time\n\
         /// and the newer ones build.rs lists.\n",
    );
    out.push_str("pub const X86_64: &[(&str, i64)] = &[\n");
    for (n, nr) in syscall_table() {
        writeln!(out, "    ({n:?}, {nr}),").unwrap();
    }
    out.push_str("];\n");
    let dest = std::path::Path::new(&std::env::var("OUT_DIR").unwrap()).join("syscall_names.rs");
    std::fs::write(dest, out).unwrap();
}

/// The built-in profiles (profiles/*.toml, as src/policy embeds them) as
/// JSON of the same tables: the runtime reads these instead of parsing the
/// TOML of a built-in profile at every start. A profile that is not valid
/// TOML fails the build.
fn built_in_profiles_json() {
    let mut out = String::from(
        "/// The built-in profiles as JSON, (name, JSON), made by build.rs from profiles/*.toml.\n\
         pub const BUILT_IN_JSON: &[(&str, &str)] = &[\n",
    );
    for name in ["build", "build-network", "strict", "engine-compat"] {
        let path = format!("profiles/{name}.toml");
        println!("cargo:rerun-if-changed={path}");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let table: toml::Table = toml::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
        let json = serde_json::to_string(&table).unwrap_or_else(|e| panic!("{path}: {e}"));
        writeln!(out, "    ({name:?}, {json:?}),").unwrap();
    }
    out.push_str("];\n");
    let dest = std::path::Path::new(&std::env::var("OUT_DIR").unwrap()).join("profiles_json.rs");
    std::fs::write(dest, out).unwrap();
}
