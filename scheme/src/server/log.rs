//! What the scheme server logs: clients connecting and leaving, and every error it returns.
//!
//! Owns: the log lines of the server (`tracing`, target `gpu_scheme::server::log`). Must not:
//! change state or decide errors; it only reports what the handlers decided.
//!
//! Levels: a client's connect and disconnect (with what it still held) at `info`; every
//! error returned to a client at `debug`; the first time a client hits each per-client limit
//! at `warn` (later hits of the same limit at `debug`, so a client retrying in a loop cannot
//! flood the log). `EWOULDBLOCK` is parking, not an error, and is not logged.

use super::handles::Handle;
use super::GpuScheme;
use crate::driver::{ClientId, GpuDriver};
use crate::errno::SchemeError;

impl<D: GpuDriver> GpuScheme<D> {
    /// The client a handle belongs to (device and derived handles).
    fn owner_of(&self, id: usize) -> Option<ClientId> {
        match self.handles.get(&id)? {
            Handle::Device { client, .. } => Some(*client),
            Handle::Bo(d) => Some(d.client),
            Handle::Syncobj(d) => Some(d.client),
            Handle::Root | Handle::Vm(_) => None,
        }
    }

    /// Logs `e`, about to be returned for `op` on handle `id`, and returns it as errno.
    pub(super) fn reply_error(
        &mut self,
        id: usize,
        op: &dyn std::fmt::Display,
        e: SchemeError,
    ) -> syscall::Error {
        let client = self.owner_of(id).map(|c| c.0);
        let errno = e.errno();
        match &e {
            SchemeError::WouldBlock => {}
            SchemeError::LimitExceeded { limit, .. } if self.first_hit(client, *limit) => {
                tracing::warn!(?client, handle = id, %op, errno, "client hit a limit: {e}");
            }
            _ => tracing::debug!(?client, handle = id, %op, errno, "request failed: {e}"),
        }
        e.into()
    }

    /// Records that `client` hit `limit`; true the first time.
    fn first_hit(&mut self, client: Option<u64>, limit: crate::errno::Limit) -> bool {
        let Some(c) = client.and_then(|c| self.clients.get_mut(&ClientId(c))) else {
            return true;
        };
        let bit = 1u16 << (limit as u16);
        let first = c.limits_hit & bit == 0;
        c.limits_hit |= bit;
        first
    }

    /// A client connected (its device handle was opened).
    pub(super) fn log_connect(&self, client: ClientId, pid: usize) {
        tracing::info!(client = client.0, pid, "client connected");
    }

    /// A client's device handle closed; logs what it held and did.
    pub(super) fn log_disconnect(&self, client: ClientId) {
        let Some(c) = self.clients.get(&client) else {
            return;
        };
        tracing::info!(
            client = client.0,
            vms = c.vms.len(),
            bos = c.bos.len(),
            queues = c.queues.len(),
            syncobjs = c.syncobjs.len(),
            vram_bytes = c.vram_bytes,
            system_bytes = c.system_bytes,
            binds = c.counters.binds,
            execs = c.counters.execs,
            "client disconnected"
        );
    }
}
