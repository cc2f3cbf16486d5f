//! The Linux host's memory manager of a client: [`UffdMm`], a [`ClientMm`] over the
//! userfaultfd and the memfds the client handed over (MM_FD, `docs/uapi.md`).
//!
//! Owns: the table of the client's registered regions (CPU range → memfd and file offset),
//! resolving a CPU range through it to window places that map the client's own memfd pages
//! (`Pools::pin_foreign`: the GPU reaches the same page-cache pages the client maps, no
//! copy), the per-client limits of both, and the one reader thread that reads every
//! client's userfaultfd events and turns them into [`MmEvent`]s for the listener.
//! Must not: zap, invalidate or decide what an event invalidates (the core's listener does),
//! wait for anything while holding the region table, or ever block the reader on a client.
//!
//! Why one reader thread for all clients: a client's `munmap` of a registered range waits
//! until gpud has *read* the event (Linux `userfaultfd_event_wait_completion`), so events must
//! be read promptly; a thread per client would cost every client a thread. The reader polls
//! every live client's (non-blocking) userfaultfd plus an eventfd that wakes it when the set
//! changes, and holds only weak references, so a client that goes away is released at once.
//!
//! Reading an event is split in two: *intake* (read it, apply it to the region table, queue
//! it) and *delivery* (hand it to the listener, which zaps). Intake never waits, so a
//! registration ([`UffdMm::add_region`], on the request thread) takes in the client's pending
//! events itself before it checks for overlaps: a client that unmaps a registered range and
//! registers new memory at the same address right after is not refused because the reader
//! had not got to its event yet. Delivery stays on the reader thread, in intake order.
//!
//! INVARIANT: a region's memfd stays open while the region is in the table, and every
//! [`PinnedPages`] from `get_pages` keeps its own descriptor and window places until it is
//! dropped (after the core zapped and invalidated the PTEs to them), whatever the table does
//! meanwhile: an event removes table entries, never pinned pages.

use crate::mem::bo::Pools;
use crate::mem::pools::ForeignPages;
use crate::svm::mm::{ClientMm, CpuRange, MmCaps, MmError, MmEvent, MmListener, PinnedPages};
use gpu_scheme::host::uffd::{self, UffdEvent};
use parking_lot::Mutex;
use rustix::event::{EventfdFlags, PollFd, PollFlags};
use std::collections::BTreeMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};

/// Per-client limits of the userptr memory manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmLimits {
    /// Registered regions (each holds a memfd descriptor): more is `TooMany` (EMFILE).
    pub max_regions: usize,
}

impl Default for MmLimits {
    fn default() -> Self {
        Self { max_regions: 1024 }
    }
}

/// Why a registration was refused (the driver maps these to `DriverError`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    /// Not a non-blocking userfaultfd.
    #[error("not a non-blocking userfaultfd")]
    NotUffd,
    /// The range overlaps a registered region.
    #[error("range {start:#x}+{len:#x} overlaps a registered region")]
    Overlap { start: u64, len: u64 },
    /// The per-client region limit.
    #[error("{limit} regions registered")]
    TooMany { limit: usize },
    /// The memfd may not be mapped (see `mem::shm::ShareError::Foreign`).
    #[error("memfd refused: {0}")]
    Memfd(&'static str),
    /// The userfaultfd refused to register the range (errno).
    #[error("userfaultfd registration failed: {0}")]
    Register(rustix::io::Errno),
    /// The client's address space is gone.
    #[error("the client's address space is gone")]
    Gone,
}

/// One registered region: `[start, start + len)` maps `fd` from file offset `offset`.
struct Region {
    len: u64,
    fd: Arc<OwnedFd>,
    offset: u64,
}

/// Counters for stats and tests.
#[derive(Debug, Default)]
struct Counters {
    events: AtomicU64,
    unmaps: AtomicU64,
    faults_ignored: AtomicU64,
}

