//! The Xe ioctls (`drm/xe_drm.h`) translated into gpud requests.
//!
//! Owns: Xe's own argument checks (extensions, pads, reserved words, unknown flags and ops,
//! alignment: the checks Linux's `xe_*_ioctl` make before looking anything up, with Xe's
//! errno) and the mapping of each Xe struct onto one gpud request. Must not: keep object
//! state or emulate what gpud does not do — a missing gpud feature is an honest errno
//! (`docs/xe-compat.md` lists them).
//!
//! What gpud checks (ids, ranges against the VA space and BO sizes, limits) comes back as
//! gpud's errno.

use gpu_scheme::uapi::flags::{
    BatchFormat, BindFlags, BoCreateFlags, EngineClass, Placement, QueuePriority, Region,
    VmCreateFlags,
};
use gpu_scheme::uapi::wire::{BoCreateArgs, ExecQueueCreateArgs, VmCreateArgs};
use gpu_scheme::uapi::{
    BindOp, BindOpKind, BoCreateRequest, BoId, ExecRequest, QueueId, Request, SyncKind, SyncSpec,
    SyncobjId, VmBindRequest, VmId,
};
use zerocopy::IntoBytes;

use crate::device::{errno::*, read_array, read_struct, Errno, Process, XeDevice};
use crate::uapi::{xe, *};

/// The PCI device id reported: an Xe-HPG (graphics IP 12.55) part, whose 4-entry PAT table
/// (0 WB, 1 WC, 2 WT, 3 UC) is gpud's, so `pat_index` values pass through unchanged.
pub const DEVICE_ID: u64 = 0x56a0;

/// Largest extension chain Xe follows (`MAX_USER_EXTENSIONS`).
const MAX_EXTENSIONS: usize = 16;
/// Largest number of engine instances in one EXEC_QUEUE_CREATE (`XE_HW_ENGINE_MAX_INSTANCE`).
const MAX_INSTANCES: usize = 9;
/// Largest bind array read (beyond it gpud's own cap answers anyway).
const MAX_BIND_OPS: u32 = 1 << 16;
/// GPU addresses are 48 bits; Xe programs may pass them sign-extended (canonical).
const VA_MASK: u64 = (1 << 48) - 1;

/// Memory-region instance of system memory (placement bit 0).
const REGION_SYSMEM: u32 = 1 << 0;
/// Memory-region instance of VRAM (placement bit 1).
const REGION_VRAM: u32 = 1 << 1;

fn nonzero(words: &[u64]) -> bool {
    words.iter().any(|w| *w != 0)
}

fn check(bad: bool, e: Errno) -> Result<(), Errno> {
    if bad {
        Err(e)
    } else {
        Ok(())
    }
}

/// DRM_IOCTL_XE_DEVICE_QUERY.
pub fn device_query(d: &XeDevice, p: &dyn Process, q: &mut XeDeviceQuery) -> Result<(), Errno> {
    check(q.extensions != 0 || nonzero(&q.reserved), EINVAL)?;
    let data = match q.query {
        xe::QUERY_ENGINES => engines(d),
        xe::QUERY_MEM_REGIONS => mem_regions(d)?,
        xe::QUERY_CONFIG => config(d),
        xe::QUERY_GT_LIST => gt_list(d),
        // No hardware configuration table: Xe answers size 0 on parts without one.
        xe::QUERY_HWCONFIG => Vec::new(),
        xe::QUERY_GT_TOPOLOGY
        | xe::QUERY_ENGINE_CYCLES
        | xe::QUERY_UC_FW_VERSION
        | xe::QUERY_OA_UNITS
        | xe::QUERY_EU_STALL => return Err(EOPNOTSUPP),
        _ => return Err(EINVAL),
    };
    let size = u32::try_from(data.len()).map_err(|_| EINVAL)?;
    if q.size == 0 {
        q.size = size;
        return Ok(());
    }
    check(q.size != size, EINVAL)?;
    p.write(q.data, &data)
}

