//! A fake, in-memory `GpuDriver` that records calls, for testing the scheme (and clients of
//! it) without a GPU.
//!
//! Owns: `FakeDriver`. Work submitted by VM_BIND / EXEC stays pending until the test calls
//! `complete_all` (so parking and in-flight limits can be observed); the clock moves only with
//! `advance`; `fail_next` injects one driver error. Each VM keeps a mapping table that binds
//! change at submission (maps replace what they overlap, unmaps split), which `vm_table`
//! reports. Must not: be used by gpud itself.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use redox_scheme::{CallerCtx, Request, RequestKind};
use syscall::flag::MapFlags;

use crate::driver::*;
use crate::uapi::flags::{BatchFormat, EngineClass, QueuePriority, VmCreateFlags};
use crate::uapi::request::BoCreateRequest;

/// A caller context for calling `SchemeSync` methods directly (pid 0, request id 0).
pub fn caller() -> CallerCtx {
    match Request::default().kind() {
        RequestKind::Call(c) => c.caller(),
        // PANIC: a zeroed request has opcode 0, which `Request::kind` maps to `Call`; this is a
        // test helper, not reachable from client input.
        _ => unreachable!("a default request is a call"),
    }
}

/// One recorded driver call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `client_stop`.
    ClientStop(ClientId),
    /// `client_mm_fd` (host transport): the request, the fd's identity is not recorded.
    MmFd(ClientId, crate::uapi::mm::MmFdRequest),
    /// `vm_create`.
    VmCreate(ClientId, VmCreateFlags),
    /// `vm_destroy`.
    VmDestroy(u64),
    /// `bo_create`.
    BoCreate(ClientId, u64),
    /// `queue_create`.
    QueueCreate(ClientId, EngineClass, QueuePriority, BatchFormat),
    /// `queue_destroy`.
    QueueDestroy(u64),
    /// `vm_bind`: VM, number of ops, number of syncs.
    VmBind(u64, usize, usize),
    /// `exec`: queue, batches.
    Exec(u64, Vec<u64>),
    /// `bo_mmap`: BO, offset, size.
    Mmap(u64, u64, usize),
    /// `bo_munmap`: BO, offset, size.
    Munmap(u64, u64, usize),
}

/// A fake VM reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeVm(pub u64);
/// A fake BO reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeBo(pub u64, pub u64);
/// A fake queue reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeQueue(pub u64);
/// A fake syncobj reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeSyncobj(pub u64);
/// Fake pending work (a parked synchronous bind), done at `complete_all`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakePending(pub u64);

#[derive(Default)]
struct SyncobjState {
    /// Binary fence: None = no fence, Some(signalled?).
    binary: Option<bool>,
    /// Timeline points submitted → signalled?
    points: BTreeMap<u64, bool>,
}

/// Work waiting for `complete_all`.
struct Pending {
    client: ClientId,
    signals: Vec<(u64, u64)>,
    fence: Option<(u64, u64, u64)>,
}

#[derive(Default)]
struct State {
    now: u64,
    next: u64,
    calls: Vec<Call>,
    syncobjs: BTreeMap<u64, SyncobjState>,
    memory: BTreeMap<(u64, u64), u64>,
    reset_queues: Vec<u64>,
    /// Queue id → the VM it runs in (EXEC user fences are GPU VAs of that VM).
    queue_vms: BTreeMap<u64, u64>,
    pending: Vec<Pending>,
    gpu_mappings: BTreeMap<ClientId, u64>,
    /// VM → its mapping table by start address (what `vm_table` reports).
    tables: BTreeMap<u64, BTreeMap<u64, VmMapping>>,
    /// VMs `vm_destroy` was called on.
    destroyed: std::collections::BTreeSet<u64>,
    fail_next: Option<DriverError>,
    /// Synchronous binds return pending work (see `park_sync_binds`).
    park_sync_binds: bool,
    /// Pending work of parked calls: done?, the tokens watching it.
    parked_work: BTreeMap<u64, (bool, Vec<WakeToken>)>,
    /// `pending_state` calls (how often the server re-checked parked work).
    pending_checks: u64,
    #[cfg(target_os = "linux")]
    memfds: BTreeMap<u64, std::os::fd::OwnedFd>,
}

