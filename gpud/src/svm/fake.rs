//! A scripted, deterministic [`ClientMm`] for tests: a table "CPU page → device page" whose
//! device pages come from the device's own system memory, so a test writes "client memory"
//! through the device's memory and checks what the GPU sees.
//!
//! Owns: [`FakeMm`], its scripted address-space changes (map, unmap, remove, remap, a
//! different page at the same address, fork, gone), each delivering the event a Linux
//! kernel would (and in the same order relative to the change), and failure injection
//! (`Fault` for unmapped or read-only pages, `Again` on demand, an action run inside the next
//! `get_pages` to model an event racing a bind). Must not: be used outside tests and
//! benchmarks, or call its listener with its own lock held.
//!
//! A device page is freed only when neither the table nor a [`PinnedPages`] holds it, so a
//! missed invalidation leaves the GPU on the *old* page (stale data, never freed memory);
//! [`FakeMm::pinned`] counts live pins for leak checks.

use super::mm::{
    ClientMm, CpuRange, MmCaps, MmError, MmEvent, MmListener, PinnedPages, Revoke, Supply,
};
use crate::hw::{DmaMemory, DmaRegion};
use crate::types::{PhysAddr, PAGE_SIZE};
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// One device page backing one CPU page; freed when the last holder drops it.
struct FakePage {
    region: Option<DmaRegion>,
    dma: Arc<dyn DmaMemory>,
    writable: bool,
}

impl FakePage {
    fn addr(&self) -> PhysAddr {
        self.region.as_ref().map_or(PhysAddr(0), |r| r.addr)
    }
}

impl Drop for FakePage {
    fn drop(&mut self) {
        if let Some(r) = self.region.take() {
            let _ = self.dma.free(r);
        }
    }
}

/// Holds the pages of one `PinnedPages` and counts it.
struct Pin {
    _pages: Vec<Arc<FakePage>>,
    live: Arc<AtomicUsize>,
}

impl Drop for Pin {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

type RaceHook = Box<dyn FnOnce(&FakeMm) + Send>;

#[derive(Default)]
struct State {
    /// CPU page address → its device page.
    table: BTreeMap<u64, Arc<FakePage>>,
    gone: bool,
    /// `get_pages` calls left to answer `Again`.
    again: u32,
    /// Run inside the next `get_pages`, after the pages were resolved.
    race: Option<RaceHook>,
    /// Pages taken from the CPU side (`revoke_cpu(Evict)`: migrated to VRAM): still part
    /// of the mapping, absent from the table; a CPU access faults to gpud.
    revoked: BTreeSet<u64>,
    /// Write-protected pages (`revoke_cpu(WriteProtect)`): a CPU write faults to gpud.
    protected: BTreeSet<u64>,
}

/// The scripted fake. Every scripted change runs on the caller's thread and delivers its
/// event to the listener before returning.
pub struct FakeMm {
    dma: Arc<dyn DmaMemory>,
    state: Mutex<State>,
    listener: Mutex<Option<Arc<dyn MmListener>>>,
    caps: MmCaps,
    live_pins: Arc<AtomicUsize>,
    get_calls: AtomicU64,
    /// `mapping_at` answers `NotSupported` (a platform that cannot tell its mappings).
    hide_mappings: AtomicBool,
    /// gpud may take pages away and supply them (SVM migration): see [`FakeMm::allow_migration`].
    migration: AtomicBool,
    /// CPU faults delivered to the listener.
    cpu_faults: AtomicU64,
}

impl FakeMm {
    /// An empty address space whose pages come from `dma` (the device's system memory).
    pub fn new(dma: Arc<dyn DmaMemory>) -> Arc<Self> {
        Arc::new(Self {
            dma,
            state: Mutex::new(State::default()),
            listener: Mutex::new(None),
            caps: MmCaps {
                arbitrary_memory: true,
                ..MmCaps::default()
            },
            live_pins: Arc::new(AtomicUsize::new(0)),
            get_calls: AtomicU64::new(0),
            hide_mappings: AtomicBool::new(false),
            migration: AtomicBool::new(false),
            cpu_faults: AtomicU64::new(0),
        })
    }

