//! Device calls: decode, resolve client ids to driver objects, check limits, call the driver.
//!
//! Owns: the routing of each opcode to its handler and every rule that needs object state
//! (ownership, VM flags, queue kinds, BO bounds, VA bounds, PAT range, per-client limits).
//! Must not: parse bytes (that is `uapi::decode`) or block (waits live in `wait.rs`).

use redox_scheme::CallerCtx;

use super::client::Client;
use super::handles::Handle;
use super::GpuScheme;
use crate::driver::{ClientId, GpuDriver, ResolvedBindOp, ResolvedSync};
use crate::errno::{Limit, SchemeError};
use crate::uapi::flags::{BatchFormat, EngineClass, QueuePriority, VmCreateFlags};
use crate::uapi::request::*;
use crate::uapi::{decode, write_reply};

type R<T> = Result<T, SchemeError>;

impl<D: GpuDriver> GpuScheme<D> {
    /// `call` / `call_multiple_ids` on handle `id` (`second`: the other handle named).
    pub(super) fn handle_call(
        &mut self,
        id: usize,
        second: Option<usize>,
        payload: &mut [u8],
        metadata: &[u64],
        ctx: &CallerCtx,
    ) -> R<usize> {
        let opcode = metadata.first().copied().unwrap_or(0);
        // The handle is checked before the payload: a closed or foreign handle is EBADF
        // whatever it carries.
        let handle = self.handle(id)?;
        let export = opcode == crate::uapi::Opcode::ExportToken as u64;
        let allowed = match handle {
            Handle::Device { .. } => !export,
            Handle::Bo(_) | Handle::Syncobj(_) => {
                export || crate::uapi::Opcode::from_raw(opcode).is_none()
            }
            Handle::Root | Handle::Vm(_) => false,
        };
        let kind = handle.kind_name();
        if !allowed {
            return Err(SchemeError::WrongHandleKind { id, kind });
        }
        if let Handle::Device { .. } = handle {
            // A call parked on committed work is answered from that work, never run again.
            if let Some(answer) = self.retry_pending(id, ctx) {
                write_reply(opcode, payload, &answer?)?;
                return Ok(0);
            }
            if self.behind_pending(id, ctx) {
                return Err(SchemeError::WouldBlock);
            }
        }
        let request = decode(opcode, payload)?;
        let reply = match (self.handle(id)?, request) {
            (Handle::Bo(_) | Handle::Syncobj(_), Request::ExportToken) if second.is_none() => {
                self.export_token(id)?
            }
            (Handle::Device { client, .. }, Request::Import { kind, token }) => {
                let client = *client;
                self.import(client, kind, token, second)?
            }
            (Handle::Device { .. }, _) if second.is_some() => {
                return Err(SchemeError::Invalid("only IMPORT names a second handle"))
            }
            (Handle::Device { client, .. }, request) => {
                let client = *client;
                self.device_call(id, client, request, ctx)?
            }
            _ => return Err(SchemeError::WrongHandleKind { id, kind }),
        };
        write_reply(opcode, payload, &reply)?;
        Ok(0)
    }

    fn device_call(
        &mut self,
        handle: usize,
        client: ClientId,
        request: Request,
        ctx: &CallerCtx,
    ) -> R<Reply> {
        match request {
            Request::DeviceQuery => Ok(Reply::DeviceInfo(self.device_query())),
            Request::VmCreate(flags) => self.vm_create(client, flags),
            Request::VmDestroy(vm) => self.vm_destroy(handle, client, vm, ctx),
            Request::BoCreate(req) => self.bo_create(client, req),
            Request::BoDestroy(bo) => self.bo_destroy(client, bo),
            Request::ExecQueueCreate {
                vm,
                class,
                priority,
                batches,
            } => self.queue_create(client, vm, (class, priority, batches), ctx),
            Request::ExecQueueDestroy(q) => self.queue_destroy(handle, client, q, ctx),
            Request::VmBind(req) => self.vm_bind(handle, client, req, ctx),
            Request::Exec(req) => self.exec(handle, client, req, ctx),
            Request::WaitUserFence(req) => self.wait_user_fence(handle, client, req, ctx),
            Request::SyncobjCreate { signaled } => self.syncobj_create(client, signaled),
            Request::SyncobjDestroy(s) => {
                let c = self.client_mut(client)?;
                c.syncobjs.remove(&s.0).ok_or(SchemeError::UnknownObject {
                    kind: "syncobj",
                    id: s.0,
                })?;
                c.set_points(s.0, 0);
                Ok(Reply::None)
            }
            Request::SyncobjWait(req) => self.syncobj_wait(handle, client, req, ctx),
            Request::SyncobjSignal(points) => self.syncobj_signal(client, points),
            Request::SyncobjQuery(s) => {
                let obj = self.client_mut(client)?.syncobj(s)?.clone();
                Ok(Reply::Point(self.driver.syncobj_query(&obj)))
            }
            Request::SyncobjTransfer(req) => self.syncobj_transfer(client, req),
            Request::SyncobjReset(ids) => self.syncobj_reset(client, ids),
            Request::ExportToken | Request::Import { .. } => Err(SchemeError::WrongHandleKind {
                id: handle,
                kind: "device",
            }),
        }
    }

