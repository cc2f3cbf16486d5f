//! The live fuzzer: several client processes issue random sequences of every call against one
//! daemon while a referee SIGKILLs them at random points and starts new ones.
//!
//! Each client process has two connections. On the *raw* one it sends random wire requests of
//! every kind (small ids, so that many name live objects; addresses, sizes, flags, syncs and
//! timeouts drawn to hit both valid and invalid cases) and checks that every answer is success
//! or a documented errno. On the *good* one it does valid work through libgpu — VMs, BOs,
//! binds, async binds on a timeline pipelined with execs, GPU stores read back through mmap,
//! exec and bind queue churn, export and import — and checks that every result is right: the
//! only errors allowed there are the resource limits others can cause (ENOSPC, ENOMEM, EBUSY).
//!
//! After the run the referee kills every client still running and checks the daemon: it
//! answers, a bystander client's data is intact and its GPU work still runs, and device memory,
//! the client table, the daemon's threads and its file descriptors are back to their baseline.
//! It prints the calls made. `LIVE_FUZZ_SECONDS` (default 4), `LIVE_FUZZ_CLIENTS` (default 3)
//! and `LIVE_FUZZ_SEED` (default: from the clock; printed) run it longer or replay a run.

use gpu_scheme::uapi::flags::*;
use gpu_scheme::uapi::*;
use gpu_tests::{
    bystander, raw_errno, read_u32, spawn_client, stat, sys_bo, Daemon, BATCH_VA, CHILD_ENV,
};
use libgpu::cmd::Batch;
use libgpu::errno::*;
use libgpu::{Bo, Device, ExecQueue, Syncobj, Timeout as Wait, Vm};
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TEST: &str = "random_clients_killed_at_random_points_leave_the_daemon_sound";
const SEED_ENV: &str = "LIVE_FUZZ_CHILD_SEED";
const UNTIL_ENV: &str = "LIVE_FUZZ_CHILD_MS";

/// Errnos the daemon documents (docs/uapi.md); any other answer is a bug.
const DOCUMENTED: [i32; 16] = [
    EINVAL,
    ENOENT,
    EBADF,
    EBUSY,
    ENOSPC,
    ENOMEM,
    EOPNOTSUPP,
    ETIME,
    EWOULDBLOCK,
    E2BIG,
    ENOTTY,
    EMFILE,
    EIO,
    ECANCELED,
    EFAULT,
    EINTR,
];

/// Errors valid work may meet because other clients hold memory or queues.
const LIMITS: [i32; 3] = [ENOSPC, ENOMEM, EBUSY];

/// xorshift64*: deterministic per seed, enough to pick actions.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }
}

fn errno(e: &libgpu::Error) -> i32 {
    e.errno()
}

fn random_sync(r: &mut Rng, signal_only: bool) -> SyncSpec {
    let obj = SyncobjId(r.below(6) as u32);
    let kind = match r.below(3) {
        0 => SyncKind::Syncobj(obj),
        1 => SyncKind::Timeline(obj, 1 + r.below(4)),
        _ => SyncKind::UserFence {
            addr: r.pick(&[0x10_0000u64, 0x10_0008, BATCH_VA + 0x800, 0x7fff_f000]),
            value: r.next(),
        },
    };
    let signal = signal_only || matches!(kind, SyncKind::UserFence { .. }) || r.below(2) == 0;
    SyncSpec { kind, signal }
}

fn random_timeout(r: &mut Rng) -> Timeout {
    match r.below(3) {
        0 => Timeout::Poll,
        1 => Timeout::Relative(r.below(5_000_000)),
        // Deadlines on the device clock a client cannot know: small ones, mostly passed.
        _ => Timeout::Absolute(r.below(1 << 24)),
    }
}