struct Inner {
    uffd: OwnedFd,
    /// Held while events are read from `uffd` and applied to the table (the intake), so
    /// events are applied and queued in the order the kernel produced them.
    intake: Mutex<()>,
    /// Events taken in and not yet delivered to the listener (`None`: nothing to deliver),
    /// in intake order; only the reader thread delivers.
    outbox: Mutex<std::collections::VecDeque<Option<MmEvent>>>,
    full_mode: bool,
    pools: Arc<Pools>,
    limits: MmLimits,
    regions: Mutex<BTreeMap<u64, Region>>,
    listener: Mutex<Option<Arc<dyn MmListener>>>,
    gone: AtomicBool,
    /// Reading the userfaultfd failed (never expected): it is no longer polled.
    unreadable: AtomicBool,
    /// Bytes of window places held by live `PinnedPages`.
    pinned: AtomicU64,
    counters: Counters,
}

/// A client's address space on the Linux host (see the module docs).
pub struct UffdMm {
    inner: Arc<Inner>,
}

impl UffdMm {
    /// The memory manager of the client whose userfaultfd is `uffd` (checked: a
    /// non-blocking userfaultfd), resolving through window places of `pools`. Its events
    /// are read from now on.
    pub fn new(
        uffd: OwnedFd,
        full_mode: bool,
        pools: Arc<Pools>,
        limits: MmLimits,
    ) -> Result<Self, RegisterError> {
        if !uffd::is_userfaultfd(uffd.as_fd()) || !uffd::is_nonblocking(&uffd) {
            return Err(RegisterError::NotUffd);
        }
        let inner = Arc::new(Inner {
            uffd,
            intake: Mutex::new(()),
            outbox: Mutex::new(std::collections::VecDeque::new()),
            full_mode,
            pools,
            limits,
            regions: Mutex::new(BTreeMap::new()),
            listener: Mutex::new(None),
            gone: AtomicBool::new(false),
            unreadable: AtomicBool::new(false),
            pinned: AtomicU64::new(0),
            counters: Counters::default(),
        });
        reader().add(&inner);
        Ok(Self { inner })
    }

    /// Registers `[va, va + len)` as mapping `memfd` from file offset `offset` (checked
    /// against the table and the limit, then registered with the client's userfaultfd for
    /// events; the memfd is checked when its pages are first mapped, and once here). The
    /// client's pending events are taken in first (never waiting), so a range it unmapped
    /// before this call no longer counts as registered.
    pub fn add_region(
        &self,
        range: CpuRange,
        memfd: OwnedFd,
        offset: u64,
    ) -> Result<(), RegisterError> {
        let inner = &self.inner;
        if inner.gone.load(Ordering::Acquire) {
            return Err(RegisterError::Gone);
        }
        crate::mem::shm::check_foreign(memfd.as_fd(), offset, range.len())
            .map_err(|e| RegisterError::Memfd(foreign_reason(&e)))?;
        // Held to the insertion: no event is applied between the drain and the check.
        let intake = inner.intake.lock();
        if inner.take_in_locked() {
            reader().wake();
        }
        let mut regions = inner.regions.lock();
        if regions.len() >= inner.limits.max_regions {
            return Err(RegisterError::TooMany {
                limit: inner.limits.max_regions,
            });
        }
        if overlapping(&regions, range).next().is_some() {
            return Err(RegisterError::Overlap {
                start: range.start(),
                len: range.len(),
            });
        }
        // Registering only marks the range for events; it never waits for the reader.
        uffd::register_events(inner.uffd.as_fd(), range.start(), range.len())
            .map_err(RegisterError::Register)?;
        regions.insert(
            range.start(),
            Region {
                len: range.len(),
                fd: Arc::new(memfd),
                offset,
            },
        );
        drop(regions);
        drop(intake);
        Ok(())
    }

    /// The client's address space is gone (its device handle closed): every later call
    /// answers `Gone`, the listener hears `Gone` once, the userfaultfd is released (with it
    /// the client's registrations), and the reader forgets it.
    pub fn shutdown(&self) {
        if self.inner.gone.swap(true, Ordering::AcqRel) {
            return;
        }
        self.inner.regions.lock().clear();
        let listener = self.inner.listener.lock().take();
        if let Some(l) = listener {
            l.event(MmEvent::Gone);
        }
        reader().wake();
    }

    /// Regions registered now.
    pub fn regions(&self) -> usize {
        self.inner.regions.lock().len()
    }

    /// Bytes of window places pinned for this client's userptr pages now.
    pub fn pinned_bytes(&self) -> u64 {
        self.inner.pinned.load(Ordering::Relaxed)
    }

