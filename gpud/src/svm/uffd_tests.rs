//! Tests of the host memory manager against this test process's own address space: it is
//! both the client (it maps memfds and unmaps them) and the pager (its userfaultfd is read
//! by the shared reader thread).

use super::*;
use crate::hw::sim::dma::HeapDma;
use crate::mem::bo::SharedWindows;
use crate::mem::shm::{MapBudget, ShmPool};
use crate::mem::vram::VramAllocator;
use rustix::mm::{mmap, munmap, MapFlags, ProtFlags};
use simgpu::PhysMemory;
use std::time::{Duration, Instant};

const P: u64 = 4096;

fn pools() -> (Arc<Pools>, Arc<ShmPool>, Arc<HeapDma>) {
    let budget = MapBudget::new(1024);
    let sys = Arc::new(ShmPool::with_budget("uffd-test", 1 << 20, budget.clone()).unwrap());
    let vram = Arc::new(ShmPool::with_budget("uffd-test", 1 << 20, budget).unwrap());
    let windows = SharedWindows {
        sys: sys.clone(),
        vram: vram.clone(),
    };
    let dma = Arc::new(HeapDma::new(sys.clone()));
    let pools = Pools::with_sharing(
        Arc::new(parking_lot::Mutex::new(VramAllocator::new(1 << 20))),
        vram,
        dma.clone(),
        Some(windows),
    );
    (pools, sys, dma)
}

/// Records events.
#[derive(Default)]
struct Log(Mutex<Vec<MmEvent>>);

impl MmListener for Log {
    fn event(&self, e: MmEvent) {
        self.0.lock().push(e);
    }
}

impl Log {
    fn wait_for(&self, want: usize) -> Vec<MmEvent> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.0.lock().len() < want && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        self.0.lock().clone()
    }
}

/// A sealed memfd of `pages` pages (page i filled with i + 1), mapped shared; its address.
fn client_memory(pages: u64) -> (OwnedFd, u64) {
    use rustix::fs::{fcntl_add_seals, memfd_create, MemfdFlags, SealFlags};
    let fd = memfd_create("client", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING).unwrap();
    rustix::fs::ftruncate(&fd, pages * P).unwrap();
    for i in 0..pages {
        rustix::io::pwrite(&fd, &vec![i as u8 + 1; P as usize], i * P).unwrap();
    }
    fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW).unwrap();
    let prot = ProtFlags::READ | ProtFlags::WRITE;
    // SAFETY: a fresh shared mapping at an address the kernel picks; the tests unmap it.
    let p = unsafe {
        mmap(
            std::ptr::null_mut(),
            (pages * P) as usize,
            prot,
            MapFlags::SHARED,
            &fd,
            0,
        )
    }
    .unwrap();
    (fd, p as u64)
}

/// A memory manager of this process, or `None` where userfaultfd is not available.
fn new_mm(pools: &Arc<Pools>, limits: MmLimits) -> Option<UffdMm> {
    let created = uffd::create(uffd::EVENT_FEATURES).ok()?;
    Some(UffdMm::new(created.fd, created.full_mode, pools.clone(), limits).unwrap())
}

fn range(start: u64, pages: u64) -> CpuRange {
    CpuRange::new(start, pages * P).unwrap()
}