/// The fake driver. Clones share state, so a test can keep one while a server owns another.
#[derive(Default, Clone)]
pub struct FakeDriver {
    state: Arc<Mutex<State>>,
}

impl FakeDriver {
    /// A fresh fake with the clock at 0.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        // A poisoned lock only follows a panicking test; keep going with its state.
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.with(|s| s.calls.clone())
    }

    /// Move the device clock.
    pub fn advance(&self, ns: u64) {
        self.with(|s| s.now += ns);
    }

    /// Make the next fallible call fail with `e`.
    pub fn fail_next(&self, e: DriverError) {
        self.with(|s| s.fail_next = Some(e));
    }

    /// Mark a queue as reset (user-fence waits naming it fail with EIO).
    pub fn reset_queue(&self, q: &FakeQueue) {
        self.with(|s| s.reset_queues.push(q.0));
    }

    /// Write a 64-bit value into a VM's memory (as the GPU would).
    pub fn write(&self, vm: &FakeVm, addr: u64, value: u64) {
        self.with(|s| s.memory.insert((vm.0, addr), value));
    }

    /// Make synchronous binds (no syncs) pending until `complete_all`, with a watch that
    /// fires then, as gpud's binds behind GPU work are.
    pub fn park_sync_binds(&self, on: bool) {
        self.with(|s| s.park_sync_binds = on);
    }

    /// How often the server asked for the state of pending work.
    pub fn pending_checks(&self) -> u64 {
        self.with(|s| s.pending_checks)
    }

    /// Finish all pending work: signal its out-syncs and write its user fences.
    pub fn complete_all(&self) {
        let tokens = self.with(|s| {
            let mut tokens = Vec::new();
            for (done, watchers) in s.parked_work.values_mut() {
                *done = true;
                tokens.append(watchers);
            }
            tokens
        });
        for t in tokens {
            t.fire();
        }
        self.with(|s| {
            for p in std::mem::take(&mut s.pending) {
                for (obj, point) in p.signals {
                    signal(s, obj, point);
                }
                if let Some((vm, addr, value)) = p.fence {
                    s.memory.insert((vm, addr), value);
                }
            }
        });
    }

    fn fallible<T>(&self, f: impl FnOnce(&mut State) -> T) -> Result<T, DriverError> {
        self.with(|s| match s.fail_next.take() {
            Some(e) => Err(e),
            None => Ok(f(s)),
        })
    }

    fn submit(
        &self,
        client: ClientId,
        vm: u64,
        call: Call,
        syncs: Vec<ResolvedSync<FakeSyncobj>>,
    ) -> Result<(), DriverError> {
        self.fallible(|s| {
            s.calls.push(call);
            let mut p = Pending {
                client,
                signals: Vec::new(),
                fence: None,
            };
            for sync in syncs {
                match sync {
                    ResolvedSync::Signal(obj, point) => {
                        let st = s.syncobjs.entry(obj.0).or_default();
                        if point == 0 {
                            st.binary = Some(false);
                        } else {
                            st.points.insert(point, false);
                        }
                        p.signals.push((obj.0, point));
                    }
                    ResolvedSync::UserFence { addr, value } => p.fence = Some((vm, addr, value)),
                    ResolvedSync::Wait(..) => {}
                }
            }
            s.pending.push(p);
        })
    }

    fn fresh(s: &mut State) -> u64 {
        s.next += 1;
        s.next
    }
}

/// Remove `[start, end)` from a fake mapping table, keeping the pieces of partly covered
/// mappings (their backing offsets moved as a real VM's remap would).
fn unmap_range(table: &mut BTreeMap<u64, VmMapping>, start: u64, end: u64) {
    let hit: Vec<u64> = table
        .values()
        .filter(|m| m.start < end && start < m.end)
        .map(|m| m.start)
        .collect();
    for key in hit {
        let Some(m) = table.remove(&key) else {
            continue;
        };
        if m.start < start {
            table.insert(m.start, VmMapping { end: start, ..m });
        }
        if end < m.end {
            let skip = end - m.start;
            let backing = match m.backing {
                MappingBacking::Bo { key, offset } => MappingBacking::Bo {
                    key,
                    offset: offset + skip,
                },
                MappingBacking::Userptr { addr } => MappingBacking::Userptr { addr: addr + skip },
                other => other,
            };
            let right = VmMapping {
                start: end,
                backing,
                ..m
            };
            table.insert(end, right);
        }
    }
}