    /// Whether the fake offers lazy faults, revoke and write protection (what SVM migration
    /// to VRAM needs). Off by default: the pages stay in system memory.
    pub fn allow_migration(&self, on: bool) {
        self.migration.store(on, Ordering::SeqCst);
    }

    /// CPU faults delivered to gpud so far (accesses to pages gpud took away).
    pub fn cpu_faults(&self) -> u64 {
        self.cpu_faults.load(Ordering::SeqCst)
    }

    /// Whether the page at `va` is taken from the CPU side now.
    pub fn is_revoked(&self, va: u64) -> bool {
        self.state.lock().revoked.contains(&(va & !(PAGE_SIZE - 1)))
    }

    /// A CPU access at `va` needs gpud first (the page was taken away, or write-protected
    /// for a write): the fault is delivered to the listener, as the kernel's fault handler
    /// blocks the thread until the pager resolved it.
    fn fault_to_pager(&self, va: u64, write: bool) {
        let page = va & !(PAGE_SIZE - 1);
        let needed = {
            let st = self.state.lock();
            st.revoked.contains(&page) || (write && st.protected.contains(&page))
        };
        if needed {
            self.cpu_faults.fetch_add(1, Ordering::SeqCst);
            self.emit(MmEvent::CpuFault { va, write });
        }
    }

    fn range(start: u64, len: u64) -> CpuRange {
        // PANIC: test scripts pass page-aligned constants; a bad one is a test bug.
        CpuRange::new(start, len).expect("FakeMm: script range must be page aligned")
    }

    fn fresh_page(&self, writable: bool) -> Arc<FakePage> {
        // PANIC: a test rig without system memory for its fake client is a test bug.
        let region = self
            .dma
            .alloc(PAGE_SIZE)
            .expect("FakeMm: out of device memory");
        Arc::new(FakePage {
            region: Some(region),
            dma: self.dma.clone(),
            writable,
        })
    }

    fn emit(&self, e: MmEvent) {
        let listener = self.listener.lock().clone();
        if let Some(l) = listener {
            l.event(e);
        }
    }

    /// Maps fresh zeroed pages at `[start, start + len)` (`mmap` with `MAP_FIXED`): pages
    /// already there are replaced — *different* pages at the same addresses — and an
    /// `Unmap` of the replaced part is delivered after the change, as Linux does.
    pub fn map(&self, start: u64, len: u64, writable: bool) {
        let r = Self::range(start, len);
        let replaced = {
            let mut st = self.state.lock();
            let mut replaced = false;
            for va in (r.start()..r.end()).step_by(PAGE_SIZE as usize) {
                let page = self.fresh_page(writable);
                replaced |= st.table.insert(va, page).is_some() | st.revoked.remove(&va);
                st.protected.remove(&va);
            }
            replaced
        };
        if replaced {
            self.emit(MmEvent::Unmap(r));
        }
    }

    /// `munmap`: the pages go from the table, then `Unmap` is delivered.
    pub fn unmap(&self, start: u64, len: u64) {
        let r = Self::range(start, len);
        self.drop_pages(r);
        self.emit(MmEvent::Unmap(r));
    }

    /// `madvise(DONTNEED)`: `Remove` is delivered first, then the pages are replaced by
    /// fresh zero pages (the next CPU access sees zeros).
    pub fn remove(&self, start: u64, len: u64) {
        let r = Self::range(start, len);
        self.emit(MmEvent::Remove(r));
        let mut st = self.state.lock();
        for va in (r.start()..r.end()).step_by(PAGE_SIZE as usize) {
            if let Some(old) = st.table.get(&va) {
                let writable = old.writable;
                st.table.insert(va, self.fresh_page(writable));
            } else if st.revoked.remove(&va) {
                st.table.insert(va, self.fresh_page(true));
            }
            st.protected.remove(&va);
        }
    }

