//! `gpu.h` against the Rust wire definitions: a C program compiled with the system compiler
//! prints the size of every struct, the offset of every field and the value of every constant;
//! each must equal what `gpu_scheme::uapi` declares, so the header can never drift.

mod common;

use common::{cc, include_dir, run, scratch};
use gpu_scheme::uapi::flags::{
    bind_op, sync_type, BindFlags, BoCreateFlags, EngineClass, ExecQueueCreateFlags, ObjectKind,
    Placement, QueuePriority, Region, SyncFlags, SyncobjCreateFlags, SyncobjWaitFlags,
    VmCreateFlags, WaitFlags, WaitOp,
};
use gpu_scheme::uapi::wire::{self, Opcode};
use std::collections::BTreeMap;
use std::mem::{offset_of, size_of};

/// Builds (C expressions, expected values) for structs and their fields.
macro_rules! layouts {
    ($out:ident; $($rust:ident => $c:literal { $($f:ident),* $(,)? })*) => {
        $(
            $out.push((format!("sizeof(struct {})", $c), size_of::<wire::$rust>() as u64));
            $(
                $out.push((
                    format!("offsetof(struct {}, {})", $c, stringify!($f)),
                    offset_of!(wire::$rust, $f) as u64,
                ));
                $out.push((
                    format!("sizeof(((struct {} *)0)->{})", $c, stringify!($f)),
                    size_of_field(|s: &wire::$rust| &s.$f) as u64,
                ));
            )*
        )*
    };
}

fn size_of_field<S, F>(_: impl Fn(&S) -> &F) -> usize {
    size_of::<F>()
}

fn expected() -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = Vec::new();
    layouts! { v;
        CallHeader => "gpu_call_header" { version, pad, args_size, reserved }
        DeviceQueryArgs => "gpu_device_query_args" { va_bits, engine_mask, page_sizes, sys_size,
            sys_free, vram_size, vram_free, reserved_va_start, reserved_va_len, pat_entries,
            max_objects, limit_vram, limit_sys, max_mappings, max_in_flight, reserved }
        VmCreateArgs => "gpu_vm_create_args" { flags, vm_id, reserved }
        IdArgs => "gpu_id_args" { id, pad, reserved }
        BoCreateArgs => "gpu_bo_create_args" { size, placement, flags, vm_id, bo_id, reserved }
        ExecQueueCreateArgs => "gpu_exec_queue_create_args" { vm_id, engine_class, flags,
            queue_id, priority, reserved }
        VmBindArgs => "gpu_vm_bind_args" { vm_id, queue_id, num_ops, op_stride, num_syncs,
            sync_stride, reserved }
        BindOpWire => "gpu_bind_op" { op, flags, bo_id, pat_index, pad, obj_offset, addr, range,
            prefetch_region, pad2, reserved }
        SyncWire => "gpu_sync" { sync_type, flags, handle, pad, addr, value, reserved }
        ExecArgs => "gpu_exec_args" { queue_id, num_batches, num_syncs, sync_stride, reserved }
        WaitUserFenceArgs => "gpu_wait_user_fence_args" { vm_id, queue_id, addr, op, flags, pad,
            value, mask, timeout_ns, reserved }
        SyncobjCreateArgs => "gpu_syncobj_create_args" { flags, syncobj_id, reserved }
        SyncobjPointWire => "gpu_syncobj_point" { syncobj_id, pad, point }
        SyncobjWaitArgs => "gpu_syncobj_wait_args" { count, stride, flags, first_signaled,
            timeout_ns, reserved }
        SyncobjSignalArgs => "gpu_syncobj_signal_args" { count, stride, reserved }
        SyncobjResetArgs => "gpu_syncobj_reset_args" { count, stride, reserved }
        SyncobjQueryArgs => "gpu_syncobj_query_args" { syncobj_id, pad, point, reserved }
        SyncobjTransferArgs => "gpu_syncobj_transfer_args" { src_id, dst_id, src_point,
            dst_point, flags, pad, reserved }
        ExportTokenArgs => "gpu_export_token_args" { kind, pad, token, reserved }
        ImportArgs => "gpu_import_args" { kind, id, token, reserved }
    }
    let c = |name: &str, value: u64| (name.to_string(), value);
    v.push(c("GPU_UAPI_VERSION", wire::UAPI_VERSION.into()));
    v.push(c("GPU_MAX_SYNCS", wire::MAX_SYNCS.into()));
    v.push(c("GPU_MAX_BIND_OPS", wire::MAX_BIND_OPS.into()));
    v.push(c("GPU_MAX_BATCHES", wire::MAX_BATCHES.into()));
    v.push(c("GPU_MAX_SYNCOBJ_POINTS", wire::MAX_SYNCOBJ_POINTS.into()));
    v.push(c("GPU_MAX_STRIDE", wire::MAX_STRIDE.into()));
    v.push(c("GPU_MAX_ARGS_SIZE", wire::MAX_ARGS_SIZE.into()));
    let opcode_names = [
        "DEVICE_QUERY",
        "VM_CREATE",
        "VM_DESTROY",
        "BO_CREATE",
        "BO_DESTROY",
        "EXEC_QUEUE_CREATE",
        "EXEC_QUEUE_DESTROY",
        "VM_BIND",
        "EXEC",
        "WAIT_USER_FENCE",
        "SYNCOBJ_CREATE",
        "SYNCOBJ_DESTROY",
        "SYNCOBJ_WAIT",
        "SYNCOBJ_SIGNAL",
        "SYNCOBJ_QUERY",
        "SYNCOBJ_TRANSFER",
        "EXPORT_TOKEN",
        "IMPORT",
        "SYNCOBJ_RESET",
    ];
    assert_eq!(
        opcode_names.len(),
        Opcode::ALL.len(),
        "every opcode has a name in gpu.h"
    );
    for (name, op) in opcode_names.iter().zip(Opcode::ALL) {
        v.push(c(&format!("GPU_OP_{name}"), op as u64));
    }
    // Every flag bit, by the name bitflags gives it (so a new flag without a define fails).
    macro_rules! flags {
        ($prefix:literal, $ty:ty) => {
            for (name, f) in <$ty>::all().iter_names() {
                v.push(c(&format!("{}{}", $prefix, name), f.bits().into()));
            }
        };
    }
    flags!("GPU_VM_CREATE_", VmCreateFlags);
    flags!("GPU_PLACEMENT_", Placement);
    flags!("GPU_BO_CREATE_", BoCreateFlags);
    flags!("GPU_BIND_FLAG_", BindFlags);
    flags!("GPU_SYNC_FLAG_", SyncFlags);
    flags!("GPU_WAIT_FLAG_", WaitFlags);
    flags!("GPU_SYNCOBJ_CREATE_", SyncobjCreateFlags);
    flags!("GPU_EXEC_QUEUE_CREATE_", ExecQueueCreateFlags);
    // SYNCOBJ_WAIT flags all read GPU_SYNCOBJ_WAIT_* in C (ABSTIME included).
    for (name, f) in SyncobjWaitFlags::all().iter_names() {
        let name = name.strip_prefix("WAIT_").unwrap_or(name);
        v.push(c(&format!("GPU_SYNCOBJ_WAIT_{name}"), f.bits().into()));
    }
    for (name, val) in [
        ("MAP", bind_op::MAP),
        ("UNMAP", bind_op::UNMAP),
        ("MAP_USERPTR", bind_op::MAP_USERPTR),
        ("UNMAP_ALL", bind_op::UNMAP_ALL),
        ("PREFETCH", bind_op::PREFETCH),
    ] {
        v.push(c(&format!("GPU_BIND_OP_{name}"), val.into()));
    }
    for (name, val) in [
        ("SYNCOBJ", sync_type::SYNCOBJ),
        ("TIMELINE_SYNCOBJ", sync_type::TIMELINE_SYNCOBJ),
        ("USER_FENCE", sync_type::USER_FENCE),
    ] {
        v.push(c(&format!("GPU_SYNC_TYPE_{name}"), val.into()));
    }
    for (name, e) in [
        ("COPY", EngineClass::Copy),
        ("COMPUTE", EngineClass::Compute),
        ("VM_BIND", EngineClass::VmBind),
    ] {
        v.push(c(&format!("GPU_ENGINE_CLASS_{name}"), e as u64));
    }
    for (name, p) in [
        ("LOW", QueuePriority::Low),
        ("NORMAL", QueuePriority::Normal),
        ("HIGH", QueuePriority::High),
    ] {
        v.push(c(&format!("GPU_QUEUE_PRIORITY_{name}"), p as u64));
    }
    for (name, r) in [
        ("SYSTEM", Region::System),
        ("VRAM", Region::Vram),
        ("PREFERRED", Region::Preferred),
    ] {
        v.push(c(&format!("GPU_REGION_{name}"), r.raw().into()));
    }
    for (name, w) in [
        ("EQ", WaitOp::Eq),
        ("NEQ", WaitOp::Neq),
        ("GT", WaitOp::Gt),
        ("GTE", WaitOp::Gte),
        ("LT", WaitOp::Lt),
        ("LTE", WaitOp::Lte),
    ] {
        v.push(c(&format!("GPU_WAIT_OP_{name}"), w as u64));
    }
    v.push(c("GPU_OBJECT_KIND_BO", ObjectKind::Bo as u64));
    v.push(c("GPU_OBJECT_KIND_SYNCOBJ", ObjectKind::Syncobj as u64));
    v
}

