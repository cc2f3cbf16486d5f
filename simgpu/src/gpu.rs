//! The device handle: the only object a platform holds. Register access, interrupt sink,
//! deterministic step mode and the free-running device thread.
//!
//! Owns: locking of the device state, interrupt delivery outside the lock, the device thread
//! and its wake-up protocol. Must not: implement device behaviour (see `device.rs`).

use crate::device::{Config, Counters, Device};
use crate::freed::FreedAccess;
use crate::mem::{HeapMemory, Location, PhysMemory};
use crate::pci::CONFIG_SIZE;
use parking_lot::{Condvar, Mutex};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Receives MSI-X messages. Called without any device lock held, from whichever thread made
/// the device raise the interrupt (the device thread, or a caller of `step`/`mmio_write32`).
pub trait InterruptSink: Send + Sync {
    /// Vector `vector` fired with the message data programmed in its MSI-X table entry.
    fn interrupt(&self, vector: u16, data: u32);
}

/// How long the idle device thread sleeps when a queue polls a semaphore in memory.
const SEM_POLL: Duration = Duration::from_micros(50);
/// How long the idle device thread sleeps when nothing can move without a register write.
const IDLE_SLEEP: Duration = Duration::from_millis(20);

struct Shared {
    dev: Mutex<Device>,
    wake: Condvar,
    sink: Mutex<Option<Arc<dyn InterruptSink>>>,
    stop: AtomicBool,
}

impl Shared {
    fn deliver(&self, vectors: Vec<(u16, u32)>) {
        if vectors.is_empty() {
            return;
        }
        let sink = self.sink.lock().clone();
        if let Some(sink) = sink {
            for (v, data) in vectors {
                sink.interrupt(v, data);
            }
        }
    }

    fn step(&self) -> bool {
        let (progress, vectors) = {
            let mut dev = self.dev.lock();
            let p = dev.step();
            (p, dev.take_vectors())
        };
        self.deliver(vectors);
        progress
    }

    fn thread_main(&self) {
        while !self.stop.load(Ordering::Acquire) {
            let (kicks, progress, vectors) = {
                let mut dev = self.dev.lock();
                let kicks = dev.kicks;
                let progress = dev.step();
                (kicks, progress, dev.take_vectors())
            };
            self.deliver(vectors);
            if progress {
                continue;
            }
            let mut dev = self.dev.lock();
            if dev.kicks != kicks || self.stop.load(Ordering::Acquire) {
                continue;
            }
            let sleep = if dev.has_sem_waiters() {
                SEM_POLL
            } else {
                IDLE_SLEEP
            };
            // Register writes notify only while this flag is set (see `mmio_write32`).
            dev.sleeping = true;
            self.wake.wait_for(&mut dev, sleep);
            dev.sleeping = false;
        }
    }
}

/// A simulated GPU.
pub struct SimGpu {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
    sys: Arc<dyn PhysMemory>,
    vram: Arc<dyn PhysMemory>,
}

impl SimGpu {
    /// A device with heap VRAM of `cfg.vram_size` bytes, reaching system memory `sys` by DMA.
    pub fn new(cfg: Config, sys: Arc<dyn PhysMemory>) -> Self {
        let cfg = cfg.sanitized();
        let vram: Arc<dyn PhysMemory> = Arc::new(HeapMemory::new(cfg.vram_size));
        Self::with_vram(cfg, sys, vram)
    }

    /// A device whose VRAM is backed by `vram` (e.g. shared memory the platform also maps).
    pub fn with_vram(cfg: Config, sys: Arc<dyn PhysMemory>, vram: Arc<dyn PhysMemory>) -> Self {
        let dev = Device::new(cfg, sys.clone(), vram.clone());
        Self {
            shared: Arc::new(Shared {
                dev: Mutex::new(dev),
                wake: Condvar::new(),
                sink: Mutex::new(None),
                stop: AtomicBool::new(false),
            }),
            thread: Mutex::new(None),
            sys,
            vram,
        }
    }

    /// The device's configuration (after clamping).
    pub fn config(&self) -> Config {
        self.shared.dev.lock().cfg
    }

    /// PCI configuration space bytes.
    pub fn config_space(&self) -> [u8; CONFIG_SIZE] {
        self.shared.dev.lock().pci.bytes()
    }

    /// Reads a config-space dword.
    pub fn config_read32(&self, offset: u16) -> u32 {
        self.shared.dev.lock().pci.read32(offset)
    }

    /// Writes a config-space dword (command, BARs, MSI-X control).
    pub fn config_write32(&self, offset: u16, value: u32) {
        self.shared.dev.lock().pci.write32(offset, value);
    }