    /// `mremap(from, len, to)`: the pages move to `to`; `Remap` then `Unmap(from)` are
    /// delivered (whatever was at `to` is replaced without an event of its own).
    pub fn remap(&self, from: u64, len: u64, to: u64) {
        let r = Self::range(from, len);
        {
            let mut st = self.state.lock();
            let moved: Vec<(u64, Arc<FakePage>)> = (r.start()..r.end())
                .step_by(PAGE_SIZE as usize)
                .filter_map(|va| st.table.remove(&va).map(|p| (va - from + to, p)))
                .collect();
            st.table.extend(moved);
            let revoked: Vec<u64> = (r.start()..r.end())
                .step_by(PAGE_SIZE as usize)
                .filter(|va| st.revoked.remove(va))
                .collect();
            st.revoked
                .extend(revoked.into_iter().map(|va| va - from + to));
        }
        self.emit(MmEvent::Remap { from: r, to });
        self.emit(MmEvent::Unmap(r));
    }

    /// The client forked.
    pub fn fork(&self) {
        self.emit(MmEvent::Fork);
    }

    /// The address space goes: every page leaves the table (pins keep theirs), `Gone` is
    /// delivered, and every later `get_pages` answers `Gone`.
    pub fn gone(&self) {
        {
            let mut st = self.state.lock();
            st.table.clear();
            st.revoked.clear();
            st.gone = true;
        }
        self.emit(MmEvent::Gone);
    }

    /// The next `n` calls of `get_pages` answer `Again`.
    pub fn fail_again(&self, n: u32) {
        self.state.lock().again = n;
    }

    /// Runs `f` inside the next `get_pages`, after its pages were resolved and before it
    /// returns: an address-space change racing a bind or a revalidation.
    pub fn race_next_get_pages(&self, f: impl FnOnce(&FakeMm) + Send + 'static) {
        self.state.lock().race = Some(Box::new(f));
    }

    /// CPU write of `data` at `va` (the client writing its memory).
    pub fn write(&self, va: u64, data: &[u8]) -> Result<(), MmError> {
        self.access(va, data.len() as u64, true, |pa, off, len| {
            self.dma
                .write(pa, &data[off..off + len])
                .map_err(|_| MmError::Fault { va })
        })
    }

    /// CPU read at `va` into `buf`.
    pub fn read(&self, va: u64, buf: &mut [u8]) -> Result<(), MmError> {
        let total = buf.len() as u64;
        let mut out = vec![0u8; buf.len()];
        self.access(va, total, false, |pa, off, len| {
            self.dma
                .read(pa, &mut out[off..off + len])
                .map_err(|_| MmError::Fault { va })
        })?;
        buf.copy_from_slice(&out);
        Ok(())
    }

