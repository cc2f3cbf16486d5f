//! Isolation of CPU mappings on the host transport: the memory a client receives for a BO
//! mapping is that BO and nothing else (not other clients' BOs, not page tables), a freed
//! BO's stale mapping never shows the next owner's data, a mapped BO never moves under its
//! mapping, and VRAM BOs are mapped like system BOs.

use gpu_scheme::host::shm::SharedMapping;
use gpu_scheme::host::HostHandle;
use gpu_scheme::uapi::flags::{BoCreateFlags, EngineClass, Placement, VmCreateFlags};
use gpu_scheme::uapi::wire::BoCreateArgs;
use gpu_scheme::uapi::{encode, read_args, BoCreateRequest, BoId, Request};
use gpu_tests::{spawn_client, Daemon, CHILD_ENV};
use libgpu::cmd::Batch;
use libgpu::{Bo, BoMap, Device, ExecQueue, Syncobj, Timeout, Vm};
use rustix::fd::OwnedFd;
use rustix::io::pread;
use std::path::Path;

const SECRET: &[u8; 32] = b"client A's secret: do not leak!!";
const BATCH_VA: u64 = 0x7f_0000_0000;

/// A BO created over a raw host connection, with its derived handle (`bo/<id>`).
struct RawBo {
    dev: HostHandle,
    id: u32,
    handle: Option<HostHandle>,
    size: u64,
}

impl RawBo {
    fn create(socket: &Path, size: u64, placement: Placement) -> RawBo {
        let root = HostHandle::connect(socket).expect("connect");
        let dev = root.open("card0").expect("open card0");
        let req = BoCreateRequest {
            size,
            placement,
            flags: BoCreateFlags::empty(),
            vm: None,
        };
        let (op, mut bytes) = encode(&Request::BoCreate(req));
        dev.call(&mut bytes, [op, 0, 0]).expect("BO_CREATE");
        let id = read_args::<BoCreateArgs>(&bytes).expect("args").bo_id;
        let handle = dev.dup(&format!("bo/{id}")).expect("bo handle");
        RawBo {
            dev,
            id,
            handle: Some(handle),
            size,
        }
    }

    /// What the server passes for a mapping of the whole BO.
    fn memory(&self) -> (OwnedFd, u64) {
        let h = self.handle.as_ref().expect("open handle");
        h.mmap_fd(0, self.size as usize).expect("mmap fd")
    }

    /// Closes the BO handle and destroys the BO: its backing is freed.
    fn destroy(mut self) {
        drop(self.handle.take());
        let (op, mut bytes) = encode(&Request::BoDestroy(BoId(self.id)));
        self.dev.call(&mut bytes, [op, 0, 0]).expect("BO_DESTROY");
    }
}

/// Everything readable through `fd` (pread stops at the end of the object: SIGBUS-free).
fn read_all(fd: &OwnedFd) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = pread(fd, &mut buf, out.len() as u64).expect("pread");
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n]);
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Client B's body: for a system and a VRAM BO of its own, the fd it receives is exactly its
/// BO; nothing of A's is reachable through it, at any offset.
fn probe_as_client_b(socket: &Path) {
    for placement in [
        Placement::SYSTEM,
        Placement::VRAM,
        Placement::SYSTEM | Placement::VRAM,
    ] {
        let mine = RawBo::create(socket, 0x2000, placement);
        let (fd, offset) = mine.memory();
        // Everything the object holds, from its start: no other client's bytes.
        let all = read_all(&fd);
        assert!(
            !contains(&all, SECRET),
            "{placement:?}: A's secret through B's fd"
        );
        assert_eq!(offset, 0, "the BO starts the object");
        let st = rustix::fs::fstat(&fd).expect("fstat");
        assert_eq!(
            st.st_size, 0x2000,
            "{placement:?}: the object is exactly the BO"
        );
        assert_eq!(all.len(), 0x2000);
        let mut buf = [0u8; 64];
        for off in [
            0x2000u64,
            0x1_0000,
            1 << 20,
            32 << 20,
            63 << 20,
            u64::MAX / 2,
        ] {
            assert_eq!(
                pread(&fd, &mut buf, off).unwrap_or(0),
                0,
                "data past the BO at {off:#x}"
            );
        }
        assert!(
            rustix::fs::ftruncate(&fd, 64 << 20).is_err(),
            "the object cannot grow"
        );
        let h = mine.handle.as_ref().expect("handle");
        assert!(
            h.mmap_fd(0x2000, 0x1000).is_err(),
            "mmap past the BO is refused"
        );
        assert!(
            h.mmap_fd(0, 0x3000).is_err(),
            "mmap longer than the BO is refused"
        );
    }
}

