//! `Bo`: a buffer object — create, CPU-map, export and import.
//!
//! Owns: BO_CREATE / BO_DESTROY, the BO's derived handle (`bo/<id>`, made on first `mmap` or
//! `export`), `BoMap` (a CPU mapping that unmaps on drop), and IMPORT of BOs. Must not: hand
//! out Rust references into mapped memory: other processes and the GPU write it concurrently,
//! so access is by copy.

use std::sync::{Arc, OnceLock};

use gpu_scheme::uapi::flags::{BoCreateFlags, ObjectKind, Placement};
use gpu_scheme::uapi::wire::{BoCreateArgs, ImportArgs};
use gpu_scheme::uapi::{BoCreateRequest, BoId, Request, Token};

use crate::device::{read_text, Device};
use crate::error::{Call, Context, Error, Result, TransportError};
use crate::export::Exported;
use crate::transport::{Handle, Mapping};
use crate::vm::{Vm, VmRef};

/// A buffer object of one device. Dropping it drops this client's id (BO_DESTROY); the memory
/// lives on while mappings, exports or importers hold it.
pub struct Bo {
    dev: Device,
    id: BoId,
    size: u64,
    /// The VM of a VM-private BO, kept alive as long as the BO.
    vm: Option<Arc<VmRef>>,
    handle: OnceLock<Box<dyn Handle>>,
    /// False once `destroy` succeeded, so `Drop` does not destroy again.
    live: bool,
}

impl std::fmt::Debug for Bo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bo")
            .field("id", &self.id)
            .field("size", &self.size)
            .finish()
    }
}

impl Bo {
    /// BO_CREATE of an external (shareable) BO: `size` bytes (a non-zero multiple of 4 KiB)
    /// placed in `placement` (both bits: migratable).
    pub fn create(
        dev: &Device,
        size: u64,
        placement: Placement,
        flags: BoCreateFlags,
    ) -> Result<Bo> {
        Self::create_in(dev, None, size, placement, flags)
    }

    /// BO_CREATE of a BO private to `vm` (shares the VM's reservation; cannot be exported to
    /// other VMs, cheaper to validate at exec).
    pub fn create_private(
        vm: &Vm,
        size: u64,
        placement: Placement,
        flags: BoCreateFlags,
    ) -> Result<Bo> {
        Self::create_in(vm.device(), Some(&vm.inner), size, placement, flags)
    }

    fn create_in(
        dev: &Device,
        vm: Option<&Arc<VmRef>>,
        size: u64,
        placement: Placement,
        flags: BoCreateFlags,
    ) -> Result<Bo> {
        let req = BoCreateRequest {
            size,
            placement,
            flags,
            vm: vm.map(|v| v.id),
        };
        let args: BoCreateArgs = dev.request(&Request::BoCreate(req))?;
        Ok(Bo::adopt(dev, BoId(args.bo_id), size, vm.cloned()))
    }

    fn adopt(dev: &Device, id: BoId, size: u64, vm: Option<Arc<VmRef>>) -> Bo {
        Bo {
            dev: dev.clone(),
            id,
            size,
            vm,
            handle: OnceLock::new(),
            live: true,
        }
    }

    /// IMPORT a BO another client (any process) exported, by its token (`Exported::token`).
    pub fn import(dev: &Device, token: Token) -> Result<Bo> {
        let args: ImportArgs = dev.request(&Request::Import {
            kind: ObjectKind::Bo,
            token: Some(token),
        })?;
        let mut bo = Bo::adopt(dev, BoId(args.id), 0, None);
        bo.size = bo_size(&read_text(bo.handle()?)?)
            .ok_or(Error::new(Call::Read, TransportError::BadReply))?;
        Ok(bo)
    }