    /// The BAR2 aperture: VRAM as the CPU sees it.
    pub fn vram(&self) -> Arc<dyn PhysMemory> {
        self.vram.clone()
    }

    /// The system memory the device reaches by DMA.
    pub fn sysmem(&self) -> Arc<dyn PhysMemory> {
        self.sys.clone()
    }

    /// Registers the interrupt sink (replacing any previous one).
    pub fn set_interrupt_sink(&self, sink: Arc<dyn InterruptSink>) {
        *self.shared.sink.lock() = Some(sink);
    }

    /// Reads a BAR0 register.
    pub fn mmio_read32(&self, offset: u32) -> u32 {
        self.shared.dev.lock().mmio_read32(offset)
    }

    /// Writes a BAR0 register and wakes the device thread if the write may give it work and
    /// the thread sleeps (a running thread sees the write through `Device::kicks` before it
    /// would sleep, so a notification then would only cost a futex call).
    pub fn mmio_write32(&self, offset: u32, value: u32) {
        let (wake, vectors) = {
            let mut dev = self.shared.dev.lock();
            let wake = dev.mmio_write32(offset, value) && std::mem::take(&mut dev.sleeping);
            (wake, dev.take_vectors())
        };
        if wake {
            self.shared.wake.notify_all();
        }
        self.shared.deliver(vectors);
    }

    /// Advances the device by one step; returns whether anything happened.
    pub fn step(&self) -> bool {
        self.shared.step()
    }

    /// Steps until nothing moves (at most `max_steps`); returns the steps that made progress.
    pub fn run_until_idle_bounded(&self, max_steps: u64) -> u64 {
        let mut n = 0;
        while n < max_steps && self.step() {
            n += 1;
        }
        n
    }

    /// Steps until nothing moves. Every command retires, faults or blocks, so this ends.
    pub fn run_until_idle(&self) -> u64 {
        self.run_until_idle_bounded(u64::MAX)
    }

    /// Starts the free-running device thread (no-op if running).
    pub fn start(&self) {
        let mut slot = self.thread.lock();
        if slot.is_some() {
            return;
        }
        self.shared.stop.store(false, Ordering::Release);
        let shared = self.shared.clone();
        *slot = Some(std::thread::spawn(move || shared.thread_main()));
    }

    /// Stops and joins the device thread (no-op if not running).
    pub fn stop(&self) {
        let handle = self.thread.lock().take();
        if let Some(handle) = handle {
            self.shared.stop.store(true, Ordering::Release);
            self.shared.wake.notify_all();
            // A panicking device thread already reported itself; nothing to add here.
            let _ = handle.join();
        }
    }

    /// Whether the device thread runs.
    pub fn is_running(&self) -> bool {
        self.thread.lock().is_some()
    }

    /// Test hook: the next command that queue `queue` of `engine` starts never completes.
    pub fn inject_hang(&self, engine: usize, queue: usize) {
        self.shared.dev.lock().inject_hang(engine, queue);
        self.shared.wake.notify_all();
    }

    /// Counter snapshot.
    pub fn counters(&self) -> Counters {
        self.shared.dev.lock().counters()
    }

    /// Translations currently cached in the TLB.
    pub fn tlb_len(&self) -> usize {
        self.shared.dev.lock().mmu.tlb_len()
    }

    /// Turns freed-page tracking on or off (see [`crate::freed`]): with it on, every GPU
    /// access to memory reported freed is recorded. `linear_maps`: contexts (besides the
    /// global GTT) whose tables map memory permanently, like a driver's kernel context.
    pub fn track_freed_pages(&self, on: bool, linear_maps: &[u32]) {
        self.shared
            .dev
            .lock()
            .mmu
            .freed
            .set_enabled(on, linear_maps);
    }

    /// The driver freed `[addr, addr + len)` of `location`: from now on no GPU access may
    /// reach it (until [`SimGpu::note_allocated`]), and no translation cached before now
    /// may be used to reach it ever again.
    pub fn note_freed(&self, location: Location, addr: u64, len: u64) {
        self.shared
            .dev
            .lock()
            .mmu
            .freed
            .note_freed(location, addr, len);
    }

    /// The driver allocated `[addr, addr + len)` of `location` again.
    pub fn note_allocated(&self, location: Location, addr: u64, len: u64) {
        self.shared
            .dev
            .lock()
            .mmu
            .freed
            .note_allocated(location, addr, len);
    }

    /// GPU accesses to freed memory seen so far (the first ones) and their number.
    pub fn freed_page_violations(&self) -> (Vec<FreedAccess>, u64) {
        self.shared.dev.lock().mmu.freed.violations()
    }
}

impl Drop for SimGpu {
    fn drop(&mut self) {
        self.stop();
    }
}
