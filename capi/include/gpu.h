/*
 * gpu.h - the wire uAPI of the gpu scheme (gpud), for C and C++.
 *
 * Every request is a `call` on a scheme handle: metadata[0] is the opcode (GPU_OP_*), the
 * payload is `struct gpu_call_header` followed by the opcode's args struct and its arrays
 * (docs/uapi.md has every rule). All integers are native-endian. Fields named pad* and
 * reserved* must be zero; fields marked "out" are filled in by the server.
 *
 * Errors are errno values (docs/uapi.md, "errno"): EINVAL malformed request, E2BIG non-zero
 * bytes of a newer args struct, ENOENT unknown id or closed VM, EBADF wrong handle kind,
 * EBUSY mappings in the way or too much in flight, ENOSPC/ENOMEM out of memory or over a
 * per-client share, EMFILE too many objects, EFAULT GPU fault, EIO device error or reset,
 * ECANCELED work of a banned queue, ETIME wait timed out, EOPNOTSUPP not supported.
 *
 * The layouts are checked against gpud's Rust definitions (scheme/src/uapi/wire.rs) by a test
 * that compiles this header with the system C compiler and compares every size and offset.
 */
#ifndef GPU_H
#define GPU_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define GPU_UAPI_VERSION 1

/* Limits of one request. */
#define GPU_MAX_SYNCS 1024
#define GPU_MAX_BIND_OPS 1024
#define GPU_MAX_BATCHES 16
#define GPU_MAX_SYNCOBJ_POINTS 1024
#define GPU_MAX_STRIDE 1024
#define GPU_MAX_ARGS_SIZE 4096

/* Opcodes (metadata[0] of a call). */
#define GPU_OP_DEVICE_QUERY 1
#define GPU_OP_VM_CREATE 2
#define GPU_OP_VM_DESTROY 3
#define GPU_OP_BO_CREATE 4
#define GPU_OP_BO_DESTROY 5
#define GPU_OP_EXEC_QUEUE_CREATE 6
#define GPU_OP_EXEC_QUEUE_DESTROY 7
#define GPU_OP_VM_BIND 8
#define GPU_OP_EXEC 9
#define GPU_OP_WAIT_USER_FENCE 10
#define GPU_OP_SYNCOBJ_CREATE 11
#define GPU_OP_SYNCOBJ_DESTROY 12
#define GPU_OP_SYNCOBJ_WAIT 13
#define GPU_OP_SYNCOBJ_SIGNAL 14
#define GPU_OP_SYNCOBJ_QUERY 15
#define GPU_OP_SYNCOBJ_TRANSFER 16
#define GPU_OP_EXPORT_TOKEN 17
#define GPU_OP_IMPORT 18
#define GPU_OP_SYNCOBJ_RESET 19

/* VM_CREATE flags. */
#define GPU_VM_CREATE_SCRATCH_PAGE (1u << 0)
#define GPU_VM_CREATE_LR_MODE (1u << 1)
#define GPU_VM_CREATE_FAULT_MODE (1u << 2)

/* BO placement mask. */
#define GPU_PLACEMENT_SYSTEM (1u << 0)
#define GPU_PLACEMENT_VRAM (1u << 1)

/* BO_CREATE flags. */
#define GPU_BO_CREATE_NEEDS_VISIBLE_VRAM (1u << 0)
#define GPU_BO_CREATE_DEFER_BACKING (1u << 1)

/* Bind operations (struct gpu_bind_op.op). */
#define GPU_BIND_OP_MAP 0
#define GPU_BIND_OP_UNMAP 1
#define GPU_BIND_OP_MAP_USERPTR 2
#define GPU_BIND_OP_UNMAP_ALL 3
#define GPU_BIND_OP_PREFETCH 4

/* Bind flags (struct gpu_bind_op.flags). */
#define GPU_BIND_FLAG_READONLY (1u << 0)
#define GPU_BIND_FLAG_IMMEDIATE (1u << 1)
#define GPU_BIND_FLAG_NULL (1u << 2)
#define GPU_BIND_FLAG_CPU_ADDR_MIRROR (1u << 5)

/* Prefetch regions (struct gpu_bind_op.prefetch_region). */
#define GPU_REGION_SYSTEM 0u
#define GPU_REGION_VRAM 1u
#define GPU_REGION_PREFERRED 0xffffffffu

/* Sync entries (struct gpu_sync). */
#define GPU_SYNC_TYPE_SYNCOBJ 0
#define GPU_SYNC_TYPE_TIMELINE_SYNCOBJ 1
#define GPU_SYNC_TYPE_USER_FENCE 2
#define GPU_SYNC_FLAG_SIGNAL (1u << 0)

