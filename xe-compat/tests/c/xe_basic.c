/*
 * An Xe program of our own, written against Linux's drm/xe_drm.h and libdrm the way a
 * user-mode driver or an IGT test is: it opens /dev/dri/card0, queries the device, creates
 * and maps BOs, binds them every way Xe allows, submits batches of MI commands, waits with
 * syncobjs, and checks Xe's answers to invalid arguments. Run with LD_PRELOAD of
 * libgpu_xe_compat.so against a live `gpud serve` (xe-compat/tests/xe_c.rs).
 *
 * Every check prints "ok - <name>" or "FAIL - <name>: <why>"; the exit status is the number
 * of failures (0: all passed).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include <drm/xe_drm.h>
#include <xf86drm.h>

static int failures;

#define CHECK(cond, name, ...)                                                                 \
	do {                                                                                   \
		if (cond) {                                                                    \
			printf("ok - %s\n", name);                                             \
		} else {                                                                       \
			printf("FAIL - %s: ", name);                                           \
			printf(__VA_ARGS__);                                                   \
			printf("\n");                                                          \
			failures++;                                                            \
		}                                                                              \
		fflush(stdout);                                                                \
	} while (0)

/* The errno of an ioctl through libdrm (0 on success). */
static int xe_ioctl(int fd, unsigned long req, void *arg)
{
	return drmIoctl(fd, req, arg) ? errno : 0;
}

static int64_t now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

#define MI_BATCH_BUFFER_END 0x05000000u
#define MI_STORE_DWORD_IMM_GEN4 0x10000002u
#define MI_ARB_CHECK 0x02800000u
#define MI_COND_BATCH_BUFFER_END 0x1b000000u
#define MI_DO_COMPARE (1u << 21)
/* With bit 8 (PPGTT) and length 1: a 3-dword jump. */
#define MI_BATCH_BUFFER_START 0x18800101u

/* A batch that stores `value` at GPU address `va`, then ends. */
static int store_batch(uint32_t *b, uint64_t va, uint32_t value)
{
	int n = 0;
	b[n++] = MI_STORE_DWORD_IMM_GEN4;
	b[n++] = (uint32_t)va;
	b[n++] = (uint32_t)(va >> 32);
	b[n++] = value;
	b[n++] = MI_BATCH_BUFFER_END;
	return n;
}

/*
 * A spinner as IGT's xe_spin builds one: store `started`, then loop (ARB_CHECK, end the batch
 * when the dword at `end_va` is 0, jump back) until the CPU clears that dword.
 */
static int spin_batch(uint32_t *b, uint64_t batch_va, uint64_t started_va, uint64_t end_va)
{
	int n = store_batch(b, started_va, 1) - 1;
	uint64_t loop = batch_va + 4 * n;
	b[n++] = MI_ARB_CHECK;
	b[n++] = MI_COND_BATCH_BUFFER_END | MI_DO_COMPARE | 2;
	b[n++] = 0;
	b[n++] = (uint32_t)end_va;
	b[n++] = (uint32_t)(end_va >> 32);
	b[n++] = MI_BATCH_BUFFER_START;
	b[n++] = (uint32_t)loop;
	b[n++] = (uint32_t)(loop >> 32);
	return n;
}

struct dev {
	int fd;
	uint32_t sys_placement;
	uint32_t vram_placement;
	int has_copy;
	uint64_t va_bits;
};

static int query(int fd, uint32_t q, void **out, uint32_t *size)
{
	struct drm_xe_device_query dq = { .query = q };
	int err = xe_ioctl(fd, DRM_IOCTL_XE_DEVICE_QUERY, &dq);
	if (err)
		return err;
	*size = dq.size;
	*out = calloc(1, dq.size ? dq.size : 1);
	dq.data = (uintptr_t)*out;
	return dq.size ? xe_ioctl(fd, DRM_IOCTL_XE_DEVICE_QUERY, &dq) : 0;
}

static uint32_t bo_create(int fd, uint32_t vm, uint64_t size, uint32_t placement, uint16_t caching)
{
	struct drm_xe_gem_create c = {
		.size = size, .placement = placement, .cpu_caching = caching, .vm_id = vm,
	};
	return xe_ioctl(fd, DRM_IOCTL_XE_GEM_CREATE, &c) ? 0 : c.handle;
}

static void *bo_map(int fd, uint32_t handle, uint64_t size)
{
	struct drm_xe_gem_mmap_offset mo = { .handle = handle };
	if (xe_ioctl(fd, DRM_IOCTL_XE_GEM_MMAP_OFFSET, &mo))
		return NULL;
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, mo.offset);
	return p == MAP_FAILED ? NULL : p;
}

static int bind(int fd, uint32_t vm, uint32_t op, uint32_t obj, uint64_t offset, uint64_t addr,
		uint64_t range, uint32_t flags, struct drm_xe_sync *syncs, uint32_t num_syncs)
{
	struct drm_xe_vm_bind b = {
		.vm_id = vm,
		.num_binds = 1,
		.bind = { .obj = obj, .obj_offset = offset, .addr = addr, .range = range,
			  .op = op, .flags = flags, .pat_index = 0 },
		.num_syncs = num_syncs,
		.syncs = (uintptr_t)syncs,
	};
	return xe_ioctl(fd, DRM_IOCTL_XE_VM_BIND, &b);
}

