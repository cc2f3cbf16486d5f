//! The privilege split: ring commands may address the global GTT (the driver's address
//! space), batches run unprivileged in their context's page tables and can never reach it.

use simgpu::regs::{self, ctx_status, ErrorReason, GGTT_CTX};
use simgpu::testkit::{enc, MapFlags, Rig, PAGE};
use simgpu::{PhysMemory, ENGINE_COPY};

/// Where the client's batch and data live in its page tables.
const VA: u64 = 0x100_0000;
/// Where the driver maps its private page in the GGTT.
const GVA: u64 = 0x8000_0000;

struct Setup {
    rig: Rig,
    /// The client's pages (batch at +0, data at +PAGE).
    client: u64,
    /// The driver's private page, mapped only in the GGTT.
    private: u64,
}

/// Context 1 with 2 client pages at `VA`, and a GGTT mapping a private page at `GVA`.
fn setup(recoverable: bool) -> Setup {
    let mut rig = Rig::new(2 << 20);
    rig.fault_queue(8);
    rig.context(1, recoverable);
    rig.queue(ENGINE_COPY, 0, 1);
    let client = rig.map_new_sys(1, VA, 2 * PAGE);
    rig.ggtt();
    let private = rig.alloc_sys(PAGE, PAGE);
    rig.map(GGTT_CTX, GVA, private, 0, MapFlags::SYS_RW);
    Setup {
        rig,
        client,
        private,
    }
}

fn error_reason(rig: &Rig, ctx: u32) -> Option<u32> {
    let st = rig.ctx_status(ctx);
    (st & ctx_status::ERROR != 0).then_some((st >> ctx_status::REASON_SHIFT) & 0xF)
}

/// Writes `cmds` as a batch at the client's first page and runs it from the ring.
fn run_batch(s: &mut Setup, cmds: &[Vec<u32>]) {
    let words: Vec<u32> = cmds.concat();
    for (i, w) in words.iter().enumerate() {
        s.rig.sys.store_u32(s.client + 4 * i as u64, *w).unwrap();
    }
    s.rig
        .submit(ENGINE_COPY, 0, &enc::batch_start(VA, words.len() as u32));
    s.rig.gpu.run_until_idle();
}

#[test]
fn ring_commands_reach_the_ggtt_and_unflagged_ones_the_context() {
    let mut s = setup(false);
    // The same VA means different memory in the two address spaces.
    s.rig.map(GGTT_CTX, VA, s.private, 0, MapFlags::SYS_RW);
    s.rig
        .submit(ENGINE_COPY, 0, &enc::ggtt(enc::store_qword(GVA + 8, 7)));
    s.rig
        .submit(ENGINE_COPY, 0, &enc::ggtt(enc::store_qword(VA + 16, 8)));
    s.rig.submit(ENGINE_COPY, 0, &enc::store_qword(VA + 16, 9));
    s.rig.gpu.run_until_idle();
    assert_eq!(s.rig.sys.load_u64(s.private + 8).unwrap(), 7);
    assert_eq!(s.rig.sys.load_u64(s.private + 16).unwrap(), 8);
    assert_eq!(s.rig.sys.load_u64(s.client + 16).unwrap(), 9);
    assert_eq!(error_reason(&s.rig, 1), None);
}

#[test]
fn a_batch_cannot_set_the_ggtt_flag() {
    for cmd in [
        enc::ggtt(enc::store_qword(GVA, 5)),
        enc::ggtt(enc::atomic_add(GVA, 5, true)),
        enc::ggtt(enc::copy(VA + PAGE, GVA, 8)),
        enc::ggtt(enc::fill(GVA, 8, 5)),
        enc::ggtt(enc::timestamp(GVA)),
        enc::ggtt(enc::noop()),
    ] {
        let mut s = setup(false);
        s.rig.sys.store_u64(s.client + PAGE, 0x55).unwrap();
        run_batch(&mut s, &[cmd.clone(), enc::store_qword(VA + PAGE + 8, 1)]);
        assert_eq!(
            error_reason(&s.rig, 1),
            Some(ErrorReason::IllegalCommand as u32),
            "{cmd:x?}"
        );
        assert_eq!(s.rig.sys.load_u64(s.private).unwrap(), 0, "{cmd:x?}");
        assert_eq!(
            s.rig.sys.load_u64(s.client + PAGE + 8).unwrap(),
            0,
            "the batch stopped at the privileged command"
        );
    }
}

