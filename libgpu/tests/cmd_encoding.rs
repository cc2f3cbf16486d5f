//! The command encoder against the manual: golden dwords for every command
//! (`docs/simgpu.md` §6), the format table against the device's own table, and a property test
//! that the device's decoder reads back every encoded command with its operands.

use libgpu::cmd::{format, Batch, CmdError, SemOp, FORMATS, MAX_VECTOR_COUNT};
use proptest::prelude::*;
use simgpu::cmd::{decode, len_of, Command};

const VA: u64 = 0x0000_1234_5678_9ab8;
const VB: u64 = 0xffff_0000_0000_1000;

#[test]
fn golden_dwords_of_every_command() {
    let mut b = Batch::new();
    b.noop()
        .store_dword(VA, 0xdead_beef)
        .store_qword(VA, 0x0102_0304_0506_0708)
        .copy(VA, VB, 0x1_0000_0010)
        .fill(VB, 64, 0x4433_2211);
    b.atomic_add32(VA, 5).unwrap();
    b.atomic_add64(VA, u64::MAX).unwrap();
    b.cmpxchg32(VA, 1, 2).unwrap();
    b.cmpxchg64(VA, 3, 4).unwrap();
    b.semaphore_wait(VA, SemOp::Gte, 9, true)
        .semaphore_wait(VA, SemOp::Ne, 7, false)
        .user_interrupt(0x55)
        .timestamp(VB);
    b.vector_add(VA, VB, 0x1000, 3000).unwrap();
    b.batch_end();
    let (lo, hi) = (0x5678_9ab8, 0x0000_1234);
    let (blo, bhi) = (0x0000_1000, 0xffff_0000);
    #[rustfmt::skip]
    let golden: Vec<u32> = vec![
        0x0001_0000,
        0x0004_0001, lo, hi, 0xdead_beef,
        0x0005_0002, lo, hi, 0x0506_0708, 0x0102_0304,
        0x0007_0003, lo, hi, blo, bhi, 0x10, 1,
        0x0006_0004, blo, bhi, 64, 0, 0x4433_2211,
        0x0005_0005, lo, hi, 5, 0,
        0x0005_0105, lo, hi, u32::MAX, u32::MAX,
        0x0007_0006, lo, hi, 1, 0, 2, 0,
        0x0007_0106, lo, hi, 3, 0, 4, 0,
        0x0005_0a07, lo, hi, 9, 0,
        0x0005_0107, lo, hi, 7, 0,
        0x0002_0009, 0x55,
        0x0003_000b, blo, bhi,
        0x0008_000c, lo, hi, blo, bhi, 0x1000, 0, 3000,
        0x0001_000a,
    ];
    assert_eq!(b.dwords(), golden.as_slice());
    assert!(b.needs_compute());
    assert_eq!(b.to_bytes()[..4], [0, 0, 1, 0]);
    assert_eq!(b.len(), golden.len());
}

#[test]
fn the_format_table_matches_the_device() {
    for f in FORMATS {
        assert_eq!(len_of(f.opcode), Some(u32::from(f.dwords)), "{}", f.name);
        let operand_dwords: u16 = f
            .operands
            .split_whitespace()
            .map(|o| if o.ends_with(":64") { 2 } else { 1 })
            .sum();
        assert_eq!(operand_dwords + 1, f.dwords, "{}", f.name);
    }
    assert!(format(0x08).is_none(), "BATCH_START is ring-only");
    assert!(format(0xfe).is_none(), "HANG is test-only");
}

#[test]
fn illegal_commands_are_refused_while_encoding() {
    let mut b = Batch::new();
    assert_eq!(
        b.atomic_add32(0x1002, 1).unwrap_err(),
        CmdError::Misaligned {
            va: 0x1002,
            align: 4
        }
    );
    assert!(b.atomic_add64(0x1004, 1).is_err());
    assert!(b.cmpxchg64(0x1004, 1, 2).is_err());
    assert!(b.cmpxchg32(0x1004, 1, 2).is_ok());
    let e = b.vector_add(0, 0, 0, MAX_VECTOR_COUNT + 1).unwrap_err();
    assert_eq!(e, CmdError::VectorTooLong(MAX_VECTOR_COUNT + 1));
    assert!(!b.needs_compute(), "a refused VECTOR_ADD adds nothing");
    assert_eq!(b.len(), 7, "only the legal cmpxchg was encoded");
}