static uint32_t queue_create(int fd, uint32_t vm, uint16_t class)
{
	struct drm_xe_engine_class_instance eci = { .engine_class = class };
	struct drm_xe_exec_queue_create c = {
		.width = 1, .num_placements = 1, .vm_id = vm, .instances = (uintptr_t)&eci,
	};
	return xe_ioctl(fd, DRM_IOCTL_XE_EXEC_QUEUE_CREATE, &c) ? 0 : c.exec_queue_id;
}

static int exec1(int fd, uint32_t q, uint64_t addr, struct drm_xe_sync *syncs, uint32_t n)
{
	struct drm_xe_exec e = {
		.exec_queue_id = q, .num_batch_buffer = 1, .address = addr,
		.num_syncs = n, .syncs = (uintptr_t)syncs,
	};
	return xe_ioctl(fd, DRM_IOCTL_XE_EXEC, &e);
}

static int wait1(int fd, uint32_t syncobj, int64_t timeout_ns)
{
	return drmSyncobjWait(fd, &syncobj, 1, now_ns() + timeout_ns,
			      DRM_SYNCOBJ_WAIT_FLAGS_WAIT_FOR_SUBMIT, NULL) ? errno : 0;
}

static void test_open(void)
{
	struct stat st;
	CHECK(stat("/dev/dri/card0", &st) == 0 && S_ISCHR(st.st_mode) && major(st.st_rdev) == 226 &&
		      minor(st.st_rdev) == 0,
	      "stat card0 is char 226:0", "mode %o rdev %lx", st.st_mode, (long)st.st_rdev);
	CHECK(stat("/dev/dri/renderD128", &st) == 0 && minor(st.st_rdev) == 128,
	      "stat renderD128 is char 226:128", "rdev %lx", (long)st.st_rdev);
	int fd = open("/dev/dri/card0", O_RDWR | O_CLOEXEC);
	CHECK(fd >= 0, "open card0", "errno %d", errno);
	CHECK(fstat(fd, &st) == 0 && S_ISCHR(st.st_mode) && major(st.st_rdev) == 226,
	      "fstat of the device fd", "mode %o", st.st_mode);
	char path[64], link[64] = { 0 };
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	ssize_t n = readlink(path, link, sizeof(link) - 1);
	CHECK(n > 0 && strcmp(link, "/dev/dri/card0") == 0, "readlink /proc/self/fd/N",
	      "got %zd %s", n, link);
	drmVersionPtr v = drmGetVersion(fd);
	CHECK(v && strcmp(v->name, "xe") == 0, "DRM_IOCTL_VERSION names xe", "%s",
	      v ? v->name : "(null)");
	drmFreeVersion(v);
	uint64_t cap = 0;
	CHECK(drmGetCap(fd, DRM_CAP_SYNCOBJ, &cap) == 0 && cap == 1, "GET_CAP SYNCOBJ", "%d", errno);
	CHECK(drmGetCap(fd, DRM_CAP_SYNCOBJ_TIMELINE, &cap) == 0 && cap == 1,
	      "GET_CAP SYNCOBJ_TIMELINE", "%d", errno);
	int d2 = dup(fd);
	close(fd);
	uint32_t so = 0;
	CHECK(d2 >= 0 && drmSyncobjCreate(d2, 0, &so) == 0, "dup of the device fd outlives close",
	      "errno %d", errno);
	close(d2);
	CHECK(fstat(d2, &st) == -1 && errno == EBADF, "closed fd is closed", "errno %d", errno);
}

static void test_queries(struct dev *d)
{
	void *data;
	uint32_t size;
	int err = query(d->fd, DRM_XE_DEVICE_QUERY_CONFIG, &data, &size);
	struct drm_xe_query_config *cfg = data;
	CHECK(!err && cfg->num_params > DRM_XE_QUERY_CONFIG_VA_BITS &&
		      (cfg->info[DRM_XE_QUERY_CONFIG_REV_AND_DEVICE_ID] & 0xffff) != 0,
	      "query config", "err %d", err);
	d->va_bits = err ? 48 : cfg->info[DRM_XE_QUERY_CONFIG_VA_BITS];
	CHECK(d->va_bits == 48, "config VA_BITS", "%" PRIu64, d->va_bits);
	free(data);

	err = query(d->fd, DRM_XE_DEVICE_QUERY_ENGINES, &data, &size);
	struct drm_xe_query_engines *eng = data;
	for (uint32_t i = 0; !err && i < eng->num_engines; i++)
		d->has_copy |= eng->engines[i].instance.engine_class == DRM_XE_ENGINE_CLASS_COPY;
	CHECK(!err && d->has_copy, "query engines lists a copy engine", "err %d", err);
	free(data);

	err = query(d->fd, DRM_XE_DEVICE_QUERY_MEM_REGIONS, &data, &size);
	struct drm_xe_query_mem_regions *mr = data;
	for (uint32_t i = 0; !err && i < mr->num_mem_regions; i++) {
		struct drm_xe_mem_region *r = &mr->mem_regions[i];
		if (r->mem_class == DRM_XE_MEM_REGION_CLASS_SYSMEM)
			d->sys_placement = 1u << r->instance;
		else
			d->vram_placement = 1u << r->instance;
	}
	CHECK(!err && d->sys_placement == 1 && mr->mem_regions[0].total_size > 0,
	      "query mem regions", "err %d", err);
	free(data);

	err = query(d->fd, DRM_XE_DEVICE_QUERY_GT_LIST, &data, &size);
	struct drm_xe_query_gt_list *gts = data;
	CHECK(!err && gts->num_gt == 1 && gts->gt_list[0].near_mem_regions != 0,
	      "query gt list", "err %d", err);
	free(data);

	err = query(d->fd, DRM_XE_DEVICE_QUERY_HWCONFIG, &data, &size);
	CHECK(!err && size == 0, "query hwconfig is empty", "err %d size %u", err, size);
	free(data);

	struct drm_xe_device_query dq = { .query = DRM_XE_DEVICE_QUERY_OA_UNITS };
	CHECK(xe_ioctl(d->fd, DRM_IOCTL_XE_DEVICE_QUERY, &dq) != 0, "query oa units fails", "ok?");
}

