//! The gpu scheme server: `GpuScheme<D>` implements `redox_scheme::SchemeSync` over any
//! `GpuDriver`.
//!
//! Owns: the handle table, the clients, the export tokens, parked waits, and the `SchemeSync`
//! entry points (this file routes; `calls.rs` serves device calls, `wait.rs` blocking calls, `park.rs` parked calls and their wake-ups,
//! `export.rs` sharing, `stats.rs` the text stats, `vm_view.rs` VM views). Must not: block (waits are parked with
//! EWOULDBLOCK), panic on client input, or produce errno other than through `SchemeError`.
//!
//! Invariants: a client's objects are reachable only through its device handle (ids) or through
//! derived handles it created; a handle number is never reused while open; every charge and
//! mapping count taken is released in `on_close`.

mod calls;
mod client;
mod cpu_maps;
mod export;
mod handles;
mod log;
mod park;
mod stats;
mod vm_view;
mod wait;

use std::collections::{BTreeMap, HashMap};

use redox_scheme::scheme::SchemeSync;
use redox_scheme::{CallerCtx, OpenResult};
use syscall::error::{Error, Result};
use syscall::flag::{EventFlags, MapFlags, MunmapFlags};
use syscall::schemev2::NewFdFlags;

pub use client::Limits;
pub use handles::DEVICE_PATH;
pub use park::POLL_NS;

use crate::driver::{ClientId, GpuDriver};
use crate::errno::SchemeError;
use crate::uapi::flags::ObjectKind;
use crate::uapi::Token;
use client::Client;
use handles::{Derived, Handle};

/// The gpu scheme server.
pub struct GpuScheme<D: GpuDriver> {
    driver: D,
    limits: Limits,
    handles: BTreeMap<usize, Handle<D>>,
    next_handle: usize,
    root: Option<usize>,
    clients: BTreeMap<ClientId, Client<D>>,
    next_client: u64,
    exports: HashMap<Token, usize>,
    token_seq: u64,
    /// Parked calls and the wake-ups of their fences.
    parking: park::Parking<D::Pending>,
    /// Device handles open per caller pid.
    devices_per_pid: HashMap<usize, u64>,
    /// VM views opened through the root (bounded by `Limits::handles`).
    root_views: u64,
    /// Besides uid 0, the user whose callers may see every client through the root (the
    /// daemon's own user on the host).
    admin_uid: Option<u32>,
}

impl<D: GpuDriver> GpuScheme<D> {
    /// A server for `driver` with per-client `limits`.
    pub fn new(driver: D, limits: Limits) -> Self {
        GpuScheme {
            driver,
            limits,
            handles: BTreeMap::new(),
            next_handle: 1,
            root: None,
            clients: BTreeMap::new(),
            next_client: 1,
            exports: HashMap::new(),
            token_seq: 0,
            parking: park::Parking::default(),
            devices_per_pid: HashMap::new(),
            root_views: 0,
            admin_uid: None,
        }
    }

    /// Lets callers of user `uid` (besides uid 0) see every client through the root handle:
    /// the per-client stats blocks and per-VM lines, and root VM views.
    pub fn set_admin_uid(&mut self, uid: u32) {
        self.admin_uid = Some(uid);
    }

    /// Whether `ctx` may see other clients through the root handle.
    pub(super) fn privileged(&self, ctx: &CallerCtx) -> bool {
        ctx.uid == 0 || self.admin_uid == Some(ctx.uid)
    }

    /// The driver.
    pub fn driver(&self) -> &D {
        &self.driver
    }

    /// The limits every client gets.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Number of open handles (all kinds).
    pub fn handle_count(&self) -> usize {
        self.handles.len()
    }

    /// Number of live clients (device handles open, or closed with derived handles left).
    pub fn client_count(&self) -> usize {
        self.clients.len()
    }