    fn device_query(&self) -> crate::uapi::wire::DeviceQueryArgs {
        let i = self.driver.device_info();
        let l = &self.limits;
        crate::uapi::wire::DeviceQueryArgs {
            va_bits: i.va_bits,
            engine_mask: i.engine_mask,
            page_sizes: i.page_sizes,
            sys_size: i.sys_size,
            sys_free: i.sys_free,
            vram_size: i.vram_size,
            vram_free: i.vram_free,
            reserved_va_start: i.reserved_va_start,
            reserved_va_len: i.reserved_va_len,
            pat_entries: i.pat_entries,
            max_objects: u32::try_from(l.objects).unwrap_or(u32::MAX),
            limit_vram: l.vram_bytes,
            limit_sys: l.system_bytes,
            max_mappings: u32::try_from(l.mappings).unwrap_or(u32::MAX),
            max_in_flight: u32::try_from(l.in_flight).unwrap_or(u32::MAX),
            reserved: [0; 2],
        }
    }

    fn vm_create(&mut self, client: ClientId, flags: VmCreateFlags) -> R<Reply> {
        let limits = self.limits;
        self.client_mut(client)?.check_object_limit(&limits)?;
        let vm = self.driver.vm_create(client, flags)?;
        let c = self.client_mut(client)?;
        let id = c.fresh_id();
        c.vms.insert(id, super::client::VmEntry { vm, flags });
        Ok(Reply::NewId(id))
    }

    fn vm_destroy(
        &mut self,
        handle: usize,
        client: ClientId,
        vm: VmId,
        ctx: &CallerCtx,
    ) -> R<Reply> {
        let c = self.client_mut(client)?;
        c.vm(vm)?;
        if c.queues.values().any(|q| q.vm == vm) {
            return Err(SchemeError::Busy("VM still has queues"));
        }
        // The driver first: if it refuses, the client's table is unchanged.
        let obj = c.vm(vm)?.vm.clone();
        let pending = self.driver.vm_destroy(&obj)?;
        self.client_mut(client)?.vms.remove(&vm.0);
        self.park_pending(handle, ctx, pending)
    }

    fn bo_create(&mut self, client: ClientId, req: BoCreateRequest) -> R<Reply> {
        let limits = self.limits;
        let c = self.client_mut(client)?;
        c.check_object_limit(&limits)?;
        let vm = match req.vm {
            Some(vm) => Some(c.vm(vm)?.vm.clone()),
            None => None,
        };
        let pid = c.pid;
        let used = self
            .clients
            .values()
            .filter(|o| o.pid == pid)
            .fold((0, 0), |(v, s), o| (v + o.vram_bytes, s + o.system_bytes));
        let add = super::client::charge_of(req.size, req.placement);
        super::client::check_process(used, add, &limits)?;
        let c = self.client_mut(client)?;
        let id = c.fresh_id();
        // Charge before creating: a refused charge must not leave a driver object behind.
        c.charge(id, req.size, req.placement, &limits)?;
        let bo = match self.driver.bo_create(client, &req, vm.as_ref()) {
            Ok(bo) => bo,
            Err(e) => {
                self.client_mut(client)?.charge_unref(id);
                return Err(e.into());
            }
        };
        let size = self.driver.bo_size(&bo);
        let entry = super::client::BoEntry {
            bo,
            size,
            private_to: req.vm,
            charge: Some((client, id)),
        };
        self.client_mut(client)?.bos.insert(id, entry);
        Ok(Reply::NewId(id))
    }

    fn bo_destroy(&mut self, client: ClientId, bo: BoId) -> R<Reply> {
        let c = self.client_mut(client)?;
        let entry = c.bos.remove(&bo.0).ok_or(SchemeError::UnknownObject {
            kind: "BO",
            id: bo.0,
        })?;
        self.charge_unref(entry.charge);
        Ok(Reply::None)
    }

