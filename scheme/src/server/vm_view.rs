//! VM views: read-only handles on one VM's whole mapping table.
//!
//! Owns: `VmView` (the handle), opening one (`dup(device, "vm/<id>")` for a client's own VM,
//! `dup(root, "vm/<daemon id>")` or `dup(root, "client/<c>/vm/<id>")` for the administrator),
//! the table text it reads, and its release. Must not: change any VM, hold the VM object, or
//! show a VM that is gone.
//!
//! Invariants: a view *names* its VM (owner client, the client's VM id, the driver's key) and
//! holds no reference to it, so an open view never keeps a destroyed VM's memory alive; every
//! read resolves the name again through the owner's table and answers `ENOENT` once the VM was
//! destroyed (VM_DESTROY, or the client's device handle closed). A view opened on a device
//! handle counts against that client's handle limit; one opened on the root counts against a
//! root-wide budget of the same size, never against the client it looks at. Paged reads see one
//! snapshot: reading at offset 0 renders the table, later offsets page through that text.

use std::collections::HashMap;
use std::fmt::Write;

use super::client::VmEntry;
use super::handles::{DerivedPath, Handle};
use super::GpuScheme;
use crate::driver::{ClientId, DriverError, GpuDriver, MappingBacking, VmMapping};
use crate::errno::{Limit, SchemeError};
use crate::uapi::flags::VmCreateFlags;

type R<T> = Result<T, SchemeError>;

/// A VM view handle.
pub(crate) struct VmView {
    /// The client whose VM it is.
    pub owner: ClientId,
    /// The VM's id in the owner's namespace.
    pub vm: u32,
    /// The driver's daemon-wide id of the VM (guards against a reused client id).
    pub key: u64,
    /// Opened through the root (the root's budget, not the owner's handle limit).
    pub by_root: bool,
    /// The text rendered by the last read at offset 0.
    snapshot: Option<String>,
}

impl<D: GpuDriver> GpuScheme<D> {
    /// `dup(device, "vm/<id>")`: a view of one of the client's own VMs.
    pub(super) fn open_vm_view(&mut self, client: ClientId, id: u64) -> R<usize> {
        let unknown = SchemeError::UnknownObject {
            kind: "VM",
            id: u32::try_from(id).unwrap_or(u32::MAX),
        };
        let vm = u32::try_from(id).map_err(|_| unknown.clone())?;
        let limits = self.limits;
        let entry = self.clients.get(&client).and_then(|c| c.vms.get(&vm));
        let key = self.driver.vm_key(&entry.ok_or(unknown)?.vm);
        let c = self.client_mut(client)?;
        c.check_handle_limit(&limits)?;
        c.handles += 1;
        Ok(self.insert_handle(Handle::Vm(VmView {
            owner: client,
            vm,
            key,
            by_root: false,
            snapshot: None,
        })))
    }

    /// `dup(root, …)`: a view of any client's VM, by daemon-wide id or by client and VM id.
    pub(super) fn open_root_view(&mut self, root: usize, path: DerivedPath) -> R<usize> {
        let found = match path {
            DerivedPath::Vm(key) => self.clients.iter().find_map(|(c, client)| {
                let mut vms = client.vms.iter();
                vms.find(|(_, e)| self.driver.vm_key(&e.vm) == key)
                    .map(|(id, _)| (*c, *id, key))
            }),
            DerivedPath::ClientVm { client, vm } => {
                let c = ClientId(client);
                let entry = self.clients.get(&c).and_then(|cl| cl.vms.get(&vm));
                entry.map(|e| (c, vm, self.driver.vm_key(&e.vm)))
            }
            DerivedPath::Object { .. } => {
                return Err(SchemeError::WrongHandleKind {
                    id: root,
                    kind: "root",
                })
            }
        };
        let (owner, vm, key) = found.ok_or(SchemeError::Driver(DriverError::VmGone))?;
        let requested = self.root_views + 1;
        if requested > self.limits.handles {
            return Err(SchemeError::LimitExceeded {
                limit: Limit::Handles,
                requested,
                limit_value: self.limits.handles,
            });
        }
        self.root_views = requested;
        Ok(self.insert_handle(Handle::Vm(VmView {
            owner,
            vm,
            key,
            by_root: true,
            snapshot: None,
        })))
    }