    /// The client id behind a device handle, if `id` is one.
    pub fn client_of(&self, id: usize) -> Option<ClientId> {
        match self.handles.get(&id) {
            Some(Handle::Device { client, .. }) => Some(*client),
            _ => None,
        }
    }

    /// The BO behind a derived BO handle (for transports that map BO memory themselves).
    pub fn bo_of_handle(&self, id: usize) -> Option<&D::Bo> {
        match self.handles.get(&id) {
            Some(Handle::Bo(d)) => Some(&d.object),
            _ => None,
        }
    }

    fn insert_handle(&mut self, handle: Handle<D>) -> usize {
        // Handle numbers are never reused: a stale number from a closed handle names nothing.
        let id = self.next_handle;
        self.next_handle += 1;
        self.handles.insert(id, handle);
        id
    }

    fn handle(&self, id: usize) -> std::result::Result<&Handle<D>, SchemeError> {
        self.handles.get(&id).ok_or(SchemeError::BadHandle(id))
    }

    fn device_client(&self, id: usize) -> std::result::Result<ClientId, SchemeError> {
        match self.handle(id)? {
            Handle::Device { client, .. } => Ok(*client),
            other => Err(SchemeError::WrongHandleKind {
                id,
                kind: other.kind_name(),
            }),
        }
    }

    fn client_mut(&mut self, client: ClientId) -> std::result::Result<&mut Client<D>, SchemeError> {
        // A device handle always has its client; a missing one means the handle is gone.
        self.clients
            .get_mut(&client)
            .ok_or(SchemeError::BadHandle(0))
    }

    fn open_device(&mut self, pid: usize) -> std::result::Result<usize, SchemeError> {
        let open = self.devices_per_pid.get(&pid).copied().unwrap_or(0);
        if open + 1 > self.limits.devices_per_process {
            return Err(SchemeError::LimitExceeded {
                limit: crate::errno::Limit::Devices,
                requested: open + 1,
                limit_value: self.limits.devices_per_process,
            });
        }
        self.devices_per_pid.insert(pid, open + 1);
        let client = ClientId(self.next_client);
        self.next_client += 1;
        self.clients.insert(client, Client::new(pid));
        self.log_connect(client, pid);
        Ok(self.insert_handle(Handle::Device { client, pid }))
    }

    /// `dup(device, "bo/<id>" | "syncobj/<id>" | "vm/<id>")`, or a VM view on the root.
    fn derive(
        &mut self,
        old: usize,
        buf: &[u8],
        privileged: bool,
    ) -> std::result::Result<usize, SchemeError> {
        if let Handle::Root = self.handle(old)? {
            let path = handles::parse_derived(buf)?;
            if !privileged {
                // Other clients' address spaces are for the administrator only.
                return Err(SchemeError::PermissionDenied);
            }
            return self.open_root_view(old, path);
        }
        let client_id = self.device_client(old)?;
        let (kind, id) = match handles::parse_derived(buf)? {
            handles::DerivedPath::Object { kind, id } => (kind, id),
            handles::DerivedPath::Vm(id) => return self.open_vm_view(client_id, id),
            handles::DerivedPath::ClientVm { .. } => {
                return Err(SchemeError::BadPath(String::from_utf8_lossy(buf).into()))
            }
        };
        let limits = self.limits;
        let token = self.fresh_token();
        let client = self.client_mut(client_id)?;
        client.check_handle_limit(&limits)?;
        let handle = match kind {
            ObjectKind::Bo => {
                let entry = client.bo(crate::uapi::BoId(id))?;
                let (object, size, charge) = (entry.bo.clone(), entry.size, entry.charge);
                Handle::Bo(Derived::new(object, client_id, charge, token, size))
            }
            ObjectKind::Syncobj => {
                let object = client.syncobj(crate::uapi::SyncobjId(id))?.clone();
                Handle::Syncobj(Derived::new(object, client_id, None, token, 0))
            }
        };
        client.handles += 1;
        if let Handle::Bo(d) = &handle {
            self.charge_ref(d.charge);
        }
        let id = self.insert_handle(handle);
        self.exports.insert(token, id);
        Ok(id)
    }