#[test]
fn client_b_cannot_reach_client_a_memory_through_its_mapping_fd() {
    if let Ok(sock) = std::env::var(CHILD_ENV) {
        probe_as_client_b(Path::new(&sock));
        return;
    }
    let d = Daemon::start();
    let a = d.device();
    // A's secrets in system memory (written through A's mapping), in VRAM (copied there by
    // the GPU), and in page tables and rings of a live VM.
    let r = Runner::new(&a);
    let mut keep = Vec::new();
    for (i, placement) in [Placement::SYSTEM, Placement::VRAM].into_iter().enumerate() {
        let bo = Bo::create(&a, 0x4000, placement, BoCreateFlags::empty()).expect("A's BO");
        r.vm.bind()
            .map(&bo, 0, 0x10_0000 * (i as u64 + 1), 0x4000)
            .submit()
            .expect("bind");
        keep.push(bo);
    }
    keep[0]
        .mmap()
        .expect("map")
        .write(0x1000, SECRET)
        .expect("write");
    r.run(Batch::new().copy(0x10_1000, 0x20_1000, 32));
    let status = spawn_client(
        "client_b_cannot_reach_client_a_memory_through_its_mapping_fd",
        d.socket(),
    )
    .status()
    .expect("client B runs");
    assert!(status.success(), "client B: {status}");
    let mut buf = [0u8; 32];
    keep[0]
        .mmap()
        .expect("map")
        .read(0x1000, &mut buf)
        .expect("read");
    assert_eq!(&buf, SECRET, "A's data is intact");
    keep[1]
        .mmap()
        .expect("VRAM map")
        .read(0x1000, &mut buf)
        .expect("read");
    assert_eq!(&buf, SECRET, "the GPU put A's secret in VRAM too");
}

#[test]
fn stale_mapping_of_a_freed_bo_never_sees_the_next_owner() {
    let d = Daemon::start();
    for placement in [Placement::SYSTEM, Placement::VRAM] {
        let a = RawBo::create(d.socket(), 0x4000, placement);
        let (fd, offset) = a.memory();
        let stale = SharedMapping::map(&fd, offset, 0x4000).expect("A maps");
        stale.write(0, SECRET).expect("A writes");
        a.destroy();
        // B takes memory until it has certainly been given A's old range, and writes it all.
        let b = d.device();
        let mut bos = Vec::new();
        for i in 0..64u8 {
            let bo = Bo::create(&b, 0x4000, placement, BoCreateFlags::empty()).expect("B's BO");
            let map = bo.mmap().expect("B maps");
            let mut first = [0u8; 32];
            map.read(0, &mut first).expect("read");
            assert_eq!(first, [0u8; 32], "B's new BO {i} starts zeroed");
            map.write(0, &[0xB0 ^ i; 32]).expect("B writes");
            bos.push(bo);
        }
        let mut seen = [0u8; 32];
        stale.read(0, &mut seen).expect("stale read");
        assert_eq!(
            &seen, SECRET,
            "{placement:?}: A's stale mapping keeps A's bytes"
        );
        stale.write(0, &[0xEE; 32]).expect("stale write");
        for bo in &bos {
            let mut v = [0u8; 32];
            bo.mmap().expect("map").read(0, &mut v).expect("read");
            assert_ne!(v, [0xEE; 32], "a stale mapping wrote into B's BO");
        }
    }
}

/// A VM with a copy queue and a batch buffer that runs arbitrary batches.
struct Runner {
    vm: Vm,
    queue: ExecQueue,
    _batch: Bo,
    map: BoMap,
    done: Syncobj,
}

impl Runner {
    fn new(dev: &Device) -> Runner {
        let vm = Vm::create(dev, VmCreateFlags::empty()).expect("vm");
        let batch =
            Bo::create(dev, 0x1000, Placement::SYSTEM, BoCreateFlags::empty()).expect("batch");
        vm.bind()
            .map(&batch, 0, BATCH_VA, 0x1000)
            .submit()
            .expect("batch bind");
        let map = batch.mmap().expect("batch map");
        let queue = ExecQueue::create(&vm, EngineClass::Copy).expect("queue");
        let done = Syncobj::create(dev, false).expect("syncobj");
        Runner {
            vm,
            queue,
            _batch: batch,
            map,
            done,
        }
    }

