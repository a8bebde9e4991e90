//! The typed channel between the launcher (parent) and the container's init
//! (child): a `SOCK_SEQPACKET` socketpair carrying one JSON [`Message`] per
//! packet, with file descriptors attached through `SCM_RIGHTS` where a
//! message carries them.
//!
//! Each side gets its own end type with methods named after the protocol
//! step, so the order of the conversation reads from the code:
//!
//! ```text
//! parent                                   child (pid 1 of the sandbox)
//!   clone ------------------------------>    wait_maps_written()
//!   write uid/gid maps
//!   maps_written(idmap) ---------------->    capture bind sources
//!   [host root] idmap them <-------------    request_idmap(root, binds)
//!   idmap_done() ----------------------->    (set up mounts, hostname, ...)
//!   wait_started() <---------------------    failed(step, msg)  or  exec (EOF)
//! ```

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use serde::{Deserialize, Serialize};

/// Largest message; fixed so a packet is never truncated silently.
const MAX_MESSAGE: usize = 64 * 1024;
/// SCM_MAX_FD: the most fds one message may carry (a bundle's binds).
const MAX_FDS: usize = 253;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("sync channel: {op}: {errno}")]
    Io {
        op: &'static str,
        errno: nix::errno::Errno,
    },
    #[error("sync channel: malformed message: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("sync channel: expected {expected}, received {received}")]
    Unexpected {
        expected: &'static str,
        received: String,
    },
    #[error("sync channel: the other side closed the channel while buildcell waited for {0}")]
    Closed(&'static str),
    #[error("sync channel: message carried {got} file descriptors, expected {expected}")]
    FdCount { expected: usize, got: usize },
}

/// Everything that crosses the channel.
#[derive(Debug, Serialize, Deserialize)]
pub enum Message {
    /// Child → parent: the init moved itself into its cgroup (cgroup v1:
    /// `cgroups::SelfJoin`), right after setting its parent-death signal.
    /// (A process `exec` starts moves itself after `Placed` and says
    /// nothing: a failure is its next message.)
    Joined,
    /// Parent → child: the uid/gid maps are written. With `idmap`, the
    /// child must send its bind sources for idmapping (host root mode).
    MapsWritten { idmap: bool },
    /// Child → parent: detached mounts (fds attached, in order) for the
    /// parent to idmap: the root first when `root`, then the bind sources,
    /// `mounts` being their indexes in the plan.
    IdmapRequest { root: bool, mounts: Vec<usize> },
    /// Parent → child: every fd of the request is idmapped; with `root`,
    /// the root to use instead is attached (an overlayfs rootfs, rebuilt
    /// on idmapped layers).
    IdmapDone { root: bool },
    /// Child → parent: the exec-audit listener (fd attached); the parent
    /// must serve it from now on, the user process's exec waits on it.
    Listening,
    /// Intermediate → parent (`exec`): the process that will exec was
    /// forked inside the container's namespaces; its host pid.
    Spawned { pid: i32 },
    /// Parent → process (`exec`): it is in the container's cgroup; go on.
    Placed,
    /// Child → parent: the master of the container's terminal (fd
    /// attached), for the parent to pass to `--console-socket`.
    Console,
    /// Child → parent: a bundle's init is set up and waits for `start`;
    /// the exec-audit listener is attached when the plan audits execs.
    Ready,
    /// Child → parent: a setup step failed. `exit_code` is what buildcell
    /// exits with (125 own error, 126 cannot execute, 127 not found).
    Failed {
        step: String,
        message: String,
        exit_code: i32,
    },
}

impl Message {
    /// A `Failed` message as the parent's outcome (any other message is
    /// never passed here).
    fn into_failure(self) -> SetupOutcome {
        match self {
            Message::Failed {
                step,
                message,
                exit_code,
            } => SetupOutcome::Failed {
                step,
                message,
                exit_code,
            },
            other => SetupOutcome::Failed {
                step: "sync".into(),
                message: format!("unexpected {}", other.name()),
                exit_code: 125,
            },
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Message::Joined => "Joined",
            Message::MapsWritten { .. } => "MapsWritten",
            Message::IdmapRequest { .. } => "IdmapRequest",
            Message::IdmapDone { .. } => "IdmapDone",
            Message::Listening => "Listening",
            Message::Ready => "Ready",
            Message::Console => "Console",
            Message::Spawned { .. } => "Spawned",
            Message::Placed => "Placed",
            Message::Failed { .. } => "Failed",
        }
    }
}

struct Channel(OwnedFd);

