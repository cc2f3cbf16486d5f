//! The physical-memory model: how the device reaches system memory (DMA) and VRAM.
//!
//! Owns: the [`PhysMemory`] trait (bounds-checked byte access and atomics at a physical
//! address) and [`HeapMemory`], a safe heap-backed implementation for tests and the demo.
//! Must not: hand out Rust references to memory the device or another agent may write; every
//! access goes through an atomic accessor, so CPU and device may touch the same words at once.

use std::sync::atomic::{AtomicU64, Ordering};
use thiserror::Error;

/// Where a physical address lives: the two address spaces a PTE can point into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Location {
    /// Platform system memory, reached by DMA.
    System,
    /// Device-local memory (also visible to the CPU through the BAR2 aperture).
    Vram,
}

/// A physical access the memory could not perform. The device turns this into a DMA error
/// (context error), never a panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum MemError {
    /// `[addr, addr + len)` is not inside the memory.
    #[error("physical access {addr:#x}+{len:#x} outside memory of {size:#x} bytes")]
    OutOfRange { addr: u64, len: u64, size: u64 },
    /// An atomic access was not naturally aligned.
    #[error("atomic access at {addr:#x} is not aligned to {align}")]
    Misaligned { addr: u64, align: u64 },
}

/// Physical memory as the device sees it. Implemented by the platform (heap, shared memory).
///
/// All methods are safe to call concurrently from the device thread and the CPU side.
pub trait PhysMemory: Send + Sync {
    /// Size in bytes.
    fn size(&self) -> u64;
    /// Copies `buf.len()` bytes starting at `addr` into `buf`.
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError>;
    /// Copies `data` to `addr`.
    fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemError>;
    /// Atomic 32-bit load (`addr` 4-aligned).
    fn load_u32(&self, addr: u64) -> Result<u32, MemError>;
    /// Atomic 32-bit store (`addr` 4-aligned).
    fn store_u32(&self, addr: u64, value: u32) -> Result<(), MemError>;
    /// Atomic 64-bit load (`addr` 8-aligned).
    fn load_u64(&self, addr: u64) -> Result<u64, MemError>;
    /// Atomic 64-bit store (`addr` 8-aligned).
    fn store_u64(&self, addr: u64, value: u64) -> Result<(), MemError>;
    /// Atomic wrapping add; returns the previous value.
    fn fetch_add_u32(&self, addr: u64, value: u32) -> Result<u32, MemError>;
    /// Atomic wrapping add; returns the previous value.
    fn fetch_add_u64(&self, addr: u64, value: u64) -> Result<u64, MemError>;
    /// Atomic compare-exchange; `Ok(previous)` if it stored, `Err(actual)` if not.
    fn compare_exchange_u32(
        &self,
        addr: u64,
        current: u32,
        new: u32,
    ) -> Result<Result<u32, u32>, MemError>;
    /// Atomic compare-exchange; `Ok(previous)` if it stored, `Err(actual)` if not.
    fn compare_exchange_u64(
        &self,
        addr: u64,
        current: u64,
        new: u64,
    ) -> Result<Result<u64, u64>, MemError>;
}

/// Heap-backed physical memory: a vector of 64-bit atomic words.
///
/// Byte writes that cover part of a word update only their own bytes (two atomic bit
/// operations), so concurrent writers of different bytes in one word never lose data.
pub struct HeapMemory {
    words: Vec<AtomicU64>,
    size: u64,
}

impl HeapMemory {
    /// Zero-filled memory of `size` bytes, rounded up to a multiple of 8.
    pub fn new(size: u64) -> Self {
        let words = size.div_ceil(8);
        Self {
            words: (0..words).map(|_| AtomicU64::new(0)).collect(),
            size: words * 8,
        }
    }

    fn check(&self, addr: u64, len: u64, align: u64) -> Result<(), MemError> {
        let end = addr.checked_add(len);
        if end.is_none_or(|end| end > self.size) {
            return Err(MemError::OutOfRange {
                addr,
                len,
                size: self.size,
            });
        }
        if align > 1 && addr % align != 0 {
            return Err(MemError::Misaligned { addr, align });
        }
        Ok(())
    }

    /// The word holding byte `addr`; callers checked the range first.
    fn word(&self, addr: u64) -> Result<&AtomicU64, MemError> {
        usize::try_from(addr / 8)
            .ok()
            .and_then(|i| self.words.get(i))
            .ok_or(MemError::OutOfRange {
                addr,
                len: 8,
                size: self.size,
            })
    }

    /// Shift and mask of the 32-bit half of a word that holds `addr`.
    fn half(addr: u64) -> (u32, u64) {
        let shift = ((addr % 8) * 8) as u32;
        (shift, 0xFFFF_FFFFu64 << shift)
    }

    fn update_u32(
        &self,
        addr: u64,
        f: impl Fn(u32) -> Option<u32>,
    ) -> Result<(u32, bool), MemError> {
        self.check(addr, 4, 4)?;
        let word = self.word(addr)?;
        let (shift, mask) = Self::half(addr);
        let mut old = word.load(Ordering::Acquire);
        loop {
            let cur = ((old & mask) >> shift) as u32;
            let Some(new) = f(cur) else {
                return Ok((cur, false));
            };
            let next = (old & !mask) | (u64::from(new) << shift);
            match word.compare_exchange_weak(old, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Ok((cur, true)),
                Err(actual) => old = actual,
            }
        }
    }
}

