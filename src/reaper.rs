//! Pid 1 of the sandbox: reaps every orphan, forwards to the user process
//! the signals buildcell sends it from outside, and exits with the user
//! process's status. When it exits the kernel kills everything left in the
//! pid namespace, so no process outlives the step.

use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// Signals forwarded from buildcell to the step.
pub const FORWARDED: [Signal; 6] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// `si_code` of a signal raised by the kernel, such as one from the
/// terminal (Ctrl-C): every process of the foreground group already got it.
const SI_KERNEL: i32 = 0x80;

/// The forwarded signals plus SIGCHLD, blocked and read through a signalfd.
pub fn signal_fd() -> nix::Result<SignalFd> {
    let mut mask = SigSet::empty();
    for s in FORWARDED {
        mask.add(s);
    }
    mask.add(Signal::SIGCHLD);
    mask.thread_block()?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC)
}

/// Exit status of a waited process in shell convention.
pub fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

/// Whether a signal read from the signalfd should be passed on: sent by a
/// process (not raised by the terminal or the kernel) and, when
/// `only_from_outside`, by one outside our pid namespace (pid 0 here).
pub fn should_forward(code: i32, sender_pid: u32, only_from_outside: bool) -> bool {
    code != SI_KERNEL && code <= 0 && (!only_from_outside || sender_pid == 0)
}

/// Wait for `child`, forwarding signals to it, reaping any other child that
/// exits meanwhile. Returns the child's exit code.
pub fn supervise(child: Pid, sfd: &SignalFd, only_from_outside: bool) -> i32 {
    loop {
        // Reap first: the child may have exited before we started reading.
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => break,
                Ok(status) => {
                    if status.pid() == Some(child) {
                        if let Some(code) = exit_code(status) {
                            return code;
                        }
                    }
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => break,
            }
        }
        let info = match sfd.read_signal() {
            Ok(Some(info)) => info,
            Ok(None) | Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return 125,
        };
        let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
            continue;
        };
        if sig != Signal::SIGCHLD && should_forward(info.ssi_code, info.ssi_pid, only_from_outside)
        {
            let _ = kill(child, sig);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_signals_are_not_forwarded_twice() {
        assert!(!should_forward(SI_KERNEL, 0, false));
        assert!(should_forward(0, 1234, false));
        assert!(!should_forward(0, 1234, true));
        assert!(should_forward(0, 0, true));
        // SI_QUEUE (-1) from sigqueue is a process too.
        assert!(should_forward(-1, 0, true));
    }

    #[test]
    fn shell_exit_codes() {
        let p = Pid::from_raw(1);
        assert_eq!(exit_code(WaitStatus::Exited(p, 3)), Some(3));
        assert_eq!(
            exit_code(WaitStatus::Signaled(p, Signal::SIGKILL, false)),
            Some(137)
        );
    }
}
