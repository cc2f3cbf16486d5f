//! gpu-capi: the C client library of the gpu scheme (`libgpu.so` / `libgpu.a`, header
//! `include/libgpu.h`, wire structs `include/gpu.h`; guide: `docs/c-api.md`).
//!
//! Owns: the `extern "C"` functions, the opaque `gpu_device` (a libgpu `Device` plus the BO
//! mappings and exported handles it must keep alive), and the translation of results into
//! 0 / negative errno. Must not: know request semantics beyond the wire layout — requests are
//! the caller's wire structs, framed with a `CallHeader` and sent as they are, so the server's
//! decoder judges them exactly as it judges any other client's.
//!
//! Safety at the boundary: every pointer is checked for NULL; arrays are read with the counts
//! the caller gives and are capped at the uAPI's maxima before anything is read; the device
//! pointer must be one `gpu_device_open` returned and not yet closed (that is the C
//! contract, as with any handle-based C library).

mod call;

use call::{call, errno_of};
use gpu_scheme::uapi::flags::{ExecQueueCreateFlags, ObjectKind, QueuePriority};
use gpu_scheme::uapi::wire::{self, Opcode};
use libgpu::transport::{Handle, Mapping};
use libgpu::Device;
use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::path::PathBuf;
use std::sync::Mutex;
use zerocopy::{FromZeros, IntoBytes};

/// A live BO mapping and the BO handle it was made through.
type BoMapping = (Box<dyn Handle>, Box<dyn Mapping>);

/// A device handle (one client of gpud): opaque.
pub struct GpuDevice {
    dev: Device,
    /// Live BO mappings by address, each with the BO handle it was made through.
    maps: Mutex<HashMap<usize, BoMapping>>,
    /// Exported objects: the derived handle whose life is the token's (kind, id).
    exports: Mutex<HashMap<(u32, u32), Box<dyn Handle>>>,
}

const EINVAL: c_int = 22;
const EFAULT: c_int = 14;

/// Runs `f` on the device behind `dev`, turning errors into negative errno.
///
/// # Safety
/// `dev` is NULL or a pointer `gpu_device_open` returned that was not closed.
unsafe fn with_dev(dev: *mut GpuDevice, f: impl FnOnce(&GpuDevice) -> Result<(), c_int>) -> c_int {
    // SAFETY: the caller's contract: NULL or a live device.
    match unsafe { dev.as_ref() } {
        None => -EINVAL,
        Some(d) => match f(d) {
            Ok(()) => 0,
            Err(e) => -e.abs(),
        },
    }
}

/// Writes `value` through an out pointer; `EFAULT` for NULL.
///
/// # Safety
/// `out` is NULL or valid for a write of `T`.
unsafe fn put<T>(out: *mut T, value: T) -> Result<(), c_int> {
    if out.is_null() {
        return Err(EFAULT);
    }
    // SAFETY: non-NULL, and the caller promises it is writable.
    unsafe { out.write_unaligned(value) };
    Ok(())
}

/// `count` elements at `ptr` as bytes (empty for 0); `EFAULT` for NULL with `count > 0`,
/// `EINVAL` above `max`.
///
/// # Safety
/// `ptr` is valid for reads of `count` elements of `T` when `count > 0`.
unsafe fn elems<'a, T: IntoBytes + zerocopy::Immutable + 'a>(
    ptr: *const T,
    count: u32,
    max: u32,
) -> Result<&'a [u8], c_int> {
    if count == 0 {
        return Ok(&[]);
    }
    if count > max {
        return Err(EINVAL);
    }
    if ptr.is_null() {
        return Err(EFAULT);
    }
    // SAFETY: the caller promises `count` readable elements; the count is bounded above.
    let s = unsafe { std::slice::from_raw_parts(ptr, count as usize) };
    Ok(s.as_bytes())
}

