//! Compile `seccomp/default.json` to BPF at build time, with the same code
//! the runtime uses (src/seccomp.rs), for the capability set of
//! `buildcell step`. Parsing the JSON at every start cost ~0.5 MiB of peak
//! RSS; the embedded BPF costs nothing. A profile that fails to compile
//! fails the build.

#[allow(dead_code)]
#[path = "src/seccomp.rs"]
mod seccomp;

use std::fmt::Write as _;

/// Must match the bounding set `buildcell step` grants (src/spec/mod.rs).
const STEP_CAPS: [&str; 3] = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"];

fn main() {
    println!("cargo:rerun-if-changed=seccomp/default.json");
    println!("cargo:rerun-if-changed=src/seccomp.rs");
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
    let path = std::path::Path::new(&std::env::var("OUT_DIR").unwrap()).join("default_bpf.rs");
    std::fs::write(path, out).unwrap();
}

/// The x86_64 syscall names of the kernel headers (linux-libc-dev), so
/// that a bundle's seccomp profile can leave out the names of other
/// architectures instead of failing on them.
fn syscall_names() {
    let header = "/usr/include/x86_64-linux-gnu/asm/unistd_64.h";
    println!("cargo:rerun-if-changed={header}");
    let text = std::fs::read_to_string(header)
        .unwrap_or_else(|e| panic!("{header}: {e}; install linux-libc-dev (the kernel headers)"));
    let mut names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("#define __NR_"))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    names.sort_unstable();
    let mut out =
        String::from("/// x86_64 syscall names, from the kernel headers at build time.\n");
    out.push_str("pub const X86_64: &[&str] = &[\n");
    for n in names {
        writeln!(out, "    {n:?},").unwrap();
    }
    out.push_str("];\n");
    let dest = std::path::Path::new(&std::env::var("OUT_DIR").unwrap()).join("syscall_names.rs");
    std::fs::write(dest, out).unwrap();
}