/// Apply one bind op to a fake mapping table.
fn apply_op(table: &mut BTreeMap<u64, VmMapping>, r: &ResolvedBindOp<FakeBo>) {
    use crate::uapi::flags::BindFlags;
    use crate::uapi::request::BindOpKind;
    let (start, end) = (r.op.addr, r.op.addr.saturating_add(r.op.range));
    let backing = match (r.op.kind, &r.bo) {
        (BindOpKind::Map { bo_offset, .. }, Some(bo)) => MappingBacking::Bo {
            key: bo.0,
            offset: bo_offset,
        },
        (BindOpKind::MapNull, _) => MappingBacking::Null,
        (BindOpKind::MapCpuMirror, _) => MappingBacking::Mirror,
        (BindOpKind::MapUserptr { userptr }, _) => MappingBacking::Userptr { addr: userptr },
        (BindOpKind::Unmap, _) => return unmap_range(table, start, end),
        (BindOpKind::UnmapAll { .. }, Some(bo)) => {
            let key = bo.0;
            table
                .retain(|_, m| !matches!(m.backing, MappingBacking::Bo { key: k, .. } if k == key));
            return;
        }
        _ => return,
    };
    unmap_range(table, start, end);
    let read_only = r.op.flags.contains(BindFlags::READONLY);
    let m = VmMapping {
        start,
        end,
        backing,
        read_only,
    };
    table.insert(start, m);
}

fn signal(s: &mut State, obj: u64, point: u64) {
    let st = s.syncobjs.entry(obj).or_default();
    if point == 0 {
        st.binary = Some(true);
    } else {
        st.points.insert(point, true);
    }
}

impl GpuDriver for FakeDriver {
    type Vm = FakeVm;
    type Bo = FakeBo;
    type Queue = FakeQueue;
    type Syncobj = FakeSyncobj;
    type Pending = FakePending;

    fn device_info(&self) -> DeviceInfo {
        DeviceInfo {
            va_bits: 48,
            engine_mask: (1 << EngineClass::Copy as u16) | (1 << EngineClass::Compute as u16),
            page_sizes: (1 << 12) | (1 << 16) | (1 << 21),
            sys_size: 1 << 34,
            sys_free: 1 << 33,
            vram_size: 1 << 32,
            vram_free: 1 << 31,
            reserved_va_start: 0xffff_0000_0000,
            reserved_va_len: 1 << 32,
            pat_entries: 4,
        }
    }

    fn now_ns(&self) -> u64 {
        self.with(|s| s.now)
    }

    fn client_usage(&self, client: ClientId) -> ClientUsage {
        self.with(|s| ClientUsage {
            in_flight: s.pending.iter().filter(|p| p.client == client).count() as u64,
            gpu_mappings: s.gpu_mappings.get(&client).copied().unwrap_or(0),
            table_bytes: 0,
            userptr_bytes: 0,
        })
    }

    fn client_stop(&self, client: ClientId) {
        self.with(|s| {
            s.calls.push(Call::ClientStop(client));
            s.pending.retain(|p| p.client != client);
        });
    }

    fn stats(&self, client: Option<ClientId>) -> Vec<(String, String)> {
        match client {
            Some(_) => vec![("fake-engine-copy".into(), "0 ns".into())],
            None => vec![("fake-device".into(), "simulated".into())],
        }
    }