    /// Events read from the client's userfaultfd and handled (the listener returned) so far.
    pub fn events_read(&self) -> u64 {
        self.inner.counters.events.load(Ordering::Acquire)
    }

    /// Whether the client's userfaultfd is full mode (kernel-mode faults handled too).
    pub fn full_mode(&self) -> bool {
        self.inner.full_mode
    }
}

impl Drop for UffdMm {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn foreign_reason(e: &crate::mem::shm::ShareError) -> &'static str {
    match e {
        crate::mem::shm::ShareError::Foreign(why) => why,
        _ => "memfd cannot be inspected",
    }
}

/// Start addresses of the regions overlapping `r`.
fn overlapping(regions: &BTreeMap<u64, Region>, r: CpuRange) -> impl Iterator<Item = u64> + '_ {
    // A region starting before `r` may reach into it; the one just before is the only one.
    let before = regions
        .range(..r.start())
        .next_back()
        .filter(|(s, reg)| s.saturating_add(reg.len) > r.start())
        .map(|(s, _)| *s);
    before
        .into_iter()
        .chain(regions.range(r.start()..r.end()).map(|(s, _)| *s))
}

/// One piece of a resolved range: `len` bytes of `fd` from `offset`.
struct Chunk {
    fd: Arc<OwnedFd>,
    offset: u64,
    len: u64,
}

impl Inner {
    /// The regions covering `r`, in order; `Fault` at the first byte no region covers.
    fn resolve(&self, r: CpuRange) -> Result<Vec<Chunk>, MmError> {
        let regions = self.regions.lock();
        let mut chunks = Vec::new();
        let mut at = r.start();
        while at < r.end() {
            let (start, reg) = regions
                .range(..=at)
                .next_back()
                .filter(|(s, reg)| s.saturating_add(reg.len) > at)
                .ok_or(MmError::Fault { va: at })?;
            let end = start.saturating_add(reg.len).min(r.end());
            chunks.push(Chunk {
                fd: reg.fd.clone(),
                offset: reg.offset + (at - start),
                len: end - at,
            });
            at = end;
        }
        Ok(chunks)
    }

    /// Removes `[start, end)` from the table (cutting regions that straddle it).
    fn forget(&self, start: u64, end: u64) {
        let mut regions = self.regions.lock();
        let Ok(r) = CpuRange::new(start, end.saturating_sub(start)) else {
            return;
        };
        let hit: Vec<u64> = overlapping(&regions, r).collect();
        for s in hit {
            let Some(reg) = regions.remove(&s) else {
                continue;
            };
            let reg_end = s + reg.len;
            if s < start {
                regions.insert(
                    s,
                    Region {
                        len: start - s,
                        fd: reg.fd.clone(),
                        offset: reg.offset,
                    },
                );
            }
            if reg_end > end {
                regions.insert(
                    end,
                    Region {
                        len: reg_end - end,
                        fd: reg.fd.clone(),
                        offset: reg.offset + (end - s),
                    },
                );
            }
        }
    }

    /// `[from, from + len)` moved to `to` (mremap): its table entries move with it.
    fn moved(&self, from: u64, to: u64, len: u64) {
        let Ok(r) = CpuRange::new(from, len) else {
            return;
        };
        let moving: Vec<(u64, Chunk)> = {
            let regions = self.regions.lock();
            overlapping(&regions, r)
                .filter_map(|s| {
                    let reg = regions.get(&s)?;
                    let (a, b) = (s.max(from), (s + reg.len).min(from + len));
                    Some((
                        to + (a - from),
                        Chunk {
                            fd: reg.fd.clone(),
                            offset: reg.offset + (a - s),
                            len: b - a,
                        },
                    ))
                })
                .collect()
        };
        self.forget(from, from + len);
        let Ok(dest) = CpuRange::new(to, len) else {
            return;
        };
        self.forget(dest.start(), dest.end());
        let mut regions = self.regions.lock();
        for (at, c) in moving {
            regions.insert(
                at,
                Region {
                    len: c.len,
                    fd: c.fd,
                    offset: c.offset,
                },
            );
        }
    }

    /// Intake: reads every pending event (never waiting), applies each to the table and
    /// queues it for delivery. Returns whether anything was queued.
    fn take_in(&self) -> bool {
        let _intake = self.intake.lock();
        self.take_in_locked()
    }