    fn run(&self, b: &mut Batch) {
        b.batch_end();
        self.map.write_dwords(0, b.dwords()).expect("batch fits");
        self.queue
            .exec(BATCH_VA)
            .signal(&self.done)
            .submit()
            .expect("exec");
        assert!(self.done.wait(Timeout::Forever).expect("wait"), "batch ran");
    }
}

#[test]
fn vram_bo_is_mapped_and_gpu_and_cpu_see_each_others_writes() {
    let d = Daemon::start();
    let dev = d.device();
    let r = Runner::new(&dev);
    let vram = Bo::create(&dev, 0x4000, Placement::VRAM, BoCreateFlags::empty()).expect("vram");
    let sys = Bo::create(&dev, 0x4000, Placement::SYSTEM, BoCreateFlags::empty()).expect("sys");
    let (vram_va, sys_va) = (0x20_0000, 0x40_0000);
    r.vm.bind()
        .map(&vram, 0, vram_va, 0x4000)
        .map(&sys, 0, sys_va, 0x4000)
        .submit()
        .expect("bind");
    let vmap = vram.mmap().expect("VRAM mmap");
    vmap.write(0x2000, SECRET).expect("CPU writes VRAM");
    r.run(
        Batch::new()
            .copy(vram_va + 0x2000, sys_va, 32)
            .store_dword(vram_va + 0x3000, 0x5EED),
    );
    let mut got = [0u8; 32];
    sys.mmap()
        .expect("sys map")
        .read(0, &mut got)
        .expect("read");
    assert_eq!(&got, SECRET, "the GPU read what the CPU wrote into VRAM");
    assert_eq!(
        vmap.read_u32(0x3000).expect("read"),
        0x5EED,
        "the CPU sees the GPU's store"
    );
}

/// Fills VRAM with VRAM-only BOs (evicting every unpinned migratable BO); returns them.
fn fill_vram(dev: &Device) -> Vec<Bo> {
    let mut fill = Vec::new();
    while let Ok(bo) = Bo::create(dev, 1 << 20, Placement::VRAM, BoCreateFlags::empty()) {
        fill.push(bo);
    }
    while let Ok(bo) = Bo::create(dev, 0x1000, Placement::VRAM, BoCreateFlags::empty()) {
        fill.push(bo);
    }
    fill
}

#[test]
fn mapped_migratable_bo_never_moves_under_its_mapping() {
    let d = Daemon::start();
    let dev = d.device();
    let r = Runner::new(&dev);
    let both = Placement::SYSTEM | Placement::VRAM;
    // Evicted while unmapped, then mapped: validation leaves it in system memory, so the GPU
    // keeps writing the pages the mapping shows.
    let e = Bo::create(&dev, 0x2000, both, BoCreateFlags::empty()).expect("migratable");
    r.vm.bind()
        .map(&e, 0, 0x30_0000, 0x2000)
        .submit()
        .expect("bind");
    r.run(Batch::new().store_dword(0x30_0000, 0xAAAA));
    let fill = fill_vram(&dev);
    let emap = e.mmap().expect("map evicted BO");
    assert_eq!(
        emap.read_u32(0).expect("read"),
        0xAAAA,
        "the eviction kept the bytes"
    );
    drop(fill);
    emap.write_u64(0x100, 0x00C0_FFEE).expect("CPU writes");
    r.run(
        Batch::new()
            .store_dword(0x30_0020, 0x2222)
            .copy(0x30_0100, 0x30_0200, 8),
    );
    assert_eq!(
        emap.read_u32(0x20).expect("read"),
        0x2222,
        "GPU store seen by the mapping"
    );
    assert_eq!(
        emap.read_u64(0x200).expect("read"),
        0x00C0_FFEE,
        "GPU read the CPU's write"
    );
    // Mapped while in VRAM: memory pressure cannot move it; GPU and mapping agree.
    let m = Bo::create(&dev, 0x2000, both, BoCreateFlags::empty()).expect("migratable");
    r.vm.bind()
        .map(&m, 0, 0x20_0000, 0x2000)
        .submit()
        .expect("bind");
    let map = m.mmap().expect("map");
    let fill = fill_vram(&dev);
    r.run(Batch::new().store_dword(0x20_0010, 0x1111));
    assert_eq!(map.read_u32(0x10).expect("read"), 0x1111);
    drop(fill);
}