    fn queue_create(
        &mut self,
        client: ClientId,
        vm: VmId,
        (class, priority, batches): (EngineClass, QueuePriority, BatchFormat),
        ctx: &CallerCtx,
    ) -> R<Reply> {
        if class == EngineClass::VmBind && priority != QueuePriority::Normal {
            return Err(SchemeError::Invalid("bind queues have no priority"));
        }
        if class == EngineClass::VmBind && batches != BatchFormat::Native {
            return Err(SchemeError::Invalid("bind queues run no batches"));
        }
        // As Xe (CAP_SYS_NICE): only the administrator may jump ahead of everyone else.
        if priority == QueuePriority::High && !self.privileged(ctx) {
            return Err(SchemeError::NotPrivileged("high exec-queue priority"));
        }
        let limits = self.limits;
        let engines = self.driver.device_info().engine_mask;
        let c = self.client_mut(client)?;
        c.check_object_limit(&limits)?;
        let vm_obj = c.vm(vm)?.vm.clone();
        if class != EngineClass::VmBind && engines & (1 << class as u16) == 0 {
            return Err(SchemeError::Invalid(
                "engine class not present on this device",
            ));
        }
        let queue = self
            .driver
            .queue_create(client, &vm_obj, class, priority, batches)?;
        let c = self.client_mut(client)?;
        let id = c.fresh_id();
        c.queues
            .insert(id, super::client::QueueEntry { queue, vm, class });
        Ok(Reply::NewId(id))
    }

    fn queue_destroy(
        &mut self,
        handle: usize,
        client: ClientId,
        q: QueueId,
        ctx: &CallerCtx,
    ) -> R<Reply> {
        let obj = self.client_mut(client)?.queue(q)?.queue.clone();
        let pending = self.driver.queue_destroy(&obj)?;
        self.client_mut(client)?.queues.remove(&q.0);
        self.park_pending(handle, ctx, pending)
    }

    fn vm_bind(
        &mut self,
        handle: usize,
        client: ClientId,
        req: VmBindRequest,
        ctx: &CallerCtx,
    ) -> R<Reply> {
        let info = self.driver.device_info();
        let usage = self.driver.client_usage(client);
        let limits = self.limits;
        let c = self
            .clients
            .get_mut(&client)
            .ok_or(SchemeError::BadHandle(0))?;
        let vm = c
            .vms
            .get(&req.vm.0)
            .ok_or(SchemeError::UnknownBindVm(req.vm.0))?;
        let (vm_obj, vm_flags) = (vm.vm.clone(), vm.flags);
        let queue = match req.queue {
            Some(q) => {
                let entry = c.queue(q)?;
                if entry.class != EngineClass::VmBind || entry.vm != req.vm {
                    return Err(SchemeError::Invalid("not a bind queue of this VM"));
                }
                Some(entry.queue.clone())
            }
            None => None,
        };
        let ops = req
            .ops
            .iter()
            .map(|op| resolve_bind_op(c, req.vm, vm_flags, &info, op))
            .collect::<R<Vec<_>>>()?;
        let syncs = resolve_syncs(c, &self.driver, vm_flags, &req.syncs)?;
        let maps = ops
            .iter()
            .filter(|o| {
                matches!(
                    o.op.kind,
                    BindOpKind::Map { .. }
                        | BindOpKind::MapNull
                        | BindOpKind::MapCpuMirror
                        | BindOpKind::MapUserptr { .. }
                )
            })
            .count() as u64;
        // The page tables a client's binds create are its system memory: a bind that maps
        // is refused once its BOs and tables reached the limit (one bind may overshoot by the
        // tables it creates, bounded by its op count).
        check_usage(
            c.system_bytes
                .saturating_add(usage.table_bytes)
                .saturating_add(usage.userptr_bytes),
            limits.system_bytes,
            Limit::SystemBytes,
            maps > 0,
        )?;
        check_usage(
            usage.gpu_mappings + maps,
            limits.gpu_mappings,
            Limit::GpuMappings,
            maps > 0,
        )?;
        check_usage(
            usage.in_flight + 1,
            limits.in_flight,
            Limit::InFlight,
            !syncs.is_empty(),
        )?;
        let pending = self
            .driver
            .vm_bind(client, &vm_obj, queue.as_ref(), ops, syncs)?;
        self.client_mut(client)?.counters.binds += 1;
        self.park_pending(handle, ctx, pending)
    }