static void test_bo(struct dev *d)
{
	uint32_t bo = bo_create(d->fd, 0, 0x10000, d->sys_placement, DRM_XE_GEM_CPU_CACHING_WB);
	CHECK(bo != 0, "gem create (system, WB)", "errno %d", errno);
	uint32_t *p = bo_map(d->fd, bo, 0x10000);
	CHECK(p != NULL, "gem mmap offset + mmap", "errno %d", errno);
	if (!p)
		return;
	for (int i = 0; i < 0x4000; i++)
		p[i] = 0xc0de0000u + i;
	munmap(p, 0x10000);
	p = bo_map(d->fd, bo, 0x10000);
	CHECK(p && p[0] == 0xc0de0000u && p[0x3fff] == 0xc0de3fffu,
	      "a second mapping sees the first one's writes", "%x", p ? p[0] : 0);
	if (p)
		munmap(p, 0x10000);
	struct drm_gem_close gc = { .handle = bo };
	CHECK(xe_ioctl(d->fd, DRM_IOCTL_GEM_CLOSE, &gc) == 0, "gem close", "errno %d", errno);
	CHECK(xe_ioctl(d->fd, DRM_IOCTL_GEM_CLOSE, &gc) == ENOENT, "gem close twice is ENOENT",
	      "errno %d", errno);
	if (d->vram_placement) {
		bo = bo_create(d->fd, 0, 0x10000, d->vram_placement, DRM_XE_GEM_CPU_CACHING_WC);
		p = bo ? bo_map(d->fd, bo, 0x10000) : NULL;
		if (p)
			p[5] = 77;
		CHECK(p && p[5] == 77, "vram BO (WC) maps", "errno %d", errno);
		if (p)
			munmap(p, 0x10000);
		gc.handle = bo;
		xe_ioctl(d->fd, DRM_IOCTL_GEM_CLOSE, &gc);
	}
}

/* One VM with a data BO and a batch BO bound, a copy queue: the shared setup of exec tests. */
struct job {
	uint32_t vm, data_bo, batch_bo, queue;
	uint32_t *data, *batch;
};

#define DATA_VA 0x1a0000ull
#define BATCH_VA 0x1b0000ull

static int job_setup(struct dev *d, struct job *j)
{
	memset(j, 0, sizeof(*j));
	struct drm_xe_vm_create vc = { 0 };
	if (xe_ioctl(d->fd, DRM_IOCTL_XE_VM_CREATE, &vc))
		return -1;
	j->vm = vc.vm_id;
	j->data_bo = bo_create(d->fd, 0, 0x1000, d->sys_placement, DRM_XE_GEM_CPU_CACHING_WB);
	j->batch_bo = bo_create(d->fd, 0, 0x1000, d->sys_placement, DRM_XE_GEM_CPU_CACHING_WB);
	j->data = bo_map(d->fd, j->data_bo, 0x1000);
	j->batch = bo_map(d->fd, j->batch_bo, 0x1000);
	if (!j->data || !j->batch)
		return -1;
	if (bind(d->fd, j->vm, DRM_XE_VM_BIND_OP_MAP, j->data_bo, 0, DATA_VA, 0x1000, 0, NULL, 0) ||
	    bind(d->fd, j->vm, DRM_XE_VM_BIND_OP_MAP, j->batch_bo, 0, BATCH_VA, 0x1000, 0, NULL, 0))
		return -1;
	j->queue = queue_create(d->fd, j->vm, DRM_XE_ENGINE_CLASS_COPY);
	return j->queue ? 0 : -1;
}

static void job_teardown(struct dev *d, struct job *j)
{
	struct drm_xe_exec_queue_destroy qd = { .exec_queue_id = j->queue };
	xe_ioctl(d->fd, DRM_IOCTL_XE_EXEC_QUEUE_DESTROY, &qd);
	munmap(j->data, 0x1000);
	munmap(j->batch, 0x1000);
	struct drm_gem_close gc = { .handle = j->data_bo };
	xe_ioctl(d->fd, DRM_IOCTL_GEM_CLOSE, &gc);
	gc.handle = j->batch_bo;
	xe_ioctl(d->fd, DRM_IOCTL_GEM_CLOSE, &gc);
	struct drm_xe_vm_destroy vd = { .vm_id = j->vm };
	xe_ioctl(d->fd, DRM_IOCTL_XE_VM_DESTROY, &vd);
}