#[test]
fn pages_are_the_clients_memfd_pages_and_go_back_when_dropped() {
    let (pools, sys, dma) = pools();
    let Some(mm) = new_mm(&pools, MmLimits::default()) else {
        return;
    };
    let (fd, va) = client_memory(4);
    mm.add_region(range(va, 4), fd.try_clone().unwrap(), 0)
        .unwrap();
    let free_before = dma.free_bytes();
    let pinned = mm.get_pages(range(va + P, 2), true).unwrap();
    assert_eq!(pinned.pages().len(), 2);
    assert_eq!(mm.pinned_bytes(), 2 * P);
    let mut b = [0u8; 4];
    sys.read(pinned.pages()[0].get(), &mut b).unwrap();
    assert_eq!(b, [2; 4], "the device reads the client's page");
    sys.write(pinned.pages()[1].get(), &[0xaa; 4]).unwrap();
    // SAFETY: the test's own shared mapping, still mapped.
    let cpu = unsafe { ((va + 2 * P) as *const u8).read_volatile() };
    assert_eq!(cpu, 0xaa, "the client sees the device's write (same page)");
    let place = pinned.pages()[0].get();
    drop(pinned);
    assert_eq!(mm.pinned_bytes(), 0);
    assert_eq!(dma.free_bytes(), free_before, "the places went back");
    sys.read(place, &mut b).unwrap();
    assert_eq!(b, [0; 4], "the pool's memory covers the place again");
    // Outside every region: EFAULT at the first byte not covered.
    assert_eq!(
        mm.get_pages(range(va + 3 * P, 2), false).err(),
        Some(MmError::Fault { va: va + 4 * P })
    );
    // SAFETY: the test's mapping.
    unsafe { munmap(va as *mut _, (4 * P) as usize) }.unwrap();
}

#[test]
fn munmap_is_an_unmap_event_and_the_region_is_forgotten() {
    let (pools, _, _) = pools();
    let Some(mm) = new_mm(&pools, MmLimits::default()) else {
        return;
    };
    let log = Arc::new(Log::default());
    mm.set_listener(log.clone());
    let (fd, va) = client_memory(3);
    mm.add_region(range(va, 3), fd, 0).unwrap();
    // The middle page goes: a munmap returns only once the reader read its event.
    // SAFETY: the test's mapping.
    unsafe { munmap((va + P) as *mut _, P as usize) }.unwrap();
    assert_eq!(log.wait_for(1), vec![MmEvent::Unmap(range(va + P, 1))]);
    assert!(mm.events_read() >= 1);
    assert_eq!(mm.regions(), 2, "the region was cut around the hole");
    assert!(mm.get_pages(range(va, 1), false).is_ok());
    assert_eq!(
        mm.get_pages(range(va, 2), false).err(),
        Some(MmError::Fault { va: va + P })
    );
    drop(mm.get_pages(range(va + 2 * P, 1), false).unwrap());
    // SAFETY: the rest of the test's mapping.
    unsafe { munmap(va as *mut _, (3 * P) as usize) }.unwrap();
    assert_eq!(log.wait_for(2)[1], MmEvent::Unmap(range(va, 3)));
    assert_eq!(mm.regions(), 0);
}

#[test]
fn mremap_moves_the_region_and_madvise_remove_is_reported() {
    let (pools, sys, _) = pools();
    let Some(mm) = new_mm(&pools, MmLimits::default()) else {
        return;
    };
    let log = Arc::new(Log::default());
    mm.set_listener(log.clone());
    let (fd, va) = client_memory(2);
    mm.add_region(range(va, 2), fd, 0).unwrap();
    // SAFETY: the test's mapping; MAYMOVE lets the kernel pick the new place.
    let to = unsafe {
        rustix::mm::mremap(
            va as *mut _,
            (2 * P) as usize,
            (4 * P) as usize,
            rustix::mm::MremapFlags::MAYMOVE,
        )
    }
    .unwrap() as u64;
    if to == va {
        // Grown in place: no move to observe on this run.
        // SAFETY: the test's mapping.
        unsafe { munmap(va as *mut _, (4 * P) as usize) }.unwrap();
        return;
    }
    let events = log.wait_for(2);
    assert_eq!(
        events[0],
        MmEvent::Remap {
            from: range(va, 2),
            to
        }
    );
    assert_eq!(events[1], MmEvent::Unmap(range(va, 2)));
    let moved = mm.get_pages(range(to, 2), false).unwrap();
    let mut b = [0u8; 1];
    sys.read(moved.pages()[1].get(), &mut b).unwrap();
    assert_eq!(b, [2], "the moved region still maps the same memfd pages");
    drop(moved);
    assert!(mm.get_pages(range(va, 1), false).is_err());
    // SAFETY: the moved mapping.
    unsafe { rustix::mm::madvise(to as *mut _, P as usize, rustix::mm::Advice::LinuxRemove) }
        .unwrap();
    assert_eq!(log.wait_for(3)[2], MmEvent::Remove(range(to, 1)));
    // SAFETY: the test's mapping.
    unsafe { munmap(to as *mut _, (4 * P) as usize) }.unwrap();
}