/// A 128-bit token read from `token[2]`.
///
/// # Safety
/// `token` is NULL or valid for reads of two `u64`.
unsafe fn read_token(token: *const u64) -> Result<[u64; 2], c_int> {
    if token.is_null() {
        return Err(EFAULT);
    }
    // SAFETY: non-NULL and, by contract, two readable u64.
    Ok(unsafe { [token.read_unaligned(), token.add(1).read_unaligned()] })
}

/// Opens card0 of the gpud listening at `socket_path` (NULL: $GPUD_SOCKET, else
/// $XDG_RUNTIME_DIR/gpud.sock, else gpud.sock in the temporary directory; on Redox NULL is
/// /scheme/gpu). -ENOENT / -ECONNREFUSED: no gpud there (start it with `gpud serve`).
///
/// # Safety
/// `socket_path` is NULL or a NUL-terminated string; `out` is valid for a pointer write.
#[no_mangle]
pub unsafe extern "C" fn gpu_device_open(
    socket_path: *const c_char,
    out: *mut *mut GpuDevice,
) -> c_int {
    if out.is_null() {
        return -EFAULT;
    }
    let dev = if socket_path.is_null() {
        default_open()
    } else {
        // SAFETY: non-NULL and NUL-terminated by contract.
        let path = unsafe { CStr::from_ptr(socket_path) };
        match path.to_str() {
            Ok(p) => Device::open_at(&PathBuf::from(p)),
            Err(_) => return -EINVAL,
        }
    };
    match dev {
        Ok(dev) => {
            let d = Box::new(GpuDevice {
                dev,
                maps: Mutex::new(HashMap::new()),
                exports: Mutex::new(HashMap::new()),
            });
            // SAFETY: checked non-NULL above; writable by contract.
            unsafe { out.write(Box::into_raw(d)) };
            0
        }
        Err(e) => -e.errno(),
    }
}

#[cfg(target_os = "linux")]
fn default_open() -> libgpu::Result<Device> {
    Device::open_at(&gpu_scheme::host::default_socket_path())
}

#[cfg(not(target_os = "linux"))]
fn default_open() -> libgpu::Result<Device> {
    Device::open("card0")
}

/// Closes the device: every object, mapping and export of it goes away. NULL is ignored.
///
/// # Safety
/// `dev` is NULL or a pointer `gpu_device_open` returned that was not closed; no other
/// thread uses it during or after this call.
#[no_mangle]
pub unsafe extern "C" fn gpu_device_close(dev: *mut GpuDevice) {
    if !dev.is_null() {
        // SAFETY: the pointer came from `Box::into_raw` in `gpu_device_open` and is closed once.
        drop(unsafe { Box::from_raw(dev) });
    }
}

/// DEVICE_QUERY: the device's facts (VA bits, engines, page sizes, memory).
///
/// # Safety
/// `dev` open; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn gpu_device_query(
    dev: *mut GpuDevice,
    out: *mut wire::DeviceQueryArgs,
) -> c_int {
    // SAFETY: contract forwarded.
    unsafe {
        with_dev(dev, |d| {
            let mut a = wire::DeviceQueryArgs::new_zeroed();
            call(d.dev.handle(), Opcode::DeviceQuery, &mut a, &[])?;
            put(out, a)
        })
    }
}

/// VM_CREATE (flags: `GPU_VM_CREATE_*`).
///
/// # Safety
/// `dev` open; `vm_id` writable.
#[no_mangle]
pub unsafe extern "C" fn gpu_vm_create(dev: *mut GpuDevice, flags: u32, vm_id: *mut u32) -> c_int {
    // SAFETY: contract forwarded.
    unsafe {
        with_dev(dev, |d| {
            let mut a = wire::VmCreateArgs {
                flags,
                ..Default::default()
            };
            call(d.dev.handle(), Opcode::VmCreate, &mut a, &[])?;
            put(vm_id, a.vm_id)
        })
    }
}