fn engines(d: &XeDevice) -> Vec<u8> {
    let classes = [
        (EngineClass::Copy, xe::ENGINE_CLASS_COPY),
        (EngineClass::Compute, xe::ENGINE_CLASS_COMPUTE),
    ];
    let list: Vec<XeEngine> = classes
        .iter()
        .filter(|(c, _)| d.info.has_engine(*c))
        .map(|&(_, engine_class)| XeEngine {
            instance: XeEngineClassInstance {
                engine_class,
                ..Default::default()
            },
            ..Default::default()
        })
        .collect();
    let head = XeQueryEngines {
        num_engines: list.len() as u32,
        pad: 0,
    };
    [head.as_bytes(), list.as_slice().as_bytes()].concat()
}

fn mem_regions(d: &XeDevice) -> Result<Vec<u8>, Errno> {
    // Free bytes change: ask gpud now.
    let info = d
        .dev
        .query()
        .map_err(|e| crate::device::transport_errno(&e.source))?;
    let mut list = vec![XeMemRegion {
        mem_class: xe::MEM_CLASS_SYSMEM,
        instance: 0,
        min_page_size: 4096,
        total_size: info.sys_size,
        used: info.sys_size.saturating_sub(info.sys_free),
        ..Default::default()
    }];
    if info.vram_size != 0 {
        list.push(XeMemRegion {
            mem_class: xe::MEM_CLASS_VRAM,
            instance: 1,
            min_page_size: 4096,
            total_size: info.vram_size,
            used: info.vram_size.saturating_sub(info.vram_free),
            cpu_visible_size: info.vram_size,
            ..Default::default()
        });
    }
    let head = XeQueryMemRegions {
        num_mem_regions: list.len() as u32,
        pad: 0,
    };
    Ok([head.as_bytes(), list.as_slice().as_bytes()].concat())
}

fn config(d: &XeDevice) -> Vec<u8> {
    let mut info = [0u64; xe::CONFIG_PARAMS];
    info[xe::CONFIG_REV_AND_DEVICE_ID] = DEVICE_ID;
    if d.info.vram_size != 0 {
        info[xe::CONFIG_FLAGS] = xe::CONFIG_FLAG_HAS_VRAM;
    }
    info[xe::CONFIG_MIN_ALIGNMENT] = 4096;
    info[xe::CONFIG_VA_BITS] = u64::from(d.info.va_bits);
    info[xe::CONFIG_MAX_EXEC_QUEUE_PRIORITY] = QueuePriority::High as u64;
    let head = XeQueryConfig {
        num_params: xe::CONFIG_PARAMS as u32,
        pad: 0,
    };
    [head.as_bytes(), info.as_bytes()].concat()
}

fn gt_list(d: &XeDevice) -> Vec<u8> {
    let (near, far) = if d.info.vram_size != 0 {
        (u64::from(REGION_VRAM), u64::from(REGION_SYSMEM))
    } else {
        (u64::from(REGION_SYSMEM), 0)
    };
    let gt = XeGt {
        reference_clock: 19_200_000,
        near_mem_regions: near,
        far_mem_regions: far,
        ..Default::default()
    };
    let head = XeQueryGtList { num_gt: 1, pad: 0 };
    [head.as_bytes(), gt.as_bytes()].concat()
}

