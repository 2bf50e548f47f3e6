//! Process hardening applied when the agent starts: it holds live tokens in memory, so a core dump or a debugger
//! attached by another process of the same user must not be able to read them.

/// Disables core dumps and (on Linux) ptrace attachment and `/proc/<pid>/mem` reads by same-uid processes, and
/// makes every file the agent creates owner-only.
#[allow(unsafe_code)]
pub fn apply() {
    // SAFETY: plain syscalls on this process with constant, valid arguments; no memory is shared with them.
    unsafe {
        let none = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::setrlimit(libc::RLIMIT_CORE, &none) != 0 {
            tracing::warn!("could not disable core dumps");
        }
        #[cfg(target_os = "linux")]
        if libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) != 0 {
            tracing::warn!("could not mark the process non-dumpable");
        }
        libc::umask(0o077);
    }
}