/// Sends a destroy call for `id` with `op`.
fn destroy(d: &GpuDevice, op: Opcode, id: u32) -> Result<(), c_int> {
    let mut a = wire::IdArgs {
        id,
        ..Default::default()
    };
    call(d.dev.handle(), op, &mut a, &[])
}

/// VM_DESTROY. -EBUSY while exec or bind queues of the VM remain.
///
/// # Safety
/// `dev` open.
#[no_mangle]
pub unsafe extern "C" fn gpu_vm_destroy(dev: *mut GpuDevice, vm_id: u32) -> c_int {
    // SAFETY: contract forwarded.
    unsafe { with_dev(dev, |d| destroy(d, Opcode::VmDestroy, vm_id)) }
}

/// BO_CREATE: `placement` is a `GPU_PLACEMENT_*` mask, `flags` `GPU_BO_CREATE_*`; `vm_id` 0
/// makes an external (shareable) BO, else a BO private to that VM.
///
/// # Safety
/// `dev` open; `bo_id` writable.
#[no_mangle]
pub unsafe extern "C" fn gpu_bo_create(
    dev: *mut GpuDevice,
    size: u64,
    placement: u32,
    flags: u32,
    vm_id: u32,
    bo_id: *mut u32,
) -> c_int {
    // SAFETY: contract forwarded.
    unsafe {
        with_dev(dev, |d| {
            let mut a = wire::BoCreateArgs {
                size,
                placement,
                flags,
                vm_id,
                ..Default::default()
            };
            call(d.dev.handle(), Opcode::BoCreate, &mut a, &[])?;
            put(bo_id, a.bo_id)
        })
    }
}