impl Channel {
    fn send(&self, msg: &Message, fds: &[RawFd]) -> Result<(), SyncError> {
        let data = serde_json::to_vec(msg)?;
        let iov = [IoSlice::new(&data)];
        let cmsg = [ControlMessage::ScmRights(fds)];
        let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
        sendmsg::<()>(
            self.0.as_raw_fd(),
            &iov,
            cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .map_err(|errno| SyncError::Io {
            op: "sendmsg",
            errno,
        })?;
        Ok(())
    }

    /// Receive one message; `Ok(None)` when the other side closed its end.
    fn recv(&self) -> Result<Option<(Message, Vec<OwnedFd>)>, SyncError> {
        // The packet's length first (MSG_PEEK | MSG_TRUNC gives the whole
        // length of a SEQPACKET packet without taking it): a zeroed 64 KiB
        // buffer per message was 16 page faults and a memset each, in a
        // child whose every page fault is a copy.
        let fd = self.0.as_raw_fd();
        let peek = MsgFlags::MSG_PEEK | MsgFlags::MSG_TRUNC;
        let len = no_eintr("recvmsg", || nix::sys::socket::recv(fd, &mut [], peek))?;
        if len == 0 {
            return Ok(None);
        }
        let mut buf = vec![0u8; len.min(MAX_MESSAGE)];
        let mut cmsg_space = nix::cmsg_space!([RawFd; MAX_FDS]);
        let (len, fds) = no_eintr("recvmsg", || {
            let mut iov = [IoSliceMut::new(&mut buf)];
            let r = recvmsg::<()>(
                fd,
                &mut iov,
                Some(&mut cmsg_space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            )?;
            let mut fds = Vec::new();
            for c in r.cmsgs()? {
                if let ControlMessageOwned::ScmRights(raw) = c {
                    fds.extend(raw.into_iter().map(crate::sys::own_received_fd));
                }
            }
            Ok((r.bytes, fds))
        })?;
        if len == 0 {
            return Ok(None);
        }
        Ok(Some((serde_json::from_slice(&buf[..len])?, fds)))
    }
}

/// `f` again while a signal interrupts it; its other errors as the channel's.
fn no_eintr<T>(op: &'static str, mut f: impl FnMut() -> nix::Result<T>) -> Result<T, SyncError> {
    loop {
        match f() {
            Err(nix::errno::Errno::EINTR) => continue,
            r => return r.map_err(|errno| SyncError::Io { op, errno }),
        }
    }
}

/// Send `data` with one fd attached (SCM_RIGHTS) on a unix socket.
pub fn send_with_fd(sock: RawFd, data: &[u8], fd: RawFd) -> nix::Result<()> {
    let iov = [IoSlice::new(data)];
    let fds = [fd];
    sendmsg::<()>(
        sock,
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map(|_| ())
}

/// Receive one message into `buf` and the first fd attached to it (any
/// other attached fd is closed): (bytes, fd).
pub fn recv_with_fd(sock: RawFd, buf: &mut [u8]) -> nix::Result<(usize, Option<OwnedFd>)> {
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(sock, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)?;
    let mut got = None;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for raw in fds {
                let owned = crate::sys::own_received_fd(raw);
                got.get_or_insert(owned);
            }
        }
    }
    Ok((msg.bytes, got))
}

/// The launcher's end.
pub struct ParentEnd(Channel);
/// The container init's end.
pub struct ChildEnd(Channel);

/// A new channel; both ends are close-on-exec.
pub fn channel() -> Result<(ParentEnd, ChildEnd), SyncError> {
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|errno| SyncError::Io {
        op: "socketpair",
        errno,
    })?;
    Ok((ParentEnd(Channel(a)), ChildEnd(Channel(b))))
}

/// What the parent receives when it waits for the idmap request.
pub enum IdmapRequest {
    Mounts {
        root: Option<OwnedFd>,
        binds: Vec<(usize, OwnedFd)>,
    },
    Failed(SetupOutcome),
}

/// How the child's setup ended, as seen by the parent.
#[derive(Debug)]
pub enum SetupOutcome {
    /// The channel closed: the user process was executed (its end is
    /// close-on-exec) or the child died; the exit status tells which.
    Executed,
    /// The user process handed over its exec-audit listener and is about
    /// to exec: serve the listener now.
    Listening(OwnedFd),
    Failed {
        step: String,
        message: String,
        exit_code: i32,
    },
}

impl ParentEnd {
    /// Wait until the child has moved itself into its cgroup; its failure
    /// when it could not.
    pub fn wait_joined(&self) -> Result<Result<(), SetupOutcome>, SyncError> {
        match self.0.recv()? {
            None => Err(SyncError::Closed("Joined")),
            Some((Message::Joined, _)) => Ok(Ok(())),
            Some((m @ Message::Failed { .. }, _)) => Ok(Err(m.into_failure())),
            Some((other, _)) => Err(SyncError::Unexpected {
                expected: "Joined or Failed",
                received: other.name().into(),
            }),
        }
    }

    pub fn maps_written(&self, idmap: bool) -> Result<(), SyncError> {
        self.0.send(&Message::MapsWritten { idmap }, &[])
    }

