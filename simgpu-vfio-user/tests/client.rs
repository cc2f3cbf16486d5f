//! The vfio-user device driven by the `vfio_user` crate's own client, as QEMU would: no QEMU
//! needed. A tiny driver in the test programs page tables and a ring in "guest RAM" (a
//! memfd the client DMA-maps), rings the doorbell through trapped BAR0 writes and waits for
//! the MSI-X eventfd.

use rustix::event::{eventfd, EventfdFlags};
use rustix::fd::{AsRawFd, OwnedFd};
use simgpu::regs::{self, ctx_ctrl};
use simgpu::testkit::enc;
use simgpu::{pte, PhysMemory};
use simgpu_vfio_user::mapping::{memfd, Mapping};
use simgpu_vfio_user::{SimGpuBackend, MSIX_VECTORS};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use vfio_bindings::bindings::vfio::{
    VFIO_IRQ_INFO_EVENTFD, VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_IRQ_SET_DATA_EVENTFD,
    VFIO_IRQ_SET_DATA_NONE, VFIO_PCI_BAR0_REGION_INDEX, VFIO_PCI_BAR2_REGION_INDEX,
    VFIO_PCI_CONFIG_REGION_INDEX, VFIO_PCI_MSIX_IRQ_INDEX, VFIO_REGION_INFO_FLAG_MMAP,
};
use vfio_user::{Client, Server};

const PAGE: u64 = 4096;
/// Where the test's guest RAM sits on the bus.
const IOVA: u64 = 0x8000_0000;
const GUEST_RAM: u64 = 1 << 20;

struct Rig {
    client: Client,
    server: JoinHandle<SimGpuBackend>,
    _path: PathBuf,
}

fn socket_path() -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("simgpu-vu-{}-{n}.sock", std::process::id()))
}

impl Rig {
    fn start() -> Self {
        let path = socket_path();
        let _ = std::fs::remove_file(&path);
        let mut backend = SimGpuBackend::new(simgpu::Config::default()).expect("backend");
        let server = Server::new(&path, true, SimGpuBackend::irqs(), backend.regions())
            .expect("server socket");
        let server = std::thread::spawn(move || {
            server.run(&mut backend).expect("server loop");
            backend
        });
        let client = Client::new(&path).expect("client connects");
        Self {
            client,
            server,
            _path: path,
        }
    }

    /// Disconnects and returns the backend for inspection.
    fn finish(self) -> SimGpuBackend {
        self.client.shutdown().expect("shutdown");
        drop(self.client);
        self.server.join().expect("server thread")
    }

    fn read(&mut self, region: u32, offset: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0; len];
        self.client
            .region_read(region, offset, &mut buf)
            .expect("region read");
        buf
    }

    fn cfg32(&mut self, offset: u64) -> u32 {
        let b = self.read(VFIO_PCI_CONFIG_REGION_INDEX, offset, 4);
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    fn reg(&mut self, offset: u32) -> u32 {
        let b = self.read(VFIO_PCI_BAR0_REGION_INDEX, u64::from(offset), 4);
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    fn set_reg(&mut self, offset: u32, value: u32) {
        self.client
            .region_write(
                VFIO_PCI_BAR0_REGION_INDEX,
                u64::from(offset),
                &value.to_le_bytes(),
            )
            .expect("region write");
    }

    /// Guest RAM: a memfd DMA-mapped at [`IOVA`], and the test's own view of it.
    fn guest_ram(&mut self) -> (OwnedFd, Mapping) {
        let fd = memfd("guest-ram", GUEST_RAM).expect("memfd");
        self.client
            .dma_map(0, IOVA, GUEST_RAM, fd.as_raw_fd())
            .expect("dma map");
        let view = Mapping::new(&fd, 0, GUEST_RAM).expect("map guest ram");
        (fd, view)
    }

    /// One eventfd per MSI-X vector, handed over like QEMU does.
    fn wire_msix(&mut self) -> Vec<OwnedFd> {
        let fds: Vec<OwnedFd> = (0..MSIX_VECTORS)
            .map(|_| eventfd(0, EventfdFlags::NONBLOCK | EventfdFlags::CLOEXEC).expect("eventfd"))
            .collect();
        let raw: Vec<i32> = fds.iter().map(AsRawFd::as_raw_fd).collect();
        self.client
            .set_irqs(
                VFIO_PCI_MSIX_IRQ_INDEX,
                VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER,
                0,
                MSIX_VECTORS,
                &raw,
            )
            .expect("set irqs");
        fds
    }
}

/// The eventfd's counter (0 if it never fired), read without blocking.
fn take(fd: &OwnedFd) -> u64 {
    let mut b = [0u8; 8];
    match rustix::io::read(fd, &mut b) {
        Ok(8) => u64::from_ne_bytes(b),
        _ => 0,
    }
}

fn wait_irq(fd: &OwnedFd) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = take(fd);
        if n > 0 || Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A context whose page tables live in guest RAM, a copy queue with its ring there, and a
/// bump allocator over guest RAM (offsets from [`IOVA`]).
struct Driver<'a> {
    rig: &'a mut Rig,
    ram: &'a Mapping,
    next: u64,
    root: u64,
    tail: u32,
}