/// One random request of any kind over small ids.
fn random_request(r: &mut Rng) -> Request {
    let id = |r: &mut Rng| r.below(8) as u32;
    let addr = |r: &mut Rng| {
        r.pick(&[
            0x10_0000u64,
            0x10_1000,
            0x20_0000,
            BATCH_VA,
            0xffff_0000_0000,
            0x1000_0000_0000,
        ])
    };
    let pages = |r: &mut Rng| r.pick(&[1u64, 2, 16, 512]);
    match r.below(19) {
        0 => Request::DeviceQuery,
        1 => Request::VmCreate(VmCreateFlags::from_bits_retain(r.below(16) as u32)),
        2 => Request::VmDestroy(VmId(id(r))),
        3 => Request::BoCreate(BoCreateRequest {
            size: r.pick(&[0x1000u64, 0x10000, 0x20_0000, 0x300_0000]),
            placement: Placement::from_bits_retain(r.below(4) as u32),
            flags: BoCreateFlags::from_bits_retain(r.below(4) as u32),
            vm: (r.below(3) == 0).then(|| VmId(id(r))),
        }),
        4 => Request::BoDestroy(BoId(id(r))),
        5 => Request::ExecQueueCreate {
            vm: VmId(id(r)),
            class: r.pick(&[EngineClass::Copy, EngineClass::Compute, EngineClass::VmBind]),
            priority: r.pick(&[
                QueuePriority::Low,
                QueuePriority::Normal,
                QueuePriority::High,
            ]),
            batches: r.pick(&[BatchFormat::Native, BatchFormat::Intel]),
        },
        6 => Request::ExecQueueDestroy(QueueId(id(r))),
        7 | 8 => {
            let n = 1 + r.below(3);
            let ops = (0..n)
                .map(|_| {
                    let kind = match r.below(4) {
                        0 | 1 => BindOpKind::Map {
                            bo: BoId(id(r)),
                            bo_offset: r.pick(&[0u64, 0x1000]),
                        },
                        2 => BindOpKind::MapNull,
                        _ => BindOpKind::Unmap,
                    };
                    BindOp {
                        kind,
                        addr: addr(r),
                        range: pages(r) * 0x1000,
                        flags: BindFlags::from_bits_retain(r.below(4) as u32 & 0x3),
                        pat_index: r.below(5) as u16,
                    }
                })
                .collect();
            let syncs = (0..r.below(3)).map(|_| random_sync(r, false)).collect();
            Request::VmBind(VmBindRequest {
                vm: VmId(id(r)),
                queue: (r.below(3) == 0).then(|| QueueId(id(r))),
                ops,
                syncs,
            })
        }
        9 => Request::Exec(ExecRequest {
            queue: QueueId(id(r)),
            batches: vec![r.pick(&[BATCH_VA, 0x10_0000, 0xdead_0000])],
            syncs: (0..r.below(3)).map(|_| random_sync(r, false)).collect(),
        }),
        10 => Request::WaitUserFence(WaitUserFenceRequest {
            vm: VmId(id(r)),
            queue: None,
            addr: addr(r) + 8 * r.below(2),
            op: r.pick(&[WaitOp::Eq, WaitOp::Neq]),
            value: r.below(3),
            mask: u64::MAX,
            timeout: random_timeout(r),
        }),
        11 => Request::SyncobjCreate {
            signaled: r.below(2) == 0,
        },
        12 => Request::SyncobjDestroy(SyncobjId(id(r))),
        13 => Request::SyncobjWait(SyncobjWaitRequest {
            points: (0..1 + r.below(3))
                .map(|_| SyncobjPoint {
                    syncobj: SyncobjId(id(r)),
                    point: r.below(4),
                })
                .collect(),
            flags: SyncobjWaitFlags::from_bits_retain(r.below(4) as u32),
            timeout: random_timeout(r),
        }),
        14 => Request::SyncobjSignal(
            (0..1 + r.below(3))
                .map(|_| SyncobjPoint {
                    syncobj: SyncobjId(id(r)),
                    point: r.below(1000),
                })
                .collect(),
        ),
        15 => Request::SyncobjQuery(SyncobjId(id(r))),
        16 => Request::SyncobjTransfer(SyncobjTransferRequest {
            src: SyncobjPoint {
                syncobj: SyncobjId(id(r)),
                point: r.below(4),
            },
            dst: SyncobjPoint {
                syncobj: SyncobjId(id(r)),
                point: r.below(4),
            },
            wait_for_submit: r.below(2) == 0,
        }),
        17 => Request::ExportToken,
        _ => Request::Import {
            kind: r.pick(&[ObjectKind::Bo, ObjectKind::Syncobj]),
            token: Some(Token([r.next(), r.next()])),
        },
    }
}