    /// [`Inner::take_in`] with `intake` held by the caller.
    fn take_in_locked(&self) -> bool {
        let mut events = Vec::new();
        // An error (never expected) stops polling this client, so it cannot spin the reader;
        // its connection's close still ends it.
        if uffd::read_events(self.uffd.as_fd(), &mut events).is_err() {
            self.unreadable.store(true, Ordering::Release);
        }
        if events.is_empty() {
            return false;
        }
        let gone = self.gone.load(Ordering::Acquire);
        let applied: Vec<Option<MmEvent>> = events
            .into_iter()
            .map(|e| if gone { None } else { self.apply(e) })
            .collect();
        self.outbox.lock().extend(applied);
        true
    }

    /// Delivery (reader thread only): hands the queued events to the listener, in order,
    /// outside every lock of this client.
    fn deliver(&self) {
        loop {
            let Some(event) = self.outbox.lock().pop_front() else {
                return;
            };
            if let Some(ev) = event {
                let listener = self.listener.lock().clone();
                if let Some(l) = listener {
                    l.event(ev);
                }
            }
            // Counted once handled (after the listener returned): a reader of the counter
            // knows the event's GPU mappings are zapped.
            self.counters.events.fetch_add(1, Ordering::Release);
        }
    }

    /// Applies one event to the table; returns what the listener hears of it.
    fn apply(&self, e: UffdEvent) -> Option<MmEvent> {
        match e {
            UffdEvent::Unmap { start, end } => {
                self.counters.unmaps.fetch_add(1, Ordering::Relaxed);
                self.forget(start, end);
                CpuRange::new(start, end.saturating_sub(start))
                    .ok()
                    .map(MmEvent::Unmap)
            }
            UffdEvent::Remap { from, to, len } => {
                self.moved(from, to, len);
                CpuRange::new(from, len)
                    .ok()
                    .map(|from| MmEvent::Remap { from, to })
            }
            // The pages stay the memfd's (REMOVE punches them, the next access on either
            // side gets the same new page): the table is unchanged, the GPU's view of the
            // old pages is not.
            UffdEvent::Remove { start, end } => CpuRange::new(start, end.saturating_sub(start))
                .ok()
                .map(MmEvent::Remove),
            // Nothing gpud registers can fault (events-only registration).
            UffdEvent::Pagefault { .. } | UffdEvent::Other(_) => {
                self.counters.faults_ignored.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }
}

/// What keeps resolved pages reachable: the window places over the client's memfd pages.
struct PinGuard {
    pins: Vec<ForeignPages>,
    bytes: u64,
    inner: Arc<Inner>,
}

impl Drop for PinGuard {
    fn drop(&mut self) {
        // The places are re-covered by the pool's memory before they are freed (shm's
        // isolation invariant), then the charge goes.
        self.pins.clear();
        self.inner.pinned.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

impl ClientMm for UffdMm {
    fn caps(&self) -> MmCaps {
        MmCaps {
            lazy_fault: false,
            revoke: false,
            write_protect: false,
            arbitrary_memory: false,
        }
    }

    fn get_pages(&self, r: CpuRange, _write: bool) -> Result<PinnedPages, MmError> {
        let inner = &self.inner;
        if inner.gone.load(Ordering::Acquire) {
            return Err(MmError::Gone);
        }
        let chunks = inner.resolve(r)?;
        let mut pins = Vec::with_capacity(chunks.len());
        let mut pages = Vec::with_capacity(r.pages() as usize);
        for c in &chunks {
            let pin = inner
                .pools
                .pin_foreign(c.fd.as_fd(), c.offset, c.len)
                .map_err(|e| match e {
                    crate::mem::manager::MemError::Share(crate::mem::shm::ShareError::Foreign(
                        _,
                    )) => MmError::Fault { va: r.start() },
                    _ => MmError::Os(rustix::io::Errno::NOMEM.raw_os_error()),
                })?;
            pages.extend(pin.pages());
            pins.push(pin);
        }
        inner.pinned.fetch_add(r.len(), Ordering::Relaxed);
        let guard = PinGuard {
            pins,
            bytes: r.len(),
            inner: inner.clone(),
        };
        Ok(PinnedPages::new(pages, Box::new(guard)))
    }

    /// The registered regions around `va`, adjacent ones merged (the memory gpud can
    /// reach there; SVM sizes its ranges by it).
    fn mapping_at(&self, va: u64) -> Result<CpuRange, MmError> {
        if self.inner.gone.load(Ordering::Acquire) {
            return Err(MmError::Gone);
        }
        let regions = self.inner.regions.lock();
        let (mut start, mut end) = regions
            .range(..=va)
            .next_back()
            .filter(|(s, reg)| s.saturating_add(reg.len) > va)
            .map(|(s, reg)| (*s, *s + reg.len))
            .ok_or(MmError::Fault { va })?;
        while let Some((s, reg)) = regions.range(..start).next_back() {
            if s.saturating_add(reg.len) != start {
                break;
            }
            start = *s;
        }
        while let Some(reg) = regions.get(&end) {
            end = end.saturating_add(reg.len);
        }
        CpuRange::new(start, end - start).map_err(|_| MmError::Fault { va })
    }

    fn set_listener(&self, listener: Arc<dyn MmListener>) {
        if self.inner.gone.load(Ordering::Acquire) {
            listener.event(MmEvent::Gone);
            return;
        }
        *self.inner.listener.lock() = Some(listener);
    }
}

/// The one thread that reads every client's userfaultfd (see the module docs).
struct Reader {
    clients: Mutex<Vec<Weak<Inner>>>,
    wake: OwnedFd,
}

fn reader() -> &'static Reader {
    static READER: OnceLock<&'static Reader> = OnceLock::new();
    READER.get_or_init(|| {
        let wake = rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
            .unwrap_or_else(|_| {
                // Without an eventfd the reader still runs on its poll timeout.
                rustix::fs::open(
                    "/dev/null",
                    rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
                    rustix::fs::Mode::empty(),
                )
                .unwrap_or_else(|_| std::process::abort())
            });
        let r: &'static Reader = Box::leak(Box::new(Reader {
            clients: Mutex::new(Vec::new()),
            wake,
        }));
        let _ = std::thread::Builder::new()
            .name("gpud-uffd".into())
            .spawn(move || r.run());
        r
    })
}

