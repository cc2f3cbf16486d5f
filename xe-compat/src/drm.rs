//! The generic DRM ioctls (`drm/drm.h`) a Xe program uses — VERSION, GET_CAP, GEM_CLOSE,
//! PRIME and every SYNCOBJ ioctl — translated into gpud requests, and the dispatcher that
//! routes an ioctl on a device fd to its translation.
//!
//! Owns: DRM core's argument checks (pads, unknown flags, empty arrays), the absolute
//! CLOCK_MONOTONIC timeouts of syncobj waits, and exporting/importing BOs and syncobjs as fds
//! (the fd is a gpud handle of the object, which another process can import). Must not: keep
//! object state or emulate what gpud does not do.

use std::os::fd::IntoRawFd;

use gpu_scheme::uapi::flags::{ObjectKind, SyncobjWaitFlags};
use gpu_scheme::uapi::wire::{
    ExportTokenArgs, ImportArgs, SyncobjCreateArgs, SyncobjQueryArgs, SyncobjWaitArgs,
};
use gpu_scheme::uapi::{
    BoId, Request, SyncobjId, SyncobjPoint, SyncobjTransferRequest, SyncobjWaitRequest, Timeout,
    Token,
};
use zerocopy::{FromBytes, Immutable, IntoBytes};

use crate::device::{call_on, errno::*, read_array, Errno, Process, XeDevice};
use crate::uapi::{nr, syncobj, *};
use crate::xe;

/// Largest handle array read from a caller (gpud's own cap answers below it).
const MAX_HANDLES: u32 = 1 << 16;
/// Longest single wait sent to gpud: a long wait is a series of these, so that other threads'
/// calls on the same device fd are not held behind it.
const WAIT_SLICE_NS: i64 = 10_000_000;

/// Run one ioctl on an open device. `arg` is the caller's argument pointer.
pub fn ioctl(d: &XeDevice, p: &dyn Process, request: u64, arg: u64) -> Result<i32, Errno> {
    let n = IoctlNr::split(request);
    if n.ty != DRM_IOCTL_TYPE {
        return Err(ENOTTY);
    }
    match n.nr {
        nr::VERSION => with(p, arg, n, |a| version(p, a)),
        nr::GET_CAP => with(p, arg, n, get_cap),
        nr::GEM_CLOSE => with(p, arg, n, |a: &mut DrmGemClose| gem_close(d, a)),
        nr::PRIME_HANDLE_TO_FD => with(p, arg, n, |a| prime_handle_to_fd(d, a)),
        nr::PRIME_FD_TO_HANDLE => with(p, arg, n, |a| prime_fd_to_handle(d, p, a)),
        nr::SYNCOBJ_CREATE => with(p, arg, n, |a| syncobj_create(d, a)),
        nr::SYNCOBJ_DESTROY => with(p, arg, n, |a| syncobj_destroy(d, a)),
        nr::SYNCOBJ_HANDLE_TO_FD => with(p, arg, n, |a| syncobj_handle_to_fd(d, a)),
        nr::SYNCOBJ_FD_TO_HANDLE => with(p, arg, n, |a| syncobj_fd_to_handle(d, p, a)),
        nr::SYNCOBJ_WAIT => with_prefix(p, arg, n, 32, |a| syncobj_wait(d, p, a)),
        nr::SYNCOBJ_TIMELINE_WAIT => with_prefix(p, arg, n, 40, |a| timeline_wait(d, p, a)),
        nr::SYNCOBJ_RESET => with(p, arg, n, |a| syncobj_reset(d, p, a)),
        nr::SYNCOBJ_SIGNAL => with(p, arg, n, |a| syncobj_signal(d, p, a)),
        nr::SYNCOBJ_TIMELINE_SIGNAL => with(p, arg, n, |a| timeline_signal(d, p, a)),
        nr::SYNCOBJ_QUERY => with(p, arg, n, |a| syncobj_query(d, p, a)),
        nr::SYNCOBJ_TRANSFER => with(p, arg, n, |a| syncobj_transfer(d, a)),
        nr::XE_DEVICE_QUERY => with(p, arg, n, |a| xe::device_query(d, p, a)),
        nr::XE_GEM_CREATE => with(p, arg, n, |a| xe::gem_create(d, a)),
        nr::XE_GEM_MMAP_OFFSET => with(p, arg, n, |a| xe::gem_mmap_offset(d, a)),
        nr::XE_VM_CREATE => with(p, arg, n, |a| xe::vm_create(d, a)),
        nr::XE_VM_DESTROY => with(p, arg, n, |a: &mut XeVmDestroy| xe::vm_destroy(d, a)),
        nr::XE_VM_BIND => with(p, arg, n, |a: &mut XeVmBind| xe::vm_bind(d, p, a)),
        nr::XE_EXEC_QUEUE_CREATE => with(p, arg, n, |a| xe::exec_queue_create(d, p, a)),
        nr::XE_EXEC_QUEUE_DESTROY => with(p, arg, n, |a: &mut XeExecQueueDestroy| {
            xe::exec_queue_destroy(d, a)
        }),
        nr::XE_EXEC_QUEUE_GET_PROPERTY => with(p, arg, n, |a: &mut XeExecQueueGetProperty| {
            xe::exec_queue_get_property(a)
        }),
        nr::XE_EXEC => with(p, arg, n, |a: &mut XeExec| xe::exec(d, p, a)),
        nr::XE_WAIT_USER_FENCE => with(p, arg, n, |a: &mut XeWaitUserFence| xe::wait_user_fence(a)),
        // DRM answers EINVAL for numbers it has no handler for.
        _ => Err(EINVAL),
    }
    .map(|()| 0)
}