#[test]
fn a_batch_does_not_see_ggtt_mappings() {
    // Recoverable: the batch's write faults and stalls, it never lands in the GGTT page.
    let mut s = setup(true);
    run_batch(&mut s, &[enc::store_qword(GVA, 5)]);
    assert_eq!(s.rig.sys.load_u64(s.private).unwrap(), 0);
    assert_eq!(s.rig.gpu.mmio_read32(regs::FQ_TAIL), 1, "a fault record");
}

#[test]
fn batch_start_in_the_ggtt_is_illegal() {
    let mut s = setup(false);
    s.rig.map(GGTT_CTX, VA, s.client, 0, MapFlags::SYS_RW);
    s.rig.sys.store_u32(s.client, enc::noop()[0]).unwrap();
    s.rig
        .submit(ENGINE_COPY, 0, &enc::ggtt(enc::batch_start(VA, 1)));
    s.rig.gpu.run_until_idle();
    assert_eq!(
        error_reason(&s.rig, 1),
        Some(ErrorReason::IllegalCommand as u32)
    );
}

#[test]
fn a_ggtt_hole_is_a_context_error_even_when_recoverable() {
    let mut s = setup(true);
    s.rig
        .submit(ENGINE_COPY, 0, &enc::ggtt(enc::store_qword(GVA + PAGE, 1)));
    s.rig.gpu.run_until_idle();
    assert_eq!(error_reason(&s.rig, 1), Some(ErrorReason::Fault as u32));
    assert_eq!(s.rig.gpu.mmio_read32(regs::FQ_TAIL), 0, "no fault record");
}

#[test]
fn a_disabled_ggtt_reaches_nothing() {
    let mut s = setup(false);
    s.rig.gpu.mmio_write32(regs::GGTT_BASE_LO, 0);
    s.rig
        .submit(ENGINE_COPY, 0, &enc::ggtt(enc::store_qword(GVA, 1)));
    s.rig.gpu.run_until_idle();
    assert_eq!(s.rig.sys.load_u64(s.private).unwrap(), 0);
    assert_eq!(error_reason(&s.rig, 1), Some(ErrorReason::Fault as u32));
}

#[test]
fn ggtt_translations_are_cached_until_invalidated_by_ggtt_ctx() {
    let mut s = setup(false);
    let other = s.rig.alloc_sys(PAGE, PAGE);
    s.rig
        .submit(ENGINE_COPY, 0, &enc::ggtt(enc::store_qword(GVA, 1)));
    s.rig.gpu.run_until_idle();
    s.rig.map(GGTT_CTX, GVA, other, 0, MapFlags::SYS_RW);
    // Invalidating the context's translations leaves the GGTT's cached.
    s.rig.invalidate(1, None);
    s.rig
        .submit(ENGINE_COPY, 0, &enc::ggtt(enc::store_qword(GVA, 2)));
    s.rig.gpu.run_until_idle();
    assert_eq!(
        s.rig.sys.load_u64(s.private).unwrap(),
        2,
        "stale translation"
    );
    s.rig.invalidate(GGTT_CTX, None);
    s.rig
        .submit(ENGINE_COPY, 0, &enc::ggtt(enc::store_qword(GVA, 3)));
    s.rig.gpu.run_until_idle();
    assert_eq!(s.rig.sys.load_u64(other).unwrap(), 3);
}