const RING: u32 = 64 << 10;

impl<'a> Driver<'a> {
    fn new(rig: &'a mut Rig, ram: &'a Mapping) -> Self {
        let mut d = Self {
            rig,
            ram,
            next: PAGE,
            root: 0,
            tail: 0,
        };
        d.root = d.alloc(PAGE);
        let root = IOVA + d.root;
        d.rig
            .set_reg(regs::ctx_reg(0, regs::CTX_PT_BASE_LO), root as u32);
        d.rig
            .set_reg(regs::ctx_reg(0, regs::CTX_PT_BASE_HI), (root >> 32) as u32);
        d.rig
            .set_reg(regs::ctx_reg(0, regs::CTX_CTRL), ctx_ctrl::ENABLE);
        let ring = IOVA + d.alloc(u64::from(RING));
        let q = |reg| regs::queue_reg(0, reg);
        d.rig.set_reg(q(regs::Q_CTRL), 0);
        d.rig.set_reg(q(regs::Q_RING_BASE_LO), ring as u32);
        d.rig.set_reg(q(regs::Q_RING_BASE_HI), (ring >> 32) as u32);
        d.rig.set_reg(q(regs::Q_RING_SIZE), RING);
        d.rig.set_reg(q(regs::Q_HEAD), 0);
        d.rig.set_reg(q(regs::Q_TAIL), 0);
        d.rig.set_reg(q(regs::Q_CTX), 0);
        d.rig.set_reg(q(regs::Q_CTRL), 1);
        d
    }

    fn alloc(&mut self, len: u64) -> u64 {
        let at = self.next;
        self.next += len.next_multiple_of(PAGE);
        assert!(self.next <= GUEST_RAM, "test guest RAM exhausted");
        at
    }

    /// Maps the 4 KiB page at `va` to bus address `pa`.
    fn map(&mut self, va: u64, pa: u64) {
        let mut table = self.root;
        for l in (1..pte::LEVELS).rev() {
            let slot = table + ((va >> pte::level_shift(l)) & 511) * 8;
            let e = self.ram.load_u64(slot).expect("table");
            table = if e & pte::VALID != 0 {
                (e & pte::ADDR_MASK) - IOVA
            } else {
                let t = self.alloc(PAGE);
                self.ram
                    .store_u64(slot, (IOVA + t) | pte::VALID)
                    .expect("table");
                t
            };
        }
        let slot = table + ((va >> pte::level_shift(0)) & 511) * 8;
        let leaf = pte::VALID | pte::WRITABLE | (pa & pte::ADDR_MASK);
        self.ram.store_u64(slot, leaf).expect("leaf");
    }

    fn submit(&mut self, dwords: &[u32]) {
        let ring =
            u64::from(self.rig.reg(regs::queue_reg(0, regs::Q_RING_BASE_LO)) & !0xFFF) - IOVA;
        for d in dwords {
            self.ram
                .store_u32(ring + u64::from(self.tail), *d)
                .expect("ring");
            self.tail = (self.tail + 4) % RING;
        }
        let q = |reg| regs::queue_reg(0, reg);
        self.rig.set_reg(q(regs::Q_TAIL), self.tail);
        self.rig.set_reg(q(regs::Q_DOORBELL), 1);
    }
}

fn vector_of(cause: u32) -> usize {
    cause.trailing_zeros() as usize
}