/// BO_DESTROY: drops the id (and this library's export of it); the memory lives on while
/// mapped or bound.
///
/// # Safety
/// `dev` open.
#[no_mangle]
pub unsafe extern "C" fn gpu_bo_destroy(dev: *mut GpuDevice, bo_id: u32) -> c_int {
    // SAFETY: contract forwarded.
    unsafe {
        with_dev(dev, |d| {
            destroy(d, Opcode::BoDestroy, bo_id)?;
            lock(&d.exports).remove(&(ObjectKind::Bo as u32, bo_id));
            Ok(())
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic cannot happen while the lock is held (plain map operations); recover anyway.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Maps `len` bytes at `offset` (page-aligned) of a BO, shared and read-write; the GPU writes
/// it concurrently, so read it through volatile pointers or atomics.
///
/// # Safety
/// `dev` open; `ptr` writable.
#[no_mangle]
pub unsafe extern "C" fn gpu_bo_mmap(
    dev: *mut GpuDevice,
    bo_id: u32,
    offset: u64,
    len: usize,
    ptr: *mut *mut c_void,
) -> c_int {
    // SAFETY: contract forwarded.
    unsafe {
        with_dev(dev, |d| {
            if ptr.is_null() {
                return Err(EFAULT);
            }
            let h = d
                .dev
                .handle()
                .dup(&format!("bo/{bo_id}"))
                .map_err(errno_of)?;
            let map = h.mmap(offset, len).map_err(errno_of)?;
            let addr = map.as_ptr();
            lock(&d.maps).insert(addr as usize, (h, map));
            put(ptr, addr.cast::<c_void>())
        })
    }
}

/// Unmaps a pointer `gpu_bo_mmap` returned. -EINVAL: not one.
///
/// # Safety
/// `dev` open; the caller no longer touches the mapping.
#[no_mangle]
pub unsafe extern "C" fn gpu_bo_munmap(dev: *mut GpuDevice, ptr: *mut c_void) -> c_int {
    // SAFETY: contract forwarded.
    unsafe {
        with_dev(dev, |d| match lock(&d.maps).remove(&(ptr as usize)) {
            Some(_) => Ok(()),
            None => Err(EINVAL),
        })
    }
}

/// EXPORT_TOKEN on the `kind/<id>` handle, kept open while the id lives.
fn export(d: &GpuDevice, kind: ObjectKind, id: u32) -> Result<[u64; 2], c_int> {
    let path = match kind {
        ObjectKind::Bo => format!("bo/{id}"),
        ObjectKind::Syncobj => format!("syncobj/{id}"),
    };
    let h = d.dev.handle().dup(&path).map_err(errno_of)?;
    let mut a = wire::ExportTokenArgs::new_zeroed();
    call(h.as_ref(), Opcode::ExportToken, &mut a, &[])?;
    lock(&d.exports).insert((kind as u32, id), h);
    Ok(a.token)
}

/// IMPORT by token.
fn import(d: &GpuDevice, kind: ObjectKind, token: [u64; 2]) -> Result<u32, c_int> {
    let mut a = wire::ImportArgs {
        kind: kind as u32,
        token,
        ..Default::default()
    };
    call(d.dev.handle(), Opcode::Import, &mut a, &[])?;
    Ok(a.id)
}

/// A token another client passes to `gpu_bo_import`; valid while this BO id lives.
///
/// # Safety
/// `dev` open; `token` writable for two `u64`.
#[no_mangle]
pub unsafe extern "C" fn gpu_bo_export(dev: *mut GpuDevice, bo_id: u32, token: *mut u64) -> c_int {
    // SAFETY: contract forwarded.
    unsafe {
        with_dev(dev, |d| {
            let t = export(d, ObjectKind::Bo, bo_id)?;
            put(token.cast::<[u64; 2]>(), t)
        })
    }
}

/// Imports a BO by the token of `gpu_bo_export`: a new id for the same object.
///
/// # Safety
/// `dev` open; `token` readable for two `u64`; `bo_id` writable.
#[no_mangle]
pub unsafe extern "C" fn gpu_bo_import(
    dev: *mut GpuDevice,
    token: *const u64,
    bo_id: *mut u32,
) -> c_int {
    // SAFETY: contract forwarded.
    unsafe {
        with_dev(dev, |d| {
            let id = import(d, ObjectKind::Bo, read_token(token)?)?;
            put(bo_id, id)
        })
    }
}

/// EXEC_QUEUE_CREATE: an exec queue on `engine_class` (`GPU_ENGINE_CLASS_*`), or a bind queue
/// with `GPU_ENGINE_CLASS_VM_BIND`.
///
/// # Safety
/// `dev` open; `queue_id` writable.
#[no_mangle]
pub unsafe extern "C" fn gpu_exec_queue_create(
    dev: *mut GpuDevice,
    vm_id: u32,
    engine_class: u16,
    queue_id: *mut u32,
) -> c_int {
    // SAFETY: contract forwarded.
    unsafe {
        gpu_exec_queue_create_with_priority(
            dev,
            vm_id,
            engine_class,
            QueuePriority::Normal as u32,
            queue_id,
        )
    }
}

/// EXEC_QUEUE_CREATE at `priority` (`GPU_QUEUE_PRIORITY_*`): HIGH needs privilege (-EPERM),
/// bind queues take only NORMAL.
///
/// # Safety
/// `dev` open; `queue_id` writable.
#[no_mangle]
pub unsafe extern "C" fn gpu_exec_queue_create_with_priority(
    dev: *mut GpuDevice,
    vm_id: u32,
    engine_class: u16,
    priority: u32,
    queue_id: *mut u32,
) -> c_int {
    // SAFETY: contract forwarded.
    unsafe {
        with_dev(dev, |d| {
            let mut a = wire::ExecQueueCreateArgs {
                vm_id,
                engine_class,
                flags: ExecQueueCreateFlags::PRIORITY.bits(),
                priority,
                ..Default::default()
            };
            call(d.dev.handle(), Opcode::ExecQueueCreate, &mut a, &[])?;
            put(queue_id, a.queue_id)
        })
    }
}

/// EXEC_QUEUE_DESTROY.
///
/// # Safety
/// `dev` open.
#[no_mangle]
pub unsafe extern "C" fn gpu_exec_queue_destroy(dev: *mut GpuDevice, queue_id: u32) -> c_int {
    // SAFETY: contract forwarded.
    unsafe { with_dev(dev, |d| destroy(d, Opcode::ExecQueueDestroy, queue_id)) }
}

const SYNC_SIZE: u32 = size_of::<wire::SyncWire>() as u32;

/// VM_BIND: `num_ops` operations (`GPU_BIND_OP_*`), all or nothing, then the syncs (waits
/// before, signals and user fences after). `queue_id` 0 is the VM's default bind queue. With no
/// signal sync the bind completes before this returns.
///
/// # Safety
/// `dev` open; `ops` readable for `num_ops` elements, `syncs` for `num_syncs`.
#[no_mangle]
pub unsafe extern "C" fn gpu_vm_bind(
    dev: *mut GpuDevice,
    vm_id: u32,
    queue_id: u32,
    ops: *const wire::BindOpWire,
    num_ops: u32,
    syncs: *const wire::SyncWire,
    num_syncs: u32,
) -> c_int {
    // SAFETY: contract forwarded.
    unsafe {
        with_dev(dev, |d| {
            let op_bytes = elems(ops, num_ops, wire::MAX_BIND_OPS)?;
            let sync_bytes = elems(syncs, num_syncs, wire::MAX_SYNCS)?;
            let mut a = wire::VmBindArgs {
                vm_id,
                queue_id,
                num_ops,
                op_stride: size_of::<wire::BindOpWire>() as u32,
                num_syncs,
                sync_stride: SYNC_SIZE,
                ..Default::default()
            };
            call(
                d.dev.handle(),
                Opcode::VmBind,
                &mut a,
                &[op_bytes, sync_bytes],
            )
        })
    }
}

/// EXEC: batch buffers (GPU VAs) on an exec queue, ordered by the syncs.
///
/// # Safety
/// `dev` open; `batch_addrs` readable for `num_batches`, `syncs` for `num_syncs`.
#[no_mangle]
pub unsafe extern "C" fn gpu_exec(
    dev: *mut GpuDevice,
    queue_id: u32,
    batch_addrs: *const u64,
    num_batches: u32,
    syncs: *const wire::SyncWire,
    num_syncs: u32,
) -> c_int {
    // SAFETY: contract forwarded.
    unsafe {
        with_dev(dev, |d| {
            let batches = elems(batch_addrs, num_batches, wire::MAX_BATCHES)?;
            let sync_bytes = elems(syncs, num_syncs, wire::MAX_SYNCS)?;
            let mut a = wire::ExecArgs {
                queue_id,
                num_batches,
                num_syncs,
                sync_stride: SYNC_SIZE,
                ..Default::default()
            };
            call(d.dev.handle(), Opcode::Exec, &mut a, &[batches, sync_bytes])
        })
    }
}

/// WAIT_USER_FENCE: waits until (*addr & mask) `op` (value & mask), `op` a `GPU_WAIT_OP_*`;
/// -ETIME on timeout (`timeout_ns` < 0: none).
///
/// # Safety
/// `dev` open.
#[no_mangle]
#[allow(clippy::too_many_arguments)] // the C signature mirrors the wire struct
pub unsafe extern "C" fn gpu_wait_user_fence(
    dev: *mut GpuDevice,
    vm_id: u32,
    queue_id: u32,
    addr: u64,
    op: u16,
    flags: u16,
    value: u64,
    mask: u64,
    timeout_ns: i64,
) -> c_int {
    // SAFETY: contract forwarded.
    unsafe {
        with_dev(dev, |d| {
            let mut a = wire::WaitUserFenceArgs {
                vm_id,
                queue_id,
                addr,
                op,
                flags,
                value,
                mask,
                timeout_ns,
                ..Default::default()
            };
            call(d.dev.handle(), Opcode::WaitUserFence, &mut a, &[])
        })
    }
}

/// SYNCOBJ_CREATE: binary, or a timeline when used with points (`flags`:
/// `GPU_SYNCOBJ_CREATE_SIGNALED` or 0).
///
/// # Safety
/// `dev` open; `syncobj_id` writable.
#[no_mangle]
pub unsafe extern "C" fn gpu_syncobj_create(
    dev: *mut GpuDevice,
    flags: u32,
    syncobj_id: *mut u32,
) -> c_int {
    // SAFETY: contract forwarded.
    unsafe {
        with_dev(dev, |d| {
            let mut a = wire::SyncobjCreateArgs {
                flags,
                ..Default::default()
            };
            call(d.dev.handle(), Opcode::SyncobjCreate, &mut a, &[])?;
            put(syncobj_id, a.syncobj_id)
        })
    }
}

/// SYNCOBJ_DESTROY (and this library's export of it).
///
/// # Safety
/// `dev` open.
#[no_mangle]
pub unsafe extern "C" fn gpu_syncobj_destroy(dev: *mut GpuDevice, syncobj_id: u32) -> c_int {
    // SAFETY: contract forwarded.
    unsafe {
        with_dev(dev, |d| {
            destroy(d, Opcode::SyncobjDestroy, syncobj_id)?;
            lock(&d.exports).remove(&(ObjectKind::Syncobj as u32, syncobj_id));
            Ok(())
        })
    }
}

const POINT_SIZE: u32 = size_of::<wire::SyncobjPointWire>() as u32;

/// SYNCOBJ_WAIT: for all (`GPU_SYNCOBJ_WAIT_ALL`) or any of `count` points; -ETIME on timeout.
/// `first_signaled` (may be NULL) gets the index of a signalled point.
///
/// # Safety
/// `dev` open; `points` readable for `count`; `first_signaled` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn gpu_syncobj_wait(
    dev: *mut GpuDevice,
    points: *const wire::SyncobjPointWire,
    count: u32,
    flags: u32,
    timeout_ns: i64,
    first_signaled: *mut u32,
) -> c_int {
    // SAFETY: contract forwarded.
    unsafe {
        with_dev(dev, |d| {
            let p = elems(points, count, wire::MAX_SYNCOBJ_POINTS)?;
            let mut a = wire::SyncobjWaitArgs {
                count,
                stride: POINT_SIZE,
                flags,
                timeout_ns,
                ..Default::default()
            };
            call(d.dev.handle(), Opcode::SyncobjWait, &mut a, &[p])?;
            if first_signaled.is_null() {
                return Ok(());
            }
            put(first_signaled, a.first_signaled)
        })
    }
}

/// SYNCOBJ_SIGNAL: signals `count` points from the CPU.
///
/// # Safety
/// `dev` open; `points` readable for `count`.
#[no_mangle]
pub unsafe extern "C" fn gpu_syncobj_signal(
    dev: *mut GpuDevice,
    points: *const wire::SyncobjPointWire,
    count: u32,
) -> c_int {
    // SAFETY: contract forwarded.
    unsafe {
        with_dev(dev, |d| {
            let p = elems(points, count, wire::MAX_SYNCOBJ_POINTS)?;
            let mut a = wire::SyncobjSignalArgs {
                count,
                stride: POINT_SIZE,
                ..Default::default()
            };
            call(d.dev.handle(), Opcode::SyncobjSignal, &mut a, &[p])
        })
    }
}

/// SYNCOBJ_RESET: empties `count` syncobjs (their `point` must be 0); an unknown id resets
/// none of them.
///
/// # Safety
/// `dev` open; `points` readable for `count`.
#[no_mangle]
pub unsafe extern "C" fn gpu_syncobj_reset(
    dev: *mut GpuDevice,
    points: *const wire::SyncobjPointWire,
    count: u32,
) -> c_int {
    // SAFETY: contract forwarded.
    unsafe {
        with_dev(dev, |d| {
            let p = elems(points, count, wire::MAX_SYNCOBJ_POINTS)?;
            let mut a = wire::SyncobjResetArgs {
                count,
                stride: POINT_SIZE,
                ..Default::default()
            };
            call(d.dev.handle(), Opcode::SyncobjReset, &mut a, &[p])
        })
    }
}

/// SYNCOBJ_QUERY: the last signalled timeline point (binary: 1 if signalled, else 0).
///
/// # Safety
/// `dev` open; `point` writable.
#[no_mangle]
pub unsafe extern "C" fn gpu_syncobj_query(
    dev: *mut GpuDevice,
    syncobj_id: u32,
    point: *mut u64,
) -> c_int {
    // SAFETY: contract forwarded.
    unsafe {
        with_dev(dev, |d| {
            let mut a = wire::SyncobjQueryArgs {
                syncobj_id,
                ..Default::default()
            };
            call(d.dev.handle(), Opcode::SyncobjQuery, &mut a, &[])?;
            put(point, a.point)
        })
    }
}

/// SYNCOBJ_TRANSFER: `src_id` at `src_point` becomes `dst_id` at `dst_point`.
///
/// # Safety
/// `dev` open.
#[no_mangle]
pub unsafe extern "C" fn gpu_syncobj_transfer(
    dev: *mut GpuDevice,
    dst_id: u32,
    dst_point: u64,
    src_id: u32,
    src_point: u64,
    flags: u32,
) -> c_int {
    // SAFETY: contract forwarded.
    unsafe {
        with_dev(dev, |d| {
            let mut a = wire::SyncobjTransferArgs {
                src_id,
                dst_id,
                src_point,
                dst_point,
                flags,
                ..Default::default()
            };
            call(d.dev.handle(), Opcode::SyncobjTransfer, &mut a, &[])
        })
    }
}

/// A token another client passes to `gpu_syncobj_import`; valid while this syncobj id lives.
///
/// # Safety
/// `dev` open; `token` writable for two `u64`.
#[no_mangle]
pub unsafe extern "C" fn gpu_syncobj_export(
    dev: *mut GpuDevice,
    syncobj_id: u32,
    token: *mut u64,
) -> c_int {
    // SAFETY: contract forwarded.
    unsafe {
        with_dev(dev, |d| {
            let t = export(d, ObjectKind::Syncobj, syncobj_id)?;
            put(token.cast::<[u64; 2]>(), t)
        })
    }
}

/// Imports a syncobj by the token of `gpu_syncobj_export`.
///
/// # Safety
/// `dev` open; `token` readable for two `u64`; `syncobj_id` writable.
#[no_mangle]
pub unsafe extern "C" fn gpu_syncobj_import(
    dev: *mut GpuDevice,
    token: *const u64,
    syncobj_id: *mut u32,
) -> c_int {
    // SAFETY: contract forwarded.
    unsafe {
        with_dev(dev, |d| {
            let id = import(d, ObjectKind::Syncobj, read_token(token)?)?;
            put(syncobj_id, id)
        })
    }
}

/// A static description of a (negative or positive) errno value from this library.
#[no_mangle]
pub extern "C" fn gpu_strerror(err: c_int) -> *const c_char {
    let s: &'static CStr = match err.abs() {
        0 => c"success",
        2 => c"no such object (or no gpud at that socket: start it with `gpud serve`)",
        4 => c"interrupted",
        5 => c"device error or engine reset",
        7 => c"unknown non-zero bytes of a newer uAPI struct",
        9 => c"wrong kind of handle",
        11 => c"try again",
        12 => c"out of memory or mappings",
        14 => c"GPU fault, or a bad pointer",
        16 => c"busy: mappings in the way or too much in flight",
        22 => c"invalid argument",
        24 => c"too many objects",
        28 => c"out of GPU memory or over the client's share",
        62 => c"timed out",
        95 => c"not supported",
        111 => c"connection refused: is gpud running? start it with `gpud serve`",
        125 => c"canceled: the queue or VM was banned",
        _ => c"unknown error",
    };
    s.as_ptr()
}