/// Read the argument struct (its size must be the one this library knows), run `f`, write it
/// back.
fn with<T, F>(p: &dyn Process, arg: u64, n: IoctlNr, f: F) -> Result<(), Errno>
where
    T: FromBytes + IntoBytes + Immutable,
    F: FnOnce(&mut T) -> Result<(), Errno>,
{
    with_prefix(p, arg, n, size_of::<T>(), f)
}

/// As `with`, also accepting an older, shorter struct of at least `min` bytes (zero-extended,
/// as DRM core does).
fn with_prefix<T, F>(p: &dyn Process, arg: u64, n: IoctlNr, min: usize, f: F) -> Result<(), Errno>
where
    T: FromBytes + IntoBytes + Immutable,
    F: FnOnce(&mut T) -> Result<(), Errno>,
{
    if n.size < min || n.size > size_of::<T>() {
        return Err(EINVAL);
    }
    let mut a = T::new_zeroed();
    p.read(arg, a.as_mut_bytes().get_mut(..n.size).ok_or(EINVAL)?)
        .map_err(|_| EFAULT)?;
    let result = f(&mut a);
    // Out fields (sizes asked for, handles, first_signaled) are written back on success, as
    // DRM core copies the struct out only then.
    if result.is_ok() {
        p.write(arg, a.as_bytes().get(..n.size).ok_or(EINVAL)?)
            .map_err(|_| EFAULT)?;
    }
    result
}

fn version(p: &dyn Process, a: &mut DrmVersion) -> Result<(), Errno> {
    a.version_major = 1;
    a.version_minor = 1;
    a.version_patchlevel = 0;
    copy_string(p, b"xe", a.name, &mut a.name_len)?;
    copy_string(p, b"0", a.date, &mut a.date_len)?;
    copy_string(
        p,
        b"gpud through the Xe compatibility library",
        a.desc,
        &mut a.desc_len,
    )
}

/// DRM's `drm_copy_field`: copy at most `*len` bytes, report the full length.
fn copy_string(p: &dyn Process, s: &[u8], buf: u64, len: &mut u64) -> Result<(), Errno> {
    let room = usize::try_from(*len).unwrap_or(usize::MAX).min(s.len());
    *len = s.len() as u64;
    if room > 0 && buf != 0 {
        p.write(buf, s.get(..room).unwrap_or_default())
            .map_err(|_| EFAULT)?;
    }
    Ok(())
}

fn get_cap(a: &mut DrmGetCap) -> Result<(), Errno> {
    a.value = match a.capability {
        cap::PRIME => cap::PRIME_IMPORT_EXPORT,
        cap::SYNCOBJ | cap::SYNCOBJ_TIMELINE => 1,
        _ => return Err(EINVAL),
    };
    Ok(())
}

fn gem_close(d: &XeDevice, a: &DrmGemClose) -> Result<(), Errno> {
    if a.pad != 0 {
        return Err(EINVAL);
    }
    d.send(&Request::BoDestroy(BoId(a.handle)))?;
    d.forget_bo(a.handle);
    Ok(())
}

/// The fd of a BO or syncobj: a new gpud handle of the object (`"bo/<id>"`).
fn export_fd(d: &XeDevice, path: &str) -> Result<i32, Errno> {
    let h = d.dup(path)?;
    let fd = h
        .clone_fd()
        .map_err(|e| crate::device::transport_errno(&e))?;
    Ok(fd.into_raw_fd())
}