    /// Receive the child's bind sources to idmap.
    pub fn wait_idmap_request(&self) -> Result<IdmapRequest, SyncError> {
        match self.0.recv()? {
            None => Err(SyncError::Closed("IdmapRequest")),
            Some((Message::IdmapRequest { root, mounts }, mut fds)) => {
                let expected = mounts.len() + usize::from(root);
                if expected != fds.len() {
                    return Err(SyncError::FdCount {
                        expected,
                        got: fds.len(),
                    });
                }
                let root = root.then(|| fds.remove(0));
                Ok(IdmapRequest::Mounts {
                    root,
                    binds: mounts.into_iter().zip(fds).collect(),
                })
            }
            Some((
                Message::Failed {
                    step,
                    message,
                    exit_code,
                },
                _,
            )) => Ok(IdmapRequest::Failed(SetupOutcome::Failed {
                step,
                message,
                exit_code,
            })),
            Some((other, _)) => Err(SyncError::Unexpected {
                expected: "IdmapRequest",
                received: other.name().into(),
            }),
        }
    }

    /// The idmapping is done; `root` replaces the child's root.
    pub fn idmap_done(&self, root: Option<&OwnedFd>) -> Result<(), SyncError> {
        let fds: Vec<RawFd> = root.iter().map(|fd| fd.as_raw_fd()).collect();
        let msg = Message::IdmapDone {
            root: root.is_some(),
        };
        self.0.send(&msg, &fds)
    }

    pub fn wait_started(&self) -> Result<SetupOutcome, SyncError> {
        match self.0.recv()? {
            None => Ok(SetupOutcome::Executed),
            Some((
                Message::Failed {
                    step,
                    message,
                    exit_code,
                },
                _,
            )) => Ok(SetupOutcome::Failed {
                step,
                message,
                exit_code,
            }),
            Some((Message::Listening, mut fds)) => match fds.pop() {
                Some(fd) if fds.is_empty() => Ok(SetupOutcome::Listening(fd)),
                _ => Err(SyncError::FdCount {
                    expected: 1,
                    got: fds.len() + 1,
                }),
            },
            Some((other, _)) => Err(SyncError::Unexpected {
                expected: "Failed, Listening or end of channel",
                received: other.name().into(),
            }),
        }
    }

    /// Wait until a bundle's init is ready (its listener, if any) or
    /// failed.
    /// A terminal master sent on the way is given to `on_console`.
    pub fn wait_ready(
        &self,
        mut on_console: impl FnMut(OwnedFd) -> Result<(), String>,
    ) -> Result<Result<Option<OwnedFd>, SetupOutcome>, SyncError> {
        loop {
            match self.0.recv()? {
                Some((Message::Console, mut fds)) => {
                    let fd = match (fds.pop(), fds.is_empty()) {
                        (Some(fd), true) => fd,
                        _ => {
                            return Err(SyncError::FdCount {
                                expected: 1,
                                got: fds.len(),
                            })
                        }
                    };
                    if let Err(message) = on_console(fd) {
                        return Ok(Err(SetupOutcome::Failed {
                            step: "terminal".into(),
                            message,
                            exit_code: 125,
                        }));
                    }
                }
                other => return self.ready_outcome(other),
            }
        }
    }

    fn ready_outcome(
        &self,
        msg: Option<(Message, Vec<OwnedFd>)>,
    ) -> Result<Result<Option<OwnedFd>, SetupOutcome>, SyncError> {
        match msg {
            None => Ok(Err(SetupOutcome::Executed)),
            Some((Message::Ready, mut fds)) => match (fds.pop(), fds.is_empty()) {
                (fd, true) => Ok(Ok(fd)),
                (_, false) => Err(SyncError::FdCount {
                    expected: 1,
                    got: fds.len() + 1,
                }),
            },
            Some((m @ Message::Failed { .. }, _)) => Ok(Err(m.into_failure())),
            Some((other, _)) => Err(SyncError::Unexpected {
                expected: "Ready or Failed",
                received: other.name().into(),
            }),
        }
    }

    /// `exec`: the host pid of the process forked in the container.
    pub fn wait_spawned(&self) -> Result<Result<i32, SetupOutcome>, SyncError> {
        match self.0.recv()? {
            None => Err(SyncError::Closed("Spawned")),
            Some((Message::Spawned { pid }, _)) => Ok(Ok(pid)),
            Some((m @ Message::Failed { .. }, _)) => Ok(Err(m.into_failure())),
            Some((other, _)) => Err(SyncError::Unexpected {
                expected: "Spawned or Failed",
                received: other.name().into(),
            }),
        }
    }

    /// `exec`: the process is in the container's cgroup.
    pub fn placed(&self) -> Result<(), SyncError> {
        self.0.send(&Message::Placed, &[])
    }

