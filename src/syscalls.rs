//! The x86_64 system call names, read from the kernel's headers at build
//! time (build.rs): seccomp profiles and policy profiles name syscalls, and
//! an unknown name is an error, not a silent no-op.

mod names {
    include!(concat!(env!("OUT_DIR"), "/syscall_names.rs"));
}

/// Whether `name` is a system call of x86_64.
pub fn is_known(name: &str) -> bool {
    names::X86_64.binary_search(&name).is_ok()
}