/// Import the object behind an exported fd into this device; returns its id here.
fn import_fd(d: &XeDevice, p: &dyn Process, fd: i32, kind: ObjectKind) -> Result<u32, Errno> {
    let owned = p.dup_fd(fd)?;
    let handle = libgpu::transport::host::from_fd(owned);
    let token: ExportTokenArgs = call_on(handle.as_ref(), &Request::ExportToken)?;
    if token.kind != kind as u32 {
        return Err(EINVAL);
    }
    let out: ImportArgs = d.call(&Request::Import {
        kind,
        token: Some(Token(token.token)),
    })?;
    Ok(out.id)
}

fn prime_handle_to_fd(d: &XeDevice, a: &mut DrmPrimeHandle) -> Result<(), Errno> {
    let known = (libc::O_CLOEXEC | libc::O_RDWR) as u32;
    if a.flags & !known != 0 {
        return Err(EINVAL);
    }
    a.fd = export_fd(d, &format!("bo/{}", a.handle))?;
    Ok(())
}

fn prime_fd_to_handle(d: &XeDevice, p: &dyn Process, a: &mut DrmPrimeHandle) -> Result<(), Errno> {
    a.handle = import_fd(d, p, a.fd, ObjectKind::Bo)?;
    Ok(())
}

fn syncobj_create(d: &XeDevice, a: &mut DrmSyncobjCreate) -> Result<(), Errno> {
    if a.flags & !syncobj::CREATE_SIGNALED != 0 {
        return Err(EINVAL);
    }
    let signaled = a.flags & syncobj::CREATE_SIGNALED != 0;
    let out: SyncobjCreateArgs = d.call(&Request::SyncobjCreate { signaled })?;
    a.handle = out.syncobj_id;
    Ok(())
}

fn syncobj_destroy(d: &XeDevice, a: &DrmSyncobjDestroy) -> Result<(), Errno> {
    if a.pad != 0 {
        return Err(EINVAL);
    }
    d.send(&Request::SyncobjDestroy(SyncobjId(a.handle)))
}

fn syncobj_handle_to_fd(d: &XeDevice, a: &mut DrmSyncobjHandle) -> Result<(), Errno> {
    if a.pad != 0 || a.flags & !syncobj::SYNC_FILE != 0 {
        return Err(EINVAL);
    }
    // gpud has no sync files.
    if a.flags != 0 {
        return Err(EOPNOTSUPP);
    }
    a.fd = export_fd(d, &format!("syncobj/{}", a.handle))?;
    Ok(())
}

fn syncobj_fd_to_handle(
    d: &XeDevice,
    p: &dyn Process,
    a: &mut DrmSyncobjHandle,
) -> Result<(), Errno> {
    if a.pad != 0 || a.flags & !syncobj::SYNC_FILE != 0 {
        return Err(EINVAL);
    }
    if a.flags != 0 {
        return Err(EOPNOTSUPP);
    }
    a.handle = import_fd(d, p, a.fd, ObjectKind::Syncobj)?;
    Ok(())
}

/// `count` handles at `handles` (and points at `points`, 0 = none: binary).
fn points(p: &dyn Process, handles: u64, pts: u64, count: u32) -> Result<Vec<SyncobjPoint>, Errno> {
    if count == 0 || count > MAX_HANDLES {
        return Err(EINVAL);
    }
    let ids: Vec<u32> = read_array(p, handles, count as usize).map_err(|_| EFAULT)?;
    let values: Vec<u64> = if pts == 0 {
        vec![0; ids.len()]
    } else {
        read_array(p, pts, count as usize).map_err(|_| EFAULT)?
    };
    Ok(ids
        .iter()
        .zip(values)
        .map(|(&id, point)| SyncobjPoint {
            syncobj: SyncobjId(id),
            point,
        })
        .collect())
}

fn wait_flags(flags: u32) -> Result<SyncobjWaitFlags, Errno> {
    let known = syncobj::WAIT_ALL
        | syncobj::WAIT_FOR_SUBMIT
        | syncobj::WAIT_AVAILABLE
        | syncobj::WAIT_DEADLINE;
    if flags & !known != 0 {
        return Err(EINVAL);
    }
    // WAIT_AVAILABLE (the point submitted, not signalled) has no gpud equivalent.
    if flags & syncobj::WAIT_AVAILABLE != 0 {
        return Err(EOPNOTSUPP);
    }
    // WAIT_DEADLINE is a hint to the fence's signaller; gpud takes none, so it is dropped.
    let mut f = SyncobjWaitFlags::empty();
    f.set(SyncobjWaitFlags::WAIT_ALL, flags & syncobj::WAIT_ALL != 0);
    f.set(
        SyncobjWaitFlags::WAIT_FOR_SUBMIT,
        flags & syncobj::WAIT_FOR_SUBMIT != 0,
    );
    Ok(f)
}

