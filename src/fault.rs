//! Test-only fault points: `point("create:cgroup-made")` kills the calling
//! process with SIGKILL when the environment variable named by the debug
//! build's switch names that point. Release builds compile every point to
//! nothing (the switch's name is not even in the binary); `tests/faults.rs`
//! arms each point of [`POINTS`] in turn and checks that `delete --force`
//! leaves nothing behind.

/// Who dies at a point: buildcell itself (the command the caller ran), a
/// process it made (the container's init, the audit supervisor, an `exec`'d
/// process before it runs), the command then failing or not on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Victim {
    /// The buildcell command: it dies by SIGKILL.
    Runtime,
    /// A process buildcell forked: the command fails (or, for a detached
    /// supervisor, the container is stopped).
    Child,
}

/// The points reached only when buildcell adds a user namespace to a root
/// engine's bundle (looks-like-root): a reserved id range, idmapped mounts.
pub const ADDED_USERNS_ONLY: &[&str] = &["create:range-reserved", "create:idmapped"];

/// Every fault point, in the order the commands reach them: `command:step`.
pub const POINTS: &[(&str, Victim)] = &[
    ("create:state-dir-made", Victim::Runtime),
    ("create:range-reserved", Victim::Runtime),
    ("create:cgroup-made", Victim::Runtime),
    ("create:log-opened", Victim::Runtime),
    ("create:supervisor-forked", Victim::Runtime),
    ("create:cloned", Victim::Runtime),
    ("create:ids-mapped", Victim::Runtime),
    ("create:placed", Victim::Runtime),
    ("create:idmapped", Victim::Runtime),
    ("create:ready", Victim::Runtime),
    ("create:listener-given", Victim::Runtime),
    ("create:saved", Victim::Runtime),
    ("init:mounts-done", Victim::Child),
    ("init:before-ready", Victim::Child),
    ("supervisor:started", Victim::Child),
    ("start:before-fifo", Victim::Runtime),
    ("start:after-fifo", Victim::Runtime),
    ("exec:forked", Victim::Runtime),
    ("exec:placed", Victim::Runtime),
    ("exec:ready", Victim::Runtime),
    ("exec:handed-over", Victim::Runtime),
    ("exec-process:before-ready", Victim::Child),
    ("delete:killed", Victim::Runtime),
    ("delete:cgroup-removed", Victim::Runtime),
    ("delete:range-released", Victim::Runtime),
    ("delete:state-removed", Victim::Runtime),
];

/// Die here (SIGKILL, no cleanup of any kind) if this point is armed.
/// Debug builds only; a no-op in release builds.
#[inline(always)]
pub fn point(name: &'static str) {
    #[cfg(debug_assertions)]
    armed::check(name);
    #[cfg(not(debug_assertions))]
    let _ = name;
}

#[cfg(debug_assertions)]
mod armed {
    pub fn check(name: &'static str) {
        debug_assert!(
            super::POINTS.iter().any(|(p, _)| *p == name),
            "fault point {name} is not listed in POINTS"
        );
        if std::env::var_os("BUILDCELL_FAULT").is_some_and(|v| v == name) {
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
            // Still here: pid 1 of its own pid namespace, which the kernel
            // protects from its own SIGKILL. Go as abruptly.
            crate::sys::exit_now(137);
        }
    }
}
