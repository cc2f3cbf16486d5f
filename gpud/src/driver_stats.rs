//! A client's DRM fdinfo-style usage lines (Linux `Documentation/gpu/drm-usage-stats.rst`),
//! which the scheme prints in the client's stats block and `gpuctl top` samples.
//!
//! Owns: the keys and their formats. Must not: take the client table lock while reading BOs
//! or the scheduler (the caller collects the client's objects first), or change anything.
//!
//! | key | value |
//! | --- | --- |
//! | `drm-driver` | `gpud` |
//! | `drm-client-id` | the scheme's client id (unique per device handle while gpud runs) |
//! | `drm-engine-<class>` | `<ns> ns`: time the client's jobs occupied a hardware queue of the `copy` / `compute` engine, running jobs included |
//! | `drm-total-<region>` | bytes of the client's BOs in `vram` / `system` (where the backing is, else where it prefers) |
//! | `drm-resident-<region>` | bytes of those BOs with backing present there |
//! | `gpud-faults` | recoverable page faults in the client's live VMs |
//! | `gpud-evictions` | VRAM evictions of the client's live BOs |

use crate::bind::Vm;
use crate::exec::EngineBusy;
use crate::hw::pte::MemLocation;
use crate::hw::Engine;
use crate::mem::bo::{Bo, Placement};
use crate::vm::GpuBo;
use std::sync::Arc;

/// Engine class names as the stats and the wire name them.
pub(crate) const ENGINES: [(Engine, &str); 2] =
    [(Engine::Copy, "copy"), (Engine::Compute, "compute")];

/// Memory regions as the stats name them.
const REGIONS: [(MemLocation, &str); 2] =
    [(MemLocation::Vram, "vram"), (MemLocation::System, "system")];

/// Bytes per region: `(total, resident)`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Region {
    total: u64,
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

/// The fdinfo lines of client `id` with busy time `busy`, BOs `bos` and VMs `vms`.
pub(crate) fn fdinfo_lines(
    id: u64,
    busy: EngineBusy,
    bos: &[Arc<Bo>],
    vms: &[Arc<Vm>],
) -> Vec<(String, String)> {
    let mut out = vec![
        ("drm-driver".to_string(), "gpud".to_string()),
        ("drm-client-id".to_string(), id.to_string()),
    ];
    for (engine, name) in ENGINES {
        let ns = u64::try_from(busy.get(engine).as_nanos()).unwrap_or(u64::MAX);
        out.push((format!("drm-engine-{name}"), format!("{ns} ns")));
    }
    let mut regions = [Region::default(); 2];
    for bo in bos {
        let (loc, resident) = region_of(bo);
        let r = &mut regions[usize::from(loc == MemLocation::System)];
        r.total = r.total.saturating_add(bo.size());
        if resident {
            r.resident = r.resident.saturating_add(bo.size());
        }
    }
    for ((_, name), r) in REGIONS.iter().zip(regions) {
        out.push((format!("drm-total-{name}"), r.total.to_string()));
    }
    for ((_, name), r) in REGIONS.iter().zip(regions) {
        out.push((format!("drm-resident-{name}"), r.resident.to_string()));
    }
    let faults: u64 = vms.iter().map(|vm| vm.faults()).sum();
    let evictions: u64 = bos.iter().map(|bo| bo.evictions()).sum();
    out.push(("gpud-faults".to_string(), faults.to_string()));
    out.push(("gpud-evictions".to_string(), evictions.to_string()));
    out
}
