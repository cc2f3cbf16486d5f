//! The `gpud demo` command: the driver brings up the simulated GPU through its hardware layer
//! and does real work on it, printing each step.
//!
//! Owns: the demo's sequence (bring-up, page table, mappings, batch submission through a
//! ring, interrupt-driven completion, verification). Must not: touch simgpu other than
//! through `hw` (the platform glue creates the device; everything after is registers, DMA
//! memory and interrupts).

#[cfg(target_os = "linux")]
pub mod clients;
pub mod pagetable;

use crate::hw::cmd::CommandStream;
use crate::hw::pte::{CacheMode, LeafFlags};
use crate::hw::sim::platform::HostSim;
use crate::hw::{
    wait_until, DmaMemory, Engine, FaultMode, HwCtx, HwError, HwQueue, Interrupts, IrqCauses,
    MemLocation, Mmu, SystemClock, VramAperture,
};
use crate::types::{GpuVa, PhysAddr, PAGE_SIZE};
use pagetable::SimplePageTable;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

/// Why the demo failed.
#[derive(Debug, Error)]
pub enum DemoError {
    /// The hardware layer reported an error.
    #[error("hardware: {0}")]
    Hw(#[from] HwError),
    /// The multi-process part failed (daemon, client process or a client call).
    #[error("multi-process demo: {0}")]
    Client(String),
    /// Printing failed.
    #[error("output: {0}")]
    Io(#[from] std::io::Error),
    /// The GPU did not produce what it was asked to.
    #[error("{what}: expected {expected:#x}, found {found:#x}")]
    Mismatch {
        what: &'static str,
        expected: u64,
        found: u64,
    },
}

const CTX: HwCtx = HwCtx(1);
const SRC_VA: GpuVa = GpuVa(0x0000_1000_0000);
const DST_VA: GpuVa = GpuVa(0x0000_2000_0000);
const SCRATCH_VA: GpuVa = GpuVa(0x0000_3000_0000);
const BATCH_VA: GpuVa = GpuVa(0x0000_4000_0000);
/// The demo owns VRAM from offset 0 (there is no VRAM allocator yet).
const DST_VRAM: PhysAddr = PhysAddr(0);
const MESSAGE: &[u8] = b"gpud: bytes copied by the simulated GPU's copy engine";
const STORE_VALUE: u32 = 0x600D_F00D;
const SEQNO: u64 = 1;
/// The fence lives in the scratch page, after the stored dword.
const FENCE_OFFSET: u64 = 8;
const FENCE_VA: GpuVa = GpuVa(SCRATCH_VA.get() + FENCE_OFFSET);
const TIMEOUT: Duration = Duration::from_secs(10);
const RW: LeafFlags = LeafFlags {
    writable: true,
    cache: CacheMode::WriteBack,
};

fn check(what: &'static str, expected: u64, found: u64) -> Result<(), DemoError> {
    if expected == found {
        Ok(())
    } else {
        Err(DemoError::Mismatch {
            what,
            expected,
            found,
        })
    }
}

/// Memory the demo allocated.
struct Buffers {
    src: PhysAddr,
    scratch: PhysAddr,
    batch: PhysAddr,
}

/// Runs the demo, printing to `out`.
pub fn run(out: &mut dyn Write) -> Result<(), DemoError> {
    let host = HostSim::start(
        simgpu::Config::default(),
        8 << 20,
        Arc::new(SystemClock::new()),
    )?;
    let cs = host.gpu.config_space();
    let info = host.hw.info();
    writeln!(out, "[1] brought up simgpu {:04x}:{:04x} class {:02x}{:02x}: {} contexts, {} queues/engine, {}-bit VA, {} MiB VRAM",
        // PANIC: constant offsets inside the 256-byte config space array.
        u16::from_le_bytes([cs[0], cs[1]]), u16::from_le_bytes([cs[2], cs[3]]), cs[0x0B], cs[0x0A],
        info.contexts, info.queues_per_engine, info.va_bits, info.vram_size >> 20)?;
    let bufs = map_memory(&host, out)?;
    let batch_len = submit(&host, &bufs, out)?;
    wait_fence(&host, &bufs, batch_len, out)?;
    verify(&host, &bufs, out)
}

/// Builds context `CTX`'s page table and maps the demo's buffers.
fn map_memory(host: &HostSim, out: &mut dyn Write) -> Result<Buffers, DemoError> {
    let dma: Arc<dyn DmaMemory> = host.hw.dma();
    let mut pt = SimplePageTable::new(dma.clone())?;
    let bufs = Buffers {
        src: dma.alloc(PAGE_SIZE)?.addr,
        scratch: dma.alloc(PAGE_SIZE)?.addr,
        batch: dma.alloc(PAGE_SIZE)?.addr,
    };
    dma.write(bufs.src, MESSAGE)?;
    let ro = LeafFlags {
        writable: false,
        ..RW
    };
    pt.map_4k(SRC_VA, bufs.src, MemLocation::System, ro)?;
    pt.map_4k(DST_VA, DST_VRAM, MemLocation::Vram, RW)?;
    pt.map_4k(SCRATCH_VA, bufs.scratch, MemLocation::System, RW)?;
    pt.map_4k(BATCH_VA, bufs.batch, MemLocation::System, ro)?;
    host.hw.bind_context(CTX, pt.root(), FaultMode::Fatal)?;
    writeln!(out, "[2] context {}: page table at {:#x} ({} table pages); mapped src {:#x} (sys, read-only), dst {:#x} (VRAM), scratch+fence {:#x}, batch {:#x}",
        CTX.0, pt.root().addr, pt.table_count(), SRC_VA, DST_VA, SCRATCH_VA, BATCH_VA)?;
    // `pt` frees nothing when dropped: its pages stay valid while the context uses them.
    Ok(bufs)
}

/// Writes the batch buffer and submits BATCH_START through a copy-engine ring.
fn submit(host: &HostSim, bufs: &Buffers, out: &mut dyn Write) -> Result<u32, DemoError> {
    let mut batch = CommandStream::new();
    batch
        .store_dword(SCRATCH_VA, STORE_VALUE)
        .copy(SRC_VA, DST_VA, MESSAGE.len() as u64)
        .store_qword(FENCE_VA, SEQNO)
        .user_interrupt(SEQNO as u32)
        .batch_end();
    host.hw.dma().write(bufs.batch, &batch.to_bytes())?;
    let mut ring = CommandStream::new();
    ring.batch_start(BATCH_VA, batch.len() as u32);
    let mut queue = host.hw.create_queue(Engine::Copy, 0, CTX, 4096)?;
    queue.submit(ring.dwords())?;
    writeln!(out, "[3] submitted a {}-dword batch (STORE_DWORD, COPY {} bytes, fence STORE_QWORD, USER_INTERRUPT) via ring tail {:#x} + doorbell",
        batch.len(), MESSAGE.len(), queue.tail())?;
    Ok(batch.len() as u32)
}

/// Sleeps on the copy-engine interrupt until the fence holds the seqno.
fn wait_fence(
    host: &HostSim,
    bufs: &Buffers,
    batch_len: u32,
    out: &mut dyn Write,
) -> Result<(), DemoError> {
    let dma = host.hw.dma();
    let irq = host.hw.interrupts();
    let fence_pa = PhysAddr(bufs.scratch.get() + FENCE_OFFSET);
    let clock = SystemClock::new();
    wait_until(
        &*irq,
        &clock,
        IrqCauses::COPY_USER,
        TIMEOUT,
        "batch fence",
        || dma.read_u64(fence_pa).is_ok_and(|v| v >= SEQNO),
    )?;
    let fired = irq.status();
    irq.ack(fired);
    check("fence", SEQNO, dma.read_u64(fence_pa)?)?;
    writeln!(out, "[4] copy-engine interrupt received (status {fired:?}); fence = {SEQNO} after a {batch_len}-dword batch")?;
    Ok(())
}

/// Reads back what the GPU wrote.
fn verify(host: &HostSim, bufs: &Buffers, out: &mut dyn Write) -> Result<(), DemoError> {
    let dma = host.hw.dma();
    check(
        "stored dword",
        u64::from(STORE_VALUE),
        u64::from(dma.read_u32(bufs.scratch)?),
    )?;
    let mut copied = vec![0u8; MESSAGE.len()];
    host.vram.read(DST_VRAM, &mut copied)?;
    let matching = copied
        .iter()
        .zip(MESSAGE)
        .take_while(|(a, b)| a == b)
        .count();
    check(
        "copied bytes matching",
        MESSAGE.len() as u64,
        matching as u64,
    )?;
    writeln!(
        out,
        "[5] verified: dword {STORE_VALUE:#x} landed; VRAM (BAR2) reads back {:?}",
        String::from_utf8_lossy(&copied)
    )?;
    let names = [
        "pte_reads",
        "tlb_hits",
        "tlb_misses",
        "invalidations",
        "faults",
        "bytes_copied",
        "commands",
    ];
    let counters: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(i, n)| format!("{n}={}", host.hw.counter(i as u32)))
        .collect();
    writeln!(out, "[6] device counters: {}", counters.join(" "))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn demo_runs_and_prints_every_step() {
        let mut out = Vec::new();
        super::run(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        for step in 1..=6 {
            assert!(
                text.contains(&format!("[{step}]")),
                "step {step} missing in:\n{text}"
            );
        }
        assert!(text.contains("simgpu 7347:0001"));
        assert!(text.contains("bytes copied by the simulated GPU"));
    }
}
