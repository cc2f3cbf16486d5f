//! gpud's platform-independent bring-up (`pcid_driver::bring_up`, the one `gpud vfio` uses)
//! on the vfio-user device, through the `vfio_user` crate's client standing in for the
//! guest kernel's VFIO: BAR0 trapped over the socket, BAR2 the VRAM memfd mapped, DMA chunks
//! memfds DMA-mapped at IOVAs, MSI-X one eventfd for every vector. Then the whole stack: the
//! host transport and a libgpu client binding and executing.

use gpu_scheme::driver::DriverError;
use gpud::driver::BoExporter;
use gpud::platform::host::{HostConfig, HostDaemon};
use gpud::platform::pcid_driver::{bring_up, Core, IrqRouting, PcidConfig};
use gpud::platform::sys::{BarMapping, DmaBuffer, DmaMemory, SysError};
use gpud::types::{CpuVa, PhysAddr};
use libgpu::cmd::Batch;
use libgpu::flags::{BoCreateFlags, EngineClass, Placement, VmCreateFlags};
use libgpu::{Bo, Device, ExecQueue, Syncobj, Timeout, Vm};
use parking_lot::Mutex;
use rustix::event::{eventfd, EventfdFlags};
use rustix::fd::{AsRawFd, OwnedFd};
use simgpu::PhysMemory;
use simgpu_vfio_user::mapping::{memfd, Mapping};
use simgpu_vfio_user::{SimGpuBackend, MSIX_VECTORS};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use vfio_bindings::bindings::vfio::{
    VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_IRQ_SET_DATA_EVENTFD, VFIO_PCI_BAR0_REGION_INDEX,
    VFIO_PCI_BAR2_REGION_INDEX, VFIO_PCI_MSIX_IRQ_INDEX,
};
use vfio_user::{Client, Server};

const IOVA_BASE: u64 = 0x1_0000_0000;

/// BAR0 over the socket: every access a vfio-user message, as QEMU traps it.
struct SocketBar {
    client: Arc<Mutex<Client>>,
    len: u64,
}

/// BAR2 mapped from the fd the server sent.
struct MappedBar(Mapping);

enum TestBar {
    Socket(SocketBar),
    Mapped(MappedBar),
}

impl BarMapping for TestBar {
    fn base(&self) -> CpuVa {
        CpuVa(0)
    }
    fn len(&self) -> u64 {
        match self {
            Self::Socket(b) => b.len,
            Self::Mapped(m) => m.0.len(),
        }
    }
    fn read32(&self, offset: u64) -> Option<u32> {
        if offset % 4 != 0 || offset + 4 > self.len() {
            return None;
        }
        match self {
            Self::Socket(b) => {
                let mut v = [0u8; 4];
                b.client
                    .lock()
                    .region_read(VFIO_PCI_BAR0_REGION_INDEX, offset, &mut v)
                    .ok()?;
                Some(u32::from_le_bytes(v))
            }
            Self::Mapped(m) => m.0.load_u32(offset).ok(),
        }
    }
    fn write32(&mut self, offset: u64, value: u32) -> bool {
        if offset % 4 != 0 || offset + 4 > self.len() {
            return false;
        }
        match self {
            Self::Socket(b) => b
                .client
                .lock()
                .region_write(VFIO_PCI_BAR0_REGION_INDEX, offset, &value.to_le_bytes())
                .is_ok(),
            Self::Mapped(m) => m.0.store_u32(offset, value).is_ok(),
        }
    }
}

struct Chunk {
    fd: OwnedFd,
    mem: Arc<Mapping>,
    iova: u64,
}

/// DMA memory: memfd chunks DMA-mapped at consecutive IOVAs, like `gpud vfio`'s.
struct TestDma {
    client: Arc<Mutex<Client>>,
    next: u64,
    chunks: Arc<Mutex<Vec<Chunk>>>,
}

impl DmaMemory for TestDma {
    fn alloc_zeroed(&mut self, len: u64) -> Result<DmaBuffer, SysError> {
        let len = len.next_multiple_of(4096);
        let fd = memfd("dma", len).map_err(|_| SysError::new(12))?;
        let mem = Arc::new(Mapping::new(&fd, 0, len).map_err(|_| SysError::new(12))?);
        let iova = self.next;
        self.client
            .lock()
            .dma_map(0, iova, len, fd.as_raw_fd())
            .map_err(|_| SysError::new(12))?;
        self.next += len;
        self.chunks.lock().push(Chunk { fd, mem, iova });
        // The CPU address is only a label here: CPU access goes through `access`.
        Ok(DmaBuffer {
            cpu: CpuVa(iova),
            phys: PhysAddr(iova),
            len,
        })
    }
    fn free(&mut self, buf: DmaBuffer) -> Result<(), SysError> {
        self.chunks.lock().retain(|c| c.iova != buf.phys.get());
        Ok(())
    }
    fn access(&self, buf: &DmaBuffer) -> Result<Arc<dyn PhysMemory>, SysError> {
        let chunks = self.chunks.lock();
        let c = chunks
            .iter()
            .find(|c| c.iova == buf.phys.get())
            .ok_or(SysError::new(22))?;
        Ok(c.mem.clone())
    }
}

