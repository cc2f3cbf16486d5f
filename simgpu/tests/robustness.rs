//! Nothing a driver or a client controls may panic the device: random command streams and
//! random register writes only ever produce errors, faults or nothing.

use proptest::prelude::*;
use simgpu::cmd::{header, len_of};
use simgpu::regs;
use simgpu::testkit::{Rig, PAGE};
use simgpu::{ENGINE_COMPUTE, ENGINE_COPY};

const VA: u64 = 0x100_0000;

/// A command with a valid header (random opcode) and random operands, or a random dword.
fn command() -> impl Strategy<Value = Vec<u32>> {
    let valid = (
        0u8..0x0D,
        any::<u8>(),
        prop::collection::vec(any::<u32>(), 7),
    )
        .prop_map(|(op, flags, ops)| {
            let len = len_of(op).unwrap_or(1) as usize;
            let mut v = vec![header(op, flags & 0x0F)];
            // Keep some addresses inside the mapped window so commands really execute.
            v.extend(
                ops.iter()
                    .take(len - 1)
                    .enumerate()
                    .map(|(i, &d)| match i % 2 {
                        0 if d % 3 == 0 => (VA as u32) + (d % 0x4000),
                        _ if d % 5 == 0 => 0,
                        _ => d,
                    }),
            );
            v
        });
    prop_oneof![4 => valid, 1 => prop::collection::vec(any::<u32>(), 1..4)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(simgpu::testkit::proptest_cases(64)))]
    #[test]
    fn random_command_streams_never_panic(cmds in prop::collection::vec(command(), 1..40), recoverable: bool) {
        let mut rig = Rig::new(1 << 20);
        rig.fault_queue(4);
        rig.context(0, recoverable);
        rig.map_new_sys(0, VA, 4 * PAGE);
        rig.queue(ENGINE_COPY, 0, 0);
        rig.queue(ENGINE_COMPUTE, 0, 0);
        for (i, c) in cmds.iter().enumerate() {
            rig.submit(if i % 2 == 0 { ENGINE_COPY } else { ENGINE_COMPUTE }, 0, c);
        }
        rig.gpu.run_until_idle_bounded(10_000);
        rig.gpu.mmio_write32(regs::FAULT_REPLY, 0);
        rig.gpu.mmio_write32(regs::ENGINE_RESET, 3);
        for engine in [ENGINE_COPY, ENGINE_COMPUTE] {
            let st = rig.qreg(engine, 0, regs::Q_STATUS);
            prop_assert_eq!(st & regs::q_status::HUNG, 0, "reset clears hangs");
            prop_assert_eq!(rig.qreg(engine, 0, regs::Q_CTRL), 0, "reset stops queues");
        }
        rig.gpu.run_until_idle_bounded(10_000);
        prop_assert_eq!(rig.gpu.mmio_read32(regs::ID), 0x0001_7347);
    }

    #[test]
    fn random_register_writes_never_panic(writes in prop::collection::vec((0u32..0x1_0000, any::<u32>()), 1..200)) {
        let mut rig = Rig::new(1 << 20);
        rig.context(0, false);
        rig.queue(ENGINE_COPY, 0, 0);
        for (offset, value) in writes {
            rig.gpu.mmio_write32(offset, value);
            rig.gpu.mmio_read32(offset);
            rig.gpu.step();
        }
        rig.gpu.config_write32(0x10, u32::MAX);
        rig.gpu.run_until_idle_bounded(1_000);
        prop_assert_eq!(rig.gpu.mmio_read32(regs::ID), 0x0001_7347);
    }
}
