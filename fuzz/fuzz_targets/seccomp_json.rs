//! A seccomp profile in Docker/OCI JSON (`step --seccomp FILE`, a bundle's
//! `linux.seccomp`, `seccomp/NAME.json`), compiled to BPF
//! (`seccomp::compile_skipping`) for a few capability sets, as a bundle's
//! is (unknown syscall names skipped) and as `--seccomp` is (none skipped).
#![no_main]

use buildcell::seccomp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let none: Vec<String> = Vec::new();
    let step: Vec<String> = buildcell::spec::STEP_CAPABILITIES
        .iter()
        .map(|c| c.to_string())
        .collect();
    let admin: Vec<String> = ["CAP_SYS_ADMIN", "CAP_SYS_PTRACE", "CAP_SYS_BOOT", "CAP_BPF"]
        .iter()
        .map(|c| c.to_string())
        .collect();
    let skip_unknown = |n: &str| !buildcell::syscalls::is_known(n);
    for caps in [&none, &step, &admin] {
        let _ = seccomp::compile_skipping(text, "fuzz.json", caps, &skip_unknown);
    }
    let _ = seccomp::compile(text, "fuzz.json", &step);
});