    /// One more reference to a charge (possibly another client's).
    pub(super) fn charge_ref(&mut self, charge: Option<client::ChargeRef>) {
        if let Some((owner, key)) = charge {
            if let Some(c) = self.clients.get_mut(&owner) {
                c.charge_ref(key);
            }
        }
    }

    /// Drop a reference to a charge; the owner's record goes once nothing holds it any more.
    pub(super) fn charge_unref(&mut self, charge: Option<client::ChargeRef>) {
        if let Some((owner, key)) = charge {
            if let Some(c) = self.clients.get_mut(&owner) {
                c.charge_unref(key);
            }
            self.forget_if_done(owner);
        }
    }

    /// Remove a client record whose device handle is closed and that nothing refers to.
    fn forget_if_done(&mut self, client: ClientId) {
        let done = self
            .clients
            .get(&client)
            .is_some_and(|c| c.closed && c.handles == 0 && !c.has_charges());
        if done {
            self.clients.remove(&client);
        }
    }

    fn close_handle(&mut self, id: usize) {
        let Some(handle) = self.handles.remove(&id) else {
            return;
        };
        self.parking.retain(|(h, _)| *h != id);
        match handle {
            Handle::Root => self.root = None,
            Handle::Device { client, pid } => {
                if let Some(n) = self.devices_per_pid.get_mut(&pid) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.devices_per_pid.remove(&pid);
                    }
                }
                self.close_client(client)
            }
            Handle::Bo(d) => self.close_derived(d.client, d.charge, d.token, d.mappings),
            Handle::Syncobj(d) => self.close_derived(d.client, d.charge, d.token, d.mappings),
            Handle::Vm(view) => self.close_vm_view(view),
        }
    }

    fn close_derived(
        &mut self,
        client_id: ClientId,
        charge: Option<client::ChargeRef>,
        token: Token,
        maps: u64,
    ) {
        self.exports.remove(&token);
        if let Some(client) = self.clients.get_mut(&client_id) {
            client.handles = client.handles.saturating_sub(1);
            client.mappings = client.mappings.saturating_sub(maps);
        }
        self.charge_unref(charge);
        self.forget_if_done(client_id);
    }

    /// Tear down everything a device handle owned: stop its GPU work first, then destroy its
    /// queues and VMs and drop its BOs and syncobjs. Derived handles keep their objects alive.
    fn close_client(&mut self, client_id: ClientId) {
        self.log_disconnect(client_id);
        self.driver.client_stop(client_id);
        let Some(client) = self.clients.get_mut(&client_id) else {
            return;
        };
        for (_, q) in std::mem::take(&mut client.queues) {
            // Teardown cannot report errors to anyone; a driver refusal leaves the object to
            // the driver's own cleanup when its last reference drops.
            let _ = self.driver.queue_destroy(&q.queue);
        }
        for (_, vm) in std::mem::take(&mut client.vms) {
            let _ = self.driver.vm_destroy(&vm.vm);
        }
        let bos = std::mem::take(&mut client.bos);
        client.syncobjs.clear();
        client.closed = true;
        for (_, bo) in bos {
            self.charge_unref(bo.charge);
        }
        self.forget_if_done(client_id);
    }

    fn bo_handle_mut(
        &mut self,
        id: usize,
    ) -> std::result::Result<&mut Derived<D::Bo>, SchemeError> {
        match self.handles.get_mut(&id) {
            Some(Handle::Bo(d)) => Ok(d),
            Some(other) => Err(SchemeError::WrongHandleKind {
                id,
                kind: other.kind_name(),
            }),
            None => Err(SchemeError::BadHandle(id)),
        }
    }

    fn mmap(
        &mut self,
        id: usize,
        offset: u64,
        size: usize,
        flags: MapFlags,
    ) -> std::result::Result<usize, SchemeError> {
        let limits = self.limits;
        let d = self.bo_handle_mut(id)?;
        let end = offset.checked_add(size as u64);
        if offset % crate::uapi::decode::BIND_ALIGN != 0
            || size == 0
            || end.is_none_or(|e| e > d.size)
        {
            return Err(SchemeError::Invalid(
                "mmap range outside the BO or misaligned",
            ));
        }
        let (client_id, object) = (d.client, d.object.clone());
        if let Some(client) = self.clients.get(&client_id) {
            if client.mappings + 1 > limits.mappings {
                return Err(SchemeError::LimitExceeded {
                    limit: crate::errno::Limit::Mappings,
                    requested: client.mappings + 1,
                    limit_value: limits.mappings,
                });
            }
        }
        let addr = self.driver.bo_mmap(&object, offset, size, flags)?;
        let d = self.bo_handle_mut(id)?;
        // The range was checked above (non-empty, no overflow), so this records; if it did
        // not, the driver mapping is undone rather than left uncounted.
        if !d.cpu_maps.map(offset, size as u64) {
            self.driver.bo_munmap(&object, offset, size)?;
            return Err(SchemeError::Invalid("mmap range overflows"));
        }
        d.mappings = d.cpu_maps.live();
        if let Some(client) = self.clients.get_mut(&client_id) {
            client.mappings += 1;
        }
        Ok(addr)
    }

    /// A client mapping (the kernel's `munmap`, or a host client's) ended. Only a mapping
    /// this handle counted reaches the driver, once, when its last piece goes: an unbalanced
    /// or repeated `munmap` changes nothing, so it can neither unpin a BO another mapping
    /// still shows nor underflow a count (see `cpu_maps.rs`).
    fn munmap_bo(
        &mut self,
        id: usize,
        offset: u64,
        size: usize,
    ) -> std::result::Result<(), SchemeError> {
        let d = self.bo_handle_mut(id)?;
        if d.cpu_maps.unmap(offset, size as u64) != cpu_maps::Unmapped::Released {
            return Ok(());
        }
        d.mappings = d.cpu_maps.live();
        let (client_id, object) = (d.client, d.object.clone());
        if let Some(client) = self.clients.get_mut(&client_id) {
            client.mappings = client.mappings.saturating_sub(1);
        }
        self.driver.bo_munmap(&object, offset, size)?;
        Ok(())
    }
}

