//! One client (one device handle): its id namespaces, its memory charges and its limits.
//!
//! Owns: the per-client object tables (VM, BO, queue, syncobj ids → driver objects), id
//! allocation, the accounting of bytes / mappings / objects / handles against `Limits`.
//! Must not: call the driver (the server does), or know about other clients — a client's ids
//! mean nothing outside this struct, which is what makes guessing ids useless.

use std::collections::BTreeMap;

use crate::driver::GpuDriver;
use crate::errno::{Limit, SchemeError};
use crate::uapi::flags::{EngineClass, Placement, VmCreateFlags};
use crate::uapi::{BoId, QueueId, SyncobjId, VmId};

/// Per-client limits, enforced by the scheme so that one client cannot exhaust the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of BOs that may live in VRAM.
    pub vram_bytes: u64,
    /// Bytes of BOs that may live in system memory.
    pub system_bytes: u64,
    /// CPU mappings (`mmap`) of the client's BOs at once.
    pub mappings: u64,
    /// GPU VA mappings across the client's VMs (as reported by the driver).
    pub gpu_mappings: u64,
    /// Binds and jobs in flight.
    pub in_flight: u64,
    /// Objects (VMs + BOs + queues + syncobjs) in the client's tables.
    pub objects: u64,
    /// Derived handles (`dup`) open at once.
    pub handles: u64,
    /// Device handles one process (caller pid at `open`) may hold at once, so that opening
    /// more clients does not multiply the limits above without bound.
    pub devices_per_process: u64,
    /// Timeline points the client's syncobjs keep alive at once (a signalled point costs
    /// nothing once a later one is added; points behind an unsignalled one stay linked).
    pub timeline_points: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            vram_bytes: 4 << 30,
            system_bytes: 4 << 30,
            mappings: 4096,
            gpu_mappings: 1 << 16,
            in_flight: 1024,
            objects: 1 << 16,
            handles: 1024,
            devices_per_process: 64,
            timeline_points: 1 << 16,
        }
    }
}

/// A VM in a client's table.
pub(crate) struct VmEntry<D: GpuDriver> {
    pub vm: D::Vm,
    pub flags: VmCreateFlags,
}

/// A BO in a client's table.
pub(crate) struct BoEntry<D: GpuDriver> {
    pub bo: D::Bo,
    pub size: u64,
    /// The VM whose reservation a VM-private BO shares.
    pub private_to: Option<VmId>,
    /// The memory charge this entry keeps alive: the creating client's, wherever the entry is
    /// (an import keeps the creator charged for as long as it holds the BO).
    pub charge: Option<ChargeRef>,
}

/// A queue in a client's table.
pub(crate) struct QueueEntry<D: GpuDriver> {
    pub queue: D::Queue,
    pub vm: VmId,
    pub class: EngineClass,
}

/// A reference to a charge: the client charged, and the key inside it.
pub(crate) type ChargeRef = (crate::driver::ClientId, u32);

/// Memory charged for one created BO; refunded when its last reference in the client (the
/// table entry or a derived handle) goes away.
struct Charge {
    vram: u64,
    system: u64,
    refs: u32,
}

/// Counters reported in the stats text.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Counters {
    pub binds: u64,
    pub execs: u64,
    pub waits: u64,
    pub imports: u64,
}

/// One client's state.
pub(crate) struct Client<D: GpuDriver> {
    /// The process that opened the device handle: memory limits apply to a process across
    /// its device handles.
    pub pid: usize,
    pub vms: BTreeMap<u32, VmEntry<D>>,
    pub bos: BTreeMap<u32, BoEntry<D>>,
    pub queues: BTreeMap<u32, QueueEntry<D>>,
    pub syncobjs: BTreeMap<u32, D::Syncobj>,
    charges: BTreeMap<u32, Charge>,
    next_id: u32,
    pub vram_bytes: u64,
    pub system_bytes: u64,
    pub mappings: u64,
    pub handles: u64,
    /// The device handle is closed: objects are torn down, only derived handles remain.
    pub closed: bool,
    pub counters: Counters,
    /// Bit `1 << Limit` per limit the client has hit (the first hit is logged as a warning).
    pub limits_hit: u16,
    /// Timeline points charged per syncobj id (the driver's count when last looked at: an
    /// upper bound, recounted when the limit is reached) and their sum.
    points: BTreeMap<u32, u64>,
    pub timeline_points: u64,
}

impl<D: GpuDriver> Client<D> {
    pub fn new(pid: usize) -> Self {
        Client {
            pid,
            vms: BTreeMap::new(),
            bos: BTreeMap::new(),
            queues: BTreeMap::new(),
            syncobjs: BTreeMap::new(),
            charges: BTreeMap::new(),
            next_id: 1,
            vram_bytes: 0,
            system_bytes: 0,
            mappings: 0,
            handles: 0,
            closed: false,
            counters: Counters::default(),
            limits_hit: 0,
            points: BTreeMap::new(),
            timeline_points: 0,
        }
    }

    /// A fresh id: never 0, never one still live in any table of this client.
    pub fn fresh_id(&mut self) -> u32 {
        loop {
            let id = self.next_id;
            self.next_id = self.next_id.checked_add(1).unwrap_or(1);
            if id != 0 && !self.id_in_use(id) {
                return id;
            }
        }
    }

    fn id_in_use(&self, id: u32) -> bool {
        self.vms.contains_key(&id)
            || self.bos.contains_key(&id)
            || self.queues.contains_key(&id)
            || self.syncobjs.contains_key(&id)
            || self.charges.contains_key(&id)
    }

