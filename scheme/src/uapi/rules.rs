//! The op/flag rules of the uAPI that need no VM state, stated once: the decoder applies them
//! to wire requests, the driver's bind engine to in-process requests (`gpud::bind::op`).
//!
//! Owns: the VM-create flag combinations and the bind op/flag/BO table (Xe's
//! `xe_vm_create_ioctl` and `vm_bind_ioctl_check_args`, drm-semantics §1.2 and §1.6 step 4).
//! Must not: decode wire structs, check alignment or ranges (the callers do, with their own
//! field names), or look at a VM.

use super::flags::{bind_op, BindFlags, VmCreateFlags};

/// Why a VM-create flag combination is invalid: SCRATCH_PAGE with FAULT_MODE, or FAULT_MODE
/// without LR_MODE.
pub fn vm_flags(f: VmCreateFlags) -> Result<(), &'static str> {
    if f.contains(VmCreateFlags::SCRATCH_PAGE | VmCreateFlags::FAULT_MODE) {
        return Err("SCRATCH_PAGE with FAULT_MODE");
    }
    if f.contains(VmCreateFlags::FAULT_MODE) && !f.contains(VmCreateFlags::LR_MODE) {
        return Err("FAULT_MODE without LR_MODE");
    }
    Ok(())
}

/// The shape of one bind op, as the rules see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindOpShape {
    /// The op (`flags::bind_op`).
    pub op: u32,
    /// Its flags.
    pub flags: BindFlags,
    /// A BO is named.
    pub bo: bool,
    /// The BO offset (or userptr address) is non-zero.
    pub offset: bool,
    /// The address or the range is non-zero.
    pub range: bool,
}

/// Why a bind op's combination of op, flags and BO is invalid.
pub fn bind_op_shape(s: BindOpShape) -> Result<(), &'static str> {
    let null = s.flags.contains(BindFlags::NULL);
    let mirror = s.flags.contains(BindFlags::CPU_ADDR_MIRROR);
    if s.op > bind_op::PREFETCH {
        return Err("unknown op");
    }
    if (null || mirror) && s.op != bind_op::MAP {
        return Err("NULL/CPU_ADDR_MIRROR only with MAP");
    }
    if null && mirror {
        return Err("NULL and CPU_ADDR_MIRROR together");
    }
    if (null || mirror) && (s.bo || s.offset) {
        return Err("NULL/CPU_ADDR_MIRROR take no BO and no offset");
    }
    match s.op {
        bind_op::MAP if !s.bo && !null && !mirror => Err("MAP needs a BO, NULL or CPU_ADDR_MIRROR"),
        bind_op::MAP => Ok(()),
        bind_op::UNMAP_ALL if !s.bo => Err("UNMAP_ALL needs a BO"),
        bind_op::UNMAP_ALL if s.range => Err("UNMAP_ALL takes no range"),
        _ if s.op != bind_op::UNMAP_ALL && s.bo => Err("op takes no BO"),
        bind_op::MAP_USERPTR => Ok(()),
        _ if s.offset => Err("op takes no offset"),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(op: u32, flags: BindFlags, bo: bool, offset: bool) -> BindOpShape {
        BindOpShape {
            op,
            flags,
            bo,
            offset,
            range: true,
        }
    }

    #[test]
    fn vm_flag_combinations() {
        assert!(vm_flags(VmCreateFlags::empty()).is_ok());
        assert!(vm_flags(VmCreateFlags::LR_MODE | VmCreateFlags::FAULT_MODE).is_ok());
        assert!(vm_flags(VmCreateFlags::FAULT_MODE).is_err());
        let all = VmCreateFlags::all();
        assert!(vm_flags(all).is_err());
    }

    #[test]
    fn the_op_table() {
        let none = BindFlags::empty();
        assert!(bind_op_shape(shape(bind_op::MAP, none, true, true)).is_ok());
        assert!(bind_op_shape(shape(bind_op::MAP, none, false, false)).is_err());
        assert!(bind_op_shape(shape(bind_op::MAP, BindFlags::NULL, false, false)).is_ok());
        assert!(bind_op_shape(shape(bind_op::MAP, BindFlags::NULL, true, false)).is_err());
        assert!(bind_op_shape(shape(bind_op::UNMAP, BindFlags::NULL, false, false)).is_err());
        let both = BindFlags::NULL | BindFlags::CPU_ADDR_MIRROR;
        assert!(bind_op_shape(shape(bind_op::MAP, both, false, false)).is_err());
        assert!(bind_op_shape(shape(bind_op::UNMAP, none, false, false)).is_ok());
        assert!(bind_op_shape(shape(bind_op::UNMAP, none, true, false)).is_err());
        assert!(bind_op_shape(shape(bind_op::UNMAP, none, false, true)).is_err());
        assert!(bind_op_shape(shape(bind_op::MAP_USERPTR, none, false, true)).is_ok());
        assert!(bind_op_shape(shape(bind_op::MAP_USERPTR, none, true, true)).is_err());
        assert!(bind_op_shape(shape(bind_op::UNMAP_ALL, none, true, false)).is_err());
        let unmap_all = BindOpShape {
            range: false,
            ..shape(bind_op::UNMAP_ALL, none, true, false)
        };
        assert!(bind_op_shape(unmap_all).is_ok());
        assert!(bind_op_shape(BindOpShape {
            bo: false,
            ..unmap_all
        })
        .is_err());
        assert!(bind_op_shape(BindOpShape {
            offset: true,
            ..unmap_all
        })
        .is_err());
        assert!(bind_op_shape(shape(bind_op::PREFETCH, none, false, false)).is_ok());
        assert!(bind_op_shape(shape(bind_op::PREFETCH, none, true, false)).is_err());
        assert!(bind_op_shape(shape(5, none, false, false)).is_err());
    }
}
