//! Exec queues created with INTEL_BATCHES run Intel MI_* batches (docs/simgpu.md §6a), end
//! to end: a client process creates the queue through libgpu, writes batches in Intel's
//! encoding into a BO, executes them over the scheme and reads the results back by mmap.

use gpu_tests::{client_process, read_u32, sys_bo};
use libgpu::errno::*;
use libgpu::flags::{BatchFormat, EngineClass, VmCreateFlags};
use libgpu::{Bo, BoMap, Device, ExecQueue, QueueOptions, Syncobj, Timeout, Vm};
use std::time::{Duration, Instant};

const DATA_VA: u64 = 0x10_0000;
const BATCH_VA: u64 = 0x20_0000;
const PAGE: u64 = 0x1000;

/// MI_STORE_DWORD_IMM_GEN4: `[hdr, addr lo, addr hi, value]`.
const MI_STORE_DWORD_IMM: u32 = 0x1000_0002;
/// MI_STORE_QWORD_IMM_GEN8: `[hdr, addr lo, addr hi, value lo, value hi]`.
const MI_STORE_QWORD_IMM: u32 = 0x1020_0003;
const MI_BATCH_BUFFER_END: u32 = 0x0500_0000;

/// A VM with a data BO at `DATA_VA`, a batch BO at `BATCH_VA` and a copy queue whose batches
/// are `batches`.
struct Rig {
    vm: Vm,
    queue: ExecQueue,
    data: Bo,
    batch: BoMap,
    _batch_bo: Bo,
    done: Syncobj,
}

impl Rig {
    fn new(dev: &Device, batches: BatchFormat) -> Self {
        let vm = Vm::create(dev, VmCreateFlags::empty()).expect("vm");
        let data = sys_bo(dev, PAGE);
        let batch_bo = sys_bo(dev, PAGE);
        vm.bind()
            .map(&data, 0, DATA_VA, PAGE)
            .map(&batch_bo, 0, BATCH_VA, PAGE)
            .submit()
            .expect("bind");
        let options = QueueOptions {
            batches,
            ..QueueOptions::default()
        };
        let queue = ExecQueue::create_with(&vm, EngineClass::Copy, options).expect("queue");
        Self {
            batch: batch_bo.mmap().expect("batch mmap"),
            done: Syncobj::create(dev, false).expect("syncobj"),
            vm,
            queue,
            data,
            _batch_bo: batch_bo,
        }
    }

    /// Runs `dwords` as the batch: the wait's result (an error if the job failed).
    fn run(&self, dwords: &[u32]) -> libgpu::Result<bool> {
        self.batch.write_dwords(0, dwords).expect("batch fits");
        self.queue.exec(BATCH_VA).signal(&self.done).submit()?;
        self.done.wait(Timeout::Forever)
    }
}

fn split(va: u64) -> [u32; 2] {
    [va as u32, (va >> 32) as u32]
}

/// What IGT's xe_exec_basic puts in a batch: a dword store, then the end.
fn store_batch() -> Vec<u32> {
    let [lo, hi] = split(DATA_VA);
    let [qlo, qhi] = split(DATA_VA + 8);
    vec![
        MI_STORE_DWORD_IMM,
        lo,
        hi,
        0xC0FFEE,
        MI_STORE_QWORD_IMM,
        qlo,
        qhi,
        0x1111_2222,
        0x3333_4444,
        MI_BATCH_BUFFER_END,
    ]
}

#[test]
fn an_intel_queue_runs_intel_stores() {
    client_process("an_intel_queue_runs_intel_stores", |dev| {
        let rig = Rig::new(dev, BatchFormat::Intel);
        assert!(rig.run(&store_batch()).expect("intel batch runs"));
        assert_eq!(read_u32(&rig.data, 0), 0xC0FFEE);
        assert_eq!(read_u32(&rig.data, 8), 0x1111_2222);
        assert_eq!(read_u32(&rig.data, 12), 0x3333_4444);
        // The same dwords on a native queue are simgpu commands: 0x10000002 reads as a
        // STORE_QWORD with a bad length, an illegal command: nothing is stored and the
        // context's error bans the queue.
        let native = Rig::new(dev, BatchFormat::Native);
        let _ = native.run(&store_batch());
        assert_eq!(
            read_u32(&native.data, 0),
            0,
            "native queue ran Intel dwords"
        );
        assert!(
            native.run(&[MI_BATCH_BUFFER_END]).is_err(),
            "no context error"
        );
        drop(native.vm);
    });
}

#[test]
fn a_bind_queue_takes_no_intel_batches() {
    client_process("a_bind_queue_takes_no_intel_batches", |dev| {
        let vm = Vm::create(dev, VmCreateFlags::empty()).expect("vm");
        let options = QueueOptions {
            batches: BatchFormat::Intel,
            ..QueueOptions::default()
        };
        let err = ExecQueue::create_with(&vm, EngineClass::VmBind, options).unwrap_err();
        assert_eq!(err.errno(), EINVAL);
        ExecQueue::create_with(&vm, EngineClass::Compute, options).expect("compute queue");
    });
}

/// IGT's xe_spin: store 0xc0ffee at `DATA_VA`, then loop { MI_ARB_CHECK; end the batch
/// unless the dword at `DATA_VA + 8` > 0; MI_BATCH_BUFFER_START back to the loop }.
fn spinner() -> Vec<u32> {
    let [slo, shi] = split(DATA_VA);
    let [elo, ehi] = split(DATA_VA + 8);
    let [llo, lhi] = split(BATCH_VA + 16);
    vec![
        MI_STORE_DWORD_IMM,
        slo,
        shi,
        0xC0FFEE,
        0x0280_0000, // MI_ARB_CHECK
        0x1B20_0002, // MI_COND_BATCH_BUFFER_END | MI_DO_COMPARE, 4 dwords
        0,
        elo,
        ehi,
        0x1880_0101, // MI_BATCH_BUFFER_START | PPGTT, 3 dwords
        llo,
        lhi,
    ]
}

#[test]
fn an_intel_spinner_ends_when_the_cpu_writes_its_end_dword() {
    client_process(
        "an_intel_spinner_ends_when_the_cpu_writes_its_end_dword",
        |dev| {
            let rig = Rig::new(dev, BatchFormat::Intel);
            let data = rig.data.mmap().expect("data mmap");
            data.write_dwords(8, &[0xFFFF_FFFF]).expect("end dword");
            rig.batch.write_dwords(0, &spinner()).expect("batch fits");
            rig.queue
                .exec(BATCH_VA)
                .signal(&rig.done)
                .submit()
                .expect("exec");
            let started = Instant::now();
            while data.read_u32(0).expect("start dword") != 0xC0FFEE {
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "spinner never started"
                );
                std::thread::yield_now();
            }
            // Spinning: not done after a while (far below the 5 s job timeout).
            assert!(!rig.done.wait(Timeout::Relative(50_000_000)).expect("wait"));
            data.write_dwords(8, &[0]).expect("end dword");
            assert!(
                rig.done.wait(Timeout::Forever).expect("wait"),
                "spinner ended"
            );
            // The queue is healthy: it runs the next batch.
            assert!(rig.run(&store_batch()).expect("next batch"));
            assert_eq!(read_u32(&rig.data, 0), 0xC0FFEE);
        },
    );
}