#[test]
fn the_mapping_at_an_address_is_its_run_of_regions() {
    let (pools, _, _) = pools();
    let Some(mm) = new_mm(&pools, MmLimits::default()) else {
        return;
    };
    let (fd, va) = client_memory(4);
    mm.add_region(range(va, 1), fd.try_clone().unwrap(), 0)
        .unwrap();
    mm.add_region(range(va + P, 2), fd.try_clone().unwrap(), P)
        .unwrap();
    assert_eq!(mm.mapping_at(va + 2 * P + 8), Ok(range(va, 3)));
    assert_eq!(mm.mapping_at(va + 8), Ok(range(va, 3)));
    assert_eq!(
        mm.mapping_at(va + 3 * P),
        Err(MmError::Fault { va: va + 3 * P })
    );
    // SAFETY: the test's mapping.
    unsafe { munmap(va as *mut _, (4 * P) as usize) }.unwrap();
}

#[test]
fn registrations_are_checked_and_limited() {
    let (pools, _, _) = pools();
    let Some(mm) = new_mm(&pools, MmLimits { max_regions: 2 }) else {
        return;
    };
    let (fd, va) = client_memory(4);
    mm.add_region(range(va, 1), fd.try_clone().unwrap(), 0)
        .unwrap();
    assert!(matches!(
        mm.add_region(range(va, 2), fd.try_clone().unwrap(), 0),
        Err(RegisterError::Overlap { .. })
    ));
    assert!(matches!(
        mm.add_region(range(va + P, 1), fd.try_clone().unwrap(), 4 * P),
        Err(RegisterError::Memfd(_))
    ));
    mm.add_region(range(va + P, 1), fd.try_clone().unwrap(), P)
        .unwrap();
    assert!(matches!(
        mm.add_region(range(va + 2 * P, 1), fd.try_clone().unwrap(), 2 * P),
        Err(RegisterError::TooMany { limit: 2 })
    ));
    // A range the client does not map cannot be registered with its userfaultfd.
    let unmapped = new_mm(&pools, MmLimits::default()).unwrap();
    // SAFETY: the test's mapping.
    unsafe { munmap(va as *mut _, (4 * P) as usize) }.unwrap();
    assert!(matches!(
        unmapped.add_region(range(va, 1), fd.try_clone().unwrap(), 0),
        Err(RegisterError::Register(_))
    ));
    // Not a userfaultfd.
    let not = UffdMm::new(fd, false, pools.clone(), MmLimits::default());
    assert!(matches!(not, Err(RegisterError::NotUffd)));
}

#[test]
fn shutdown_is_gone_for_the_listener_and_every_later_call() {
    let (pools, _, _) = pools();
    let Some(mm) = new_mm(&pools, MmLimits::default()) else {
        return;
    };
    let log = Arc::new(Log::default());
    mm.set_listener(log.clone());
    let (fd, va) = client_memory(1);
    mm.add_region(range(va, 1), fd.try_clone().unwrap(), 0)
        .unwrap();
    let held = mm.get_pages(range(va, 1), false).unwrap();
    mm.shutdown();
    mm.shutdown();
    assert_eq!(log.wait_for(1), vec![MmEvent::Gone]);
    assert_eq!(mm.get_pages(range(va, 1), false).err(), Some(MmError::Gone));
    assert!(matches!(
        mm.add_region(range(va, 1), fd, 0),
        Err(RegisterError::Gone)
    ));
    // Pages pinned before stay reachable until dropped (the core drops them after zapping).
    assert_eq!(held.pages().len(), 1);
    drop(held);
    assert_eq!(mm.pinned_bytes(), 0);
    // The userfaultfd was released: the client's munmap does not wait for a reader.
    drop(mm);
    // SAFETY: the test's mapping.
    unsafe { munmap(va as *mut _, P as usize) }.unwrap();
}

