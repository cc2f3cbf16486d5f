/*
 * demo.c - the README demo's client, in C, on libgpu.h.
 *
 * Four async binds pipelined with four execs on one syncobj timeline (bind i signals point
 * 2i+1, exec i waits for it and signals 2i+2), then the GPU's writes read back through mmap;
 * a user fence written by the last exec is waited for; an external BO is exported and
 * imported by a second device handle, whose GPU job writes it.
 *
 * Build: cc demo.c $(pkg-config --cflags --libs libgpu) -o demo
 * Run:   gpud serve --socket ./gpud.sock &  ./demo ./gpud.sock
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libgpu.h>

#define STEPS 4
#define PAGE 0x1000ull
#define DATA_VA 0x100000ull
#define BATCH_VA 0x200000ull
#define FENCE_VA 0x300000ull
#define SHARED_VA 0x400000ull
#define PEER_VALUE 0xb0b0cafeu

/* simgpu commands (docs/simgpu.md): header = length << 16 | opcode. */
#define CMD_STORE_DWORD ((4u << 16) | 0x01u)
#define CMD_BATCH_END ((1u << 16) | 0x0au)

#define CHECK(call)                                                                      \
	do {                                                                             \
		int err_ = (call);                                                       \
		if (err_) {                                                              \
			fprintf(stderr, "demo: %s: %s (%d)\n", #call, gpu_strerror(err_), \
				err_);                                                   \
			exit(1);                                                         \
		}                                                                        \
	} while (0)

/* Writes a batch "store `value` at `va`, end" at `dwords`. */
static void store_batch(volatile uint32_t *dwords, uint64_t va, uint32_t value)
{
	dwords[0] = CMD_STORE_DWORD;
	dwords[1] = (uint32_t)va;
	dwords[2] = (uint32_t)(va >> 32);
	dwords[3] = value;
	dwords[4] = CMD_BATCH_END;
}

static struct gpu_bind_op map_op(uint32_t bo, uint64_t offset, uint64_t va, uint64_t range)
{
	struct gpu_bind_op op;
	memset(&op, 0, sizeof(op));
	op.op = GPU_BIND_OP_MAP;
	op.bo_id = bo;
	op.obj_offset = offset;
	op.addr = va;
	op.range = range;
	return op;
}

static struct gpu_sync timeline(uint32_t syncobj, uint64_t point, int signal)
{
	struct gpu_sync s;
	memset(&s, 0, sizeof(s));
	s.sync_type = GPU_SYNC_TYPE_TIMELINE_SYNCOBJ;
	s.flags = signal ? GPU_SYNC_FLAG_SIGNAL : 0;
	s.handle = syncobj;
	s.value = point;
	return s;
}

/* A second client imports the BO behind `token`, maps it in its own VM and writes it. */
static void peer(const char *socket, const uint64_t token[2])
{
	struct gpu_device *dev;
	uint32_t vm, bo, batch, queue, done;
	void *bmap;
	CHECK(gpu_device_open(socket, &dev));
	CHECK(gpu_bo_import(dev, token, &bo));
	CHECK(gpu_vm_create(dev, 0, &vm));
	CHECK(gpu_bo_create(dev, PAGE, GPU_PLACEMENT_SYSTEM, 0, 0, &batch));
	struct gpu_bind_op ops[2] = { map_op(bo, 0, SHARED_VA, PAGE),
				      map_op(batch, 0, BATCH_VA, PAGE) };
	CHECK(gpu_vm_bind(dev, vm, 0, ops, 2, NULL, 0));
	CHECK(gpu_bo_mmap(dev, batch, 0, PAGE, &bmap));
	store_batch(bmap, SHARED_VA, PEER_VALUE);
	CHECK(gpu_exec_queue_create(dev, vm, GPU_ENGINE_CLASS_COPY, &queue));
	CHECK(gpu_syncobj_create(dev, 0, &done));
	struct gpu_sync signal = { .sync_type = GPU_SYNC_TYPE_SYNCOBJ,
				   .flags = GPU_SYNC_FLAG_SIGNAL,
				   .handle = done };
	uint64_t batch_va = BATCH_VA;
	CHECK(gpu_exec(dev, queue, &batch_va, 1, &signal, 1));
	struct gpu_syncobj_point p = { .syncobj_id = done };
	CHECK(gpu_syncobj_wait(dev, &p, 1, GPU_SYNCOBJ_WAIT_ALL, -1, NULL));
	CHECK(gpu_bo_munmap(dev, bmap));
	gpu_device_close(dev);
	printf("[c 3] peer client: imported the external BO, stored 0x%x with its GPU\n", PEER_VALUE);
}

