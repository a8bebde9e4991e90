//! Terminals (`process.terminal`): a pty pair made inside the container,
//! from its own devpts instance, with the slave as the process's
//! controlling terminal and stdio, and the master handed to the engine over
//! `--console-socket` (SCM_RIGHTS), as runc does.

use std::os::fd::{AsFd, AsRawFd, IntoRawFd, OwnedFd};
use std::path::Path;

use nix::fcntl::OFlag;
use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};

#[derive(Debug, thiserror::Error)]
#[error("terminal: {op}: {errno}")]
pub struct TerminalError {
    op: &'static str,
    errno: nix::errno::Errno,
}

fn err(op: &'static str) -> impl FnOnce(nix::errno::Errno) -> TerminalError {
    move |errno| TerminalError { op, errno }
}

/// Open a new pty pair through the container's /dev/ptmx: (master, slave).
pub fn open_pty() -> Result<(OwnedFd, OwnedFd), TerminalError> {
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(err("open /dev/ptmx"))?;
    nix::pty::grantpt(&master).map_err(err("grantpt"))?;
    nix::pty::unlockpt(&master).map_err(err("unlockpt"))?;
    let name = nix::pty::ptsname_r(&master).map_err(err("ptsname"))?;
    let slave = nix::fcntl::open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(err("open the pty slave"))?;
    // Both fds were just opened by this process and nothing else owns them.
    let master = crate::sys::own_received_fd(master.into_raw_fd());
    let slave = crate::sys::own_received_fd(slave);
    Ok((master, slave))
}

/// Make `slave` this process's controlling terminal and its stdio, in a
/// new session.
pub fn attach(slave: &OwnedFd) -> Result<(), TerminalError> {
    let _ = nix::unistd::setsid();
    crate::sys::set_controlling_terminal(slave.as_fd()).map_err(err("TIOCSCTTY"))?;
    for fd in 0..3 {
        nix::unistd::dup2(slave.as_raw_fd(), fd).map_err(err("dup2 onto stdio"))?;
    }
    Ok(())
}

/// Send the pty master to the engine's console socket (a unix stream
/// socket), as one message carrying the fd.
pub fn send_to_console_socket(path: &Path, master: &OwnedFd) -> Result<(), String> {
    let what = |e: nix::errno::Errno| format!("--console-socket {}: {}", path.display(), e.desc());
    let sock = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(what)?;
    let addr = UnixAddr::new(path).map_err(what)?;
    connect(sock.as_raw_fd(), &addr).map_err(what)?;
    crate::sync::send_with_fd(sock.as_raw_fd(), b"/dev/ptmx", master.as_raw_fd()).map_err(what)?;
    Ok(())
}