#[test]
fn config_space_bars_and_irqs_describe_simgpu() {
    let mut rig = Rig::start();
    let id = rig.cfg32(0);
    assert_eq!(id & 0xffff, u32::from(simgpu::pci::VENDOR_ID));
    assert_eq!(id >> 16, u32::from(simgpu::pci::DEVICE_ID));
    assert_eq!(rig.cfg32(8) >> 24, u32::from(simgpu::pci::CLASS));
    // An unaligned byte read of the config space (QEMU reads bytes and words too).
    let class = rig.read(VFIO_PCI_CONFIG_REGION_INDEX, 0x0b, 1);
    assert_eq!(class, vec![simgpu::pci::CLASS]);
    // BAR0 is the register file, trapped.
    assert_eq!(rig.reg(regs::ID), id);
    let bar0 = rig.client.region(VFIO_PCI_BAR0_REGION_INDEX).expect("bar0");
    assert_eq!(bar0.size, regs::BAR0_SIZE);
    assert_eq!(bar0.flags & VFIO_REGION_INFO_FLAG_MMAP, 0);
    // BAR2 is mmappable VRAM: the fd comes with one sparse area over the whole BAR.
    let vram = simgpu::Config::default().sanitized().vram_size;
    let bar2 = rig.client.region(VFIO_PCI_BAR2_REGION_INDEX).expect("bar2");
    assert_eq!(bar2.size, vram);
    assert_ne!(bar2.flags & VFIO_REGION_INFO_FLAG_MMAP, 0);
    assert!(bar2.file_offset.is_some(), "BAR2 carries its fd");
    assert_eq!(bar2.sparse_areas.len(), 1);
    assert_eq!(
        (bar2.sparse_areas[0].offset, bar2.sparse_areas[0].size),
        (0, vram)
    );
    let msix = rig
        .client
        .get_irq_info(VFIO_PCI_MSIX_IRQ_INDEX)
        .expect("irq info");
    assert_eq!(msix.count, MSIX_VECTORS);
    assert_ne!(msix.flags & VFIO_IRQ_INFO_EVENTFD, 0);
    // Out-of-range and odd-sized register reads are all-ones, never a dead server.
    assert_eq!(rig.read(VFIO_PCI_BAR0_REGION_INDEX, 2, 2), vec![0xff, 0xff]);
    assert_eq!(
        rig.read(VFIO_PCI_BAR0_REGION_INDEX, regs::BAR0_SIZE, 4),
        vec![0xff; 4]
    );
    assert_eq!(rig.reg(regs::ID), id);
    rig.finish();
}

#[test]
fn bar2_mapping_and_trapped_accesses_see_the_same_vram() {
    let mut rig = Rig::start();
    let bar2 = rig.client.region(VFIO_PCI_BAR2_REGION_INDEX).expect("bar2");
    let fo = bar2.file_offset.as_ref().expect("fd");
    let view = Mapping::new(fo.file(), fo.start(), bar2.size).expect("mmap BAR2");
    view.store_u32(0x1000, 0x1234_5678).expect("store");
    assert_eq!(
        rig.read(VFIO_PCI_BAR2_REGION_INDEX, 0x1000, 4),
        0x1234_5678u32.to_le_bytes()
    );
    rig.client
        .region_write(
            VFIO_PCI_BAR2_REGION_INDEX,
            0x2000,
            &0xdead_beefu32.to_le_bytes(),
        )
        .expect("write");
    assert_eq!(view.load_u32(0x2000), Ok(0xdead_beef));
    let backend = rig.finish();
    assert_eq!(backend.gpu().vram().load_u32(0x1000), Ok(0x1234_5678));
}

#[test]
fn a_batch_dmas_into_guest_ram_and_raises_its_msix_eventfd() {
    let mut rig = Rig::start();
    let (_ram_fd, ram) = rig.guest_ram();
    let irqs = rig.wire_msix();
    rig.set_reg(regs::INT_MASK, (1 << MSIX_VECTORS) - 1);
    let mut drv = Driver::new(&mut rig, &ram);
    let target = drv.alloc(PAGE);
    drv.map(0x10_0000, IOVA + target);
    let mut batch = enc::store_dword(0x10_0010, 0xc0ff_ee00);
    batch.extend(enc::user_interrupt(7));
    drv.submit(&batch);
    assert!(
        wait_irq(&irqs[vector_of(regs::irq::COPY_USER)]) >= 1,
        "COPY_USER eventfd"
    );
    assert_eq!(ram.load_u32(target + 0x10), Ok(0xc0ff_ee00));
    assert_eq!(take(&irqs[vector_of(regs::irq::CTX_ERROR)]), 0);
    let status = rig.reg(regs::INT_STATUS);
    assert_ne!(status & regs::irq::COPY_USER, 0);
    let backend = rig.finish();
    assert!(backend.vectors().delivered() >= 1);
    assert_eq!(backend.guest().ranges(), vec![(IOVA, GUEST_RAM, true)]);
}