/// `Ok(Some(v))`, `Ok(None)` when a limit others can cause refused it; any other error fails.
fn allowed<T>(what: &str, res: libgpu::Result<T>) -> Option<T> {
    match res {
        Ok(v) => Some(v),
        Err(e) if LIMITS.contains(&errno(&e)) => None,
        Err(e) => panic!("valid {what} failed: {e}"),
    }
}

/// Valid work on the good connection; every result that comes back must be right.
fn good_step(dev: &Device, r: &mut Rng, peer: &Device) -> Option<()> {
    let vm = allowed("VM_CREATE", Vm::create(dev, VmCreateFlags::empty()))?;
    let batch = allowed(
        "batch BO",
        Bo::create(dev, 0x1000, Placement::SYSTEM, BoCreateFlags::empty()),
    )?;
    let placement = r.pick(&[
        Placement::SYSTEM,
        Placement::VRAM,
        Placement::SYSTEM | Placement::VRAM,
    ]);
    let target = allowed(
        "target BO",
        Bo::create(dev, 0x4000, placement, BoCreateFlags::empty()),
    )?;
    allowed(
        "batch bind",
        vm.bind().map(&batch, 0, BATCH_VA, 0x1000).submit(),
    )?;
    let queue = allowed(
        "queue",
        ExecQueue::create(&vm, r.pick(&[EngineClass::Copy, EngineClass::Compute])),
    )?;
    let tl = allowed("timeline", Syncobj::create(dev, false))?;
    let value = r.next() as u32 | 1;
    let va = 0x10_0000 + 0x10_0000 * r.below(4);
    let mut b = Batch::new();
    b.store_dword(va, value);
    b.store_dword(va + 0x3ffc, !value);
    b.batch_end();
    batch
        .mmap()
        .ok()?
        .write_dwords(0, b.dwords())
        .expect("batch fits");
    let mut bind_queue = None;
    let async_path = r.below(2) == 0;
    if async_path {
        // Async bind on a bind queue, exec waiting on its timeline point.
        let bq = allowed("bind queue", ExecQueue::create(&vm, EngineClass::VmBind))?;
        allowed(
            "async bind",
            vm.bind()
                .queue(&bq)
                .map(&target, 0, va, 0x4000)
                .signal_point(&tl, 1)
                .submit(),
        )?;
        allowed(
            "exec",
            queue
                .exec(BATCH_VA)
                .wait_point(&tl, 1)
                .signal_point(&tl, 2)
                .submit(),
        )?;
        // Destroyed only once its work is done: destroying a queue cancels the jobs it still
        // holds, and a cancelled bind bans its VM (docs/bind.md).
        bind_queue = Some(bq);
    } else {
        allowed("bind", vm.bind().map(&target, 0, va, 0x4000).submit())?;
        allowed("exec", queue.exec(BATCH_VA).signal_point(&tl, 2).submit())?;
    }
    let done = allowed("wait", tl.wait_point(2, Wait::Relative(20_000_000_000)))?;
    assert!(done, "the store batch finished within 20 s");
    if let Some(bq) = bind_queue {
        allowed("bind queue destroy", bq.destroy())?;
    }
    if r.below(3) == 0 {
        // The other connection of this process imports the BO and must see the GPU's data.
        let exported = allowed("export", target.export())?;
        let imported = allowed("import", Bo::import(peer, exported.token()))?;
        assert_eq!(
            read_u32(&imported, 0),
            value,
            "imported BO shows the GPU write"
        );
    }
    let map = allowed("mmap", target.mmap())?;
    let got = map.read_u32(0).expect("in range");
    if got != value {
        // What a failure needs to be understood: whether the queue was banned (a second
        // exec then fails) and the process id the daemon's log names the client by.
        let again = queue.exec(BATCH_VA).signal_point(&tl, 3).submit();
        panic!(
            "GPU store of {value:#x} at {va:#x} did not land (read {got:#x}): async bind \
             {async_path}, placement {placement:?}, a second exec on the queue: {again:?}, \
             client pid {}",
            std::process::id(),
        );
    }
    assert_eq!(
        map.read_u32(0x3ffc).expect("in range"),
        !value,
        "second page"
    );
    if r.below(2) == 0 {
        allowed("queue destroy", queue.destroy())?;
        allowed("vm destroy", vm.destroy())?;
    }
    Some(())
}