/// A listener that stays in its first event until opened (a slow zap on the reader).
#[derive(Default)]
struct Gate {
    log: Log,
    open: Mutex<bool>,
    cond: parking_lot::Condvar,
    entered: AtomicBool,
}

impl MmListener for Gate {
    fn event(&self, e: MmEvent) {
        self.log.event(e);
        self.entered.store(true, Ordering::Release);
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut open = self.open.lock();
        while !*open && Instant::now() < deadline {
            self.cond.wait_until(&mut open, deadline);
        }
    }
}

impl Gate {
    fn open(&self) {
        *self.open.lock() = true;
        self.cond.notify_all();
    }
}

/// Maps `fd` shared at exactly `va` once the range is free (a munmap in flight removes the
/// old mapping before it waits for its event to be read); bounded.
fn map_at(fd: &OwnedFd, va: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        // SAFETY: NOREPLACE never replaces a mapping; the range is this test's.
        let got = unsafe {
            mmap(
                va as *mut _,
                P as usize,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED | MapFlags::FIXED_NOREPLACE,
                fd,
                0,
            )
        };
        match got {
            Ok(p) if p as u64 == va => return true,
            Ok(p) => {
                // SAFETY: the mapping just made (an old kernel ignored NOREPLACE).
                let _ = unsafe { munmap(p, P as usize) };
                return false;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    }
    false
}

/// A client unmaps a registered range and registers new memory at the same address right
/// after, while the reader is still busy with an earlier event (a slow zap): the
/// registration takes the pending unmap in itself and succeeds (it used to be EBUSY until
/// the reader got to the event). The listener still hears every event, in order.
#[test]
fn a_registration_right_after_munmap_takes_the_unmap_in_first() {
    let (pools, sys, _) = pools();
    let Some(mm) = new_mm(&pools, MmLimits::default()) else {
        return;
    };
    let gate = Arc::new(Gate::default());
    mm.set_listener(gate.clone());
    let (fd1, va1) = client_memory(1);
    let (fd2, va2) = client_memory(1);
    mm.add_region(range(va1, 1), fd1, 0).unwrap();
    mm.add_region(range(va2, 1), fd2, 0).unwrap();
    // The reader delivers the first unmap and stays in the listener.
    // SAFETY: the test's mapping.
    unsafe { munmap(va1 as *mut _, P as usize) }.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gate.entered.load(Ordering::Acquire) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(
        gate.entered.load(Ordering::Acquire),
        "the first event never came"
    );
    // The second munmap returns once its event is read: nobody reads it while the reader
    // is busy, so it runs on its own thread.
    // SAFETY: the test's mapping.
    let unmapper = std::thread::spawn(move || unsafe { munmap(va2 as *mut _, P as usize) });
    let (fd3, _) = {
        use rustix::fs::{fcntl_add_seals, memfd_create, MemfdFlags, SealFlags};
        let fd = memfd_create("new", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING).unwrap();
        rustix::fs::ftruncate(&fd, P).unwrap();
        rustix::io::pwrite(&fd, &[0x5a; 8], 0).unwrap();
        fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW).unwrap();
        (fd, ())
    };
    let mapped = map_at(&fd3, va2);
    let registered = mapped.then(|| mm.add_region(range(va2, 1), fd3.try_clone().unwrap(), 0));
    gate.open();
    let unmapped = unmapper.join().unwrap();
    assert!(mapped, "the address never became free");
    assert!(unmapped.is_ok());
    assert_eq!(
        registered,
        Some(Ok(())),
        "new memory at an unmapped address"
    );
    assert_eq!(
        gate.log.wait_for(2),
        vec![MmEvent::Unmap(range(va1, 1)), MmEvent::Unmap(range(va2, 1))]
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while mm.events_read() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(mm.events_read(), 2);
    // The new region resolves to the new memory.
    let pinned = mm.get_pages(range(va2, 1), false).unwrap();
    let mut b = [0u8; 1];
    sys.read(pinned.pages()[0].get(), &mut b).unwrap();
    assert_eq!(b, [0x5a]);
    drop(pinned);
    // SAFETY: the test's new mapping.
    unsafe { munmap(va2 as *mut _, P as usize) }.unwrap();
}
