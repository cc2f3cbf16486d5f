//! The Rust layouts of `gpu_xe_compat::uapi` against the system's `drm/xe_drm.h` and
//! `drm/drm.h`: a C program compiled with the system compiler prints the size of every struct,
//! the offset and size of every field, and the request numbers; each must equal the Rust side.

mod common;

use common::{run, scratch, xe_include_dir};
use gpu_xe_compat::uapi::{self, nr, *};
use std::collections::BTreeMap;
use std::mem::{offset_of, size_of};
use std::process::Command;

fn size_of_field<S, F>(_: impl Fn(&S) -> &F) -> usize {
    size_of::<F>()
}

/// (C struct, Rust type, [(Rust field, C field)]) → (C expression, expected value).
macro_rules! layouts {
    ($out:ident; $($rust:ident => $c:literal { $($f:ident => $cf:literal),* $(,)? })*) => {
        $(
            $out.push((format!("sizeof(struct {})", $c), size_of::<$rust>() as u64));
            $(
                $out.push((
                    format!("offsetof(struct {}, {})", $c, $cf),
                    offset_of!($rust, $f) as u64,
                ));
                $out.push((
                    format!("sizeof(((struct {} *)0)->{})", $c, $cf),
                    size_of_field(|s: &$rust| &s.$f) as u64,
                ));
            )*
        )*
    };
}