    /// The id in this client.
    pub fn id(&self) -> BoId {
        self.id
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The device it belongs to.
    pub fn device(&self) -> &Device {
        &self.dev
    }

    /// Whether the BO is private to a VM (`create_private`).
    pub fn is_private(&self) -> bool {
        self.vm.is_some()
    }

    /// The derived handle (`bo/<id>`), made on first use.
    fn handle(&self) -> Result<&dyn Handle> {
        if let Some(h) = self.handle.get() {
            return Ok(h.as_ref());
        }
        let h = self.dev.dup(&format!("bo/{}", self.id.0))?;
        Ok(self.handle.get_or_init(|| h).as_ref())
    }

    /// Map the whole BO for CPU access.
    pub fn mmap(&self) -> Result<BoMap> {
        let len = usize::try_from(self.size).map_err(|_| Error::invalid(Call::Mmap))?;
        self.mmap_range(0, len)
    }

    /// Map `len` bytes at `offset` (4 KiB aligned; inside the BO).
    pub fn mmap_range(&self, offset: u64, len: usize) -> Result<BoMap> {
        let map = self.handle()?.mmap(offset, len).during(Call::Mmap)?;
        Ok(BoMap { map })
    }

    /// Export: a new derived handle and its token, for another client or process to import.
    ///
    /// Keep the returned [`Exported`] alive until the importer has imported: dropping it
    /// closes the derived handle and revokes its token, so `bo.export()?.token()` yields a
    /// token that is already dead.
    pub fn export(&self) -> Result<Exported> {
        Exported::from_handle(self.dev.dup(&format!("bo/{}", self.id.0))?)
    }

    /// BO_DESTROY now, reporting errors (dropping does the same, silently).
    pub fn destroy(mut self) -> Result<()> {
        self.dev.send(&Request::BoDestroy(self.id))?;
        self.live = false;
        Ok(())
    }
}

impl Drop for Bo {
    fn drop(&mut self) {
        if self.live {
            // Errors cannot be reported from drop; `destroy` reports them.
            let _ = self.dev.send(&Request::BoDestroy(self.id));
        }
    }
}

/// The `bo-size: N` line of a BO handle's stats.
fn bo_size(stats: &str) -> Option<u64> {
    stats
        .lines()
        .filter_map(|l| l.strip_prefix("bo-size:"))
        .find_map(|v| v.split_whitespace().next()?.parse().ok())
}

/// A CPU mapping of a BO; unmapped when dropped. Access is by copy (volatile underneath).
pub struct BoMap {
    map: Box<dyn Mapping>,
}

impl std::fmt::Debug for BoMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoMap").field("len", &self.len()).finish()
    }
}

/// An access outside a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("access of {len} bytes at offset {offset} outside a mapping of {size} bytes")]
pub struct OutOfBounds {
    /// Offset of the access.
    pub offset: usize,
    /// Bytes accessed.
    pub len: usize,
    /// Size of the mapping.
    pub size: usize,
}

impl BoMap {
    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the mapping is empty (never, for a successful map).
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn oob(&self, offset: usize, len: usize) -> OutOfBounds {
        OutOfBounds {
            offset,
            len,
            size: self.len(),
        }
    }

    /// Copy `out.len()` bytes from `offset`.
    pub fn read(&self, offset: usize, out: &mut [u8]) -> Result<(), OutOfBounds> {
        self.map
            .read(offset, out)
            .ok_or(self.oob(offset, out.len()))
    }

    /// Copy `data` to `offset`.
    pub fn write(&self, offset: usize, data: &[u8]) -> Result<(), OutOfBounds> {
        self.map
            .write(offset, data)
            .ok_or(self.oob(offset, data.len()))
    }

    /// Read a little-endian u32 at `offset`.
    pub fn read_u32(&self, offset: usize) -> Result<u32, OutOfBounds> {
        let mut b = [0u8; 4];
        self.read(offset, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// Read a little-endian u64 at `offset` (e.g. a user fence).
    pub fn read_u64(&self, offset: usize) -> Result<u64, OutOfBounds> {
        let mut b = [0u8; 8];
        self.read(offset, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Write a little-endian u64 at `offset`.
    pub fn write_u64(&self, offset: usize, value: u64) -> Result<(), OutOfBounds> {
        self.write(offset, &value.to_le_bytes())
    }

    /// Write command dwords (e.g. `cmd::Batch::dwords`) at `offset`, little-endian.
    pub fn write_dwords(&self, offset: usize, dwords: &[u32]) -> Result<(), OutOfBounds> {
        let bytes: Vec<u8> = dwords.iter().flat_map(|d| d.to_le_bytes()).collect();
        self.write(offset, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::bo_size;

    #[test]
    fn bo_size_is_read_from_the_stats_line() {
        assert_eq!(bo_size("bo-cpu-mappings: 0\nbo-size: 8192\n"), Some(8192));
        assert_eq!(bo_size("bo-size: 4096 bytes"), Some(4096));
        assert_eq!(bo_size("bo-size: lots"), None);
        assert_eq!(bo_size("syncobj-point: 3"), None);
    }
}