/// A client process: random raw calls and checked valid work until its time is up.
fn child(socket: &str) {
    let seed: u64 = std::env::var(SEED_ENV)
        .expect("seed")
        .parse()
        .expect("seed");
    let ms: u64 = std::env::var(UNTIL_ENV)
        .expect("time")
        .parse()
        .expect("time");
    let until = Instant::now() + Duration::from_millis(ms);
    let mut raw = Device::open_at(std::path::Path::new(socket)).expect("raw connection");
    let good = Device::open_at(std::path::Path::new(socket)).expect("good connection");
    let mut r = Rng(seed | 1);
    let (mut calls, mut sequences) = (0u64, 0u64);
    println!("ready");
    while Instant::now() < until {
        if r.below(4) == 0 {
            let _ = good_step(&good, &mut r, &raw);
            sequences += 1;
        } else {
            for _ in 0..8 {
                let req = random_request(&mut r);
                if let Err(e) = raw_errno(&raw, &req) {
                    assert!(
                        DOCUMENTED.contains(&e),
                        "undocumented errno {e} for {req:?}"
                    );
                }
                calls += 1;
            }
        }
        if r.below(16) == 0 {
            // Churn the raw connection: the daemon releases everything on the old one.
            raw = Device::open_at(std::path::Path::new(socket)).expect("new raw connection");
        }
        println!("calls {calls} {sequences}");
    }
}

/// Threads and open file descriptors of this (the daemon's) process.
fn process_counts() -> (usize, usize) {
    let count = |dir: &str| std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
    (count("/proc/self/task"), count("/proc/self/fd"))
}