/// How long the reader sleeps in `poll` at most (it is woken for every change of the set).
const READER_TICK_MS: i32 = 1000;

impl Reader {
    fn add(&self, inner: &Arc<Inner>) {
        self.clients.lock().push(Arc::downgrade(inner));
        self.wake();
    }

    fn wake(&self) {
        let _ = rustix::io::write(&self.wake, &1u64.to_ne_bytes());
    }

    fn run(&self) {
        loop {
            let live: Vec<Arc<Inner>> = {
                // A client that is gone is still read while anything holds it (pinned pages
                // the core has not dropped yet): its process may still munmap, and a munmap
                // waits until its event is read.
                let mut clients = self.clients.lock();
                clients.retain(|w| w.strong_count() > 0);
                clients
                    .iter()
                    .filter_map(Weak::upgrade)
                    .filter(|i| !i.unreadable.load(Ordering::Acquire))
                    .collect()
            };
            let ready: Vec<bool> = {
                let mut fds = vec![PollFd::new(&self.wake, PollFlags::IN)];
                fds.extend(live.iter().map(|i| PollFd::new(&i.uffd, PollFlags::IN)));
                let ts = rustix::event::Timespec {
                    tv_sec: i64::from(READER_TICK_MS / 1000),
                    tv_nsec: 0,
                };
                if let Err(e) = rustix::event::poll(&mut fds, Some(&ts)) {
                    if e != rustix::io::Errno::INTR {
                        std::thread::sleep(std::time::Duration::from_millis(10));
                    }
                }
                fds.iter().map(|f| !f.revents().is_empty()).collect()
            };
            if ready.first() == Some(&true) {
                let mut count = [0u8; 8];
                let _ = rustix::io::read(&self.wake, &mut count);
            }
            for (inner, ready) in live.iter().zip(ready.iter().skip(1)) {
                if *ready {
                    inner.take_in();
                }
                // Also what a registration took in (it woke the reader).
                inner.deliver();
            }
            // Releases the clients that went away while polled.
            drop(live);
        }
    }
}

#[cfg(test)]
#[allow(unsafe_code)] // the tests map, remap and unmap their own memory
#[path = "uffd_tests.rs"]
mod tests;
