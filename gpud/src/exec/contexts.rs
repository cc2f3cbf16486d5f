//! Hardware contexts assigned at schedule time: VMs are not limited by the device's contexts.
//!
//! Owns: [`ContextPool`] (which hardware context serves which VM, how many of the VM's
//! queues are on the hardware with it, the TLB flush a newly assigned context waits for) and
//! [`VmCtx`], a VM's entry in it. A VM holds no context when it is created; the scheduler
//! asks for one ([`VmCtx::acquire`]) right before it loads a queue of the VM onto a hardware
//! queue and gives it back ([`VmCtx::unpin`]) when that queue leaves the hardware. The VM
//! keeps the context while it is idle (its next job needs no rebind), until someone else
//! needs one and no context is free: then the least recently used idle context is taken
//! (stolen): the old VM's root is unbound, the context's latched error state cleared, the new
//! VM's root bound, and the whole TLB of the context invalidated; the new VM's queue is loaded
//! only once that invalidation completed, so no translation of the old VM is ever used by the
//! new one. A victim that runs again gets a context the same way (rebind and flush).
//!
//! Idle means: no queue of the VM is on a hardware queue (loaded or stopping), and no flush
//! is still running. A context in error is never taken: the scheduler's context-error pass bans its
//! queues and clears the error first (`recovery.rs`).
//!
//! Lock: one internal mutex (class Internal, a leaf): register writes only, never a wait.
//! Must not: wait for the device (a flush is polled by the scheduler's next round) or know
//! about queues.

use crate::hw::{FaultMode, HwCtx, Mmu, PtRoot, TlbInvalidation};
use crate::sync::{LockClass, OrderedMutex};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// One hardware context.
#[derive(Debug, Default)]
struct Slot {
    /// Never handed out (the kernel's context).
    reserved: bool,
    /// The VM it serves (its `VmCtx` id).
    owner: Option<u64>,
    /// Queues of the owner on the hardware with it.
    pins: u32,
    /// When it was last acquired (pool tick), for least-recently-used stealing.
    last_used: u64,
    /// The TLB invalidation that must complete before the owner may use it.
    flush: Option<TlbInvalidation>,
    /// The address-space id of the current assignment (never 0), programmed into the
    /// context and echoed by the device in its fault records.
    asid: u16,
}

#[derive(Debug)]
struct Entry {
    root: PtRoot,
    mode: FaultMode,
    ctx: Option<HwCtx>,
}

#[derive(Debug, Default)]
struct PoolState {
    slots: Vec<Slot>,
    vms: HashMap<u64, Entry>,
    next_id: u64,
    tick: u64,
    /// The last address-space id handed out.
    last_asid: u16,
}

/// Counters of the pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContextStats {
    /// Contexts the pool hands out (reserved ones excluded).
    pub contexts: u32,
    /// Contexts assigned to a VM now.
    pub assigned: u32,
    /// Contexts a VM's queue is on the hardware with now.
    pub busy: u32,
    /// VMs registered (with or without a context).
    pub vms: u32,
    /// Contexts taken from an idle VM for another one so far.
    pub steals: u64,
    /// Contexts given to a VM (free or stolen) so far, each with a full TLB flush.
    pub assignments: u64,
}

/// What [`VmCtx::acquire`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquire {
    /// The context to load the queue with; pinned until [`VmCtx::unpin`].
    Ready(HwCtx),
    /// A context is assigned and its TLB flush has not completed yet: ask again soon.
    Flushing,
    /// Every context is on the hardware (or flushing, or in error): wait for one to go idle.
    Unavailable,
}

/// The hardware contexts of a device and the VMs they serve.
pub struct ContextPool {
    mmu: Arc<dyn Mmu>,
    state: OrderedMutex<PoolState>,
    steals: AtomicU64,
    assignments: AtomicU64,
}

