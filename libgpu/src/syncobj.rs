//! `Syncobj`: a DRM-style synchronisation object (binary fence or timeline points).
//!
//! Owns: create/destroy, CPU signal, waits with timeouts (one or many), query, transfer of
//! points, export/import, and readiness (its derived handle becomes readable when signalled).
//! Must not: block the server (waits park on the server side; only this client's call blocks).

use std::os::fd::BorrowedFd;
use std::sync::OnceLock;

use gpu_scheme::uapi::flags::{ObjectKind, SyncobjWaitFlags};
use gpu_scheme::uapi::wire::{ImportArgs, SyncobjCreateArgs, SyncobjQueryArgs, SyncobjWaitArgs};
use gpu_scheme::uapi::{
    Request, SyncobjId, SyncobjPoint, SyncobjTransferRequest, SyncobjWaitRequest, Timeout, Token,
};

use crate::device::Device;
use crate::error::{Call, Context, Error, Result, ETIME};
use crate::export::Exported;
use crate::transport::Handle;

/// Readiness bit reported for a signalled syncobj handle (`EVENT_READ`).
pub const EVENT_READ: u32 = 1;

/// A syncobj of one device. Dropping it drops this client's id (SYNCOBJ_DESTROY).
pub struct Syncobj {
    dev: Device,
    id: SyncobjId,
    handle: OnceLock<Box<dyn Handle>>,
    /// False once `destroy` succeeded, so `Drop` does not destroy again.
    live: bool,
}

impl std::fmt::Debug for Syncobj {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Syncobj").field("id", &self.id).finish()
    }
}

/// How `wait_many` waits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WaitMode {
    /// Wait for every point (default: the first one).
    pub all: bool,
    /// A point with no fence yet is waited for instead of being an error (`EINVAL`).
    pub for_submit: bool,
}

impl Syncobj {
    /// SYNCOBJ_CREATE, optionally already signalled.
    pub fn create(dev: &Device, signaled: bool) -> Result<Syncobj> {
        let args: SyncobjCreateArgs = dev.request(&Request::SyncobjCreate { signaled })?;
        Ok(Self::adopt(dev, SyncobjId(args.syncobj_id)))
    }

    fn adopt(dev: &Device, id: SyncobjId) -> Syncobj {
        Syncobj {
            dev: dev.clone(),
            id,
            handle: OnceLock::new(),
            live: true,
        }
    }

    /// Import a syncobj exported by another client (any process) by its token
    /// (`Exported::token`).
    pub fn import(dev: &Device, token: Token) -> Result<Syncobj> {
        let args: ImportArgs = dev.request(&Request::Import {
            kind: ObjectKind::Syncobj,
            token: Some(token),
        })?;
        Ok(Self::adopt(dev, SyncobjId(args.id)))
    }

    /// The id in this client.
    pub fn id(&self) -> SyncobjId {
        self.id
    }

    /// The device it belongs to.
    pub fn device(&self) -> &Device {
        &self.dev
    }

    /// Signal the binary fence from the CPU.
    pub fn signal(&self) -> Result<()> {
        self.signal_point(0)
    }

    /// Signal timeline `point` (0: the binary fence) from the CPU.
    pub fn signal_point(&self, point: u64) -> Result<()> {
        let points = vec![SyncobjPoint {
            syncobj: self.id,
            point,
        }];
        self.dev.send(&Request::SyncobjSignal(points))
    }

    /// Wait for the binary fence. `Ok(false)` when the timeout expired.
    pub fn wait(&self, timeout: Timeout) -> Result<bool> {
        self.wait_point(0, timeout)
    }

    /// Wait for timeline `point` (0: the binary fence). `Ok(false)` on timeout; a point with no
    /// fence yet is an error (`EINVAL`; see `wait_many` with `for_submit`).
    pub fn wait_point(&self, point: u64, timeout: Timeout) -> Result<bool> {
        let mode = WaitMode::default();
        Ok(wait_many(&self.dev, &[(self, point)], mode, timeout)?.is_some())
    }

    /// SYNCOBJ_RESET: drop the fence (a timeline: every point), as if just created
    /// unsignalled. A wait already blocked with `for_submit` keeps waiting for the next one.
    pub fn reset(&self) -> Result<()> {
        self.dev.send(&Request::SyncobjReset(vec![self.id]))
    }