impl<T> Derived<T> {
    fn new(
        object: T,
        client: ClientId,
        charge: Option<client::ChargeRef>,
        token: Token,
        size: u64,
    ) -> Self {
        Derived {
            object,
            client,
            charge,
            token,
            size,
            mappings: 0,
            cpu_maps: cpu_maps::MapRanges::default(),
            subscribed: EventFlags::empty(),
            reported: false,
        }
    }
}

/// A call's name for the log: its opcode, or the raw number of an unknown one.
struct CallName<'a>(&'a [u64]);

impl std::fmt::Display for CallName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let raw = self.0.first().copied().unwrap_or(0);
        match crate::uapi::Opcode::from_raw(raw) {
            Some(op) => write!(f, "{op:?}"),
            None => write!(f, "call {raw}"),
        }
    }
}

fn opened(number: usize) -> OpenResult {
    OpenResult::ThisScheme {
        number,
        flags: NewFdFlags::empty(),
    }
}

impl<D: GpuDriver> SchemeSync for GpuScheme<D> {
    fn scheme_root(&mut self) -> Result<usize> {
        if let Some(root) = self.root {
            return Ok(root);
        }
        let root = self.insert_handle(Handle::Root);
        self.root = Some(root);
        Ok(root)
    }

    fn openat(
        &mut self,
        fd: usize,
        path: &str,
        _flags: usize,
        _fcntl: u32,
        ctx: &CallerCtx,
    ) -> Result<OpenResult> {
        match self.handle(fd)? {
            Handle::Root => {}
            other => {
                return Err(SchemeError::WrongHandleKind {
                    id: fd,
                    kind: other.kind_name(),
                }
                .into())
            }
        }
        if path.trim_matches('/') != DEVICE_PATH {
            return Err(SchemeError::BadPath(path.to_owned()).into());
        }
        match self.open_device(ctx.pid) {
            Ok(id) => Ok(opened(id)),
            Err(e) => Err(self.reply_error(fd, &"open", e)),
        }
    }