impl ContextPool {
    /// A pool of contexts `0..count`; those in `reserved` are never handed out.
    pub fn new(mmu: Arc<dyn Mmu>, count: u32, reserved: &[HwCtx]) -> Arc<Self> {
        let slots = (0..count)
            .map(|i| Slot {
                reserved: reserved.contains(&HwCtx(i)),
                ..Slot::default()
            })
            .collect();
        Arc::new(Self {
            mmu,
            state: OrderedMutex::new(
                LockClass::Internal,
                PoolState {
                    slots,
                    ..PoolState::default()
                },
            ),
            steals: AtomicU64::new(0),
            assignments: AtomicU64::new(0),
        })
    }

    /// Registers a VM whose page tables start at `root` (it gets no context yet).
    pub fn register(self: &Arc<Self>, root: PtRoot, mode: FaultMode) -> Arc<VmCtx> {
        let mut st = self.state.lock();
        let id = st.next_id;
        st.next_id += 1;
        st.vms.insert(
            id,
            Entry {
                root,
                mode,
                ctx: None,
            },
        );
        Arc::new(VmCtx {
            pool: self.clone(),
            id,
        })
    }

    /// Counters.
    pub fn stats(&self) -> ContextStats {
        let st = self.state.lock();
        let usable = st.slots.iter().filter(|s| !s.reserved);
        let (mut contexts, mut assigned, mut busy) = (0, 0, 0);
        for s in usable {
            contexts += 1;
            assigned += u32::from(s.owner.is_some());
            busy += u32::from(s.pins > 0);
        }
        ContextStats {
            contexts,
            assigned,
            busy,
            vms: st.vms.len() as u32,
            steals: self.steals.load(Ordering::Relaxed),
            assignments: self.assignments.load(Ordering::Relaxed),
        }
    }

    /// Whether `ctx` still serves the assignment with address-space id `asid` (0: a context
    /// bound outside the pool, always current): a fault record of an earlier assignment is
    /// stale. Runs `reply` (a register write) under the pool lock if so, so that the
    /// context cannot change hands between the check and the write; returns whether it ran.
    pub fn if_current(&self, ctx: HwCtx, asid: u16, reply: &mut dyn FnMut()) -> bool {
        let st = self.state.lock();
        let current = asid == 0
            || st
                .slots
                .get(ctx.0 as usize)
                .is_some_and(|s| s.owner.is_some() && s.asid == asid);
        if current {
            reply();
        }
        current
    }

    /// Takes `ctx` away from its owner: unbinds the root, clears a latched error.
    fn detach(&self, st: &mut PoolState, ctx: HwCtx) {
        let _ = self.mmu.unbind_context(ctx);
        let _ = self.mmu.clear_context_error(ctx);
        if let Some(slot) = st.slots.get_mut(ctx.0 as usize) {
            if let Some(owner) = slot.owner.take() {
                if let Some(e) = st.vms.get_mut(&owner) {
                    e.ctx = None;
                }
            }
            slot.pins = 0;
            slot.flush = None;
        }
    }

    /// A context for a VM without one: a free one, else the least recently used idle one
    /// (not in error). `None`: all are busy.
    fn pick(&self, st: &PoolState) -> Option<(HwCtx, bool)> {
        let usable = || st.slots.iter().enumerate().filter(|(_, s)| !s.reserved);
        if let Some((i, _)) = usable().find(|(_, s)| s.owner.is_none()) {
            return Some((HwCtx(i as u32), false));
        }
        // A flush that completed counts as none (its VM may never ask again: its queue was
        // killed while it waited); one still running makes the context busy.
        let flushed = |s: &Slot| s.flush.is_none_or(|f| self.mmu.invalidation_done(f));
        let mut idle: Vec<(u64, usize)> = usable()
            .filter(|(_, s)| s.pins == 0 && flushed(s))
            .map(|(i, s)| (s.last_used, i))
            .collect();
        idle.sort_unstable();
        idle.into_iter()
            .map(|(_, i)| HwCtx(i as u32))
            // A context in error keeps its VM until the scheduler banned its queues.
            .find(|&c| !self.mmu.context_status(c).is_ok_and(|s| s.error()))
            .map(|c| (c, true))
    }
}

/// A VM's entry in the [`ContextPool`]; dropping it frees the VM's context (only once nothing
/// of the VM can run on it: the VM drops it when its last exec queue is gone).
pub struct VmCtx {
    pool: Arc<ContextPool>,
    id: u64,
}