static void test_binds(struct dev *d)
{
	struct drm_xe_vm_create vc = { 0 };
	CHECK(xe_ioctl(d->fd, DRM_IOCTL_XE_VM_CREATE, &vc) == 0 && vc.vm_id, "vm create", "%d", errno);
	uint32_t vm = vc.vm_id;
	uint32_t bo = bo_create(d->fd, 0, 0x4000, d->sys_placement, DRM_XE_GEM_CPU_CACHING_WB);
	CHECK(bind(d->fd, vm, DRM_XE_VM_BIND_OP_MAP, bo, 0, 0x100000, 0x4000, 0, NULL, 0) == 0,
	      "bind map", "errno %d", errno);
	CHECK(bind(d->fd, vm, DRM_XE_VM_BIND_OP_UNMAP, 0, 0, 0x101000, 0x1000, 0, NULL, 0) == 0,
	      "bind unmap (part of a mapping)", "errno %d", errno);
	CHECK(bind(d->fd, vm, DRM_XE_VM_BIND_OP_MAP, 0, 0, 0x400000, 0x10000,
		   DRM_XE_VM_BIND_FLAG_NULL, NULL, 0) == 0,
	      "bind null (sparse)", "errno %d", errno);
	CHECK(bind(d->fd, vm, DRM_XE_VM_BIND_OP_UNMAP_ALL, bo, 0, 0, 0, 0, NULL, 0) == 0,
	      "bind unmap all", "errno %d", errno);

	/* Array bind: three maps in one call. */
	struct drm_xe_vm_bind_op ops[3];
	memset(ops, 0, sizeof(ops));
	for (int i = 0; i < 3; i++) {
		ops[i].op = DRM_XE_VM_BIND_OP_MAP;
		ops[i].obj = bo;
		ops[i].obj_offset = 0x1000 * i;
		ops[i].addr = 0x800000 + 0x10000 * i;
		ops[i].range = 0x1000;
	}
	struct drm_xe_vm_bind arr = { .vm_id = vm, .num_binds = 3,
				      .vector_of_binds = (uintptr_t)ops };
	CHECK(xe_ioctl(d->fd, DRM_IOCTL_XE_VM_BIND, &arr) == 0, "array bind of 3 ops", "errno %d",
	      errno);

	/* Async: an out-syncobj, then a bind waiting on a CPU-signalled in-syncobj. */
	uint32_t out = 0, in = 0;
	drmSyncobjCreate(d->fd, 0, &out);
	drmSyncobjCreate(d->fd, 0, &in);
	struct drm_xe_sync s = { .type = DRM_XE_SYNC_TYPE_SYNCOBJ, .flags = DRM_XE_SYNC_FLAG_SIGNAL,
				 .handle = out };
	int err = bind(d->fd, vm, DRM_XE_VM_BIND_OP_UNMAP, 0, 0, 0x800000, 0x30000, 0, &s, 1);
	CHECK(err == 0 && wait1(d->fd, out, 5000000000ll) == 0, "async unmap signals a syncobj",
	      "errno %d", err);
	struct drm_xe_sync two[2] = {
		{ .type = DRM_XE_SYNC_TYPE_SYNCOBJ, .handle = in },
		{ .type = DRM_XE_SYNC_TYPE_SYNCOBJ, .flags = DRM_XE_SYNC_FLAG_SIGNAL, .handle = out },
	};
	drmSyncobjSignal(d->fd, &in, 1);
	err = bind(d->fd, vm, DRM_XE_VM_BIND_OP_MAP, bo, 0, 0x900000, 0x4000, 0, two, 2);
	CHECK(err == 0 && wait1(d->fd, out, 5000000000ll) == 0, "bind after an in-syncobj",
	      "errno %d", err);

	/* Userptr: malloc'd memory bound by address. */
	uint32_t *mem = aligned_alloc(0x1000, 0x2000);
	mem[0] = 0x5eed;
	err = bind(d->fd, vm, DRM_XE_VM_BIND_OP_MAP_USERPTR, 0, (uintptr_t)mem, 0xa00000, 0x2000, 0,
		   NULL, 0);
	CHECK(err == 0 && mem[0] == 0x5eed, "bind userptr of malloc'd memory", "errno %d", err);
	CHECK(bind(d->fd, vm, DRM_XE_VM_BIND_OP_UNMAP, 0, 0, 0xa00000, 0x2000, 0, NULL, 0) == 0,
	      "unbind userptr", "errno %d", errno);

	drmSyncobjDestroy(d->fd, out);
	drmSyncobjDestroy(d->fd, in);
	struct drm_gem_close gc = { .handle = bo };
	xe_ioctl(d->fd, DRM_IOCTL_GEM_CLOSE, &gc);
	struct drm_xe_vm_destroy vd = { .vm_id = vm };
	CHECK(xe_ioctl(d->fd, DRM_IOCTL_XE_VM_DESTROY, &vd) == 0, "vm destroy", "errno %d", errno);
	CHECK(xe_ioctl(d->fd, DRM_IOCTL_XE_VM_DESTROY, &vd) != 0, "vm destroy twice fails", "ok?");
}