    /// Whether any charge is still referenced (the record must outlive its device handle).
    pub fn has_charges(&self) -> bool {
        !self.charges.is_empty()
    }

    pub fn object_count(&self) -> u64 {
        (self.vms.len() + self.bos.len() + self.queues.len() + self.syncobjs.len()) as u64
    }

    /// Error unless one more object fits.
    pub fn check_object_limit(&self, limits: &Limits) -> Result<(), SchemeError> {
        let requested = self.object_count() + 1;
        if requested > limits.objects {
            return Err(SchemeError::LimitExceeded {
                limit: Limit::Objects,
                requested,
                limit_value: limits.objects,
            });
        }
        Ok(())
    }

    /// Error unless one more derived handle fits.
    pub fn check_handle_limit(&self, limits: &Limits) -> Result<(), SchemeError> {
        let requested = self.handles + 1;
        if requested > limits.handles {
            return Err(SchemeError::LimitExceeded {
                limit: Limit::Handles,
                requested,
                limit_value: limits.handles,
            });
        }
        Ok(())
    }

    /// Charge a new BO of `size` bytes with `placement` (every region it may live in is
    /// charged: a migratable BO can occupy either), under charge key `key`.
    pub fn charge(
        &mut self,
        key: u32,
        size: u64,
        placement: Placement,
        limits: &Limits,
    ) -> Result<(), SchemeError> {
        let (vram, system) = charge_of(size, placement);
        let new_vram = checked_total(self.vram_bytes, vram, Limit::VramBytes, limits.vram_bytes)?;
        let new_sys = checked_total(
            self.system_bytes,
            system,
            Limit::SystemBytes,
            limits.system_bytes,
        )?;
        self.vram_bytes = new_vram;
        self.system_bytes = new_sys;
        self.charges.insert(
            key,
            Charge {
                vram,
                system,
                refs: 1,
            },
        );
        Ok(())
    }

    /// One more reference (a derived handle) to a charge.
    pub fn charge_ref(&mut self, key: u32) {
        if let Some(c) = self.charges.get_mut(&key) {
            c.refs += 1;
        }
    }

    /// Drop a reference to a charge; the memory is refunded with the last one.
    pub fn charge_unref(&mut self, key: u32) {
        let Some(c) = self.charges.get_mut(&key) else {
            return;
        };
        c.refs = c.refs.saturating_sub(1);
        if c.refs == 0 {
            self.vram_bytes = self.vram_bytes.saturating_sub(c.vram);
            self.system_bytes = self.system_bytes.saturating_sub(c.system);
            self.charges.remove(&key);
        }
    }

    /// Records that syncobj `id` now keeps `points` timeline points alive.
    pub fn set_points(&mut self, id: u32, points: u64) {
        let old = if points == 0 {
            self.points.remove(&id)
        } else {
            self.points.insert(id, points)
        };
        self.timeline_points = (self.timeline_points + points).saturating_sub(old.unwrap_or(0));
    }

    /// The syncobj ids charged for timeline points.
    pub fn charged_syncobjs(&self) -> Vec<u32> {
        self.points.keys().copied().collect()
    }

    pub fn vm(&self, id: VmId) -> Result<&VmEntry<D>, SchemeError> {
        self.vms.get(&id.0).ok_or(SchemeError::UnknownObject {
            kind: "VM",
            id: id.0,
        })
    }

    pub fn bo(&self, id: BoId) -> Result<&BoEntry<D>, SchemeError> {
        self.bos.get(&id.0).ok_or(SchemeError::UnknownObject {
            kind: "BO",
            id: id.0,
        })
    }

    pub fn queue(&self, id: QueueId) -> Result<&QueueEntry<D>, SchemeError> {
        self.queues.get(&id.0).ok_or(SchemeError::UnknownObject {
            kind: "queue",
            id: id.0,
        })
    }

    pub fn syncobj(&self, id: SyncobjId) -> Result<&D::Syncobj, SchemeError> {
        self.syncobjs.get(&id.0).ok_or(SchemeError::UnknownObject {
            kind: "syncobj",
            id: id.0,
        })
    }
}

/// The (VRAM, system) bytes a BO of `size` with `placement` is charged: every region it may
/// live in (a migratable BO can occupy either).
pub(crate) fn charge_of(size: u64, placement: Placement) -> (u64, u64) {
    let vram = if placement.contains(Placement::VRAM) {
        size
    } else {
        0
    };
    let system = if placement.contains(Placement::SYSTEM) {
        size
    } else {
        0
    };
    (vram, system)
}

/// Error unless a process already charged `(vram, system)` may add `add`: the memory limits
/// apply to a process across its device handles, so opening more handles does not multiply
/// them.
pub(crate) fn check_process(
    used: (u64, u64),
    add: (u64, u64),
    limits: &Limits,
) -> Result<(), SchemeError> {
    checked_total(used.0, add.0, Limit::VramBytes, limits.vram_bytes)?;
    checked_total(used.1, add.1, Limit::SystemBytes, limits.system_bytes)?;
    Ok(())
}

fn checked_total(
    current: u64,
    add: u64,
    limit: Limit,
    limit_value: u64,
) -> Result<u64, SchemeError> {
    let requested = current.saturating_add(add);
    if requested > limit_value {
        return Err(SchemeError::LimitExceeded {
            limit,
            requested,
            limit_value,
        });
    }
    Ok(requested)
}