#[test]
fn dma_outside_every_mapping_is_a_device_error_not_a_crash() {
    let mut rig = Rig::start();
    let (_ram_fd, ram) = rig.guest_ram();
    let irqs = rig.wire_msix();
    rig.set_reg(regs::INT_MASK, (1 << MSIX_VECTORS) - 1);
    let mut drv = Driver::new(&mut rig, &ram);
    // A PTE pointing past guest RAM: nothing is DMA-mapped there.
    drv.map(0x20_0000, IOVA + GUEST_RAM + 0x10_0000);
    drv.submit(&enc::store_dword(0x20_0000, 1));
    assert!(
        wait_irq(&irqs[vector_of(regs::irq::CTX_ERROR)]) >= 1,
        "CTX_ERROR eventfd"
    );
    // The server still answers.
    assert_eq!(
        rig.reg(regs::ID) & 0xffff,
        u32::from(simgpu::pci::VENDOR_ID)
    );
    rig.finish();
}

#[test]
fn vectors_without_an_eventfd_stay_masked_and_disable_drops_them() {
    let mut rig = Rig::start();
    let (_ram_fd, ram) = rig.guest_ram();
    rig.set_reg(regs::INT_MASK, (1 << MSIX_VECTORS) - 1);
    // No eventfds yet: the interrupt stays pending in simgpu's masked entry.
    {
        let mut drv = Driver::new(&mut rig, &ram);
        drv.submit(&enc::user_interrupt(1));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while rig.reg(regs::INT_STATUS) & regs::irq::COPY_USER == 0 {
        assert!(Instant::now() < deadline, "the interrupt never latched");
        std::thread::sleep(Duration::from_millis(1));
    }
    let msix_pba = rig.reg(regs::MSIX_PBA);
    assert_ne!(
        msix_pba & regs::irq::COPY_USER,
        0,
        "pending in the masked entry"
    );
    // Wiring the eventfds unmasks the entry, which delivers the pending vector.
    let irqs = rig.wire_msix();
    assert!(wait_irq(&irqs[vector_of(regs::irq::COPY_USER)]) >= 1);
    // Disabling the index masks every entry again.
    rig.client
        .set_irqs(
            VFIO_PCI_MSIX_IRQ_INDEX,
            VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER,
            0,
            0,
            &[],
        )
        .expect("disable");
    let entry_ctrl = regs::MSIX_TABLE + 12;
    assert_eq!(rig.reg(entry_ctrl) & 1, 1, "vector 0 masked after disable");
    let backend = rig.finish();
    assert_eq!(
        backend.vectors().wired(),
        vec![false; MSIX_VECTORS as usize]
    );
}

#[test]
fn reset_gives_a_fresh_device_and_keeps_the_eventfds() {
    let mut rig = Rig::start();
    let irqs = rig.wire_msix();
    rig.set_reg(regs::INT_MASK, 0x3f);
    assert_eq!(rig.reg(regs::INT_MASK), 0x3f);
    rig.client.reset().expect("reset");
    assert_eq!(
        rig.reg(regs::INT_MASK),
        0,
        "registers back to their reset values"
    );
    let entry_ctrl = regs::MSIX_TABLE + 12;
    assert_eq!(
        rig.reg(entry_ctrl) & 1,
        0,
        "vector 0 still unmasked: its eventfd is kept"
    );
    drop(irqs);
    let backend = rig.finish();
    assert_eq!(backend.resets(), 1);
}

#[test]
fn dma_unmap_removes_the_range() {
    let mut rig = Rig::start();
    let (_fd, _ram) = rig.guest_ram();
    rig.client.dma_unmap(IOVA, GUEST_RAM).expect("unmap");
    let backend = rig.finish();
    assert!(backend.guest().ranges().is_empty());
}