/* Engine classes (EXEC_QUEUE_CREATE; bit `1 << class` of engine_mask). */
#define GPU_ENGINE_CLASS_COPY 1
#define GPU_ENGINE_CLASS_COMPUTE 4
#define GPU_ENGINE_CLASS_VM_BIND 5

/* EXEC_QUEUE_CREATE flags and priorities (Xe's values; HIGH needs privilege: EPERM). */
#define GPU_EXEC_QUEUE_CREATE_PRIORITY (1u << 0)
/* The queue's batches are Intel MI_* command streams (copy/compute queues; bind: EINVAL). */
#define GPU_EXEC_QUEUE_CREATE_INTEL_BATCHES (1u << 1)
#define GPU_QUEUE_PRIORITY_LOW 0
#define GPU_QUEUE_PRIORITY_NORMAL 1
#define GPU_QUEUE_PRIORITY_HIGH 2

/* WAIT_USER_FENCE comparisons and flags. */
#define GPU_WAIT_OP_EQ 0
#define GPU_WAIT_OP_NEQ 1
#define GPU_WAIT_OP_GT 2
#define GPU_WAIT_OP_GTE 3
#define GPU_WAIT_OP_LT 4
#define GPU_WAIT_OP_LTE 5
#define GPU_WAIT_FLAG_ABSTIME (1u << 0)

/* SYNCOBJ_CREATE and SYNCOBJ_WAIT flags. */
#define GPU_SYNCOBJ_CREATE_SIGNALED (1u << 0)
#define GPU_SYNCOBJ_WAIT_ALL (1u << 0)
#define GPU_SYNCOBJ_WAIT_FOR_SUBMIT (1u << 1)
#define GPU_SYNCOBJ_WAIT_ABSTIME (1u << 2)

/* EXPORT_TOKEN / IMPORT object kinds. */
#define GPU_OBJECT_KIND_BO 1
#define GPU_OBJECT_KIND_SYNCOBJ 2

/* Leads every payload. */
struct gpu_call_header {
	uint16_t version;   /* GPU_UAPI_VERSION */
	uint16_t pad;
	uint32_t args_size; /* bytes of the args struct that follows */
	uint64_t reserved;
};

/* DEVICE_QUERY: every field is out. */
struct gpu_device_query_args {
	uint32_t va_bits;
	uint32_t engine_mask;   /* bit 1 << GPU_ENGINE_CLASS_* */
	uint64_t page_sizes;    /* bit 1 << log2(size) per supported page size */
	uint64_t sys_size;
	uint64_t sys_free;
	uint64_t vram_size;
	uint64_t vram_free;
	uint64_t reserved_va_start;
	uint64_t reserved_va_len;
	uint32_t pat_entries;
	uint32_t max_objects;   /* per-client limits */
	uint64_t limit_vram;
	uint64_t limit_sys;
	uint32_t max_mappings;
	uint32_t max_in_flight;
	uint64_t reserved[2];
};

struct gpu_vm_create_args {
	uint32_t flags;         /* GPU_VM_CREATE_* */
	uint32_t vm_id;         /* out */
	uint64_t reserved[2];
};

/* VM_DESTROY, BO_DESTROY, EXEC_QUEUE_DESTROY, SYNCOBJ_DESTROY. */
struct gpu_id_args {
	uint32_t id;
	uint32_t pad;
	uint64_t reserved[2];
};

struct gpu_bo_create_args {
	uint64_t size;          /* non-zero multiple of 4 KiB */
	uint32_t placement;     /* GPU_PLACEMENT_* mask */
	uint32_t flags;         /* GPU_BO_CREATE_* */
	uint32_t vm_id;         /* 0: external BO; else VM-private to this VM */
	uint32_t bo_id;         /* out */
	uint64_t reserved[2];
};

struct gpu_exec_queue_create_args {
	uint32_t vm_id;
	uint16_t engine_class;  /* GPU_ENGINE_CLASS_* */
	uint16_t flags;         /* GPU_EXEC_QUEUE_CREATE_* */
	uint32_t queue_id;      /* out */
	uint32_t priority;      /* GPU_QUEUE_PRIORITY_* with GPU_EXEC_QUEUE_CREATE_PRIORITY, else 0 */
	uint64_t reserved[2];
};

