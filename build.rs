//! Compile `seccomp/default.json` to BPF at build time, with the same code
//! the runtime uses (src/seccomp.rs), for the capability set of
//! `buildcell step`. Parsing the JSON at every start cost ~0.5 MiB of peak
//! RSS; the embedded BPF costs nothing. A profile that fails to compile
//! fails the build.

#[allow(dead_code)]
#[path = "src/seccomp.rs"]
mod seccomp;

use std::fmt::Write as _;

/// Must match the bounding set `buildcell step` grants (src/spec.rs).
const STEP_CAPS: [&str; 3] = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"];

fn main() {
    println!("cargo:rerun-if-changed=seccomp/default.json");
    println!("cargo:rerun-if-changed=src/seccomp.rs");
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