/// A command with its expected decoding.
fn command() -> impl Strategy<Value = (Batch, Command)> {
    let va = any::<u64>();
    let aligned = |a: u64| any::<u64>().prop_map(move |v| v & !(a - 1));
    prop_oneof![
        Just((
            {
                let mut b = Batch::new();
                b.noop();
                b
            },
            Command::Noop
        )),
        (va, any::<u32>()).prop_map(|(va, value)| {
            let mut b = Batch::new();
            b.store_dword(va, value);
            (b, Command::StoreDword { va, value })
        }),
        (va, any::<u64>()).prop_map(|(va, value)| {
            let mut b = Batch::new();
            b.store_qword(va, value);
            (b, Command::StoreQword { va, value })
        }),
        (va, any::<u64>(), any::<u64>()).prop_map(|(src, dst, len)| {
            let mut b = Batch::new();
            b.copy(src, dst, len);
            (b, Command::Copy { src, dst, len })
        }),
        (va, any::<u64>(), any::<u32>()).prop_map(|(dst, len, pattern)| {
            let mut b = Batch::new();
            b.fill(dst, len, pattern);
            (b, Command::Fill { dst, len, pattern })
        }),
        (aligned(4), any::<u32>()).prop_map(|(va, v)| {
            let mut b = Batch::new();
            b.atomic_add32(va, v).unwrap();
            let value = u64::from(v);
            (
                b,
                Command::AtomicAdd {
                    va,
                    value,
                    wide: false,
                },
            )
        }),
        (aligned(8), any::<u64>(), any::<u64>()).prop_map(|(va, current, new)| {
            let mut b = Batch::new();
            b.cmpxchg64(va, current, new).unwrap();
            (
                b,
                Command::AtomicCmpxchg {
                    va,
                    current,
                    new,
                    wide: true,
                },
            )
        }),
        (va, 0u8..4, any::<u64>(), any::<bool>()).prop_map(|(va, op, value, wide)| {
            let sem = [SemOp::Eq, SemOp::Ne, SemOp::Gte, SemOp::Lt][op as usize];
            let mut b = Batch::new();
            b.semaphore_wait(va, sem, value, wide);
            (
                b,
                Command::SemaphoreWait {
                    va,
                    op,
                    value,
                    wide,
                },
            )
        }),
        any::<u32>().prop_map(|data| {
            let mut b = Batch::new();
            b.user_interrupt(data);
            (b, Command::UserInterrupt { data })
        }),
        va.prop_map(|va| {
            let mut b = Batch::new();
            b.timestamp(va);
            (b, Command::Timestamp { va })
        }),
        (va, any::<u64>(), any::<u64>(), 0..=MAX_VECTOR_COUNT).prop_map(|(a, bv, c, count)| {
            let mut b = Batch::new();
            b.vector_add(a, bv, c, count).unwrap();
            (b, Command::VectorAdd { a, b: bv, c, count })
        }),
    ]
}

proptest! {
    #[test]
    fn the_device_decodes_what_the_encoder_writes(
        cmds in proptest::collection::vec(command(), 1..20),
    ) {
        let mut batch = Batch::new();
        for (b, _) in &cmds {
            batch.append(b);
        }
        let mut at = 0usize;
        for (_, want) in &cmds {
            let rest = &batch.dwords()[at..];
            prop_assert_eq!(decode(rest), Ok(*want));
            at += len_of((rest[0] & 0xff) as u8).unwrap() as usize;
        }
        prop_assert_eq!(at, batch.len());
    }
}