/* VM_BIND: followed by num_ops x op_stride bytes of gpu_bind_op, then syncs. */
struct gpu_vm_bind_args {
	uint32_t vm_id;
	uint32_t queue_id;      /* 0: the VM's default bind queue */
	uint32_t num_ops;
	uint32_t op_stride;     /* >= sizeof(struct gpu_bind_op), multiple of 8 */
	uint32_t num_syncs;
	uint32_t sync_stride;   /* >= sizeof(struct gpu_sync), multiple of 8 */
	uint64_t reserved[2];
};

struct gpu_bind_op {
	uint32_t op;            /* GPU_BIND_OP_* */
	uint32_t flags;         /* GPU_BIND_FLAG_* */
	uint32_t bo_id;         /* MAP, UNMAP_ALL; else 0 */
	uint16_t pat_index;
	uint16_t pad;
	uint64_t obj_offset;    /* BO offset (MAP) or CPU address (MAP_USERPTR) */
	uint64_t addr;          /* GPU VA */
	uint64_t range;         /* bytes */
	uint32_t prefetch_region; /* GPU_REGION_* for PREFETCH */
	uint32_t pad2;
	uint64_t reserved[2];
};

struct gpu_sync {
	uint32_t sync_type;     /* GPU_SYNC_TYPE_* */
	uint32_t flags;         /* GPU_SYNC_FLAG_SIGNAL, else a wait */
	uint32_t handle;        /* syncobj id; 0 for USER_FENCE */
	uint32_t pad;
	uint64_t addr;          /* USER_FENCE: 8-byte aligned GPU VA */
	uint64_t value;         /* timeline point, or the user-fence value */
	uint64_t reserved[2];
};

/* EXEC: followed by num_batches uint64_t GPU addresses, then syncs. */
struct gpu_exec_args {
	uint32_t queue_id;
	uint32_t num_batches;   /* 0: a sync-only submission */
	uint32_t num_syncs;
	uint32_t sync_stride;
	uint64_t reserved[2];
};

struct gpu_wait_user_fence_args {
	uint32_t vm_id;
	uint32_t queue_id;      /* 0, or a queue whose reset fails the wait with EIO */
	uint64_t addr;          /* 8-byte aligned GPU VA */
	uint16_t op;            /* GPU_WAIT_OP_* */
	uint16_t flags;         /* GPU_WAIT_FLAG_* */
	uint32_t pad;
	uint64_t value;
	uint64_t mask;
	int64_t timeout_ns;     /* < 0 forever, 0 one check */
	uint64_t reserved[2];
};

struct gpu_syncobj_create_args {
	uint32_t flags;         /* GPU_SYNCOBJ_CREATE_* */
	uint32_t syncobj_id;    /* out */
	uint64_t reserved[2];
};

/* One element of SYNCOBJ_WAIT / SYNCOBJ_SIGNAL / SYNCOBJ_RESET (point 0). */
struct gpu_syncobj_point {
	uint32_t syncobj_id;
	uint32_t pad;
	uint64_t point;         /* 0: binary */
};

struct gpu_syncobj_wait_args {
	uint32_t count;
	uint32_t stride;
	uint32_t flags;         /* GPU_SYNCOBJ_WAIT_* */
	uint32_t first_signaled; /* out */
	int64_t timeout_ns;
	uint64_t reserved[2];
};

struct gpu_syncobj_signal_args {
	uint32_t count;
	uint32_t stride;
	uint64_t reserved[2];
};

/* SYNCOBJ_RESET: followed by `count` gpu_syncobj_point elements, each with point 0. */
struct gpu_syncobj_reset_args {
	uint32_t count;
	uint32_t stride;
	uint64_t reserved[2];
};

struct gpu_syncobj_query_args {
	uint32_t syncobj_id;
	uint32_t pad;
	uint64_t point;         /* out */
	uint64_t reserved[2];
};

struct gpu_syncobj_transfer_args {
	uint32_t src_id;
	uint32_t dst_id;
	uint64_t src_point;
	uint64_t dst_point;
	uint32_t flags;         /* GPU_SYNCOBJ_WAIT_FOR_SUBMIT only */
	uint32_t pad;
	uint64_t reserved[2];
};

/* EXPORT_TOKEN (on a BO or syncobj handle): every field is out. */
struct gpu_export_token_args {
	uint32_t kind;          /* GPU_OBJECT_KIND_* */
	uint32_t pad;
	uint64_t token[2];
	uint64_t reserved[2];
};

/* IMPORT (on a device handle). */
struct gpu_import_args {
	uint32_t kind;          /* GPU_OBJECT_KIND_* expected */
	uint32_t id;            /* out */
	uint64_t token[2];
	uint64_t reserved[2];
};

#ifdef __cplusplus
}
#endif

#endif /* GPU_H */