/// Hands out a dup of the chunk's memfd at the BO's offset (a test stand-in for udmabuf,
/// which a CI host may not have; it shows the client the whole chunk).
struct ChunkExporter(Arc<Mutex<Vec<Chunk>>>);

impl BoExporter for ChunkExporter {
    fn export(&self, ranges: &[(CpuVa, u64)]) -> Result<(OwnedFd, u64), DriverError> {
        let [(cpu, len)] = ranges else {
            return Err(DriverError::NotSupported("test exporter: one range only"));
        };
        let chunks = self.0.lock();
        let c = chunks
            .iter()
            .find(|c| cpu.0 >= c.iova && cpu.0 + len <= c.iova + c.mem.len())
            .ok_or(DriverError::NotSupported("outside the pool"))?;
        let fd = c.fd.try_clone().map_err(|_| DriverError::NoMemory)?;
        Ok((fd, cpu.0 - c.iova))
    }
}

fn socket(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("gpud-vu-{name}-{}.sock", std::process::id()))
}

#[test]
fn gpud_serves_clients_on_simgpu_behind_vfio_user() {
    let dev_sock = socket("dev");
    let _ = std::fs::remove_file(&dev_sock);
    let mut backend = SimGpuBackend::new(simgpu::Config::default()).expect("backend");
    let server =
        Server::new(&dev_sock, true, SimGpuBackend::irqs(), backend.regions()).expect("server");
    let device = std::thread::spawn(move || {
        server.run(&mut backend).expect("server loop");
        backend
    });
    let client = Arc::new(Mutex::new(Client::new(&dev_sock).expect("connect")));

    // MSI-X: every vector to one eventfd, like `gpud vfio`.
    let irq_fd = eventfd(0, EventfdFlags::CLOEXEC).expect("eventfd");
    let fds = vec![irq_fd.as_raw_fd(); MSIX_VECTORS as usize];
    client
        .lock()
        .set_irqs(
            VFIO_PCI_MSIX_IRQ_INDEX,
            VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER,
            0,
            MSIX_VECTORS,
            &fds,
        )
        .expect("set irqs");
    let bar2 = {
        let c = client.lock();
        let r = c.region(VFIO_PCI_BAR2_REGION_INDEX).expect("bar2");
        let fo = r.file_offset.as_ref().expect("BAR2 fd");
        Mapping::new(fo.file(), fo.start(), r.size).expect("map BAR2")
    };
    let registers = TestBar::Socket(SocketBar {
        client: client.clone(),
        len: simgpu::regs::BAR0_SIZE,
    });
    let chunks = Arc::new(Mutex::new(Vec::new()));
    let mut dma = TestDma {
        client: client.clone(),
        next: IOVA_BASE,
        chunks: chunks.clone(),
    };
    let cfg = PcidConfig {
        dma_pool: 16 << 20,
        ..PcidConfig::default()
    };
    let Core { driver, irq, .. } = bring_up(
        registers,
        Some(TestBar::Mapped(MappedBar(bar2))),
        &mut dma,
        IrqRouting::Exclusive,
        &cfg,
    )
    .expect("bring-up over vfio-user");
    let driver = driver.with_exporter(Arc::new(ChunkExporter(chunks.clone())));

    // The interrupt thread of `gpud vfio`: eventfd → the status hook.
    let irq_hook = irq.clone();
    // (Detached: it ends with the test process.)
    std::thread::spawn(move || {
        let mut b = [0u8; 8];
        while rustix::io::read(&irq_fd, &mut b).is_ok() {
            irq_hook.service();
        }
    });

    let gpu_sock = socket("gpu");
    let mut daemon =
        HostDaemon::with_driver(driver, HostConfig::new(Some(gpu_sock.clone())), "vfio-user")
            .expect("daemon");
    let stop = daemon.stopper();
    let serve = std::thread::spawn(move || daemon.serve());

    // A client: bind, exec, read back.
    let dev = Device::open_at(&gpu_sock).expect("open");
    let vm = Vm::create(&dev, VmCreateFlags::empty()).expect("vm");
    let bo = Bo::create(&dev, 0x2000, Placement::SYSTEM, BoCreateFlags::empty()).expect("bo");
    vm.bind()
        .map(&bo, 0, 0x40_0000, 0x2000)
        .submit()
        .expect("bind");
    let map = bo.mmap().expect("mmap");
    let mut b = Batch::new();
    b.store_dword(0x40_1000, 0x5eed_0001).batch_end();
    map.write_dwords(0, b.dwords()).expect("batch");
    let queue = ExecQueue::create(&vm, EngineClass::Copy).expect("queue");
    let done = Syncobj::create(&dev, false).expect("syncobj");
    queue.exec(0x40_0000).signal(&done).submit().expect("exec");
    assert!(done.wait(Timeout::Forever).expect("wait"));
    assert_eq!(map.read_u32(0x1000), Ok(0x5eed_0001));
    assert!(
        irq.calls() > 0,
        "completions came through the MSI-X eventfd"
    );

    drop((map, queue, done, bo, vm, dev));
    stop.store(true, Ordering::Release);
    serve.join().expect("serve thread").expect("serve");
    client.lock().shutdown().expect("shutdown");
    let backend = device.join().expect("device thread");
    assert!(backend.vectors().delivered() > 0);
    assert!(
        backend.guest().ranges().len() >= 4,
        "the pool's chunks were DMA-mapped"
    );
}