#[test]
fn gpu_h_matches_the_rust_wire_definitions() {
    let expected = expected();
    let mut src = String::from(
        "#include <stddef.h>\n#include <stdio.h>\n#include \"gpu.h\"\nint main(void) {\n",
    );
    for (i, (expr, _)) in expected.iter().enumerate() {
        src.push_str(&format!(
            "printf(\"{i} %llu\\n\", (unsigned long long)({expr}));\n"
        ));
    }
    src.push_str("return 0;\n}\n");
    let dir = scratch("layout");
    let c_file = dir.join("layout.c");
    let exe = dir.join("layout");
    std::fs::write(&c_file, src).expect("write C");
    run(cc()
        .args(["-std=c11", "-Wall", "-Werror", "-pedantic", "-o"])
        .arg(&exe)
        .arg("-I")
        .arg(include_dir())
        .arg(&c_file));
    let printed: BTreeMap<usize, u64> = run(&mut std::process::Command::new(&exe))
        .lines()
        .filter_map(|l| {
            let (i, v) = l.split_once(' ')?;
            Some((i.parse().ok()?, v.parse().ok()?))
        })
        .collect();
    let mut wrong = Vec::new();
    for (i, (expr, want)) in expected.iter().enumerate() {
        match printed.get(&i) {
            Some(got) if got == want => {}
            got => wrong.push(format!("{expr}: C says {got:?}, Rust says {want}")),
        }
    }
    assert!(wrong.is_empty(), "gpu.h drifted:\n{}", wrong.join("\n"));
    assert!(
        expected.len() > 200,
        "the check covers every field and constant"
    );
}