static void test_exec(struct dev *d)
{
	struct job j;
	CHECK(job_setup(d, &j) == 0, "exec setup (vm, BOs, binds, copy queue)", "errno %d", errno);
	if (!j.queue)
		return;
	uint32_t done = 0;
	drmSyncobjCreate(d->fd, 0, &done);
	store_batch(j.batch, DATA_VA, 0xfeedbeef);
	struct drm_xe_sync s = { .type = DRM_XE_SYNC_TYPE_SYNCOBJ, .flags = DRM_XE_SYNC_FLAG_SIGNAL,
				 .handle = done };
	int err = exec1(d->fd, j.queue, BATCH_VA, &s, 1);
	int w = err ? -1 : wait1(d->fd, done, 5000000000ll);
	CHECK(!err && !w && j.data[0] == 0xfeedbeef, "exec MI_STORE_DWORD_IMM signals a syncobj",
	      "exec %d wait %d data %x", err, w, j.data[0]);

	/* Timeline: point 1 after the next job; query reports it. */
	uint32_t tl = 0;
	drmSyncobjCreate(d->fd, 0, &tl);
	store_batch(j.batch, DATA_VA + 4, 0x7e1);
	struct drm_xe_sync ts = { .type = DRM_XE_SYNC_TYPE_TIMELINE_SYNCOBJ,
				  .flags = DRM_XE_SYNC_FLAG_SIGNAL, .handle = tl,
				  .timeline_value = 1 };
	err = exec1(d->fd, j.queue, BATCH_VA, &ts, 1);
	uint64_t point = 1;
	w = err ? -1 : drmSyncobjTimelineWait(d->fd, &tl, &point, 1, now_ns() + 5000000000ll, 0,
					      NULL);
	uint64_t q = 0;
	drmSyncobjQuery(d->fd, &tl, &q, 1);
	CHECK(!err && !w && q == 1 && j.data[1] == 0x7e1, "exec signals a timeline point",
	      "exec %d wait %d point %" PRIu64, err, w, q);

	/* A job writing into malloc'd memory bound as userptr. */
	uint32_t *mem = aligned_alloc(0x1000, 0x1000);
	memset(mem, 0, 0x1000);
	err = bind(d->fd, j.vm, DRM_XE_VM_BIND_OP_MAP_USERPTR, 0, (uintptr_t)mem, 0x300000, 0x1000,
		   0, NULL, 0);
	store_batch(j.batch, 0x300010, 0xabcd);
	s.handle = done;
	drmSyncobjReset(d->fd, &done, 1);
	uint32_t done2 = 0;
	drmSyncobjCreate(d->fd, 0, &done2);
	s.handle = done2;
	err = err ? err : exec1(d->fd, j.queue, BATCH_VA, &s, 1);
	w = err ? -1 : wait1(d->fd, done2, 5000000000ll);
	CHECK(!err && !w && mem[4] == 0xabcd, "exec writes userptr memory the CPU reads",
	      "err %d wait %d value %x", err, w, mem[4]);

	/* A spinner runs until the CPU ends it. */
	volatile uint32_t *vdata = j.data;
	vdata[10] = 0;
	vdata[16] = 1;
	spin_batch(j.batch, BATCH_VA, DATA_VA + 40, DATA_VA + 64);
	uint32_t spun = 0;
	drmSyncobjCreate(d->fd, 0, &spun);
	s.handle = spun;
	err = exec1(d->fd, j.queue, BATCH_VA, &s, 1);
	for (int i = 0; !err && i < 1000 && vdata[10] != 1; i++)
		usleep(1000);
	int still = err ? -1 : wait1(d->fd, spun, 50000000);
	vdata[16] = 0;
	w = err ? -1 : wait1(d->fd, spun, 5000000000ll);
	CHECK(!err && vdata[10] == 1 && still == ETIME && w == 0,
	      "a spinner runs until the CPU ends it", "exec %d started %u still %d end %d", err,
	      vdata[10], still, w);
	drmSyncobjDestroy(d->fd, spun);

	/* User fences: Xe writes them at CPU addresses. */
	struct drm_xe_sync uf = { .type = DRM_XE_SYNC_TYPE_USER_FENCE,
				  .flags = DRM_XE_SYNC_FLAG_SIGNAL,
				  .addr = (uintptr_t)&j.data[8], .timeline_value = 0x5eed };
	err = exec1(d->fd, j.queue, BATCH_VA, &uf, 1);
	CHECK(err == EOPNOTSUPP, "exec user fence at a CPU address: EOPNOTSUPP until gpud has it",
	      "errno %d", err);

	drmSyncobjDestroy(d->fd, done);
	drmSyncobjDestroy(d->fd, done2);
	drmSyncobjDestroy(d->fd, tl);
	job_teardown(d, &j);
}

