//! `pow`, defined here so that the agent does not load libm.so for it.
//!
//! tokio's multi-thread scheduler calls `pow` (a moving average of poll times), the agent's only use of the C maths
//! library. Linked against glibc's, the agent loaded libm.so for that one function, and its relocations and ifunc
//! resolvers left ~0.45 MB of it mapped for the agent's whole life (/proc/PID/smaps, right after start). This
//! definition, from the `libm` crate (a Rust port of musl's), satisfies the reference instead (`tests/programs.rs`
//! checks that the running agent maps no libm). Programs that use other maths functions (`pachagent-cli`) still
//! load libm.so.

/// `x` raised to the power `y`, as C's `pow`, except that it never sets `errno` (tokio does not read it).
#[allow(unsafe_code)]
// SAFETY: `no_mangle` requires that this be the only definition of the symbol in the program and that its
// signature match every caller's: no pachagent code or dependency defines `pow`, a second definition would fail
// the link, and callers use C's `double pow(double, double)`. The linker exports it (libm.so defines the same
// name), so a shared library loaded later that calls `pow` gets this one: the same results, without `errno`.
#[unsafe(no_mangle)]
pub extern "C" fn pow(x: f64, y: f64) -> f64 {
    libm::pow(x, y)
}