int main(int argc, char **argv)
{
	const char *socket = argc > 1 ? argv[1] : NULL;
	struct gpu_device *dev;
	struct gpu_device_query_args info;
	uint32_t vm, queue, data, batches, fence_bo, tl;
	void *bmap, *dmap, *fmap;

	CHECK(gpu_device_open(socket, &dev));
	CHECK(gpu_device_query(dev, &info));
	printf("[c 1] device: %u VA bits, %" PRIu64 " MiB VRAM, %" PRIu64 " MiB system memory\n",
	       info.va_bits, info.vram_size >> 20, info.sys_size >> 20);

	CHECK(gpu_vm_create(dev, 0, &vm));
	CHECK(gpu_exec_queue_create(dev, vm, GPU_ENGINE_CLASS_COPY, &queue));
	CHECK(gpu_bo_create(dev, STEPS * PAGE, GPU_PLACEMENT_SYSTEM, 0, 0, &data));
	CHECK(gpu_bo_create(dev, PAGE, GPU_PLACEMENT_SYSTEM, 0, vm, &batches));
	CHECK(gpu_bo_create(dev, PAGE, GPU_PLACEMENT_SYSTEM, 0, vm, &fence_bo));
	struct gpu_bind_op setup[2] = { map_op(batches, 0, BATCH_VA, PAGE),
					map_op(fence_bo, 0, FENCE_VA, PAGE) };
	CHECK(gpu_vm_bind(dev, vm, 0, setup, 2, NULL, 0));
	CHECK(gpu_bo_mmap(dev, batches, 0, PAGE, &bmap));
	CHECK(gpu_syncobj_create(dev, 0, &tl));

	for (uint32_t i = 0; i < STEPS; i++) {
		uint64_t off = i * 0x100;
		store_batch((volatile uint32_t *)((char *)bmap + off), DATA_VA + i * PAGE,
			    0x1000 + i);
		struct gpu_bind_op op = map_op(data, i * PAGE, DATA_VA + i * PAGE, PAGE);
		struct gpu_sync bound = timeline(tl, 2 * i + 1, 1);
		CHECK(gpu_vm_bind(dev, vm, 0, &op, 1, &bound, 1));
		struct gpu_sync exec_syncs[3] = { timeline(tl, 2 * i + 1, 0),
						  timeline(tl, 2 * i + 2, 1) };
		uint32_t n = 2;
		if (i == STEPS - 1) {
			/* The last exec also writes a user fence. */
			memset(&exec_syncs[2], 0, sizeof(exec_syncs[2]));
			exec_syncs[2].sync_type = GPU_SYNC_TYPE_USER_FENCE;
			exec_syncs[2].flags = GPU_SYNC_FLAG_SIGNAL;
			exec_syncs[2].addr = FENCE_VA;
			exec_syncs[2].value = 0x5eed;
			n = 3;
		}
		uint64_t batch_va = BATCH_VA + off;
		CHECK(gpu_exec(dev, queue, &batch_va, 1, exec_syncs, n));
	}
	printf("[c 2] %d async binds pipelined with %d execs on timeline points 1..=%d\n", STEPS,
	       STEPS, 2 * STEPS);

	struct gpu_syncobj_point last = { .syncobj_id = tl, .point = 2 * STEPS };
	CHECK(gpu_syncobj_wait(dev, &last, 1, GPU_SYNCOBJ_WAIT_ALL, -1, NULL));
	CHECK(gpu_wait_user_fence(dev, vm, queue, FENCE_VA, GPU_WAIT_OP_EQ, 0, 0x5eed, ~0ull,
				  1000000000));
	uint64_t point;
	CHECK(gpu_syncobj_query(dev, tl, &point));
	CHECK(gpu_bo_mmap(dev, data, 0, STEPS * PAGE, &dmap));
	for (uint32_t i = 0; i < STEPS; i++) {
		uint32_t v = ((volatile uint32_t *)dmap)[i * PAGE / 4];
		if (v != 0x1000 + i) {
			fprintf(stderr, "demo: page %u holds 0x%x, expected 0x%x\n", i, v, 0x1000 + i);
			return 1;
		}
	}
	CHECK(gpu_bo_munmap(dev, dmap));
	printf("[c 2] timeline at %" PRIu64 "; user fence 0x5eed; GPU wrote 0x1000..0x%x, read back through mmap\n",
	       point, 0x1000 + STEPS - 1);

	/* Share an external BO with a second client. */
	uint32_t shared;
	uint64_t token[2];
	CHECK(gpu_bo_create(dev, PAGE, GPU_PLACEMENT_SYSTEM, 0, 0, &shared));
	CHECK(gpu_bo_export(dev, shared, token));
	peer(socket, token);
	CHECK(gpu_bo_mmap(dev, shared, 0, PAGE, &fmap));
	uint32_t v = *(volatile uint32_t *)fmap;
	CHECK(gpu_bo_munmap(dev, fmap));
	if (v != PEER_VALUE) {
		fprintf(stderr, "demo: shared BO holds 0x%x\n", v);
		return 1;
	}
	printf("[c 3] the external BO holds 0x%x, written by the other client's GPU job\n", v);

	/* Errors are negative errno values. */
	int err = gpu_vm_destroy(dev, 9999);
	printf("[c 4] destroying an unknown VM: %d (%s)\n", err, gpu_strerror(err));
	CHECK(gpu_bo_munmap(dev, bmap));
	gpu_device_close(dev);
	printf("gpu C demo: ok\n");
	return err < 0 ? 0 : 1;
}