/// DRM_IOCTL_XE_GEM_CREATE.
pub fn gem_create(d: &XeDevice, a: &mut XeGemCreate) -> Result<(), Errno> {
    let known =
        xe::GEM_CREATE_DEFER_BACKING | xe::GEM_CREATE_SCANOUT | xe::GEM_CREATE_NEEDS_VISIBLE_VRAM;
    let regions = if d.info.vram_size != 0 {
        REGION_SYSMEM | REGION_VRAM
    } else {
        REGION_SYSMEM
    };
    check(a.extensions != 0, EINVAL)?;
    check(a.pad != [0; 3] || nonzero(&a.reserved), EINVAL)?;
    check(a.flags & !known != 0 || a.handle != 0, EINVAL)?;
    check(a.placement == 0 || a.placement & !regions != 0, EINVAL)?;
    check(a.size == 0 || a.size % 4096 != 0, EINVAL)?;
    let vram = a.placement & REGION_VRAM != 0;
    check(
        a.flags & xe::GEM_CREATE_NEEDS_VISIBLE_VRAM != 0 && !vram,
        EINVAL,
    )?;
    check(
        a.cpu_caching == 0 || a.cpu_caching > xe::CPU_CACHING_WC,
        EINVAL,
    )?;
    check(vram && a.cpu_caching != xe::CPU_CACHING_WC, EINVAL)?;
    let scanout = a.flags & xe::GEM_CREATE_SCANOUT != 0;
    check(scanout && a.cpu_caching == xe::CPU_CACHING_WB, EINVAL)?;
    let mut flags = BoCreateFlags::empty();
    flags.set(
        BoCreateFlags::DEFER_BACKING,
        a.flags & xe::GEM_CREATE_DEFER_BACKING != 0,
    );
    flags.set(
        BoCreateFlags::NEEDS_VISIBLE_VRAM,
        a.flags & xe::GEM_CREATE_NEEDS_VISIBLE_VRAM != 0,
    );
    let req = Request::BoCreate(BoCreateRequest {
        size: a.size,
        placement: Placement::from_bits_retain(a.placement),
        flags,
        vm: (a.vm_id != 0).then_some(VmId(a.vm_id)),
    });
    let out: BoCreateArgs = d.call(&req)?;
    a.handle = out.bo_id;
    Ok(())
}

/// DRM_IOCTL_XE_GEM_MMAP_OFFSET: the offset names the handle; `mmap` resolves it.
pub fn gem_mmap_offset(d: &XeDevice, a: &mut XeGemMmapOffset) -> Result<(), Errno> {
    check(
        a.extensions != 0 || a.flags != 0 || nonzero(&a.reserved),
        EINVAL,
    )?;
    check(
        a.handle == 0 || a.handle >= 1 << (63 - crate::device::MMAP_OFFSET_SHIFT),
        ENOENT,
    )?;
    // The BO must exist; its memory fd is fetched now and kept for the mmap calls.
    drop(d.bo_memory(a.handle, 0, 1)?);
    a.offset = u64::from(a.handle) << crate::device::MMAP_OFFSET_SHIFT;
    Ok(())
}

/// DRM_IOCTL_XE_VM_CREATE.
pub fn vm_create(d: &XeDevice, a: &mut XeVmCreate) -> Result<(), Errno> {
    check(a.extensions != 0 || nonzero(&a.reserved), EINVAL)?;
    let flags = VmCreateFlags::from_bits(a.flags).ok_or(EINVAL)?;
    let fault = flags.contains(VmCreateFlags::FAULT_MODE);
    check(fault && flags.contains(VmCreateFlags::SCRATCH_PAGE), EINVAL)?;
    check(fault && !flags.contains(VmCreateFlags::LR_MODE), EINVAL)?;
    let out: VmCreateArgs = d.call(&Request::VmCreate(flags))?;
    a.vm_id = out.vm_id;
    Ok(())
}

/// DRM_IOCTL_XE_VM_DESTROY.
pub fn vm_destroy(d: &XeDevice, a: &XeVmDestroy) -> Result<(), Errno> {
    check(a.pad != 0 || nonzero(&a.reserved), EINVAL)?;
    d.send(&Request::VmDestroy(VmId(a.vm_id)))
}

