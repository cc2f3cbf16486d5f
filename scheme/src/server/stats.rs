//! Text stats, in the style of DRM fdinfo / client usage stats: `key: value` lines.
//!
//! Owns: the text read from a handle. A device handle gives its client's stats followed by the
//! device-wide stats (per-VM lines only for its own VMs: one client learns nothing about
//! another's address spaces); the root handle gives device-wide stats and then every client's block
//! (for `gpuctl clients`); a BO handle its size and
//! mappings; a syncobj handle its last signalled point. (A VM view's table is `vm_view.rs`.) Must not: change any state.

use std::collections::{HashMap, HashSet};
use std::fmt::Write;

use super::handles::Handle;
use super::GpuScheme;
use crate::driver::{ClientId, GpuDriver, HeldBo};
use crate::errno::SchemeError;

impl<D: GpuDriver> GpuScheme<D> {
    /// `privileged`: the caller may see every client through the root (see
    /// `GpuScheme::set_admin_uid`); others get the root's device-wide totals only.
    pub(super) fn stats_text(&self, id: usize, privileged: bool) -> Result<String, SchemeError> {
        let mut out = String::new();
        match self.handle(id)? {
            Handle::Root if privileged => {
                self.device_stats(VmLines::All, &mut out);
                // Then every client's block, each starting with its `client-id` line.
                let clients: Vec<ClientId> = self.clients.keys().copied().collect();
                let holders = self.bo_holders();
                for c in clients {
                    self.client_stats(c, &holders, &mut out);
                }
            }
            Handle::Root => self.device_stats(VmLines::None, &mut out),
            Handle::Device { client, .. } => {
                self.client_stats(*client, &self.bo_holders(), &mut out);
                self.device_stats(VmLines::Of(*client), &mut out);
            }
            Handle::Bo(d) => {
                line(&mut out, "bo-size", d.size);
                line(&mut out, "bo-cpu-mappings", d.mappings);
            }
            Handle::Syncobj(d) => line(
                &mut out,
                "syncobj-point",
                self.driver.syncobj_query(&d.object),
            ),
            // A VM view reads its table (`vm_view.rs`), not stats.
            Handle::Vm(_) => {
                return Err(SchemeError::WrongHandleKind {
                    id,
                    kind: "VM view",
                })
            }
        }
        Ok(out)
    }

    /// How many clients hold each BO (by the driver's BO key): more than one is shared.
    fn bo_holders(&self) -> HashMap<u64, usize> {
        let mut holders = HashMap::new();
        for c in self.clients.values() {
            let keys: HashSet<u64> = c.bos.values().map(|e| self.driver.bo_key(&e.bo)).collect();
            for k in keys {
                *holders.entry(k).or_insert(0) += 1;
            }
        }
        holders
    }

    /// The BOs `client` holds, each object once (a client may import its own export).
    fn held_bos(&self, client: ClientId, holders: &HashMap<u64, usize>) -> Vec<HeldBo<'_, D::Bo>> {
        let Some(c) = self.clients.get(&client) else {
            return Vec::new();
        };
        let mut seen = HashSet::new();
        c.bos
            .values()
            .filter_map(|e| {
                let key = self.driver.bo_key(&e.bo);
                seen.insert(key).then(|| HeldBo {
                    bo: &e.bo,
                    shared: holders.get(&key).is_some_and(|&n| n > 1),
                })
            })
            .collect()
    }

    fn client_stats(&self, client: ClientId, holders: &HashMap<u64, usize>, out: &mut String) {
        line(out, "client-id", client.0);
        if let Some(c) = self.clients.get(&client) {
            line(out, "client-vms", c.vms.len());
            line(out, "client-bos", c.bos.len());
            line(out, "client-queues", c.queues.len());
            line(out, "client-syncobjs", c.syncobjs.len());
            line(out, "client-handles", c.handles);
            line(
                out,
                "client-memory-vram",
                format_args!("{} bytes", c.vram_bytes),
            );
            line(
                out,
                "client-memory-system",
                format_args!("{} bytes", c.system_bytes),
            );
            line(out, "client-cpu-mappings", c.mappings);
            line(out, "client-binds", c.counters.binds);
            line(out, "client-execs", c.counters.execs);
            line(out, "client-waits", c.counters.waits);
            line(out, "client-imports", c.counters.imports);
        }
        let usage = self.driver.client_usage(client);
        line(out, "client-in-flight", usage.in_flight);
        line(out, "client-gpu-mappings", usage.gpu_mappings);
        for (k, v) in self.driver.stats(Some(client)) {
            line(out, &k, v);
        }
        for (k, v) in self.driver.memory_stats(&self.held_bos(client, holders)) {
            line(out, &k, v);
        }
    }

    /// Device-wide lines, with the per-VM lines (`vm-<daemon id>-…`) `vms` selects.
    fn device_stats(&self, vms: VmLines, out: &mut String) {
        let info = self.driver.device_info();
        line(out, "device-clients", self.clients.len());
        line(out, "device-handles", self.handles.len());
        line(out, "device-parked-waits", self.parking.calls.len());
        line(
            out,
            "device-memory-vram-total",
            format_args!("{} bytes", info.vram_size),
        );
        line(
            out,
            "device-memory-vram-free",
            format_args!("{} bytes", info.vram_free),
        );
        line(
            out,
            "device-memory-system-total",
            format_args!("{} bytes", info.sys_size),
        );
        line(
            out,
            "device-memory-system-free",
            format_args!("{} bytes", info.sys_free),
        );
        for (k, v) in self.driver.stats(None) {
            line(out, &k, v);
        }
        // Per-VM summaries, from the scheme's own record of who owns which VM.
        let owners: Vec<ClientId> = match vms {
            VmLines::All => self.clients.keys().copied().collect(),
            VmLines::Of(c) => vec![c],
            VmLines::None => Vec::new(),
        };
        for c in owners {
            let Some(client) = self.clients.get(&c) else {
                continue;
            };
            for entry in client.vms.values() {
                let key = self.driver.vm_key(&entry.vm);
                line(out, &format!("vm-{key}-client"), c.0);
                let count = self.driver.vm_mapping_count(&entry.vm);
                line(out, &format!("vm-{key}-mappings"), count);
            }
        }
    }
}

/// Which VMs' lines the device-wide stats show.
#[derive(Debug, Clone, Copy)]
enum VmLines {
    /// Every VM's (a privileged root reader).
    All,
    /// This client's (its device handle).
    Of(ClientId),
    /// None (an unprivileged root reader).
    None,
}

fn line(out: &mut String, key: &str, value: impl std::fmt::Display) {
    // Writing to a String cannot fail.
    let _ = writeln!(out, "{key}: {value}");
}
