//! Newtype addresses and ids shared across the driver core.
//!
//! Every address space gets its own type so that a GPU virtual address can never be passed
//! where a physical address is expected. Range arithmetic is checked; overflow is a typed
//! error, never a wrap.

use thiserror::Error;

/// Size of the smallest GPU page (and of the bind granularity).
pub const PAGE_SIZE: u64 = 4096;

/// Address arithmetic overflowed or a range was empty/misaligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RangeError {
    /// `start + len` does not fit in 64 bits.
    #[error("range {start:#x}+{len:#x} overflows")]
    Overflow { start: u64, len: u64 },
    /// A value that must be page aligned is not.
    #[error("{value:#x} is not aligned to {align:#x}")]
    Misaligned { value: u64, align: u64 },
}

macro_rules! address_newtype {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub u64);

        impl $name {
            /// The raw address.
            pub const fn get(self) -> u64 {
                self.0
            }

            /// `self + len`, or an overflow error.
            pub fn checked_add(self, len: u64) -> Result<Self, RangeError> {
                self.0
                    .checked_add(len)
                    .map(Self)
                    .ok_or(RangeError::Overflow { start: self.0, len })
            }

            /// Whether the address is a multiple of `align` (a power of two).
            pub const fn is_aligned(self, align: u64) -> bool {
                self.0 & (align - 1) == 0
            }
        }

        impl core::fmt::LowerHex for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                core::fmt::LowerHex::fmt(&self.0, f)
            }
        }
    };
}

address_newtype!(
    /// A GPU virtual address inside one VM.
    GpuVa
);
address_newtype!(
    /// A device physical address: what the GPU puts on its bus (system memory DMA address or
    /// VRAM offset, told apart by the PTE location bit, not by this type).
    PhysAddr
);
address_newtype!(
    /// A CPU virtual address in some client's address space (userptr, user fences of binds).
    CpuVa
);

macro_rules! id_newtype {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub u64);
    };
}

id_newtype!(
    /// Identifies a VM (GPU address space) inside the daemon.
    VmId
);
id_newtype!(
    /// Identifies a buffer object inside the daemon.
    BoId
);
id_newtype!(
    /// Stable identity of a reservation object (dma-resv). Two objects share a reservation
    /// iff their `ResvId`s are equal; a BO is *external* to a VM when its `ResvId` differs
    /// from the VM's.
    ResvId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_add_reports_overflow_with_values() {
        let err = GpuVa(u64::MAX - 1).checked_add(2).unwrap_err();
        assert_eq!(
            err,
            RangeError::Overflow {
                start: u64::MAX - 1,
                len: 2
            }
        );
        assert_eq!(GpuVa(4096).checked_add(4096), Ok(GpuVa(8192)));
    }

    #[test]
    fn alignment_check_uses_the_given_power_of_two() {
        assert!(GpuVa(0x20_0000).is_aligned(0x20_0000));
        assert!(!GpuVa(0x20_1000).is_aligned(0x20_0000));
        assert!(PhysAddr(0x1000).is_aligned(PAGE_SIZE));
    }
}
