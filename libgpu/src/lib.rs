//! libgpu: the safe client API for applications of the `gpu` scheme.
//!
//! Owns: `Device` (open, query, stats), `Vm` (create, destroy, binds via `BindBuilder`,
//! user-fence waits), `Bo` (create, mmap as `BoMap`, export/import), `ExecQueue` (create,
//! `exec` via `ExecBuilder`), `Syncobj` (create, signal, wait, query, transfer, export/import,
//! readiness), the transports (`transport`: the Linux host socket and, with feature `redox`,
//! Redox scheme fds) and the encoder of the simgpu command set (`cmd::Batch`).
//!
//! Must not: re-implement the wire format (it uses `gpu_scheme::uapi`'s encoder, so client and
//! server agree by construction) or validate what the server validates (the server's errno
//! comes back in `Error`). `unsafe` lives only in `transport::redox` (Redox mmap and fds) and
//! `userptr` (whose `Device::userptr_adopt` moves the caller's memory: an `unsafe fn`).
//!
//! ```no_run
//! use libgpu::{Bo, Device, ExecQueue, Syncobj, Timeout, Vm};
//! use libgpu::flags::{BoCreateFlags, EngineClass, Placement, VmCreateFlags};
//! use libgpu::cmd::Batch;
//!
//! # fn main() -> libgpu::Result<()> {
//! let dev = Device::open("card0")?;
//! let vm = Vm::create(&dev, VmCreateFlags::empty())?;
//! let bo = Bo::create(&dev, 0x2000, Placement::SYSTEM, BoCreateFlags::empty())?;
//! vm.bind().map(&bo, 0, 0x10_0000, 0x2000).submit()?;
//! let mut batch = Batch::new();
//! batch.store_dword(0x10_1000, 42).batch_end();
//! bo.mmap()?.write_dwords(0, batch.dwords()).expect("in range");
//! let queue = ExecQueue::create(&vm, EngineClass::Copy)?;
//! let done = Syncobj::create(&dev, false)?;
//! queue.exec(0x10_0000).signal(&done).submit()?;
//! assert!(done.wait(Timeout::Forever)?);
//! # Ok(()) }
//! ```

#![deny(unsafe_code)]

mod bind;
mod bo;
pub mod cmd;
mod device;
mod error;
mod export;
mod queue;
mod syncobj;
mod syncs;
pub mod transport;
mod usage;
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
mod userptr;
mod vm;
mod vm_table;

pub use bind::BindBuilder;
pub use bo::{Bo, BoMap, OutOfBounds};
pub use device::{Device, DeviceInfo};
pub use error::{Call, Error, Result, TransportError};
pub use export::{token_from_bytes, token_to_bytes, Exported};
pub use queue::{ExecBuilder, ExecQueue, QueueOptions};
pub use syncobj::{wait_many, Syncobj, WaitMode, EVENT_READ};
pub use usage::{ClientUsage, UsageParseError};
#[cfg(target_os = "linux")]
pub use userptr::UserptrMode;
pub use vm::{wait_user_fence, Vm};
pub use vm_table::{read_table, read_view, MappingKind, TableParseError, VmMapping, VmTable};

/// Ids, tokens, timeouts and requests of the uAPI, as the scheme defines them.
pub use gpu_scheme::uapi::{
    BoId, ExecRequest, QueueId, SyncobjId, Timeout, Token, VmBindRequest, VmId,
};

/// Errno values (Redox numbering) that calls report; see `docs/uapi.md`.
pub mod errno {
    pub use crate::error::{
        E2BIG, EBADF, EBUSY, ECANCELED, EFAULT, EINTR, EINVAL, EIO, EMFILE, ENOENT, ENOMEM, ENOSPC,
        ENOTTY, EOPNOTSUPP, EPERM, ETIME, EWOULDBLOCK,
    };
}

/// Flag words and enumerations of the uAPI.
pub mod flags {
    pub use gpu_scheme::uapi::flags::{
        BatchFormat, BindFlags, BoCreateFlags, EngineClass, ObjectKind, Placement, QueuePriority,
        Region, VmCreateFlags, WaitOp,
    };
}