fn expected() -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = Vec::new();
    layouts! { v;
        DrmVersion => "drm_version" { version_major => "version_major",
            version_patchlevel => "version_patchlevel", name_len => "name_len", name => "name",
            date_len => "date_len", date => "date", desc_len => "desc_len", desc => "desc" }
        DrmGetCap => "drm_get_cap" { capability => "capability", value => "value" }
        DrmGemClose => "drm_gem_close" { handle => "handle", pad => "pad" }
        DrmPrimeHandle => "drm_prime_handle" { handle => "handle", flags => "flags", fd => "fd" }
        DrmSyncobjCreate => "drm_syncobj_create" { handle => "handle", flags => "flags" }
        DrmSyncobjDestroy => "drm_syncobj_destroy" { handle => "handle", pad => "pad" }
        DrmSyncobjHandle => "drm_syncobj_handle" { handle => "handle", flags => "flags",
            fd => "fd", pad => "pad" }
        DrmSyncobjTransfer => "drm_syncobj_transfer" { src_handle => "src_handle",
            dst_handle => "dst_handle", src_point => "src_point", dst_point => "dst_point",
            flags => "flags", pad => "pad" }
        DrmSyncobjWait => "drm_syncobj_wait" { handles => "handles",
            timeout_nsec => "timeout_nsec", count_handles => "count_handles", flags => "flags",
            first_signaled => "first_signaled", pad => "pad", deadline_nsec => "deadline_nsec" }
        DrmSyncobjTimelineWait => "drm_syncobj_timeline_wait" { handles => "handles",
            points => "points", timeout_nsec => "timeout_nsec",
            count_handles => "count_handles", flags => "flags",
            first_signaled => "first_signaled", pad => "pad", deadline_nsec => "deadline_nsec" }
        DrmSyncobjArray => "drm_syncobj_array" { handles => "handles",
            count_handles => "count_handles", pad => "pad" }
        DrmSyncobjTimelineArray => "drm_syncobj_timeline_array" { handles => "handles",
            points => "points", count_handles => "count_handles", flags => "flags" }
        XeUserExtension => "drm_xe_user_extension" { next_extension => "next_extension",
            name => "name", pad => "pad" }
        XeExtSetProperty => "drm_xe_ext_set_property" { base => "base",
            property => "property", pad => "pad", value => "value", reserved => "reserved" }
        XeEngineClassInstance => "drm_xe_engine_class_instance" {
            engine_class => "engine_class", engine_instance => "engine_instance",
            gt_id => "gt_id", pad => "pad" }
        XeEngine => "drm_xe_engine" { instance => "instance", reserved => "reserved" }
        XeQueryEngines => "drm_xe_query_engines" { num_engines => "num_engines", pad => "pad" }
        XeMemRegion => "drm_xe_mem_region" { mem_class => "mem_class", instance => "instance",
            min_page_size => "min_page_size", total_size => "total_size", used => "used",
            cpu_visible_size => "cpu_visible_size", cpu_visible_used => "cpu_visible_used",
            reserved => "reserved" }
        XeQueryMemRegions => "drm_xe_query_mem_regions" { num_mem_regions => "num_mem_regions",
            pad => "pad" }
        XeQueryConfig => "drm_xe_query_config" { num_params => "num_params", pad => "pad" }
        XeGt => "drm_xe_gt" { gt_type => "type", tile_id => "tile_id", gt_id => "gt_id",
            pad => "pad", reference_clock => "reference_clock",
            near_mem_regions => "near_mem_regions", far_mem_regions => "far_mem_regions",
            ip_ver_major => "ip_ver_major", ip_ver_minor => "ip_ver_minor",
            ip_ver_rev => "ip_ver_rev", pad2 => "pad2", reserved => "reserved" }
        XeQueryGtList => "drm_xe_query_gt_list" { num_gt => "num_gt", pad => "pad" }
        XeDeviceQuery => "drm_xe_device_query" { extensions => "extensions", query => "query",
            size => "size", data => "data", reserved => "reserved" }
        XeGemCreate => "drm_xe_gem_create" { extensions => "extensions", size => "size",
            placement => "placement", flags => "flags", vm_id => "vm_id", handle => "handle",
            cpu_caching => "cpu_caching", pad => "pad", reserved => "reserved" }
        XeGemMmapOffset => "drm_xe_gem_mmap_offset" { extensions => "extensions",
            handle => "handle", flags => "flags", offset => "offset", reserved => "reserved" }
        XeVmCreate => "drm_xe_vm_create" { extensions => "extensions", flags => "flags",
            vm_id => "vm_id", reserved => "reserved" }
        XeVmDestroy => "drm_xe_vm_destroy" { vm_id => "vm_id", pad => "pad",
            reserved => "reserved" }
        XeVmBindOp => "drm_xe_vm_bind_op" { extensions => "extensions", obj => "obj",
            pat_index => "pat_index", pad => "pad", obj_offset => "obj_offset",
            obj_offset => "userptr", range => "range", addr => "addr", op => "op",
            flags => "flags", prefetch_mem_region_instance => "prefetch_mem_region_instance",
            pad2 => "pad2", reserved => "reserved" }
        XeVmBind => "drm_xe_vm_bind" { extensions => "extensions", vm_id => "vm_id",
            exec_queue_id => "exec_queue_id", pad => "pad", num_binds => "num_binds",
            bind => "bind", pad2 => "pad2", num_syncs => "num_syncs", syncs => "syncs",
            reserved => "reserved" }
        XeExecQueueCreate => "drm_xe_exec_queue_create" { extensions => "extensions",
            width => "width", num_placements => "num_placements", vm_id => "vm_id",
            flags => "flags", exec_queue_id => "exec_queue_id", instances => "instances",
            reserved => "reserved" }
        XeExecQueueDestroy => "drm_xe_exec_queue_destroy" { exec_queue_id => "exec_queue_id",
            pad => "pad", reserved => "reserved" }
        XeExecQueueGetProperty => "drm_xe_exec_queue_get_property" {
            extensions => "extensions", exec_queue_id => "exec_queue_id",
            property => "property", value => "value", reserved => "reserved" }
        XeSync => "drm_xe_sync" { extensions => "extensions", sync_type => "type",
            flags => "flags", handle_or_addr => "addr", timeline_value => "timeline_value",
            reserved => "reserved" }
        XeExec => "drm_xe_exec" { extensions => "extensions", exec_queue_id => "exec_queue_id",
            num_syncs => "num_syncs", syncs => "syncs", address => "address",
            num_batch_buffer => "num_batch_buffer", pad => "pad", reserved => "reserved" }
        XeWaitUserFence => "drm_xe_wait_user_fence" { extensions => "extensions",
            addr => "addr", op => "op", flags => "flags", pad => "pad", value => "value",
            mask => "mask", timeout => "timeout", exec_queue_id => "exec_queue_id",
            pad2 => "pad2", reserved => "reserved" }
    }
    // The unions' other members.
    v.push(("offsetof(struct drm_xe_sync, handle)".into(), 16));
    v.push((
        "offsetof(struct drm_xe_vm_bind, vector_of_binds)".into(),
        24,
    ));
    let ioctls: [(&str, u64); 27] = [
        ("DRM_IOCTL_VERSION", drm_iowr::<DrmVersion>(nr::VERSION)),
        ("DRM_IOCTL_GET_CAP", drm_iowr::<DrmGetCap>(nr::GET_CAP)),
        ("DRM_IOCTL_GEM_CLOSE", drm_iow::<DrmGemClose>(nr::GEM_CLOSE)),
        (
            "DRM_IOCTL_PRIME_HANDLE_TO_FD",
            drm_iowr::<DrmPrimeHandle>(nr::PRIME_HANDLE_TO_FD),
        ),
        (
            "DRM_IOCTL_PRIME_FD_TO_HANDLE",
            drm_iowr::<DrmPrimeHandle>(nr::PRIME_FD_TO_HANDLE),
        ),
        (
            "DRM_IOCTL_SYNCOBJ_CREATE",
            drm_iowr::<DrmSyncobjCreate>(nr::SYNCOBJ_CREATE),
        ),
        (
            "DRM_IOCTL_SYNCOBJ_DESTROY",
            drm_iowr::<DrmSyncobjDestroy>(nr::SYNCOBJ_DESTROY),
        ),
        (
            "DRM_IOCTL_SYNCOBJ_HANDLE_TO_FD",
            drm_iowr::<DrmSyncobjHandle>(nr::SYNCOBJ_HANDLE_TO_FD),
        ),
        (
            "DRM_IOCTL_SYNCOBJ_FD_TO_HANDLE",
            drm_iowr::<DrmSyncobjHandle>(nr::SYNCOBJ_FD_TO_HANDLE),
        ),
        (
            "DRM_IOCTL_SYNCOBJ_WAIT",
            drm_iowr::<DrmSyncobjWait>(nr::SYNCOBJ_WAIT),
        ),
        (
            "DRM_IOCTL_SYNCOBJ_RESET",
            drm_iowr::<DrmSyncobjArray>(nr::SYNCOBJ_RESET),
        ),
        (
            "DRM_IOCTL_SYNCOBJ_SIGNAL",
            drm_iowr::<DrmSyncobjArray>(nr::SYNCOBJ_SIGNAL),
        ),
        (
            "DRM_IOCTL_SYNCOBJ_TIMELINE_WAIT",
            drm_iowr::<DrmSyncobjTimelineWait>(nr::SYNCOBJ_TIMELINE_WAIT),
        ),
        (
            "DRM_IOCTL_SYNCOBJ_QUERY",
            drm_iowr::<DrmSyncobjTimelineArray>(nr::SYNCOBJ_QUERY),
        ),
        (
            "DRM_IOCTL_SYNCOBJ_TRANSFER",
            drm_iowr::<DrmSyncobjTransfer>(nr::SYNCOBJ_TRANSFER),
        ),
        (
            "DRM_IOCTL_SYNCOBJ_TIMELINE_SIGNAL",
            drm_iowr::<DrmSyncobjTimelineArray>(nr::SYNCOBJ_TIMELINE_SIGNAL),
        ),
        (
            "DRM_IOCTL_XE_DEVICE_QUERY",
            drm_iowr::<XeDeviceQuery>(nr::XE_DEVICE_QUERY),
        ),
        (
            "DRM_IOCTL_XE_GEM_CREATE",
            drm_iowr::<XeGemCreate>(nr::XE_GEM_CREATE),
        ),
        (
            "DRM_IOCTL_XE_GEM_MMAP_OFFSET",
            drm_iowr::<XeGemMmapOffset>(nr::XE_GEM_MMAP_OFFSET),
        ),
        (
            "DRM_IOCTL_XE_VM_CREATE",
            drm_iowr::<XeVmCreate>(nr::XE_VM_CREATE),
        ),
        (
            "DRM_IOCTL_XE_VM_DESTROY",
            drm_iow::<XeVmDestroy>(nr::XE_VM_DESTROY),
        ),
        ("DRM_IOCTL_XE_VM_BIND", drm_iow::<XeVmBind>(nr::XE_VM_BIND)),
        (
            "DRM_IOCTL_XE_EXEC_QUEUE_CREATE",
            drm_iowr::<XeExecQueueCreate>(nr::XE_EXEC_QUEUE_CREATE),
        ),
        (
            "DRM_IOCTL_XE_EXEC_QUEUE_DESTROY",
            drm_iow::<XeExecQueueDestroy>(nr::XE_EXEC_QUEUE_DESTROY),
        ),
        (
            "DRM_IOCTL_XE_EXEC_QUEUE_GET_PROPERTY",
            drm_iowr::<XeExecQueueGetProperty>(nr::XE_EXEC_QUEUE_GET_PROPERTY),
        ),
        ("DRM_IOCTL_XE_EXEC", drm_iow::<XeExec>(nr::XE_EXEC)),
        (
            "DRM_IOCTL_XE_WAIT_USER_FENCE",
            drm_iowr::<XeWaitUserFence>(nr::XE_WAIT_USER_FENCE),
        ),
    ];
    v.extend(
        ioctls
            .iter()
            .map(|(c, n)| (format!("(unsigned long long){c}"), *n)),
    );
    let consts: [(&str, u64); 14] = [
        ("DRM_CAP_SYNCOBJ", cap::SYNCOBJ),
        ("DRM_CAP_SYNCOBJ_TIMELINE", cap::SYNCOBJ_TIMELINE),
        ("DRM_CAP_PRIME", cap::PRIME),
        ("DRM_SYNCOBJ_WAIT_FLAGS_WAIT_ALL", syncobj::WAIT_ALL.into()),
        (
            "DRM_SYNCOBJ_WAIT_FLAGS_WAIT_FOR_SUBMIT",
            syncobj::WAIT_FOR_SUBMIT.into(),
        ),
        (
            "DRM_SYNCOBJ_WAIT_FLAGS_WAIT_AVAILABLE",
            syncobj::WAIT_AVAILABLE.into(),
        ),
        (
            "DRM_XE_DEVICE_QUERY_OA_UNITS",
            uapi::xe::QUERY_OA_UNITS.into(),
        ),
        (
            "DRM_XE_GEM_CREATE_FLAG_NEEDS_VISIBLE_VRAM",
            uapi::xe::GEM_CREATE_NEEDS_VISIBLE_VRAM.into(),
        ),
        ("DRM_XE_GEM_CPU_CACHING_WC", uapi::xe::CPU_CACHING_WC.into()),
        (
            "DRM_XE_VM_CREATE_FLAG_FAULT_MODE",
            uapi::xe::VM_CREATE_FAULT_MODE.into(),
        ),
        (
            "DRM_XE_VM_BIND_OP_PREFETCH",
            uapi::xe::BIND_OP_PREFETCH.into(),
        ),
        (
            "DRM_XE_VM_BIND_FLAG_DUMPABLE",
            uapi::xe::BIND_FLAG_DUMPABLE.into(),
        ),
        (
            "DRM_XE_SYNC_TYPE_USER_FENCE",
            uapi::xe::SYNC_TYPE_USER_FENCE.into(),
        ),
        (
            "DRM_XE_UFENCE_WAIT_OP_LTE",
            uapi::xe::UFENCE_WAIT_OP_LTE.into(),
        ),
    ];
    v.extend(
        consts
            .iter()
            .map(|(c, n)| (format!("(unsigned long long)({c})"), *n)),
    );
    v
}

