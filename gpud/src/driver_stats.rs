//! A client's DRM fdinfo-style usage lines (Linux `Documentation/gpu/drm-usage-stats.rst`),
//! which the scheme prints in the client's stats block and `gpuctl top` samples.
//!
//! Owns: the keys and their formats. Must not: take the client table lock while reading BOs
//! or the scheduler (the caller collects the client's objects first), or change anything.
//!
//! | key | value |
//! | --- | --- |
//! | `drm-driver` | `gpud` |
//! | `drm-pdev` | the PCI address of the device (`0000:00:04.0`) when gpud drives a PCI function (`gpud pcid`, `gpud vfio`); absent on the in-process simulated device |
//! | `drm-client-id` | the scheme's client id (unique per device handle while gpud runs) |
//! | `drm-engine-<class>` | `<ns> ns`: time the client's jobs occupied a hardware queue of the `copy` / `compute` engine, running jobs included |
//! | `drm-engine-capacity-<class>` | hardware queues of that engine (jobs of one class can run on this many at once) |
//! | `drm-total-<region>` | bytes of the BOs the client holds (created or imported, each object once) in `vram` / `system` (where the backing is, else where it prefers) |
//! | `drm-shared-<region>` | bytes of those BOs that another client holds too (imported from or by another client) |
//! | `drm-resident-<region>` | bytes of those BOs with backing present there |
//! | `gpud-faults` | recoverable page faults in the client's live VMs |
//! | `gpud-evictions` | VRAM evictions of the BOs the client created that are alive |
//!
//! The memory keys follow Linux's `drm_show_memory_stats`: every handle of the file counts,
//! imported ones included, and an object with handles in more than one file is shared.

use crate::bind::Vm;
use crate::exec::EngineBusy;
use crate::hw::pte::MemLocation;
use crate::hw::Engine;
use crate::mem::bo::{Bo, Placement};
use crate::vm::GpuBo;
use gpu_scheme::driver::HeldBo;
use std::sync::Arc;

/// Engine class names as the stats and the wire name them.
pub(crate) const ENGINES: [(Engine, &str); 2] =
    [(Engine::Copy, "copy"), (Engine::Compute, "compute")];

/// Memory regions as the stats name them.
const REGIONS: [(MemLocation, &str); 2] =
    [(MemLocation::Vram, "vram"), (MemLocation::System, "system")];

/// Bytes per region.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Region {
    total: u64,
    shared: u64,
    resident: u64,
}

/// Where `bo`'s bytes count: its backing's location (resident), else its preferred region.
fn region_of(bo: &Bo) -> (MemLocation, bool) {
    match bo.location() {
        Some(loc) => (loc, true),
        None => match bo.placement() {
            Placement::System => (MemLocation::System, false),
            Placement::Vram | Placement::Migratable => (MemLocation::Vram, false),
        },
    }
}

/// What the lines say about the device: its PCI address, hardware queues per engine.
#[derive(Debug, Clone, Default)]
pub(crate) struct DeviceLines<'a> {
    /// `drm-pdev`, when there is a PCI function.
    pub pdev: Option<&'a str>,
    /// `drm-engine-capacity-<class>` of every engine.
    pub queues_per_engine: u32,
}

/// The fdinfo lines of client `id` with busy time `busy`, the BOs it created `bos` (for
/// evictions) and VMs `vms`; the memory lines are [`memory_lines`].
pub(crate) fn fdinfo_lines(
    id: u64,
    device: &DeviceLines<'_>,
    busy: EngineBusy,
    bos: &[Arc<Bo>],
    vms: &[Arc<Vm>],
) -> Vec<(String, String)> {
    let mut out = vec![("drm-driver".to_string(), "gpud".to_string())];
    if let Some(pdev) = device.pdev {
        out.push(("drm-pdev".to_string(), pdev.to_string()));
    }
    out.push(("drm-client-id".to_string(), id.to_string()));
    for (engine, name) in ENGINES {
        let ns = u64::try_from(busy.get(engine).as_nanos()).unwrap_or(u64::MAX);
        out.push((format!("drm-engine-{name}"), format!("{ns} ns")));
    }
    for (_, name) in ENGINES {
        out.push((
            format!("drm-engine-capacity-{name}"),
            device.queues_per_engine.max(1).to_string(),
        ));
    }
    let faults: u64 = vms.iter().map(|vm| vm.faults()).sum();
    let evictions: u64 = bos.iter().map(|bo| bo.evictions()).sum();
    out.push(("gpud-faults".to_string(), faults.to_string()));
    out.push(("gpud-evictions".to_string(), evictions.to_string()));
    out
}

/// The memory lines of a client holding `held`: total, shared and resident bytes per region.
pub(crate) fn memory_lines(held: &[HeldBo<'_, Arc<Bo>>]) -> Vec<(String, String)> {
    let mut regions = [Region::default(); 2];
    for h in held {
        let (loc, resident) = region_of(h.bo);
        let size = h.bo.size();
        let r = &mut regions[usize::from(loc == MemLocation::System)];
        r.total = r.total.saturating_add(size);
        if h.shared {
            r.shared = r.shared.saturating_add(size);
        }
        if resident {
            r.resident = r.resident.saturating_add(size);
        }
    }
    let mut out = Vec::new();
    for (key, get) in [
        ("total", (|r: &Region| r.total) as fn(&Region) -> u64),
        ("shared", |r| r.shared),
        ("resident", |r| r.resident),
    ] {
        for ((_, name), r) in REGIONS.iter().zip(&regions) {
            out.push((format!("drm-{key}-{name}"), get(r).to_string()));
        }
    }
    out
}