/// Waits up to `grace` for `c` to finish on its own, then SIGKILLs it. A client that exited
/// by itself must have passed every check (exit 0); a killed one has no verdict.
fn reap(c: &mut Client, grace: Duration, seed: u64) -> bool {
    let deadline = Instant::now() + grace;
    loop {
        if let Some(status) = c.child.try_wait().expect("try_wait") {
            assert!(
                status.success(),
                "a client found a bug: {status} (seed {seed})"
            );
            return true;
        }
        if Instant::now() >= deadline {
            c.child.kill().expect("SIGKILL");
            let status = c.child.wait().expect("wait");
            // It may have exited between the check and the kill.
            assert!(
                status.success() || status.code().is_none(),
                "a client found a bug: {status} (seed {seed})"
            );
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

struct Client {
    child: Child,
}

fn spawn(socket: &std::path::Path, seed: u64, ms: u64, total: &Arc<[AtomicU64; 2]>) -> Client {
    let mut child = spawn_client(TEST, socket)
        .env(SEED_ENV, seed.to_string())
        .env(UNTIL_ENV, ms.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn a client");
    let out = child.stdout.take().expect("stdout");
    let total = total.clone();
    std::thread::spawn(move || {
        let mut last = [0u64; 2];
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let Some(counts) = line.strip_prefix("calls ") else {
                continue;
            };
            let mut n = counts.split(' ').filter_map(|n| n.parse::<u64>().ok());
            if let (Some(calls), Some(sequences)) = (n.next(), n.next()) {
                total[0].fetch_add(calls - last[0], Ordering::Relaxed);
                total[1].fetch_add(sequences - last[1], Ordering::Relaxed);
                last = [calls, sequences];
            }
        }
    });
    Client { child }
}

#[test]
fn random_clients_killed_at_random_points_leave_the_daemon_sound() {
    if let Ok(sock) = std::env::var(CHILD_ENV) {
        child(&sock);
        return;
    }
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let seconds = env("LIVE_FUZZ_SECONDS", 4);
    let clients = env("LIVE_FUZZ_CLIENTS", 3).max(1) as usize;
    let seed = env(
        "LIVE_FUZZ_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    );
    println!("live fuzz: seed {seed} (LIVE_FUZZ_SEED replays), {clients} clients, {seconds} s");
    let mut r = Rng(seed | 1);
    if std::env::var("LIVE_FUZZ_LOG").is_ok() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("debug")
            .with_writer(std::io::stderr)
            .try_init();
    }
    let d = Daemon::start();
    let watcher = d.device();
    let (g, mine) = bystander(&watcher);
    // The bystander's check, also run once before the baseline: its first mmap and wait
    // open handles of their own in this process, which the baseline must include.
    let checkup = |before: u32, after: u32| {
        assert!(watcher.query().is_ok(), "the daemon answers");
        assert_eq!(read_u32(&mine, 0), before, "bystander data intact");
        g.store(&[(0x10_0000, after)]);
        assert_eq!(read_u32(&mine, 0), after, "bystander GPU work runs");
    };
    g.store(&[(0x10_0000, 0x5AFE_0001)]);
    checkup(0x5AFE_0001, 0x5AFE_0002);
    // Warm up once (lazily started pools), so that the baseline is the steady state.
    let total = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let mut warm = spawn(d.socket(), r.next(), 300, &total);
    reap(&mut warm, Duration::from_secs(10), seed);
    let free = |dev: &Device| {
        let i = dev.query().expect("query");
        (i.sys_free, i.vram_free)
    };
    let settle = |what: &str, ok: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        ok() || panic!("{what} not back to baseline within 30 s")
    };
    settle("the warm-up client", &|| {
        stat(&watcher.stats().expect("stats"), "device-clients") == Some(1)
    });
    let baseline = free(&watcher);
    let (threads0, fds0) = process_counts();

    let end = Instant::now() + Duration::from_secs(seconds);
    let mut running: Vec<Client> = Vec::new();
    let (mut killed, mut finished) = (0u64, 0u64);
    while Instant::now() < end {
        while running.len() < clients {
            let ms = 200 + r.below(1500);
            running.push(spawn(d.socket(), r.next(), ms, &total));
        }
        std::thread::sleep(Duration::from_millis(50 + r.below(250)));
        // Reap clients that finished on their own: they must have passed every check.
        let mut i = 0;
        while i < running.len() {
            if running[i].child.try_wait().expect("try_wait").is_some() {
                let mut c = running.swap_remove(i);
                reap(&mut c, Duration::ZERO, seed);
                finished += 1;
            } else {
                i += 1;
            }
        }
        // SIGKILL one at a random point of its work.
        if !running.is_empty() && r.below(2) == 0 {
            let i = r.below(running.len() as u64) as usize;
            let mut c = running.swap_remove(i);
            if reap(&mut c, Duration::ZERO, seed) {
                finished += 1;
            } else {
                killed += 1;
            }
        }
    }
    for mut c in running.drain(..) {
        if reap(&mut c, Duration::ZERO, seed) {
            finished += 1;
        } else {
            killed += 1;
        }
    }
    println!(
        "live fuzz: {} random calls and {} checked valid sequences from {} clients \
         ({finished} finished, {killed} killed)",
        total[0].load(Ordering::Relaxed),
        total[1].load(Ordering::Relaxed),
        finished + killed
    );
    assert!(
        total[0].load(Ordering::Relaxed) > 0 && total[1].load(Ordering::Relaxed) > 0,
        "the clients made calls"
    );

    // The daemon answers, the bystander is intact, everything is back to baseline.
    checkup(0x5AFE_0002, 0x5AFE_0003);
    settle("device memory", &|| free(&watcher) == baseline);
    settle("the client table", &|| {
        let s = watcher.stats().expect("stats");
        stat(&s, "device-clients") == Some(1) && stat(&s, "clients") == Some(1)
    });
    settle("the daemon's threads and fds", &|| {
        let (t, f) = process_counts();
        t <= threads0 && f <= fds0
    });
    // A fresh client works normally.
    let fresh = d.device();
    let g2 = gpu_tests::Gpu::new(&fresh, VmCreateFlags::empty());
    let bo = sys_bo(&fresh, 0x1000);
    g2.vm
        .bind()
        .map(&bo, 0, 0x10_0000, 0x1000)
        .submit()
        .expect("bind");
    g2.store(&[(0x10_0000, 77)]);
    assert_eq!(read_u32(&bo, 0), 77);
}