    /// SYNCOBJ_QUERY: the last signalled timeline point (binary: 1 if signalled, else 0).
    pub fn query(&self) -> Result<u64> {
        let args: SyncobjQueryArgs = self.dev.request(&Request::SyncobjQuery(self.id))?;
        Ok(args.point)
    }

    /// SYNCOBJ_TRANSFER: move the fence at `src_point` of `self` to `dst_point` of `dst`.
    pub fn transfer(
        &self,
        src_point: u64,
        dst: &Syncobj,
        dst_point: u64,
        wait_for_submit: bool,
    ) -> Result<()> {
        if !dst.dev.same(&self.dev) {
            return Err(Error::invalid(Call::Local));
        }
        let req = SyncobjTransferRequest {
            src: SyncobjPoint {
                syncobj: self.id,
                point: src_point,
            },
            dst: SyncobjPoint {
                syncobj: dst.id,
                point: dst_point,
            },
            wait_for_submit,
        };
        self.dev.send(&Request::SyncobjTransfer(req))
    }

    /// The derived handle (`syncobj/<id>`), made on first use.
    fn handle(&self) -> Result<&dyn Handle> {
        if let Some(h) = self.handle.get() {
            return Ok(h.as_ref());
        }
        let h = self.dev.dup(&format!("syncobj/{}", self.id.0))?;
        Ok(self.handle.get_or_init(|| h).as_ref())
    }

    /// Subscribe to readiness: afterwards `event_fd` turns readable (poll(2)) and
    /// `take_ready` reports true once the binary fence is signalled.
    pub fn subscribe(&self) -> Result<()> {
        self.handle()?.subscribe().during(Call::Event)
    }

    /// The fd to wait on for readiness (poll(2) / epoll; on Redox, an event queue).
    pub fn event_fd(&self) -> Result<BorrowedFd<'_>> {
        Ok(self.handle()?.as_fd())
    }

    /// Whether a readiness event arrived since the last call (host transport; on Redox the
    /// events go to the application's event queue holding `event_fd`).
    pub fn take_ready(&self) -> Result<bool> {
        let bits = self.handle()?.take_events().during(Call::Event)?;
        Ok(bits & EVENT_READ != 0)
    }

    /// Export: a new derived handle and its token, for another process to import.
    pub fn export(&self) -> Result<Exported> {
        let h = self.dev.dup(&format!("syncobj/{}", self.id.0))?;
        Exported::from_handle(h)
    }

    /// Drop this client's id now, reporting errors (dropping does the same, silently).
    pub fn destroy(mut self) -> Result<()> {
        self.dev.send(&Request::SyncobjDestroy(self.id))?;
        self.live = false;
        Ok(())
    }
}

impl Drop for Syncobj {
    fn drop(&mut self) {
        if self.live {
            // Errors cannot be reported from drop; `destroy` reports them.
            let _ = self.dev.send(&Request::SyncobjDestroy(self.id));
        }
    }
}

/// SYNCOBJ_WAIT on several (syncobj, point) pairs of one device. Returns the index of the
/// first signalled pair (any mode; with `all`, when all are signalled), or `None` when the
/// timeout expired (`ETIME`).
pub fn wait_many(
    dev: &Device,
    points: &[(&Syncobj, u64)],
    mode: WaitMode,
    timeout: Timeout,
) -> Result<Option<u32>> {
    if points.iter().any(|(s, _)| !s.dev.same(dev)) {
        return Err(Error::invalid(Call::Local));
    }
    let mut flags = SyncobjWaitFlags::empty();
    flags.set(SyncobjWaitFlags::WAIT_ALL, mode.all);
    flags.set(SyncobjWaitFlags::WAIT_FOR_SUBMIT, mode.for_submit);
    let req = SyncobjWaitRequest {
        points: points
            .iter()
            .map(|(s, point)| SyncobjPoint {
                syncobj: s.id,
                point: *point,
            })
            .collect(),
        flags,
        timeout,
    };
    match dev.request::<SyncobjWaitArgs>(&Request::SyncobjWait(req)) {
        Ok(args) => Ok(Some(args.first_signaled)),
        Err(e) if e.is_scheme(ETIME) => Ok(None),
        Err(e) => Err(e),
    }
}