/// DRM_IOCTL_XE_VM_BIND.
pub fn vm_bind(d: &XeDevice, p: &dyn Process, a: &XeVmBind) -> Result<(), Errno> {
    check(a.extensions != 0 || a.pad != 0 || a.pad2 != 0, EINVAL)?;
    check(nonzero(&a.reserved), EINVAL)?;
    check(a.num_binds > MAX_BIND_OPS, EINVAL)?;
    let ops: Vec<XeVmBindOp> = match a.num_binds {
        0 => Vec::new(),
        1 => vec![a.bind],
        n => read_array(p, a.bind.extensions, n as usize).map_err(|_| EFAULT)?,
    };
    let syncs = syncs(p, a.syncs, a.num_syncs)?;
    let mut gpud_ops = Vec::with_capacity(ops.len());
    for op in &ops {
        gpud_ops.push(bind_op(d, op)?);
    }
    // MAP_USERPTR: the memory becomes GPU-visible first (gpud reaches it through a memfd).
    for (op, xop) in gpud_ops.iter().zip(&ops) {
        if let BindOpKind::MapUserptr { userptr } = op.kind {
            d.ensure_userptr(p, userptr, xop.range)?;
        }
    }
    d.send(&Request::VmBind(VmBindRequest {
        vm: VmId(a.vm_id),
        queue: (a.exec_queue_id != 0).then_some(QueueId(a.exec_queue_id)),
        ops: gpud_ops,
        syncs,
    }))
}

/// One bind op: Xe's checks (`vm_bind_ioctl_check_args`), then the gpud op.
fn bind_op(d: &XeDevice, o: &XeVmBindOp) -> Result<BindOp, Errno> {
    let known = xe::BIND_FLAG_READONLY
        | xe::BIND_FLAG_IMMEDIATE
        | xe::BIND_FLAG_NULL
        | xe::BIND_FLAG_DUMPABLE;
    let is_null = o.flags & xe::BIND_FLAG_NULL != 0;
    let (obj, op) = (o.obj != 0, o.op);
    let regions = if d.info.vram_size != 0 { 0b11 } else { 0b01 };
    // `pat_index` passes through unchanged (see `DEVICE_ID`); index 0 (WB) is the only
    // coherent one, which Xe requires of userptr.
    check(u32::from(o.pat_index) >= d.info.pat_entries, EINVAL)?;
    check(o.pad != 0 || o.pad2 != 0 || nonzero(&o.reserved), EINVAL)?;
    check(op > xe::BIND_OP_PREFETCH || o.flags & !known != 0, EINVAL)?;
    check(
        is_null && (obj || o.obj_offset != 0 || op != xe::BIND_OP_MAP),
        EINVAL,
    )?;
    check(!obj && op == xe::BIND_OP_MAP && !is_null, EINVAL)?;
    check(!obj && op == xe::BIND_OP_UNMAP_ALL, EINVAL)?;
    check(
        op == xe::BIND_OP_UNMAP_ALL && (o.addr != 0 || o.range != 0),
        EINVAL,
    )?;
    check(obj && op == xe::BIND_OP_MAP_USERPTR, EINVAL)?;
    check(op == xe::BIND_OP_MAP_USERPTR && o.pat_index != 0, EINVAL)?;
    check(
        obj && (op == xe::BIND_OP_PREFETCH || op == xe::BIND_OP_UNMAP),
        EINVAL,
    )?;
    let region = o.prefetch_mem_region_instance;
    check(region != 0 && op != xe::BIND_OP_PREFETCH, EINVAL)?;
    check(region >= 32 || (1u32 << region) & regions == 0, EINVAL)?;
    check(o.obj_offset % 4096 != 0 || o.addr % 4096 != 0, EINVAL)?;
    check(o.range % 4096 != 0, EINVAL)?;
    check(o.range == 0 && op != xe::BIND_OP_UNMAP_ALL, EINVAL)?;
    let kind = match op {
        xe::BIND_OP_MAP if is_null => BindOpKind::MapNull,
        xe::BIND_OP_MAP => BindOpKind::Map {
            bo: BoId(o.obj),
            bo_offset: o.obj_offset,
        },
        xe::BIND_OP_UNMAP => BindOpKind::Unmap,
        xe::BIND_OP_MAP_USERPTR => BindOpKind::MapUserptr {
            userptr: o.obj_offset,
        },
        xe::BIND_OP_UNMAP_ALL => BindOpKind::UnmapAll { bo: BoId(o.obj) },
        _ => BindOpKind::Prefetch {
            region: Region::from_raw(region).ok_or(EINVAL)?,
        },
    };
    let mut flags = BindFlags::empty();
    flags.set(BindFlags::READONLY, o.flags & xe::BIND_FLAG_READONLY != 0);
    flags.set(BindFlags::IMMEDIATE, o.flags & xe::BIND_FLAG_IMMEDIATE != 0);
    // DUMPABLE asks for the range in a device coredump; gpud writes none, so it has no effect.
    Ok(BindOp {
        kind,
        addr: o.addr,
        range: o.range,
        flags,
        pat_index: o.pat_index,
    })
}

