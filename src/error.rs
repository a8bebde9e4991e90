//! buildcell's top-level error: one variant per module, each printing one
//! line that names what is at fault. [`Error::exit_code`] gives the status
//! buildcell exits with: 125 for its own errors (as podman does), 126 when
//! the command cannot be executed, 127 when it is not found.

use crate::landlock::LandlockError;
use crate::namespaces::NamespaceError;
use crate::policy::PolicyError;
use crate::seccomp::SeccompError;
use crate::spec::SpecError;
use crate::sync::SyncError;
use crate::userns::UsernsError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Spec(#[from] SpecError),
    #[error("{0}")]
    Seccomp(#[from] SeccompError),
    #[error("{0}")]
    Policy(#[from] PolicyError),
    #[error("{0}")]
    Namespace(#[from] NamespaceError),
    #[error("user namespace maps: {0}")]
    Userns(#[from] UsernsError),
    #[error("{0}")]
    Sync(#[from] SyncError),
    /// Refused before anything was created (the kernel lacks what the plan
    /// requires).
    #[error("landlock: {0}")]
    Landlock(#[from] LandlockError),
    #[error("{step}: {message}")]
    Setup { step: &'static str, message: String },
    /// A step inside the sandbox failed and said why over the channel.
    #[error("{}", child_line(step, message))]
    Child {
        step: String,
        message: String,
        exit_code: i32,
    },
}

fn child_line(step: &str, message: &str) -> String {
    if step == "exec" {
        message.to_string()
    } else {
        format!("{step}: {message}")
    }
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Child { exit_code, .. } => *exit_code,
            _ => 125,
        }
    }
}