    /// All memory is `system`, resident.
    fn memory_stats(&self, bos: &[HeldBo<'_, FakeBo>]) -> Vec<(String, String)> {
        let sum = |shared_only: bool| -> u64 {
            bos.iter()
                .filter(|h| h.shared || !shared_only)
                .map(|h| h.bo.1)
                .sum()
        };
        vec![
            ("drm-total-system".into(), sum(false).to_string()),
            ("drm-shared-system".into(), sum(true).to_string()),
        ]
    }

    fn vm_create(&self, client: ClientId, flags: VmCreateFlags) -> Result<FakeVm, DriverError> {
        self.fallible(|s| {
            s.calls.push(Call::VmCreate(client, flags));
            FakeVm(Self::fresh(s))
        })
    }

    fn vm_destroy(&self, vm: &FakeVm) -> Submitted<FakePending> {
        self.fallible(|s| {
            s.calls.push(Call::VmDestroy(vm.0));
            s.destroyed.insert(vm.0);
            s.tables.remove(&vm.0);
            None
        })
    }

    fn vm_key(&self, vm: &FakeVm) -> u64 {
        vm.0
    }

    fn bo_key(&self, bo: &FakeBo) -> u64 {
        bo.0
    }

    fn vm_table(&self, vm: &FakeVm) -> Result<Vec<VmMapping>, DriverError> {
        self.with(|s| {
            if s.destroyed.contains(&vm.0) {
                return Err(DriverError::VmGone);
            }
            let table = s.tables.get(&vm.0);
            Ok(table
                .map(|t| t.values().copied().collect())
                .unwrap_or_default())
        })
    }

    fn bo_create(
        &self,
        client: ClientId,
        req: &BoCreateRequest,
        _vm: Option<&FakeVm>,
    ) -> Result<FakeBo, DriverError> {
        self.fallible(|s| {
            s.calls.push(Call::BoCreate(client, req.size));
            FakeBo(Self::fresh(s), req.size)
        })
    }

    fn bo_size(&self, bo: &FakeBo) -> u64 {
        bo.1
    }

    fn queue_create(
        &self,
        client: ClientId,
        vm: &FakeVm,
        class: EngineClass,
        priority: QueuePriority,
        batches: BatchFormat,
    ) -> Result<FakeQueue, DriverError> {
        self.fallible(|s| {
            s.calls
                .push(Call::QueueCreate(client, class, priority, batches));
            let id = Self::fresh(s);
            s.queue_vms.insert(id, vm.0);
            FakeQueue(id)
        })
    }

    fn queue_destroy(&self, queue: &FakeQueue) -> Submitted<FakePending> {
        self.fallible(|s| {
            s.calls.push(Call::QueueDestroy(queue.0));
            None
        })
    }

    fn vm_bind(
        &self,
        client: ClientId,
        vm: &FakeVm,
        _queue: Option<&FakeQueue>,
        ops: Vec<ResolvedBindOp<FakeBo>>,
        syncs: Vec<ResolvedSync<FakeSyncobj>>,
    ) -> Submitted<FakePending> {
        let maps = ops.iter().filter(|o| o.bo.is_some()).count() as u64;
        let call = Call::VmBind(vm.0, ops.len(), syncs.len());
        let synchronous = syncs.is_empty();
        self.submit(client, vm.0, call, syncs)?;
        self.with(|s| {
            *s.gpu_mappings.entry(client).or_default() += maps;
            // The table changes at submission: the fake has no page tables to wait for.
            let table = s.tables.entry(vm.0).or_default();
            for op in &ops {
                apply_op(table, op);
            }
        });
        Ok(self.with(|s| {
            (synchronous && s.park_sync_binds).then(|| {
                let id = Self::fresh(s);
                s.parked_work.insert(id, (false, Vec::new()));
                FakePending(id)
            })
        }))
    }

    fn exec(
        &self,
        client: ClientId,
        queue: &FakeQueue,
        batches: &[u64],
        syncs: Vec<ResolvedSync<FakeSyncobj>>,
    ) -> Submitted<FakePending> {
        let vm = self.with(|s| s.queue_vms.get(&queue.0).copied());
        let vm = vm.ok_or(DriverError::Canceled)?;
        self.submit(client, vm, Call::Exec(queue.0, batches.to_vec()), syncs)?;
        Ok(None)
    }

    fn pending_state(&self, p: &FakePending) -> Option<Result<(), DriverError>> {
        self.with(|s| {
            s.pending_checks += 1;
            match s.parked_work.get(&p.0) {
                Some((false, _)) => None,
                _ => Some(Ok(())),
            }
        })
    }

    fn watch_pending(&self, p: &FakePending, wake: WakeToken) -> bool {
        let fire_now = self.with(|s| match s.parked_work.get_mut(&p.0) {
            Some((false, watchers)) => {
                watchers.push(wake.clone());
                false
            }
            _ => true,
        });
        if fire_now {
            wake.fire();
        }
        true
    }

    fn user_fence_value(
        &self,
        vm: &FakeVm,
        queue: Option<&FakeQueue>,
        addr: u64,
    ) -> Result<u64, DriverError> {
        self.with(|s| {
            if queue.is_some_and(|q| s.reset_queues.contains(&q.0)) {
                return Err(DriverError::DeviceError);
            }
            Ok(s.memory.get(&(vm.0, addr)).copied().unwrap_or(0))
        })
    }

    fn syncobj_create(&self, signaled: bool) -> Result<FakeSyncobj, DriverError> {
        self.fallible(|s| {
            let id = Self::fresh(s);
            let binary = signaled.then_some(true);
            s.syncobjs.insert(
                id,
                SyncobjState {
                    binary,
                    points: BTreeMap::new(),
                },
            );
            FakeSyncobj(id)
        })
    }

    fn syncobj_state(&self, obj: &FakeSyncobj, point: u64) -> PointState {
        self.with(|s| {
            let Some(st) = s.syncobjs.get(&obj.0) else {
                return PointState::NoFence;
            };
            let state = match point {
                0 => st.binary,
                p => st.points.range(p..).next().map(|(_, done)| *done),
            };
            match state {
                None => PointState::NoFence,
                Some(false) => PointState::Pending,
                Some(true) => PointState::Signaled,
            }
        })
    }

    fn syncobj_signal(&self, obj: &FakeSyncobj, point: u64) -> Result<(), DriverError> {
        self.fallible(|s| signal(s, obj.0, point))
    }

    fn syncobj_reset(&self, obj: &FakeSyncobj) {
        self.with(|s| {
            if let Some(st) = s.syncobjs.get_mut(&obj.0) {
                *st = SyncobjState::default();
            }
        })
    }

    fn syncobj_query(&self, obj: &FakeSyncobj) -> u64 {
        self.with(|s| {
            let Some(st) = s.syncobjs.get(&obj.0) else {
                return 0;
            };
            let last = st
                .points
                .iter()
                .filter(|(_, done)| **done)
                .map(|(p, _)| *p)
                .max();
            last.unwrap_or(u64::from(st.binary == Some(true)))
        })
    }

    fn syncobj_transfer(
        &self,
        src: &FakeSyncobj,
        src_point: u64,
        dst: &FakeSyncobj,
        dst_point: u64,
    ) -> Result<(), DriverError> {
        let state = self.syncobj_state(src, src_point);
        self.fallible(|s| {
            let st = s.syncobjs.entry(dst.0).or_default();
            let value = match state {
                PointState::NoFence => return,
                PointState::Pending => false,
                PointState::Signaled => true,
            };
            if dst_point == 0 {
                st.binary = Some(value);
            } else {
                st.points.insert(dst_point, value);
            }
        })
    }

    fn bo_mmap(
        &self,
        bo: &FakeBo,
        offset: u64,
        size: usize,
        _flags: MapFlags,
    ) -> Result<usize, DriverError> {
        self.fallible(|s| {
            s.calls.push(Call::Mmap(bo.0, offset, size));
            0x1000_0000 + (bo.0 as usize) * 0x100_0000 + offset as usize
        })
    }

    fn bo_munmap(&self, bo: &FakeBo, offset: u64, size: usize) -> Result<(), DriverError> {
        self.with(|s| s.calls.push(Call::Munmap(bo.0, offset, size)));
        Ok(())
    }
}

#[cfg(target_os = "linux")]
impl crate::host::HostMemory for FakeDriver {
    fn bo_memory(&self, bo: &FakeBo) -> Result<(std::os::fd::OwnedFd, u64), DriverError> {
        use std::collections::btree_map::Entry;
        self.with(|s| {
            let fd = match s.memfds.entry(bo.0) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(v) => {
                    let flags = rustix::fs::MemfdFlags::CLOEXEC;
                    let fd = rustix::fs::memfd_create("fake-bo", flags)
                        .map_err(|_| DriverError::NoMemory)?;
                    rustix::fs::ftruncate(&fd, bo.1).map_err(|_| DriverError::NoMemory)?;
                    v.insert(fd)
                }
            };
            Ok((fd.try_clone().map_err(|_| DriverError::NoMemory)?, 0))
        })
    }

    fn client_mm_fd(
        &self,
        client: ClientId,
        req: crate::uapi::mm::MmFdRequest,
        _fd: std::os::fd::OwnedFd,
    ) -> Result<(), DriverError> {
        self.fallible(|s| s.calls.push(Call::MmFd(client, req)))
    }
}