/// The sync array of VM_BIND / EXEC (`xe_sync_entry_parse`'s checks).
fn syncs(p: &dyn Process, addr: u64, n: u32) -> Result<Vec<SyncSpec>, Errno> {
    check(n > xe::MAX_SYNCS, EINVAL)?;
    if n == 0 {
        return Ok(Vec::new());
    }
    let raw: Vec<XeSync> = read_array(p, addr, n as usize).map_err(|_| EFAULT)?;
    raw.iter().map(sync).collect()
}

fn sync(s: &XeSync) -> Result<SyncSpec, Errno> {
    check(s.extensions != 0 || nonzero(&s.reserved), EINVAL)?;
    check(s.flags & !xe::SYNC_FLAG_SIGNAL != 0, EINVAL)?;
    let signal = s.flags & xe::SYNC_FLAG_SIGNAL != 0;
    let handle = || -> Result<SyncobjId, Errno> {
        check(s.handle_or_addr >> 32 != 0, EINVAL)?;
        Ok(SyncobjId(s.handle_or_addr as u32))
    };
    let kind = match s.sync_type {
        xe::SYNC_TYPE_SYNCOBJ => SyncKind::Syncobj(handle()?),
        xe::SYNC_TYPE_TIMELINE_SYNCOBJ => {
            check(s.timeline_value == 0, EINVAL)?;
            SyncKind::Timeline(handle()?, s.timeline_value)
        }
        xe::SYNC_TYPE_USER_FENCE => {
            check(!signal, EOPNOTSUPP)?;
            check(s.handle_or_addr % 8 != 0, EINVAL)?;
            // Xe writes user fences at CPU addresses; gpud writes them at GPU VAs of the VM.
            return Err(EOPNOTSUPP);
        }
        _ => return Err(EINVAL),
    };
    Ok(SyncSpec { kind, signal })
}

/// DRM_IOCTL_XE_EXEC_QUEUE_CREATE.
pub fn exec_queue_create(
    d: &XeDevice,
    p: &dyn Process,
    a: &mut XeExecQueueCreate,
) -> Result<(), Errno> {
    check(a.flags != 0 || nonzero(&a.reserved), EINVAL)?;
    let len = usize::from(a.width) * usize::from(a.num_placements);
    check(len == 0 || len > MAX_INSTANCES, EINVAL)?;
    let eci: Vec<XeEngineClassInstance> = read_array(p, a.instances, len).map_err(|_| EFAULT)?;
    let first = eci.first().copied().unwrap_or_default();
    // One engine per class, instance 0 on GT 0: no parallel or multi-placement queues.
    check(
        len != 1 || first.engine_instance != 0 || first.gt_id != 0,
        EINVAL,
    )?;
    check(first.pad != 0, EINVAL)?;
    let class = match first.engine_class {
        xe::ENGINE_CLASS_VM_BIND => EngineClass::VmBind,
        xe::ENGINE_CLASS_COPY => EngineClass::Copy,
        xe::ENGINE_CLASS_COMPUTE => EngineClass::Compute,
        _ => return Err(EINVAL),
    };
    check(
        class != EngineClass::VmBind && !d.info.has_engine(class),
        EINVAL,
    )?;
    let priority = queue_properties(p, a.extensions)?;
    // Xe programs' batches are Intel MI_* command streams; bind queues run none.
    let batches = if class == EngineClass::VmBind {
        BatchFormat::Native
    } else {
        BatchFormat::Intel
    };
    let out: ExecQueueCreateArgs = d.call(&Request::ExecQueueCreate {
        vm: VmId(a.vm_id),
        class,
        priority,
        batches,
    })?;
    a.exec_queue_id = out.queue_id;
    Ok(())
}