static void test_syncobjs(struct dev *d)
{
	uint32_t a = 0, b = 0, c = 0;
	CHECK(drmSyncobjCreate(d->fd, DRM_SYNCOBJ_CREATE_SIGNALED, &a) == 0 && wait1(d->fd, a, 0) == 0,
	      "signalled syncobj waits at once", "errno %d", errno);
	drmSyncobjCreate(d->fd, 0, &b);
	int64_t t0 = now_ns();
	int err = wait1(d->fd, b, 30000000);
	CHECK(err == ETIME && now_ns() - t0 >= 25000000, "unsignalled wait times out with ETIME",
	      "err %d after %" PRId64 " ns", err, now_ns() - t0);
	err = drmSyncobjWait(d->fd, &b, 1, 0, DRM_SYNCOBJ_WAIT_FLAGS_WAIT_FOR_SUBMIT, NULL) ? errno : 0;
	CHECK(err == ETIME, "a past deadline polls", "err %d", err);
	err = drmSyncobjWait(d->fd, &b, 1, now_ns(), 0, NULL) ? errno : 0;
	CHECK(err == EINVAL, "waiting for a syncobj without a fence: EINVAL", "err %d", err);
	drmSyncobjSignal(d->fd, &b, 1);
	CHECK(wait1(d->fd, b, 0) == 0, "cpu signal", "errno %d", errno);
	uint32_t both[2] = { a, b }, first = 99;
	CHECK(drmSyncobjWait(d->fd, both, 2, now_ns(), DRM_SYNCOBJ_WAIT_FLAGS_WAIT_ALL, &first) == 0,
	      "wait all of two", "errno %d", errno);

	drmSyncobjCreate(d->fd, 0, &c);
	uint64_t pts[2] = { 1, 2 };
	uint32_t cc[2] = { c, c };
	CHECK(drmSyncobjTimelineSignal(d->fd, cc, pts, 2) == 0, "timeline signal 1 and 2", "%d",
	      errno);
	uint64_t q = 0;
	CHECK(drmSyncobjQuery(d->fd, &c, &q, 1) == 0 && q == 2, "query timeline", "%" PRIu64, q);
	CHECK(drmSyncobjTransfer(d->fd, c, 3, b, 0, 0) == 0 && drmSyncobjQuery(d->fd, &c, &q, 1) == 0 &&
		      q == 3,
	      "transfer binary to timeline point 3", "errno %d point %" PRIu64, errno, q);

	int sfd = -1;
	uint32_t imported = 0;
	CHECK(drmSyncobjHandleToFD(d->fd, c, &sfd) == 0 && sfd >= 0 &&
		      drmSyncobjFDToHandle(d->fd, sfd, &imported) == 0 &&
		      drmSyncobjQuery(d->fd, &imported, &q, 1) == 0 && q == 3,
	      "syncobj handle to fd and back", "errno %d", errno);
	close(sfd);
	err = drmSyncobjReset(d->fd, &b, 1) ? errno : 0;
	CHECK(err == EOPNOTSUPP, "reset: EOPNOTSUPP until gpud has it", "err %d", err);
	drmSyncobjDestroy(d->fd, a);
	drmSyncobjDestroy(d->fd, b);
	drmSyncobjDestroy(d->fd, c);
	drmSyncobjDestroy(d->fd, imported);
	struct drm_syncobj_destroy sd = { .handle = a };
	CHECK(xe_ioctl(d->fd, DRM_IOCTL_SYNCOBJ_DESTROY, &sd) == ENOENT, "destroy twice: ENOENT",
	      "errno %d", errno);
}

static void test_prime(struct dev *d)
{
	uint32_t bo = bo_create(d->fd, 0, 0x1000, d->sys_placement, DRM_XE_GEM_CPU_CACHING_WB);
	uint32_t *p = bo_map(d->fd, bo, 0x1000);
	if (p)
		p[3] = 0x9a11;
	int pfd = -1;
	CHECK(drmPrimeHandleToFD(d->fd, bo, DRM_CLOEXEC | DRM_RDWR, &pfd) == 0 && pfd >= 0,
	      "prime handle to fd", "errno %d", errno);
	int other = open("/dev/dri/renderD128", O_RDWR);
	uint32_t h2 = 0;
	CHECK(other >= 0 && drmPrimeFDToHandle(other, pfd, &h2) == 0 && h2 != 0,
	      "prime fd to handle on a second device fd", "errno %d", errno);
	uint32_t *p2 = h2 ? bo_map(other, h2, 0x1000) : NULL;
	CHECK(p2 && p2[3] == 0x9a11, "the imported BO is the same memory", "%x", p2 ? p2[3] : 0);
	if (p2)
		munmap(p2, 0x1000);
	if (p)
		munmap(p, 0x1000);
	close(pfd);
	close(other);
	struct drm_gem_close gc = { .handle = bo };
	xe_ioctl(d->fd, DRM_IOCTL_GEM_CLOSE, &gc);
}

