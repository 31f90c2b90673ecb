//! Passing the signals that would end `gensync sync` on to CMD, so that
//! gensync outlives it and holds the lock until CMD is gone.

use std::io;
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicI32, Ordering};

/// The signals that end a process by default and that a supervisor,
/// a terminal or a cron daemon sends to stop a job.
const FORWARDED: [libc::c_int; 4] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT];

/// CMD's process id once started, else 0.
static CHILD: AtomicI32 = AtomicI32::new(0);
/// The last forwarded signal received, else 0.
static RECEIVED: AtomicI32 = AtomicI32::new(0);

/// Records the signal and passes it on to CMD; only async-signal-safe
/// calls (atomics and `kill`).
extern "C" fn forward(signal: libc::c_int) {
    RECEIVED.store(signal, Ordering::SeqCst);
    let child = CHILD.load(Ordering::SeqCst);
    if child > 0 {
        // SAFETY: kill is async-signal-safe; `child` is our own child,
        // not yet reaped (CHILD is cleared before the wait returns it).
        unsafe { libc::kill(child, signal) };
    }
}

/// Runs `command` to its end, passing on the signals in [`FORWARDED`].
/// A signal received before CMD started keeps it from starting (as the
/// signal would have ended gensync then): it reports as CMD killed by it.
pub(crate) fn run_forwarding(command: &mut Command) -> io::Result<ExitStatus> {
    for signal in FORWARDED {
        // SAFETY: installs a handler that only touches atomics and calls
        // kill; SA_RESTART keeps the wait going after it runs.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = forward as *const () as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(signal, &action, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    if let Some(signal) = received() {
        return Ok(killed_by(signal));
    }
    // The child's dispositions return to the default at exec.
    let mut child = command.spawn()?;
    let pid = i32::try_from(child.id()).unwrap_or(0);
    CHILD.store(pid, Ordering::SeqCst);
    // Received between the check above and the store: pass it on now.
    if let Some(signal) = received() {
        // SAFETY: our own child, not yet waited for.
        unsafe { libc::kill(pid, signal) };
    }
    // std's wait retries when a handler interrupts it.
    let status = wait(&mut child);
    CHILD.store(0, Ordering::SeqCst);
    status
}

/// Waits for `child` without letting it be reaped before CHILD is
/// cleared: `waitid(WNOWAIT)` first, so a signal arriving meanwhile never
/// reaches a reused process id, then the reaping wait.
fn wait(child: &mut std::process::Child) -> io::Result<ExitStatus> {
    let pid = libc::id_t::try_from(child.id()).unwrap_or(0);
    loop {
        // SAFETY: a zeroed siginfo_t is valid for waitid to fill.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waits for our own child, leaving it waitable.
        let done =
            unsafe { libc::waitid(libc::P_PID, pid, &mut info, libc::WEXITED | libc::WNOWAIT) };
        if done == 0 {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    CHILD.store(0, Ordering::SeqCst);
    child.wait()
}

/// The forwarded signal gensync received, if any.
pub(crate) fn received() -> Option<i32> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        signal => Some(signal),
    }
}

/// The status of a process killed by `signal`.
fn killed_by(signal: i32) -> ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    ExitStatus::from_raw(signal)
}