    /// A u64 at `va`, read through the device page the table maps there now.
    pub fn read_u64(&self, va: u64) -> Result<u64, MmError> {
        let mut b = [0u8; 8];
        self.read(va, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Writes a u64 at `va`.
    pub fn write_u64(&self, va: u64, v: u64) -> Result<(), MmError> {
        self.write(va, &v.to_le_bytes())
    }

    /// The device page the table maps at `va` now.
    pub fn phys_of(&self, va: u64) -> Option<PhysAddr> {
        let page = va & !(PAGE_SIZE - 1);
        let st = self.state.lock();
        st.table
            .get(&page)
            .map(|p| PhysAddr(p.addr().get() + (va - page)))
    }

    /// How many `PinnedPages` are alive.
    pub fn pinned(&self) -> usize {
        self.live_pins.load(Ordering::SeqCst)
    }

    /// Whether `mapping_at` hides the mappings (answers `NotSupported`, as a platform that
    /// cannot tell them).
    pub fn hide_mappings(&self, hide: bool) {
        self.hide_mappings.store(hide, Ordering::SeqCst);
    }

    /// How many times `get_pages` was called.
    pub fn get_pages_calls(&self) -> u64 {
        self.get_calls.load(Ordering::SeqCst)
    }

    /// Runs `f(page address, offset in the caller's buffer, length)` per page piece.
    /// A page gpud took away faults to it first (once; still absent after that: `Fault`).
    fn access(
        &self,
        va: u64,
        len: u64,
        write: bool,
        mut f: impl FnMut(PhysAddr, usize, usize) -> Result<(), MmError>,
    ) -> Result<(), MmError> {
        let mut pos = 0u64;
        while pos < len {
            let at = va + pos;
            let in_page = at % PAGE_SIZE;
            let n = (PAGE_SIZE - in_page).min(len - pos);
            self.fault_to_pager(at, write);
            if write && self.state.lock().protected.contains(&(at - in_page)) {
                return Err(MmError::Fault { va: at });
            }
            let pa = self.phys_of(at).ok_or(MmError::Fault { va: at })?;
            f(pa, pos as usize, n as usize)?;
            pos += n;
        }
        Ok(())
    }

    fn drop_pages(&self, r: CpuRange) {
        let mut st = self.state.lock();
        for va in (r.start()..r.end()).step_by(PAGE_SIZE as usize) {
            st.table.remove(&va);
            st.revoked.remove(&va);
            st.protected.remove(&va);
        }
    }
}

impl ClientMm for FakeMm {
    fn caps(&self) -> MmCaps {
        let m = self.migration.load(Ordering::SeqCst);
        MmCaps {
            lazy_fault: m,
            revoke: m,
            write_protect: m,
            ..self.caps
        }
    }

    /// Pages gpud took away are faulted back first (Linux's `hmm_range_fault` with
    /// `REQ_FAULT` migrates device pages to RAM the same way).
    fn get_pages(&self, r: CpuRange, write: bool) -> Result<PinnedPages, MmError> {
        self.get_calls.fetch_add(1, Ordering::SeqCst);
        for va in (r.start()..r.end()).step_by(PAGE_SIZE as usize) {
            self.fault_to_pager(va, false);
        }
        let (pages, race) = {
            let mut st = self.state.lock();
            if st.gone {
                return Err(MmError::Gone);
            }
            if st.again > 0 {
                st.again -= 1;
                return Err(MmError::Again);
            }
            let mut pages = Vec::with_capacity(r.pages() as usize);
            for va in (r.start()..r.end()).step_by(PAGE_SIZE as usize) {
                match st.table.get(&va) {
                    Some(p) if p.writable || !write => pages.push(p.clone()),
                    _ => return Err(MmError::Fault { va }),
                }
            }
            (pages, st.race.take())
        };
        self.live_pins.fetch_add(1, Ordering::SeqCst);
        let addrs = pages.iter().map(|p| p.addr()).collect();
        let pin = Pin {
            _pages: pages,
            live: self.live_pins.clone(),
        };
        if let Some(f) = race {
            f(self);
        }
        Ok(PinnedPages::new(addrs, Box::new(pin)))
    }

    fn set_listener(&self, listener: Arc<dyn MmListener>) {
        *self.listener.lock() = Some(listener);
    }

    /// The run of mapped pages around `va` (adjacent mappings merge, as Linux's VMAs of
    /// the same kind do).
    fn mapping_at(&self, va: u64) -> Result<CpuRange, MmError> {
        if self.hide_mappings.load(Ordering::SeqCst) {
            return Err(MmError::NotSupported);
        }
        let st = self.state.lock();
        if st.gone {
            return Err(MmError::Gone);
        }
        let mapped = |p: u64| st.table.contains_key(&p) || st.revoked.contains(&p);
        let page = va & !(PAGE_SIZE - 1);
        if !mapped(page) {
            return Err(MmError::Fault { va });
        }
        let mut start = page;
        while start >= PAGE_SIZE && mapped(start - PAGE_SIZE) {
            start -= PAGE_SIZE;
        }
        let mut end = page + PAGE_SIZE;
        while mapped(end) {
            end += PAGE_SIZE;
        }
        CpuRange::new(start, end - start).map_err(|_| MmError::Fault { va })
    }

    /// WriteProtect: the pages stay, CPU writes fault to gpud. Evict: the pages leave the
    /// table (pins keep theirs) and every CPU access faults to gpud until `supply`.
    fn revoke_cpu(&self, r: CpuRange, how: Revoke) -> Result<(), MmError> {
        if !self.migration.load(Ordering::SeqCst) {
            return Err(MmError::NotSupported);
        }
        let mut st = self.state.lock();
        let pages: Vec<u64> = (r.start()..r.end()).step_by(PAGE_SIZE as usize).collect();
        if let Some(va) = pages.iter().find(|va| !st.table.contains_key(va)) {
            return Err(MmError::Fault { va: *va });
        }
        for va in pages {
            match how {
                Revoke::WriteProtect => {
                    st.protected.insert(va);
                }
                Revoke::Evict => {
                    st.table.remove(&va);
                    st.protected.remove(&va);
                    st.revoked.insert(va);
                }
            }
        }
        Ok(())
    }

    /// Copy/Zero: fresh pages with the content for the taken pages of `r` (pages present
    /// are left alone); Wake: write protection ends.
    fn supply(&self, r: CpuRange, src: Supply<'_>) -> Result<(), MmError> {
        let mut st = self.state.lock();
        for (i, va) in (r.start()..r.end()).step_by(PAGE_SIZE as usize).enumerate() {
            st.protected.remove(&va);
            let bytes = match src {
                Supply::Wake => continue,
                _ if !st.revoked.contains(&va) => continue,
                Supply::Copy(data) => {
                    let off = i * PAGE_SIZE as usize;
                    data.get(off..off + PAGE_SIZE as usize)
                        .ok_or(MmError::Fault { va })?
                }
                Supply::Zero => &[0u8; PAGE_SIZE as usize][..],
            };
            let page = self.fresh_page(true);
            self.dma
                .write(page.addr(), bytes)
                .map_err(|_| MmError::Fault { va })?;
            st.revoked.remove(&va);
            st.table.insert(va, page);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hw::sim::dma::HeapDma;

    fn fake() -> Arc<FakeMm> {
        let sys = Arc::new(simgpu::HeapMemory::new(1 << 20));
        let dma: Arc<dyn DmaMemory> = Arc::new(HeapDma::new(sys));
        FakeMm::new(dma)
    }

    struct Log(Mutex<Vec<MmEvent>>);
    impl MmListener for Log {
        fn event(&self, e: MmEvent) {
            self.0.lock().push(e);
        }
    }

    #[test]
    fn pages_are_resolved_pinned_and_events_follow_the_script() {
        let mm = fake();
        let log = Arc::new(Log(Mutex::new(Vec::new())));
        mm.set_listener(log.clone());
        let (a, k) = (0x10_0000, PAGE_SIZE);
        assert_eq!(
            mm.get_pages(FakeMm::range(a, k), false).err(),
            Some(MmError::Fault { va: a })
        );
        mm.map(a, 2 * k, true);
        mm.write_u64(a + 8, 7).unwrap();
        let pin = mm.get_pages(FakeMm::range(a, 2 * k), true).unwrap();
        assert_eq!(pin.pages().len(), 2);
        assert_eq!(pin.pages()[0], mm.phys_of(a).unwrap());
        assert_eq!(mm.pinned(), 1);
        // A different page at the same address: the pin keeps the old one.
        mm.map(a, k, true);
        assert_ne!(pin.pages()[0], mm.phys_of(a).unwrap());
        assert_eq!(mm.read_u64(a + 8).unwrap(), 0);
        drop(pin);
        assert_eq!(mm.pinned(), 0);
        mm.remove(a, k);
        mm.remap(a, 2 * k, 0x20_0000);
        mm.unmap(0x20_0000, k);
        mm.fail_again(1);
        assert_eq!(
            mm.get_pages(FakeMm::range(0x20_1000, k), false).err(),
            Some(MmError::Again)
        );
        assert!(mm.get_pages(FakeMm::range(0x20_1000, k), false).is_ok());
        mm.map(0x30_0000, k, false);
        assert!(mm.get_pages(FakeMm::range(0x30_0000, k), true).is_err());
        mm.gone();
        assert_eq!(
            mm.get_pages(FakeMm::range(0x30_0000, k), false).err(),
            Some(MmError::Gone)
        );
        let r = |s, l| FakeMm::range(s, l);
        assert_eq!(
            *log.0.lock(),
            vec![
                MmEvent::Unmap(r(a, k)),
                MmEvent::Remove(r(a, k)),
                MmEvent::Remap {
                    from: r(a, 2 * k),
                    to: 0x20_0000
                },
                MmEvent::Unmap(r(a, 2 * k)),
                MmEvent::Unmap(r(0x20_0000, k)),
                MmEvent::Gone,
            ]
        );
    }
}