    fn exec(
        &mut self,
        handle: usize,
        client: ClientId,
        req: ExecRequest,
        ctx: &CallerCtx,
    ) -> R<Reply> {
        let usage = self.driver.client_usage(client);
        let limits = self.limits;
        let c = self
            .clients
            .get_mut(&client)
            .ok_or(SchemeError::BadHandle(0))?;
        let q = c.queue(req.queue)?;
        if q.class == EngineClass::VmBind {
            return Err(SchemeError::Invalid("EXEC on a bind queue"));
        }
        let queue = q.queue.clone();
        let vm_flags = c.vm(q.vm)?.flags;
        let syncs = resolve_syncs(c, &self.driver, vm_flags, &req.syncs)?;
        if usage.in_flight + 1 > limits.in_flight {
            // Xe blocks a submission past its capacity: the call parks until work of the
            // client completes (later calls of the handle wait behind it).
            return self.park_for_capacity(handle, client, ctx);
        }
        // It may have waited for capacity: from here on it is a call with committed work.
        self.parking.remove(&(handle, ctx.id));
        let pending = self.driver.exec(client, &queue, &req.batches, syncs)?;
        self.client_mut(client)?.counters.execs += 1;
        self.park_pending(handle, ctx, pending)
    }

    fn syncobj_create(&mut self, client: ClientId, signaled: bool) -> R<Reply> {
        let limits = self.limits;
        self.client_mut(client)?.check_object_limit(&limits)?;
        let s = self.driver.syncobj_create(signaled)?;
        let c = self.client_mut(client)?;
        let id = c.fresh_id();
        c.syncobjs.insert(id, s);
        Ok(Reply::NewId(id))
    }

    fn syncobj_signal(&mut self, client: ClientId, points: Vec<SyncobjPoint>) -> R<Reply> {
        let c = self.client_mut(client)?;
        // Resolve all first: an unknown id fails the call before anything is signalled.
        let objs = points
            .iter()
            .map(|p| Ok((p.syncobj.0, c.syncobj(p.syncobj)?.clone(), p.point)))
            .collect::<R<Vec<_>>>()?;
        let adding = objs.iter().filter(|(_, _, point)| *point != 0).count() as u64;
        self.check_points(client, adding)?;
        for (_, s, point) in &objs {
            self.driver.syncobj_signal(s, *point)?;
        }
        for (id, s, _) in &objs {
            let points = self.driver.syncobj_points(s, false);
            self.client_mut(client)?.set_points(*id, points);
        }
        Ok(Reply::None)
    }

    /// SYNCOBJ_RESET (DRM's): every listed syncobj loses its fence (a timeline its whole
    /// chain). All ids are resolved first, so an unknown one resets nothing.
    fn syncobj_reset(&mut self, client: ClientId, ids: Vec<SyncobjId>) -> R<Reply> {
        let c = self.client_mut(client)?;
        let objs = ids
            .iter()
            .map(|id| Ok((id.0, c.syncobj(*id)?.clone())))
            .collect::<R<Vec<_>>>()?;
        for (_, s) in &objs {
            self.driver.syncobj_reset(s);
        }
        let c = self.client_mut(client)?;
        for (id, _) in &objs {
            c.set_points(*id, 0);
        }
        Ok(Reply::None)
    }

    /// Room for `adding` more timeline points of `client`: past its limit, the syncobjs it
    /// is charged for are recounted (signalled points collected) before the call is refused.
    fn check_points(&mut self, client: ClientId, adding: u64) -> R<()> {
        let limit = self.limits.timeline_points;
        let c = self
            .clients
            .get_mut(&client)
            .ok_or(SchemeError::BadHandle(0))?;
        if c.timeline_points.saturating_add(adding) <= limit {
            return Ok(());
        }
        for id in c.charged_syncobjs() {
            let points = c
                .syncobjs
                .get(&id)
                .map_or(0, |s| self.driver.syncobj_points(s, true));
            c.set_points(id, points);
        }
        check_usage(
            c.timeline_points.saturating_add(adding),
            limit,
            Limit::TimelinePoints,
            true,
        )
    }

