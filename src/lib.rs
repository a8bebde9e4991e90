//! buildcell: a hardened sandbox runtime for build steps.
//!
//! Module map (one module per kernel facility, the launch in one place):
//! - [`cli`]: command-line parsing only (clap), turns flags into a request;
//! - [`step`]: `buildcell step`, a build step without a bundle;
//! - [`container`]: the OCI lifecycle (`create`, `start`, `exec`, ...);
//! - [`policy`]: named profiles (TOML): what a step may have, checked
//!   before anything is created, and the defaults it gets;
//! - [`spec`]: the OCI spec: the embedded default of `step`, validation into
//!   a [`spec::LaunchPlan`];
//! - [`launch`]: the launch sequence, parent and child, step by step;
//! - [`sync`]: the typed channel between parent and child;
//! - [`idpool`]: the host id ranges of added user namespaces, reserved per
//!   container;
//! - [`namespaces`], [`userns`], [`mounts`], [`capabilities`], [`landlock`],
//!   [`seccomp`], [`cgroups`]: one kernel facility each;
//! - [`process`]: environment, signals and exec of the user process;
//! - [`reaper`]: pid 1 of the sandbox and the signal forwarding;
//! - [`audit`]: audit records, the log writer, keys and offline verification;
//! - [`sys`]: the raw system calls, the only place with `unsafe`.
#![deny(unsafe_code)]

pub mod audit;
pub mod capabilities;
pub mod cgroups;
pub mod cli;
pub mod container;
pub mod error;
pub mod fault;
pub mod hooks;
pub mod idpool;
pub mod landlock;
pub mod launch;
pub mod mounts;
pub mod namespaces;
pub mod policy;
pub mod process;
pub mod reaper;
pub mod seccomp;
pub mod spec;
pub mod step;
pub mod sync;
#[allow(unsafe_code)]
pub mod sys;
pub mod syscalls;
pub mod terminal;
pub mod userns;

pub use error::Error;
