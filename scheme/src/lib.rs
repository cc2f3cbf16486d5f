//! The `gpu` scheme.
//!
//! Will own: the versioned uAPI request/reply types and their validating decoder, the path
//! grammar (`card0`, derived handles), the mapping of driver errors to errno (the only place
//! where that happens), the `SchemeSync` server generic over a driver trait, and the host
//! transport that runs the same server on a Linux Unix socket.
//!
//! Today it only proves that redox-scheme 0.12 builds on the host.

#![forbid(unsafe_code)]

/// The scheme name gpud registers.
pub const SCHEME_NAME: &str = "gpu";

/// The scheme crate's view of a request the kernel sends; re-exported so dependents use the
/// same redox-scheme version.
pub use redox_scheme::CallerCtx;

#[cfg(test)]
mod tests {
    #[test]
    fn scheme_name_is_gpu() {
        assert_eq!(super::SCHEME_NAME, "gpu");
    }
}