    /// `read` of a view: the table text from `offset` (0 renders a fresh snapshot).
    pub(super) fn read_vm_view(&mut self, id: usize, buf: &mut [u8], offset: u64) -> R<usize> {
        let (owner, vm, key, stale) = match self.handle(id)? {
            Handle::Vm(v) => (v.owner, v.vm, v.key, offset == 0 || v.snapshot.is_none()),
            other => {
                return Err(SchemeError::WrongHandleKind {
                    id,
                    kind: other.kind_name(),
                })
            }
        };
        // Resolved on every read, so a destroyed VM never shows its last snapshot.
        let text = match self.resolve_view(owner, vm, key) {
            Ok(entry) if stale => Some(self.render_view(owner, vm, entry)?),
            Ok(_) => None,
            Err(e) => {
                if let Some(Handle::Vm(v)) = self.handles.get_mut(&id) {
                    v.snapshot = None;
                }
                return Err(e);
            }
        };
        let Some(Handle::Vm(v)) = self.handles.get_mut(&id) else {
            return Err(SchemeError::BadHandle(id));
        };
        if let Some(text) = text {
            v.snapshot = Some(text);
        }
        let text = v.snapshot.as_deref().unwrap_or_default();
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(text.len());
        let bytes = text.as_bytes().get(start..).unwrap_or_default();
        let n = bytes.len().min(buf.len());
        // PANIC: n is at most both lengths.
        buf[..n].copy_from_slice(&bytes[..n]);
        Ok(n)
    }

    /// The owner's table entry the view names, if that VM still exists.
    fn resolve_view(&self, owner: ClientId, vm: u32, key: u64) -> R<&VmEntry<D>> {
        let gone = SchemeError::Driver(DriverError::VmGone);
        let entry = self.clients.get(&owner).and_then(|c| c.vms.get(&vm));
        match entry {
            Some(e) if self.driver.vm_key(&e.vm) == key => Ok(e),
            _ => Err(gone),
        }
    }

    /// The text of a view: header lines, then one line per mapping in VA order.
    fn render_view(&self, owner: ClientId, vm: u32, entry: &VmEntry<D>) -> R<String> {
        let table = self.driver.vm_table(&entry.vm)?;
        // The owner's names for BOs: a BO it holds under several ids shows the lowest.
        let mut names: HashMap<u64, u32> = HashMap::new();
        if let Some(c) = self.clients.get(&owner) {
            for (id, bo) in &c.bos {
                names.entry(self.driver.bo_key(&bo.bo)).or_insert(*id);
            }
        }
        let mut out = String::with_capacity(96 + table.len() * 56);
        // Writing to a String cannot fail.
        let _ = write!(
            out,
            "vm-id: {vm}\nvm-daemon-id: {}\nclient: {}\nmappings: {}\nflags: {}\n",
            self.driver.vm_key(&entry.vm),
            owner.0,
            table.len(),
            flag_words(entry.flags)
        );
        for m in &table {
            mapping_line(&mut out, m, &names);
        }
        Ok(out)
    }

    /// Release a closed view's budget.
    pub(super) fn close_vm_view(&mut self, view: VmView) {
        if view.by_root {
            self.root_views = self.root_views.saturating_sub(1);
            return;
        }
        if let Some(c) = self.clients.get_mut(&view.owner) {
            c.handles = c.handles.saturating_sub(1);
        }
        self.forget_if_done(view.owner);
    }

    /// The path `fpath` reports for a view.
    pub(super) fn view_path(view: &VmView) -> String {
        if view.by_root {
            format!("/scheme/gpu/vm/{}", view.key)
        } else {
            format!("/scheme/gpu/{}/vm/{}", super::DEVICE_PATH, view.vm)
        }
    }
}

/// `scratch-page,lr-mode,fault-mode` (those set), or `none`.
fn flag_words(flags: VmCreateFlags) -> String {
    let words: Vec<&str> = [
        (VmCreateFlags::SCRATCH_PAGE, "scratch-page"),
        (VmCreateFlags::LR_MODE, "lr-mode"),
        (VmCreateFlags::FAULT_MODE, "fault-mode"),
    ]
    .into_iter()
    .filter(|(f, _)| flags.contains(*f))
    .map(|(_, w)| w)
    .collect();
    if words.is_empty() {
        "none".into()
    } else {
        words.join(",")
    }
}

/// `<start> <end> bo=<id|-> offset=<hex>[ ro][ null|userptr|mirror]`.
fn mapping_line(out: &mut String, m: &VmMapping, names: &HashMap<u64, u32>) {
    let (bo, offset, kind) = match m.backing {
        MappingBacking::Bo { key, offset } => (names.get(&key).copied(), offset, ""),
        MappingBacking::Null => (None, 0, " null"),
        MappingBacking::Userptr { addr } => (None, addr, " userptr"),
        MappingBacking::Mirror => (None, 0, " mirror"),
    };
    let _ = write!(out, "{:#014x} {:#014x} bo=", m.start, m.end);
    let _ = match bo {
        Some(id) => write!(out, "{id}"),
        None => write!(out, "-"),
    };
    let ro = if m.read_only { " ro" } else { "" };
    let _ = writeln!(out, " offset={offset:#x}{ro}{kind}");
}