/// Wait until `deadline` (absolute CLOCK_MONOTONIC ns, DRM's syncobj timeout) in slices;
/// returns the first signalled index.
fn wait_points(
    d: &XeDevice,
    p: &dyn Process,
    points: Vec<SyncobjPoint>,
    flags: SyncobjWaitFlags,
    deadline: i64,
) -> Result<u32, Errno> {
    loop {
        let left = deadline.saturating_sub(p.monotonic_ns());
        let timeout = if left <= 0 {
            Timeout::Poll
        } else {
            Timeout::Relative(left.min(WAIT_SLICE_NS) as u64)
        };
        let req = Request::SyncobjWait(SyncobjWaitRequest {
            points: points.clone(),
            flags,
            timeout,
        });
        match d.call::<SyncobjWaitArgs>(&req) {
            Ok(out) => return Ok(out.first_signaled),
            Err(ETIME) if left > WAIT_SLICE_NS => continue,
            Err(e) => return Err(e),
        }
    }
}

fn syncobj_wait(d: &XeDevice, p: &dyn Process, a: &mut DrmSyncobjWait) -> Result<(), Errno> {
    if a.pad != 0 {
        return Err(EINVAL);
    }
    let flags = wait_flags(a.flags)?;
    let pts = points(p, a.handles, 0, a.count_handles)?;
    a.first_signaled = wait_points(d, p, pts, flags, a.timeout_nsec)?;
    Ok(())
}

fn timeline_wait(
    d: &XeDevice,
    p: &dyn Process,
    a: &mut DrmSyncobjTimelineWait,
) -> Result<(), Errno> {
    if a.pad != 0 {
        return Err(EINVAL);
    }
    let flags = wait_flags(a.flags)?;
    let pts = points(p, a.handles, a.points, a.count_handles)?;
    a.first_signaled = wait_points(d, p, pts, flags, a.timeout_nsec)?;
    Ok(())
}

/// SYNCOBJ_RESET: gpud's SYNCOBJ_RESET of the listed syncobjs (all or none).
fn syncobj_reset(d: &XeDevice, p: &dyn Process, a: &DrmSyncobjArray) -> Result<(), Errno> {
    if a.pad != 0 || a.count_handles == 0 {
        return Err(EINVAL);
    }
    let pts = points(p, a.handles, 0, a.count_handles)?;
    d.send(&Request::SyncobjReset(
        pts.iter().map(|pt| pt.syncobj).collect(),
    ))
}

fn syncobj_signal(d: &XeDevice, p: &dyn Process, a: &DrmSyncobjArray) -> Result<(), Errno> {
    if a.pad != 0 {
        return Err(EINVAL);
    }
    let pts = points(p, a.handles, 0, a.count_handles)?;
    d.send(&Request::SyncobjSignal(pts))
}

fn timeline_signal(
    d: &XeDevice,
    p: &dyn Process,
    a: &DrmSyncobjTimelineArray,
) -> Result<(), Errno> {
    if a.flags != 0 {
        return Err(EINVAL);
    }
    let pts = points(p, a.handles, a.points, a.count_handles)?;
    d.send(&Request::SyncobjSignal(pts))
}

fn syncobj_query(d: &XeDevice, p: &dyn Process, a: &DrmSyncobjTimelineArray) -> Result<(), Errno> {
    if a.flags & !syncobj::QUERY_LAST_SUBMITTED != 0 {
        return Err(EINVAL);
    }
    // gpud reports the last signalled point only.
    if a.flags != 0 {
        return Err(EOPNOTSUPP);
    }
    let pts = points(p, a.handles, 0, a.count_handles)?;
    let mut out = Vec::with_capacity(pts.len());
    for pt in &pts {
        let q: SyncobjQueryArgs = d.call(&Request::SyncobjQuery(pt.syncobj))?;
        out.push(q.point);
    }
    p.write(a.points, out.as_bytes()).map_err(|_| EFAULT)
}

fn syncobj_transfer(d: &XeDevice, a: &DrmSyncobjTransfer) -> Result<(), Errno> {
    if a.pad != 0 || a.flags & !syncobj::WAIT_FOR_SUBMIT != 0 {
        return Err(EINVAL);
    }
    d.send(&Request::SyncobjTransfer(SyncobjTransferRequest {
        src: SyncobjPoint {
            syncobj: SyncobjId(a.src_handle),
            point: a.src_point,
        },
        dst: SyncobjPoint {
            syncobj: SyncobjId(a.dst_handle),
            point: a.dst_point,
        },
        wait_for_submit: a.flags & syncobj::WAIT_FOR_SUBMIT != 0,
    }))
}
