//! Typed decode errors: every way a payload can be malformed, with the offending values.
//!
//! Owns: `DecodeError`. Must not: choose errno values (that happens only in `crate::errno`).

use thiserror::Error;

/// Which array of a payload an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArrayKind {
    /// VM_BIND ops.
    BindOps,
    /// VM_BIND / EXEC syncs.
    Syncs,
    /// EXEC batch addresses.
    Batches,
    /// SYNCOBJ_WAIT / SYNCOBJ_SIGNAL elements.
    SyncobjPoints,
}

/// A payload that does not decode to a valid request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// `metadata[0]` is not a known opcode.
    #[error("unknown opcode {0}")]
    UnknownOpcode(u64),
    /// The payload is shorter than its header says.
    #[error("payload of {got} bytes, need {need}")]
    Truncated {
        /// Bytes needed.
        need: usize,
        /// Bytes sent.
        got: usize,
    },
    /// The payload is longer than header + args + arrays.
    #[error("payload of {got} bytes, expected exactly {expected}")]
    TrailingBytes {
        /// Bytes expected.
        expected: usize,
        /// Bytes sent.
        got: usize,
    },
    /// `CallHeader::version` is not one this server speaks.
    #[error("uAPI version {0} not supported")]
    BadVersion(u16),
    /// `args_size` is smaller than this server's struct or larger than the cap.
    #[error("args_size {got} invalid (known {known})")]
    BadArgsSize {
        /// Sent.
        got: u32,
        /// Known to this server.
        known: usize,
    },
    /// A newer client sent extension bytes this server does not understand (non-zero).
    #[error("unknown extension byte at offset {offset} is non-zero")]
    UnknownExtension {
        /// Offset inside the args struct or element.
        offset: usize,
    },
    /// A reserved/pad field (or an "out" field on input) is not zero.
    #[error("reserved field {field} is non-zero")]
    ReservedNonZero {
        /// Field name.
        field: &'static str,
    },
    /// A flag word has bits this uAPI does not define.
    #[error("unknown bits {bits:#x} in {field}")]
    UnknownFlags {
        /// Field name.
        field: &'static str,
        /// The unknown bits.
        bits: u64,
    },
    /// An enumerated field has an undefined value.
    #[error("invalid value {value} for {field}")]
    BadEnum {
        /// Field name.
        field: &'static str,
        /// Value sent.
        value: u64,
    },
    /// A value that must be aligned is not.
    #[error("{field} = {value:#x} is not {align}-byte aligned")]
    Misaligned {
        /// Field name.
        field: &'static str,
        /// Value sent.
        value: u64,
        /// Required alignment.
        align: u64,
    },
    /// Address arithmetic overflowed.
    #[error("{field}: {start:#x} + {len:#x} overflows")]
    Overflow {
        /// Field name.
        field: &'static str,
        /// Start.
        start: u64,
        /// Length.
        len: u64,
    },
    /// A size or range that must be non-zero is zero.
    #[error("{field} must be non-zero")]
    Zero {
        /// Field name.
        field: &'static str,
    },
    /// Too many array elements.
    #[error("{count} elements in {array:?}, at most {max}")]
    TooMany {
        /// The array.
        array: ArrayKind,
        /// Count sent.
        count: u32,
        /// Cap.
        max: u32,
    },
    /// An element stride is too small, too large or not a multiple of 8.
    #[error("stride {stride} invalid for {array:?} (element {known} bytes)")]
    BadStride {
        /// The array.
        array: ArrayKind,
        /// Stride sent.
        stride: u32,
        /// Element size known to this server.
        known: usize,
    },
    /// A flag combination or field that the op table forbids.
    #[error("bind op {index}: {reason}")]
    BadBindOp {
        /// Index of the op in the array.
        index: usize,
        /// Which rule.
        reason: &'static str,
    },
    /// A sync entry breaks a rule of the sync table (EINVAL class).
    #[error("sync {index}: {reason}")]
    BadSync {
        /// Index of the sync in the array.
        index: usize,
        /// Which rule.
        reason: &'static str,
    },
    /// A user fence used where it is not supported (wait, or a zero-op bind).
    #[error("sync {index}: user fence not supported here")]
    UserFenceNotSupported {
        /// Index of the sync in the array.
        index: usize,
    },
    /// More than one user fence in a call.
    #[error("more than one user fence")]
    MultipleUserFences,
    /// A VM_CREATE flag combination that is not allowed.
    #[error("VM flags {0:#x} are not a valid combination")]
    BadVmFlags(u32),
}