    /// After the step: the exec failure the user process reported, if any
    /// (non-blocking; the channel is closed by then).
    pub fn take_failure(&self) -> Option<(String, String, i32)> {
        match self.0.recv() {
            Ok(Some((
                Message::Failed {
                    step,
                    message,
                    exit_code,
                },
                _,
            ))) => Some((step, message, exit_code)),
            _ => None,
        }
    }
}

impl ChildEnd {
    /// Tell the parent this process is in its cgroup.
    pub fn joined(&self) -> Result<(), SyncError> {
        self.0.send(&Message::Joined, &[])
    }

    /// Wait until the parent has written the id maps; returns whether the
    /// bind sources must be idmapped by the parent.
    pub fn wait_maps_written(&self) -> Result<bool, SyncError> {
        match self.0.recv()? {
            None => Err(SyncError::Closed("MapsWritten")),
            Some((Message::MapsWritten { idmap }, _)) => Ok(idmap),
            Some((other, _)) => Err(SyncError::Unexpected {
                expected: "MapsWritten",
                received: other.name().into(),
            }),
        }
    }

    /// Send the detached root (when given) and bind sources to the parent
    /// and wait until it has idmapped them; returns the root to use
    /// instead, when the parent made one.
    pub fn request_idmap(
        &self,
        root: Option<&OwnedFd>,
        mounts: &[(usize, &OwnedFd)],
    ) -> Result<Option<OwnedFd>, SyncError> {
        let idx = mounts.iter().map(|(i, _)| *i).collect();
        let fds: Vec<RawFd> = root
            .iter()
            .map(|fd| fd.as_raw_fd())
            .chain(mounts.iter().map(|(_, fd)| fd.as_raw_fd()))
            .collect();
        let msg = Message::IdmapRequest {
            root: root.is_some(),
            mounts: idx,
        };
        self.0.send(&msg, &fds)?;
        match self.0.recv()? {
            None => Err(SyncError::Closed("IdmapDone")),
            Some((Message::IdmapDone { root }, mut fds)) => match (root, fds.pop()) {
                (false, None) => Ok(None),
                (true, Some(fd)) if fds.is_empty() => Ok(Some(fd)),
                (_, fd) => Err(SyncError::FdCount {
                    expected: usize::from(root),
                    got: fds.len() + usize::from(fd.is_some()),
                }),
            },
            Some((other, _)) => Err(SyncError::Unexpected {
                expected: "IdmapDone",
                received: other.name().into(),
            }),
        }
    }

    /// Hand the exec-audit listener to the parent.
    pub fn listening(&self, listener: &OwnedFd) -> Result<(), SyncError> {
        self.0.send(&Message::Listening, &[listener.as_raw_fd()])
    }

    /// `exec`: the process forked inside the container is `pid`.
    pub fn spawned(&self, pid: i32) -> Result<(), SyncError> {
        self.0.send(&Message::Spawned { pid }, &[])
    }

    /// `exec`: wait until the parent has placed this process in the
    /// container's cgroup.
    pub fn wait_placed(&self) -> Result<(), SyncError> {
        match self.0.recv()? {
            None => Err(SyncError::Closed("Placed")),
            Some((Message::Placed, _)) => Ok(()),
            Some((other, _)) => Err(SyncError::Unexpected {
                expected: "Placed",
                received: other.name().into(),
            }),
        }
    }

    /// Hand the terminal's master to the parent.
    pub fn console(&self, master: &OwnedFd) -> Result<(), SyncError> {
        self.0.send(&Message::Console, &[master.as_raw_fd()])
    }

    /// A bundle's init is ready; `listener` is its exec-audit listener.
    pub fn ready(&self, listener: Option<&OwnedFd>) -> Result<(), SyncError> {
        let fds: Vec<RawFd> = listener.iter().map(|l| l.as_raw_fd()).collect();
        self.0.send(&Message::Ready, &fds)
    }

    pub fn failed(&self, step: &str, message: &str, exit_code: i32) {
        // Best effort: if the parent is gone there is nobody to tell.
        let _ = self.0.send(
            &Message::Failed {
                step: step.into(),
                message: message.into(),
                exit_code,
            },
            &[],
        );
    }

    /// Whether the parent's end is closed (the parent died).
    pub fn peer_gone(&self) -> bool {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::os::fd::AsFd;
        let mut fds = [PollFd::new(self.0 .0.as_fd(), PollFlags::empty())];
        match poll(&mut fds, PollTimeout::ZERO) {
            Ok(0) => false,
            Ok(_) => fds[0]
                .revents()
                .is_some_and(|r| r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR)),
            Err(_) => true,
        }
    }

    pub fn as_raw_fd(&self) -> RawFd {
        self.0 .0.as_raw_fd()
    }
}