#[test]
fn rust_layouts_match_the_systems_xe_drm_h() {
    let dir = scratch("layout");
    let expected = expected();
    let mut src = String::from(
        "#include <stdio.h>\n#include <stddef.h>\n#include <drm/xe_drm.h>\nint main(void) {\n",
    );
    for (expr, _) in &expected {
        src.push_str(&format!(
            "printf(\"%s=%llu\\n\", \"{}\", (unsigned long long)({expr}));\n",
            expr.replace('"', "\\\"")
        ));
    }
    src.push_str("return 0;\n}\n");
    let c = dir.join("layout.c");
    std::fs::write(&c, src).expect("write layout.c");
    let exe = dir.join("layout");
    run(
        Command::new(std::env::var_os("CC").unwrap_or_else(|| "cc".into()))
            .args(["-std=c11", "-Wall", "-Werror", "-o"])
            .arg(&exe)
            .arg("-I")
            .arg(xe_include_dir())
            .arg(&c),
    );
    let out = run(&mut Command::new(&exe));
    let got: BTreeMap<&str, u64> = out
        .lines()
        .filter_map(|l| l.rsplit_once('='))
        .map(|(k, v)| (k, v.parse().expect("number")))
        .collect();
    let mut wrong = Vec::new();
    for (expr, want) in &expected {
        match got.get(expr.as_str()) {
            Some(v) if v == want => {}
            other => wrong.push(format!("{expr}: C {other:?}, Rust {want}")),
        }
    }
    assert!(wrong.is_empty(), "layouts differ:\n{}", wrong.join("\n"));
    assert_eq!(got.len(), expected.len(), "every expression printed once");
}