impl std::fmt::Debug for VmCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmCtx")
            .field("id", &self.id)
            .field("ctx", &self.current())
            .finish()
    }
}

impl VmCtx {
    /// The context serving the VM now, if any. Without one nothing of the VM is cached in any
    /// TLB (a context is flushed whenever it is given to a VM), so a page-table change needs
    /// no invalidation; with one, invalidate it (if it is taken away meanwhile, the new
    /// owner's flush covers the change).
    pub fn current(&self) -> Option<HwCtx> {
        let st = self.pool.state.lock();
        st.vms.get(&self.id).and_then(|e| e.ctx)
    }

    /// Whether the VM holds `ctx` in the assignment with address-space id `asid` (0: any).
    pub fn serves(&self, ctx: HwCtx, asid: u16) -> bool {
        let st = self.pool.state.lock();
        let held = st.vms.get(&self.id).and_then(|e| e.ctx) == Some(ctx);
        held && (asid == 0 || st.slots.get(ctx.0 as usize).is_some_and(|s| s.asid == asid))
    }

    /// A context for a queue of the VM that is about to be loaded on a hardware queue: the
    /// VM's own, else a free or stolen one (root bound, TLB flush started).
    pub fn acquire(&self) -> Acquire {
        let pool = &*self.pool;
        let mut st = pool.state.lock();
        st.tick += 1;
        let tick = st.tick;
        let Some(entry) = st.vms.get(&self.id) else {
            return Acquire::Unavailable;
        };
        let (root, mode) = (entry.root, entry.mode);
        let ctx = match entry.ctx {
            Some(c) => c,
            None => {
                let Some((c, stolen)) = pool.pick(&st) else {
                    return Acquire::Unavailable;
                };
                if stolen {
                    pool.steals.fetch_add(1, Ordering::Relaxed);
                }
                pool.detach(&mut st, c);
                // A new address-space id per assignment: the device stamps it on every
                // fault record, so a record of the old owner still unread is not served
                // against the new one (wraps after 65 535 assignments; 0 is never used).
                st.last_asid = st.last_asid.checked_add(1).unwrap_or(1);
                let asid = st.last_asid;
                // The old owner's translations may still be cached: flush the whole
                // context before the new owner's first command.
                let flush = pool
                    .mmu
                    .bind_context_as(c, root, mode, asid)
                    .and_then(|()| pool.mmu.invalidate(c, None));
                let Ok(flush) = flush else {
                    let _ = pool.mmu.unbind_context(c);
                    return Acquire::Unavailable;
                };
                pool.assignments.fetch_add(1, Ordering::Relaxed);
                if let Some(slot) = st.slots.get_mut(c.0 as usize) {
                    slot.owner = Some(self.id);
                    slot.flush = Some(flush);
                    slot.asid = asid;
                }
                if let Some(e) = st.vms.get_mut(&self.id) {
                    e.ctx = Some(c);
                }
                c
            }
        };
        let Some(slot) = st.slots.get_mut(ctx.0 as usize) else {
            return Acquire::Unavailable;
        };
        if let Some(flush) = slot.flush {
            if !pool.mmu.invalidation_done(flush) {
                return Acquire::Flushing;
            }
            slot.flush = None;
        }
        slot.pins += 1;
        slot.last_used = tick;
        Acquire::Ready(ctx)
    }

    /// A queue that [`VmCtx::acquire`]d `ctx` left the hardware.
    pub fn unpin(&self, ctx: HwCtx) {
        let mut st = self.pool.state.lock();
        if let Some(slot) = st.slots.get_mut(ctx.0 as usize) {
            if slot.owner == Some(self.id) {
                slot.pins = slot.pins.saturating_sub(1);
            }
        }
    }
}

impl Drop for VmCtx {
    fn drop(&mut self) {
        let mut st = self.pool.state.lock();
        if let Some(c) = st.vms.get(&self.id).and_then(|e| e.ctx) {
            self.pool.detach(&mut st, c);
        }
        st.vms.remove(&self.id);
    }
}