static void test_invalid(struct dev *d)
{
	struct drm_xe_gem_create gc = { .size = 0x1000, .placement = d->sys_placement,
					.cpu_caching = DRM_XE_GEM_CPU_CACHING_WB };
	gc.pad[1] = 1;
	CHECK(xe_ioctl(d->fd, DRM_IOCTL_XE_GEM_CREATE, &gc) == EINVAL, "gem create pad: EINVAL",
	      "%d", errno);
	gc.pad[1] = 0;
	gc.flags = 1u << 20;
	CHECK(xe_ioctl(d->fd, DRM_IOCTL_XE_GEM_CREATE, &gc) == EINVAL,
	      "gem create unknown flag: EINVAL", "%d", errno);
	gc.flags = 0;
	gc.cpu_caching = 0;
	CHECK(xe_ioctl(d->fd, DRM_IOCTL_XE_GEM_CREATE, &gc) == EINVAL,
	      "gem create without caching mode: EINVAL", "%d", errno);
	gc.cpu_caching = DRM_XE_GEM_CPU_CACHING_WB;
	gc.size = 0x1800;
	CHECK(xe_ioctl(d->fd, DRM_IOCTL_XE_GEM_CREATE, &gc) == EINVAL,
	      "gem create unaligned size: EINVAL", "%d", errno);
	gc.size = 0x1000;
	gc.reserved[0] = 1;
	CHECK(xe_ioctl(d->fd, DRM_IOCTL_XE_GEM_CREATE, &gc) == EINVAL,
	      "gem create reserved: EINVAL", "%d", errno);
	if (d->vram_placement) {
		struct drm_xe_gem_create v = { .size = 0x1000, .placement = d->vram_placement,
					       .cpu_caching = DRM_XE_GEM_CPU_CACHING_WB };
		CHECK(xe_ioctl(d->fd, DRM_IOCTL_XE_GEM_CREATE, &v) == EINVAL,
		      "gem create vram with WB caching: EINVAL", "%d", errno);
	}
	struct drm_xe_vm_create vc = { .flags = DRM_XE_VM_CREATE_FLAG_FAULT_MODE };
	CHECK(xe_ioctl(d->fd, DRM_IOCTL_XE_VM_CREATE, &vc) == EINVAL,
	      "vm create fault mode without LR: EINVAL", "%d", errno);
	vc.flags = 1u << 9;
	CHECK(xe_ioctl(d->fd, DRM_IOCTL_XE_VM_CREATE, &vc) == EINVAL,
	      "vm create unknown flag: EINVAL", "%d", errno);
	vc.flags = 0;
	vc.extensions = 0x1000;
	CHECK(xe_ioctl(d->fd, DRM_IOCTL_XE_VM_CREATE, &vc) == EINVAL,
	      "vm create extension: EINVAL", "%d", errno);
	vc.extensions = 0;
	xe_ioctl(d->fd, DRM_IOCTL_XE_VM_CREATE, &vc);
	uint32_t vm = vc.vm_id;
	uint32_t bo = bo_create(d->fd, 0, 0x2000, d->sys_placement, DRM_XE_GEM_CPU_CACHING_WB);

	CHECK(bind(d->fd, vm, DRM_XE_VM_BIND_OP_MAP, bo, 0, 0x100800, 0x1000, 0, NULL, 0) == EINVAL,
	      "bind unaligned address: EINVAL", "%d", errno);
	CHECK(bind(d->fd, vm, 7, bo, 0, 0x100000, 0x1000, 0, NULL, 0) == EINVAL,
	      "bind unknown op: EINVAL", "%d", errno);
	CHECK(bind(d->fd, vm, DRM_XE_VM_BIND_OP_MAP, bo, 0, 0x100000, 0x1000, 1u << 12, NULL, 0) ==
		      EINVAL,
	      "bind unknown flag: EINVAL", "%d", errno);
	CHECK(bind(d->fd, vm, DRM_XE_VM_BIND_OP_MAP, bo, 0, 0x100000, 0x1000,
		   DRM_XE_VM_BIND_FLAG_NULL, NULL, 0) == EINVAL,
	      "bind null with a BO: EINVAL", "%d", errno);
	CHECK(bind(d->fd, vm, DRM_XE_VM_BIND_OP_MAP, bo, 0, 0x100000, 0, 0, NULL, 0) == EINVAL,
	      "bind empty range: EINVAL", "%d", errno);
	CHECK(bind(d->fd, vm, DRM_XE_VM_BIND_OP_UNMAP, bo, 0, 0x100000, 0x1000, 0, NULL, 0) ==
		      EINVAL,
	      "unmap naming a BO: EINVAL", "%d", errno);
	struct drm_xe_vm_bind b = { .vm_id = vm, .num_binds = 1, .reserved = { 1 },
				    .bind = { .obj = bo, .addr = 0x100000, .range = 0x1000 } };
	CHECK(xe_ioctl(d->fd, DRM_IOCTL_XE_VM_BIND, &b) == EINVAL, "bind reserved: EINVAL", "%d",
	      errno);
	b.reserved[0] = 0;
	b.bind.pat_index = 31;
	CHECK(xe_ioctl(d->fd, DRM_IOCTL_XE_VM_BIND, &b) == EINVAL, "bind pat index 31: EINVAL",
	      "%d", errno);
	b.bind.pat_index = 0;
	struct drm_xe_sync s = { .type = DRM_XE_SYNC_TYPE_SYNCOBJ, .flags = 1u << 4 };
	b.num_syncs = 1;
	b.syncs = (uintptr_t)&s;
	CHECK(xe_ioctl(d->fd, DRM_IOCTL_XE_VM_BIND, &b) == EINVAL, "sync unknown flag: EINVAL",
	      "%d", errno);
	s.flags = 0;
	s.type = DRM_XE_SYNC_TYPE_USER_FENCE;
	s.addr = 0x1000;
	CHECK(xe_ioctl(d->fd, DRM_IOCTL_XE_VM_BIND, &b) == EOPNOTSUPP,
	      "user fence that waits: EOPNOTSUPP", "%d", errno);
	s.type = 9;
	CHECK(xe_ioctl(d->fd, DRM_IOCTL_XE_VM_BIND, &b) == EINVAL, "sync unknown type: EINVAL",
	      "%d", errno);
	b.syncs = 8;
	CHECK(xe_ioctl(d->fd, DRM_IOCTL_XE_VM_BIND, &b) == EFAULT, "syncs at a bad pointer: EFAULT",
	      "%d", errno);

	struct drm_xe_engine_class_instance eci = { .engine_class = DRM_XE_ENGINE_CLASS_COPY,
						    .engine_instance = 5 };
	struct drm_xe_exec_queue_create qc = { .width = 1, .num_placements = 1, .vm_id = vm,
					       .instances = (uintptr_t)&eci };
	CHECK(xe_ioctl(d->fd, DRM_IOCTL_XE_EXEC_QUEUE_CREATE, &qc) == EINVAL,
	      "exec queue on a missing engine instance: EINVAL", "%d", errno);
	eci.engine_instance = 0;
	qc.width = 0;
	CHECK(xe_ioctl(d->fd, DRM_IOCTL_XE_EXEC_QUEUE_CREATE, &qc) == EINVAL,
	      "exec queue of width 0: EINVAL", "%d", errno);
	qc.width = 1;
	uint32_t q = xe_ioctl(d->fd, DRM_IOCTL_XE_EXEC_QUEUE_CREATE, &qc) ? 0 : qc.exec_queue_id;
	struct drm_xe_exec e = { .exec_queue_id = q, .num_batch_buffer = 2, .address = 0x100000 };
	CHECK(xe_ioctl(d->fd, DRM_IOCTL_XE_EXEC, &e) == EINVAL, "exec of 2 batches on width 1: EINVAL",
	      "%d", errno);
	e.num_batch_buffer = 1;
	e.pad[0] = 1;
	CHECK(xe_ioctl(d->fd, DRM_IOCTL_XE_EXEC, &e) == EINVAL, "exec pad: EINVAL", "%d", errno);

	struct drm_xe_device_query dq = { .query = 77 };
	CHECK(xe_ioctl(d->fd, DRM_IOCTL_XE_DEVICE_QUERY, &dq) == EINVAL,
	      "query unknown: EINVAL", "%d", errno);
	dq.query = DRM_XE_DEVICE_QUERY_CONFIG;
	dq.size = 8;
	dq.data = 0x1000;
	CHECK(xe_ioctl(d->fd, DRM_IOCTL_XE_DEVICE_QUERY, &dq) == EINVAL,
	      "query with the wrong size: EINVAL", "%d", errno);
	uint64_t buf[16];
	dq.size = 0;
	xe_ioctl(d->fd, DRM_IOCTL_XE_DEVICE_QUERY, &dq);
	dq.data = 16;
	CHECK(xe_ioctl(d->fd, DRM_IOCTL_XE_DEVICE_QUERY, &dq) == EFAULT,
	      "query into a bad pointer: EFAULT", "%d", errno);
	(void)buf;
	struct drm_xe_wait_user_fence wf = { .addr = 0x1001, .op = DRM_XE_UFENCE_WAIT_OP_EQ };
	CHECK(xe_ioctl(d->fd, DRM_IOCTL_XE_WAIT_USER_FENCE, &wf) == EINVAL,
	      "wait user fence unaligned: EINVAL", "%d", errno);
	struct drm_syncobj_create sc = { .flags = 1u << 5 };
	CHECK(xe_ioctl(d->fd, DRM_IOCTL_SYNCOBJ_CREATE, &sc) == EINVAL,
	      "syncobj create unknown flag: EINVAL", "%d", errno);
	CHECK(xe_ioctl(d->fd, DRM_IO(DRM_COMMAND_BASE + 0x3f), NULL) == EINVAL,
	      "unknown driver ioctl: EINVAL", "%d", errno);

	struct drm_xe_exec_queue_destroy qd = { .exec_queue_id = q };
	xe_ioctl(d->fd, DRM_IOCTL_XE_EXEC_QUEUE_DESTROY, &qd);
	struct drm_gem_close gcl = { .handle = bo };
	xe_ioctl(d->fd, DRM_IOCTL_GEM_CLOSE, &gcl);
	struct drm_xe_vm_destroy vd = { .vm_id = vm };
	xe_ioctl(d->fd, DRM_IOCTL_XE_VM_DESTROY, &vd);
}

int main(void)
{
	test_open();
	struct dev d = { 0 };
	d.fd = open("/dev/dri/card0", O_RDWR);
	if (d.fd < 0) {
		printf("FAIL - open: errno %d\n", errno);
		return 1;
	}
	test_queries(&d);
	test_bo(&d);
	test_binds(&d);
	test_exec(&d);
	test_syncobjs(&d);
	test_prime(&d);
	test_invalid(&d);
	close(d.fd);
	printf("xe_basic: %d failures\n", failures);
	return failures;
}