/// The SET_PROPERTY extension chain of EXEC_QUEUE_CREATE: the priority it sets.
fn queue_properties(p: &dyn Process, mut next: u64) -> Result<QueuePriority, Errno> {
    let mut priority = QueuePriority::Normal;
    let mut seen = 0;
    while next != 0 {
        check(seen >= MAX_EXTENSIONS, libc::E2BIG)?;
        seen += 1;
        let ext: XeExtSetProperty = read_struct(p, next).map_err(|_| EFAULT)?;
        check(
            ext.base.name != xe::EXEC_QUEUE_EXTENSION_SET_PROPERTY,
            EINVAL,
        )?;
        check(
            ext.base.pad != 0 || ext.pad != 0 || nonzero(&ext.reserved),
            EINVAL,
        )?;
        match ext.property {
            xe::EXEC_QUEUE_PROPERTY_PRIORITY => {
                priority = u32::try_from(ext.value)
                    .ok()
                    .and_then(QueuePriority::from_raw)
                    .ok_or(EINVAL)?;
            }
            // gpud schedules without per-queue timeslices.
            xe::EXEC_QUEUE_PROPERTY_TIMESLICE => return Err(EOPNOTSUPP),
            _ => return Err(EINVAL),
        }
        next = ext.base.next_extension;
    }
    Ok(priority)
}

/// DRM_IOCTL_XE_EXEC_QUEUE_DESTROY.
pub fn exec_queue_destroy(d: &XeDevice, a: &XeExecQueueDestroy) -> Result<(), Errno> {
    check(a.pad != 0 || nonzero(&a.reserved), EINVAL)?;
    d.send(&Request::ExecQueueDestroy(QueueId(a.exec_queue_id)))
}

/// DRM_IOCTL_XE_EXEC_QUEUE_GET_PROPERTY: gpud's uAPI has no query of a queue's ban state.
pub fn exec_queue_get_property(a: &XeExecQueueGetProperty) -> Result<(), Errno> {
    check(a.extensions != 0 || nonzero(&a.reserved), EINVAL)?;
    check(a.property != xe::EXEC_QUEUE_GET_PROPERTY_BAN, EINVAL)?;
    Err(EOPNOTSUPP)
}

/// DRM_IOCTL_XE_EXEC.
pub fn exec(d: &XeDevice, p: &dyn Process, a: &XeExec) -> Result<(), Errno> {
    check(
        a.extensions != 0 || a.pad != [0; 3] || nonzero(&a.reserved),
        EINVAL,
    )?;
    // Every queue has width 1: one batch, or none (a pure sync operation).
    check(a.num_batch_buffer > 1, EINVAL)?;
    let syncs = syncs(p, a.syncs, a.num_syncs)?;
    let batches = if a.num_batch_buffer == 1 {
        vec![a.address & VA_MASK]
    } else {
        Vec::new()
    };
    d.send(&Request::Exec(ExecRequest {
        queue: QueueId(a.exec_queue_id),
        batches,
        syncs,
    }))
}

/// DRM_IOCTL_XE_WAIT_USER_FENCE: Xe waits at a CPU address; gpud at a GPU VA of a VM.
pub fn wait_user_fence(a: &XeWaitUserFence) -> Result<(), Errno> {
    check(a.extensions != 0 || a.pad != 0 || a.pad2 != 0, EINVAL)?;
    check(nonzero(&a.reserved), EINVAL)?;
    check(a.flags & !xe::UFENCE_WAIT_FLAG_ABSTIME != 0, EINVAL)?;
    check(a.op > xe::UFENCE_WAIT_OP_LTE || a.addr % 8 != 0, EINVAL)?;
    Err(EOPNOTSUPP)
}
