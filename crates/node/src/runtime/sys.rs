//! The few system calls that have no safe wrapper: the loopback ioctl and the code that
//! runs in a forked child between `fork` and `exec`.
//!
//! Everything else in the runtime goes through `nix`/`rustix`. The `pre_exec` closures here
//! run in a child forked from a (possibly multi-threaded) process, so they only make plain
//! system calls on data prepared before the fork: no allocation, no locks.

#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;

use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};

/// The identity a container process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
    pub groups: Vec<libc::gid_t>,
}

/// Sets `IFF_UP` on `lo` in the calling thread's network namespace.
pub(crate) fn loopback_up() -> io::Result<()> {
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads into the ifreq we own; the pointer is valid for the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: after SIOCGIFFLAGS the union holds the flags member.
    unsafe {
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
    }
    // SAFETY: SIOCSIFFLAGS only reads the ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as _, &req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Switches groups, gid and uid (in that order, while still privileged).
/// Async-signal-safe: three system calls on prepared data.
fn switch_identity(id: &Identity) -> io::Result<()> {
    // SAFETY: the pointer and length describe a live Vec owned by the closure.
    check(unsafe { libc::setgroups(id.groups.len(), id.groups.as_ptr()) })?;
    // SAFETY: plain system calls without pointers.
    check(unsafe { libc::setgid(id.gid) })?;
    check(unsafe { libc::setuid(id.uid) })
}

/// Makes the child of `cmd` switch to `id` just before exec.
pub(crate) fn exec_as(cmd: &mut std::process::Command, id: Identity) {
    // SAFETY: the closure only makes system calls on data it owns (see switch_identity).
    unsafe {
        cmd.pre_exec(move || switch_identity(&id));
    }
}

/// Whether an exec'd command gets its stdin (a pty) as controlling terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ControllingTerminal {
    /// Plain pipes: the command stays in its parent's session.
    Inherit,
    /// The command leads a new session whose controlling terminal is its stdin, so job
    /// control, `^C` and window size changes reach it as on a login terminal.
    Stdin,
}

/// Makes the child of `cmd` enter the namespaces in `namespaces` (fds opened by the
/// caller, e.g. `/proc/<pid>/ns/mnt`), change to `cwd` there, take its terminal if asked
/// and switch to `id` before exec.
pub(crate) fn exec_in_namespaces(
    cmd: &mut std::process::Command,
    namespaces: Vec<OwnedFd>,
    cwd: CString,
    id: Identity,
    terminal: ControllingTerminal,
) {
    // SAFETY: setns/chdir/setsid/ioctl/setgroups/setgid/setuid on fds and buffers the
    // closure owns; TIOCSCTTY takes an integer argument, no pointer.
    unsafe {
        cmd.pre_exec(move || {
            for ns in &namespaces {
                check(libc::setns(ns.as_raw_fd(), 0))?;
            }
            check(libc::chdir(cwd.as_ptr()))?;
            if terminal == ControllingTerminal::Stdin {
                check(libc::setsid())?;
                check(libc::ioctl(0, libc::TIOCSCTTY, 0))?;
            }
            switch_identity(&id)
        });
    }
}

/// Registers a pidfd with the tokio reactor (readable once the process has exited).
pub(crate) fn async_pidfd(fd: OwnedFd) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: the OwnedFd is a valid descriptor that the AsyncFd owns from now on; nothing
    // else closes or replaces it while it is registered.
    let registered = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
    };
    Ok(registered?)
}