    fn syncobj_transfer(&mut self, client: ClientId, req: SyncobjTransferRequest) -> R<Reply> {
        let c = self.client_mut(client)?;
        let src = c.syncobj(req.src.syncobj)?.clone();
        let dst = c.syncobj(req.dst.syncobj)?.clone();
        let state = self.driver.syncobj_state(&src, req.src.point);
        if state == crate::driver::PointState::NoFence && !req.wait_for_submit {
            return Err(crate::driver::DriverError::NoFence {
                point: req.src.point,
            }
            .into());
        }
        self.check_points(client, u64::from(req.dst.point != 0))?;
        self.driver
            .syncobj_transfer(&src, req.src.point, &dst, req.dst.point)?;
        let points = self.driver.syncobj_points(&dst, false);
        self.client_mut(client)?
            .set_points(req.dst.syncobj.0, points);
        Ok(Reply::None)
    }
}

fn check_usage(requested: u64, limit_value: u64, limit: Limit, applies: bool) -> R<()> {
    if applies && requested > limit_value {
        return Err(SchemeError::LimitExceeded {
            limit,
            requested,
            limit_value,
        });
    }
    Ok(())
}

/// The VM_BIND rules that need state: ownership, BO bounds, VM flags, VA bounds, PAT range.
fn resolve_bind_op<D: GpuDriver>(
    c: &Client<D>,
    vm: VmId,
    vm_flags: VmCreateFlags,
    info: &crate::driver::DeviceInfo,
    op: &BindOp,
) -> R<ResolvedBindOp<D::Bo>> {
    if op.pat_index as u32 >= info.pat_entries.max(1) {
        return Err(SchemeError::Invalid("pat_index out of range"));
    }
    if op.range != 0 {
        check_va(op.addr, op.range, info)?;
    }
    let bo = match op.kind {
        BindOpKind::Map { bo, bo_offset } => {
            let entry = c.bo(bo)?;
            if bo_offset
                .checked_add(op.range)
                .is_none_or(|end| end > entry.size)
            {
                return Err(SchemeError::Invalid("bo_offset + range beyond the BO"));
            }
            if entry.private_to.is_some_and(|owner| owner != vm) {
                return Err(SchemeError::Invalid("BO is private to another VM"));
            }
            Some(entry.bo.clone())
        }
        BindOpKind::UnmapAll { bo } => Some(c.bo(bo)?.bo.clone()),
        BindOpKind::MapCpuMirror if !vm_flags.contains(VmCreateFlags::FAULT_MODE) => {
            return Err(SchemeError::Invalid(
                "CPU_ADDR_MIRROR needs a fault-mode VM",
            ))
        }
        _ => None,
    };
    Ok(ResolvedBindOp { op: *op, bo })
}

fn check_va(addr: u64, range: u64, info: &crate::driver::DeviceInfo) -> R<()> {
    let va_size = 1u64.checked_shl(info.va_bits).unwrap_or(u64::MAX);
    let end = addr
        .checked_add(range)
        .ok_or(SchemeError::Invalid("VA range overflows"))?;
    if end > va_size {
        return Err(SchemeError::Invalid("VA range beyond the VM"));
    }
    let r_start = info.reserved_va_start;
    let r_end = r_start.saturating_add(info.reserved_va_len);
    if info.reserved_va_len != 0 && addr < r_end && r_start < end {
        return Err(SchemeError::Invalid(
            "VA range intersects the reserved region",
        ));
    }
    Ok(())
}

/// The sync rules that need state: ownership, LR VMs, waits on fence-less points.
fn resolve_syncs<D: GpuDriver>(
    c: &Client<D>,
    driver: &D,
    vm_flags: VmCreateFlags,
    syncs: &[SyncSpec],
) -> R<Vec<ResolvedSync<D::Syncobj>>> {
    syncs
        .iter()
        .map(|s| {
            let (id, point) = match s.kind {
                SyncKind::UserFence { addr, value } => {
                    return Ok(ResolvedSync::UserFence { addr, value })
                }
                SyncKind::Syncobj(id) => (id, 0),
                SyncKind::Timeline(id, point) => (id, point),
            };
            let obj = c.syncobj(id)?.clone();
            if s.signal {
                if vm_flags.contains(VmCreateFlags::LR_MODE) {
                    return Err(SchemeError::NotSupported(
                        "syncobj out-sync on a long-running VM",
                    ));
                }
                return Ok(ResolvedSync::Signal(obj, point));
            }
            if driver.syncobj_state(&obj, point) == crate::driver::PointState::NoFence {
                return Err(crate::driver::DriverError::NoFence { point }.into());
            }
            Ok(ResolvedSync::Wait(obj, point))
        })
        .collect()
}
