//! The only `unsafe` in the crate: thin wrappers over the syscalls the rest calls by name
//! (signals, rlimit, statvfs, the child's set-up between fork and exec). Each block says why it
//! is sound; nothing here decides anything.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::path::Path;

/// SIGPIPE back to its default action (die quietly), for one-shot commands whose output pipe
/// may close (`mcp-fleet status | head`). Call before any thread starts.
pub fn default_sigpipe() {
    // SAFETY: signal(2) with SIG_DFL installs no handler code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Raises the open-file soft limit to the hard limit where it is lower; returns the soft limit
/// in force afterwards (`None` when it cannot be read).
pub fn raise_open_files() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read or write the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim = raised;
        }
    }
    Some(lim.rlim_cur)
}

/// `(used bytes, total bytes)` of the file system holding `path`.
pub fn disk_usage(path: &Path) -> Option<(u64, u64)> {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    let mut s = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: statvfs writes a statvfs struct into the buffer we pass and reads the C string;
    // the struct is only read after a 0 return, when it is fully initialised.
    let st = unsafe {
        if libc::statvfs(c.as_ptr(), s.as_mut_ptr()) != 0 {
            return None;
        }
        s.assume_init()
    };
    let block = st.f_frsize as u64;
    let total = st.f_blocks as u64 * block;
    let free = st.f_bavail as u64 * block;
    Some((total.saturating_sub(free), total))
}

/// Sends `signal` to the process group `pgid` (never to group 0 or 1).
pub fn signal_group(pgid: u32, signal: libc::c_int) {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return;
    };
    if pgid <= 1 {
        return;
    }
    // SAFETY: kill(2) with a negative pid signals a process group; no memory is involved.
    unsafe {
        libc::kill(-pgid, signal);
    }
}

/// SIGINT, SIGTERM and SIGHUP ignored (the fleet's watchdog ends only when its pipe closes).
pub fn ignore_stop_signals() {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: signal(2) with SIG_IGN installs no handler code.
        unsafe {
            libc::signal(signal, libc::SIG_IGN);
        }
    }
}

/// Sends `signal` to one process (never to pid 0 or 1).
pub fn signal_process(pid: u32, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    if pid <= 1 {
        return;
    }
    // SAFETY: kill(2) on one pid; no memory is involved.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// Asks the kernel for SIGKILL when the parent dies (`PR_SET_PDEATHSIG`): `Ok(false)` when the
/// parent is no longer `parent` (it died before the request took effect, so no signal will
/// come). Async-signal-safe: `bind_child` calls it between fork and exec, and the built-in
/// server, started without that hook, first thing.
pub fn die_with_parent(parent: u32) -> io::Result<bool> {
    // SAFETY: prctl(PR_SET_PDEATHSIG) and getppid touch no memory of ours.
    unsafe {
        if libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(u32::try_from(libc::getppid()) == Ok(parent))
    }
}

/// Makes the child `command` starts die with this process (`die_with_parent`) and join the
/// cgroups whose `cgroup.procs` files are `procs` before it execs, so not even its first fork
/// escapes them.
pub fn bind_child(command: &mut tokio::process::Command, procs: Vec<CString>) {
    let parent = std::process::id();
    // SAFETY: the closure only makes raw syscalls that are async-signal-safe (prctl, getppid,
    // open, write, close, _exit) on data prepared before the fork, and allocates nothing.
    unsafe {
        command.pre_exec(move || {
            if !die_with_parent(parent)? {
                libc::_exit(1);
            }
            for path in &procs {
                let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd >= 0 {
                    // "0" moves the writing process itself.
                    libc::write(fd, b"0".as_ptr().cast(), 1);
                    libc::close(fd);
                }
            }
            Ok(())
        });
    }
}
