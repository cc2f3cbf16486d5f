/*
 * libgpu.h - the C client library of the gpu scheme (gpud).
 *
 * Link with `pkg-config --cflags --libs libgpu` (libgpu.so or libgpu.a, built from the Rust
 * libgpu by the gpu-capi crate). The wire structs and flags come from gpu.h; this library
 * opens the device, sends the calls and keeps the handles a BO mapping or an export needs.
 *
 * Conventions (as libdrm): every function returns 0 on success or a negative errno
 * (-EINVAL, -ENOENT, -ETIME...; the meanings are listed in gpu.h) and writes its results
 * through out pointers only on success. Objects are named by the ids the server gives
 * (VM, BO, queue and syncobj ids are per device handle); `struct gpu_device` is opaque and
 * may be used from several threads at once. docs/c-api.md is the guide.
 */
#ifndef LIBGPU_H
#define LIBGPU_H

#include <stddef.h>
#include <stdint.h>

#include "gpu.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A device handle (one client of gpud). */
struct gpu_device;

/* Opens card0 of the gpud listening at `socket_path` (NULL: $GPUD_SOCKET, else
 * $XDG_RUNTIME_DIR/gpud.sock, else gpud.sock in the temporary directory; on Redox NULL is
 * /scheme/gpu). -ENOENT / -ECONNREFUSED: no gpud there (start it with `gpud serve`). */
int gpu_device_open(const char *socket_path, struct gpu_device **out);
/* Closes the device: every object, mapping and export of it goes away. NULL is ignored. */
void gpu_device_close(struct gpu_device *dev);
/* DEVICE_QUERY. */
int gpu_device_query(struct gpu_device *dev, struct gpu_device_query_args *out);

/* VMs (flags: GPU_VM_CREATE_*). */
int gpu_vm_create(struct gpu_device *dev, uint32_t flags, uint32_t *vm_id);
int gpu_vm_destroy(struct gpu_device *dev, uint32_t vm_id);

/* BOs. vm_id 0 makes an external (shareable) BO, else a BO private to that VM. */
int gpu_bo_create(struct gpu_device *dev, uint64_t size, uint32_t placement, uint32_t flags,
		  uint32_t vm_id, uint32_t *bo_id);
/* Drops the id (and this library's export of it); the memory lives on while mapped or bound. */
int gpu_bo_destroy(struct gpu_device *dev, uint32_t bo_id);
/* Maps `len` bytes at `offset` (page-aligned) of a BO, shared and read-write. */
int gpu_bo_mmap(struct gpu_device *dev, uint32_t bo_id, uint64_t offset, size_t len, void **ptr);
/* Unmaps a pointer gpu_bo_mmap returned. -EINVAL: not one. */
int gpu_bo_munmap(struct gpu_device *dev, void *ptr);
/* A token another client passes to gpu_bo_import; valid while this BO id lives. */
int gpu_bo_export(struct gpu_device *dev, uint32_t bo_id, uint64_t token[2]);
int gpu_bo_import(struct gpu_device *dev, const uint64_t token[2], uint32_t *bo_id);

/* Exec queues (and bind queues: GPU_ENGINE_CLASS_VM_BIND). */
int gpu_exec_queue_create(struct gpu_device *dev, uint32_t vm_id, uint16_t engine_class,
			  uint32_t *queue_id);
/* At GPU_QUEUE_PRIORITY_*: HIGH needs privilege (-EPERM), bind queues take only NORMAL. */
int gpu_exec_queue_create_with_priority(struct gpu_device *dev, uint32_t vm_id,
					uint16_t engine_class, uint32_t priority,
					uint32_t *queue_id);
int gpu_exec_queue_destroy(struct gpu_device *dev, uint32_t queue_id);

/* VM_BIND: `num_ops` operations, all or nothing, then the syncs (waits before, signals and
 * user fences after). queue_id 0 is the VM's default bind queue. With no signal sync the
 * bind completes before this returns. */
int gpu_vm_bind(struct gpu_device *dev, uint32_t vm_id, uint32_t queue_id,
		const struct gpu_bind_op *ops, uint32_t num_ops, const struct gpu_sync *syncs,
		uint32_t num_syncs);
/* EXEC: batch buffers (GPU VAs) on an exec queue, ordered by the syncs. */
int gpu_exec(struct gpu_device *dev, uint32_t queue_id, const uint64_t *batch_addrs,
	     uint32_t num_batches, const struct gpu_sync *syncs, uint32_t num_syncs);
/* WAIT_USER_FENCE: waits until (*addr & mask) `op` (value & mask); -ETIME on timeout. */
int gpu_wait_user_fence(struct gpu_device *dev, uint32_t vm_id, uint32_t queue_id,
			uint64_t addr, uint16_t op, uint16_t flags, uint64_t value, uint64_t mask,
			int64_t timeout_ns);

/* Syncobjs (binary, or timelines when used with points). */
int gpu_syncobj_create(struct gpu_device *dev, uint32_t flags, uint32_t *syncobj_id);
int gpu_syncobj_destroy(struct gpu_device *dev, uint32_t syncobj_id);
/* Waits for all (GPU_SYNCOBJ_WAIT_ALL) or any of `count` points; -ETIME on timeout.
 * first_signaled may be NULL. */
int gpu_syncobj_wait(struct gpu_device *dev, const struct gpu_syncobj_point *points,
		     uint32_t count, uint32_t flags, int64_t timeout_ns, uint32_t *first_signaled);
int gpu_syncobj_signal(struct gpu_device *dev, const struct gpu_syncobj_point *points,
		       uint32_t count);
/* The last signalled timeline point (binary: 1 if signalled, else 0). */
int gpu_syncobj_query(struct gpu_device *dev, uint32_t syncobj_id, uint64_t *point);
int gpu_syncobj_transfer(struct gpu_device *dev, uint32_t dst_id, uint64_t dst_point,
			 uint32_t src_id, uint64_t src_point, uint32_t flags);
int gpu_syncobj_export(struct gpu_device *dev, uint32_t syncobj_id, uint64_t token[2]);
int gpu_syncobj_import(struct gpu_device *dev, const uint64_t token[2], uint32_t *syncobj_id);

/* A static description of a (negative or positive) errno value from this library. */
const char *gpu_strerror(int err);

#ifdef __cplusplus
}
#endif

#endif /* LIBGPU_H */