impl PhysMemory for HeapMemory {
    fn size(&self) -> u64 {
        self.size
    }

    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        self.check(addr, buf.len() as u64, 1)?;
        for (i, byte) in buf.iter_mut().enumerate() {
            let a = addr + i as u64;
            let word = self.word(a)?.load(Ordering::Acquire);
            *byte = (word >> ((a % 8) * 8)) as u8;
        }
        Ok(())
    }

    fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemError> {
        self.check(addr, data.len() as u64, 1)?;
        let mut i = 0usize;
        while i < data.len() {
            let a = addr + i as u64;
            let offset = (a % 8) as usize;
            let n = (8 - offset).min(data.len() - i);
            let word = self.word(a)?;
            if n == 8 {
                let mut bytes = [0u8; 8];
                // PANIC: n == 8 and i + n <= data.len() by the loop bounds.
                bytes.copy_from_slice(&data[i..i + 8]);
                word.store(u64::from_le_bytes(bytes), Ordering::Release);
            } else {
                let mut mask = 0u64;
                let mut bits = 0u64;
                // PANIC: n <= data.len() - i by construction.
                for (k, byte) in data[i..i + n].iter().enumerate() {
                    let shift = (offset + k) * 8;
                    mask |= 0xFFu64 << shift;
                    bits |= u64::from(*byte) << shift;
                }
                word.fetch_and(!mask, Ordering::AcqRel);
                word.fetch_or(bits, Ordering::AcqRel);
            }
            i += n;
        }
        Ok(())
    }

    fn load_u32(&self, addr: u64) -> Result<u32, MemError> {
        self.check(addr, 4, 4)?;
        let (shift, _) = Self::half(addr);
        Ok((self.word(addr)?.load(Ordering::Acquire) >> shift) as u32)
    }

    fn store_u32(&self, addr: u64, value: u32) -> Result<(), MemError> {
        self.update_u32(addr, |_| Some(value)).map(|_| ())
    }

    fn load_u64(&self, addr: u64) -> Result<u64, MemError> {
        self.check(addr, 8, 8)?;
        Ok(self.word(addr)?.load(Ordering::Acquire))
    }

    fn store_u64(&self, addr: u64, value: u64) -> Result<(), MemError> {
        self.check(addr, 8, 8)?;
        self.word(addr)?.store(value, Ordering::Release);
        Ok(())
    }

    fn fetch_add_u32(&self, addr: u64, value: u32) -> Result<u32, MemError> {
        self.update_u32(addr, |cur| Some(cur.wrapping_add(value)))
            .map(|(old, _)| old)
    }

    fn fetch_add_u64(&self, addr: u64, value: u64) -> Result<u64, MemError> {
        self.check(addr, 8, 8)?;
        Ok(self.word(addr)?.fetch_add(value, Ordering::AcqRel))
    }

    fn compare_exchange_u32(
        &self,
        addr: u64,
        current: u32,
        new: u32,
    ) -> Result<Result<u32, u32>, MemError> {
        let (old, stored) = self.update_u32(addr, |cur| (cur == current).then_some(new))?;
        Ok(if stored { Ok(old) } else { Err(old) })
    }

    fn compare_exchange_u64(
        &self,
        addr: u64,
        current: u64,
        new: u64,
    ) -> Result<Result<u64, u64>, MemError> {
        self.check(addr, 8, 8)?;
        Ok(self
            .word(addr)?
            .compare_exchange(current, new, Ordering::AcqRel, Ordering::Acquire))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn out_of_range_and_misaligned_are_errors() {
        let m = HeapMemory::new(64);
        assert_eq!(
            m.load_u64(64),
            Err(MemError::OutOfRange {
                addr: 64,
                len: 8,
                size: 64
            })
        );
        assert_eq!(
            m.load_u32(2),
            Err(MemError::Misaligned { addr: 2, align: 4 })
        );
        assert!(m.write(u64::MAX, &[1]).is_err());
    }

    #[test]
    fn u32_atomics_touch_only_their_half() {
        let m = HeapMemory::new(16);
        m.store_u64(8, 0x1111_2222_3333_4444).unwrap();
        assert_eq!(m.fetch_add_u32(12, 1).unwrap(), 0x1111_2222);
        assert_eq!(m.load_u64(8).unwrap(), 0x1111_2223_3333_4444);
        assert_eq!(m.compare_exchange_u32(8, 0, 5).unwrap(), Err(0x3333_4444));
        assert_eq!(
            m.compare_exchange_u32(8, 0x3333_4444, 5).unwrap(),
            Ok(0x3333_4444)
        );
        assert_eq!(m.load_u32(8).unwrap(), 5);
    }

    proptest! {
        #[test]
        fn byte_writes_match_a_vec_oracle(ops in prop::collection::vec((0u64..200, prop::collection::vec(any::<u8>(), 0..40)), 1..30)) {
            let m = HeapMemory::new(256);
            let mut oracle = vec![0u8; 256];
            for (addr, data) in ops {
                let end = addr as usize + data.len();
                let r = m.write(addr, &data);
                if end <= 256 {
                    prop_assert!(r.is_ok());
                    oracle[addr as usize..end].copy_from_slice(&data);
                } else {
                    prop_assert!(r.is_err());
                }
            }
            let mut back = vec![0u8; 256];
            m.read(0, &mut back).unwrap();
            prop_assert_eq!(back, oracle);
        }
    }
}
