//! The x86_64 system calls by name and number, read from the kernel's
//! headers at build time (build.rs, plus the newer ones it lists): seccomp
//! profiles and policy profiles name syscalls, and an unknown name is an
//! error, not a silent no-op.

mod names {
    include!(concat!(env!("OUT_DIR"), "/syscall_names.rs"));
}

/// Whether `name` is a system call of x86_64.
pub fn is_known(name: &str) -> bool {
    number(name).is_some()
}

/// The number of x86_64 system call `name`.
pub fn number(name: &str) -> Option<i64> {
    names::X86_64
        .binary_search_by(|(n, _)| (*n).cmp(name))
        .ok()
        .map(|i| names::X86_64[i].1)
}