    fn dup(&mut self, old_id: usize, buf: &[u8], ctx: &CallerCtx) -> Result<OpenResult> {
        let privileged = self.privileged(ctx);
        match self.derive(old_id, buf, privileged) {
            Ok(id) => Ok(opened(id)),
            Err(e) => Err(self.reply_error(old_id, &"dup", e)),
        }
    }

    fn read(
        &mut self,
        id: usize,
        buf: &mut [u8],
        offset: u64,
        _fcntl: u32,
        ctx: &CallerCtx,
    ) -> Result<usize> {
        if let Handle::Vm(_) = self.handle(id)? {
            return Ok(self.read_vm_view(id, buf, offset)?);
        }
        let text = self.stats_text(id, self.privileged(ctx))?;
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(text.len());
        let bytes = text.as_bytes().get(start..).unwrap_or_default();
        let n = bytes.len().min(buf.len());
        // PANIC: n is at most both lengths.
        buf[..n].copy_from_slice(&bytes[..n]);
        Ok(n)
    }

    fn fevent(&mut self, id: usize, flags: EventFlags, _ctx: &CallerCtx) -> Result<EventFlags> {
        Ok(self.subscribe(id, flags)?)
    }

    fn fpath(&mut self, id: usize, buf: &mut [u8], _ctx: &CallerCtx) -> Result<usize> {
        let path = match self.handle(id)? {
            Handle::Root => String::from("/scheme/gpu/"),
            Handle::Device { .. } => format!("/scheme/gpu/{DEVICE_PATH}"),
            Handle::Bo(_) => format!("/scheme/gpu/{DEVICE_PATH}/bo"),
            Handle::Syncobj(_) => format!("/scheme/gpu/{DEVICE_PATH}/syncobj"),
            Handle::Vm(view) => Self::view_path(view),
        };
        let n = path.len().min(buf.len());
        // PANIC: n is at most both lengths.
        buf[..n].copy_from_slice(&path.as_bytes()[..n]);
        Ok(n)
    }

    fn call(
        &mut self,
        id: usize,
        payload: &mut [u8],
        metadata: &[u64],
        ctx: &CallerCtx,
    ) -> Result<usize> {
        self.handle_call(id, None, payload, metadata, ctx)
            .map_err(|e| self.reply_error(id, &CallName(metadata), e))
    }

    fn call_multiple_ids(
        &mut self,
        ids: &[usize],
        payload: &mut [u8],
        metadata: &[u64],
        ctx: &CallerCtx,
    ) -> Result<usize> {
        match ids {
            [id, other] => self
                .handle_call(*id, Some(*other), payload, metadata, ctx)
                .map_err(|e| self.reply_error(*id, &CallName(metadata), e)),
            _ => Err(Error::new(syscall::error::EINVAL)),
        }
    }

    fn mmap_prep(
        &mut self,
        id: usize,
        offset: u64,
        size: usize,
        flags: MapFlags,
        _ctx: &CallerCtx,
    ) -> Result<usize> {
        self.mmap(id, offset, size, flags)
            .map_err(|e| self.reply_error(id, &"mmap", e))
    }

    fn munmap(
        &mut self,
        id: usize,
        offset: u64,
        size: usize,
        _flags: MunmapFlags,
        _ctx: &CallerCtx,
    ) -> Result<()> {
        self.munmap_bo(id, offset, size)
            .map_err(|e| self.reply_error(id, &"munmap", e))
    }

    fn on_close(&mut self, id: usize) {
        self.close_handle(id);
    }
}
