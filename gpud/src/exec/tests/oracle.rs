//! Property test: the scheduler against a dependency-graph oracle. Random jobs on random
//! queues of both engines depend on earlier jobs and on CPU gates, some of which fail. The
//! oracle says a job fails exactly when one of its dependencies (transitively) failed; the
//! test also checks that every job signalled after its dependencies, that each queue's fences
//! signalled in seqno order, and that exactly the successful jobs' payloads ran.

use super::harness::*;
use crate::exec::{ExecQueue, Job};
use crate::hw::Engine;
use crate::sync::{Fence, FenceContext, FenceFault};
use parking_lot::Mutex;
use proptest::prelude::*;
use std::sync::Arc;

const GATES: usize = 3;
const GATE_FAULT: FenceFault = FenceFault::Failed(7);

#[derive(Debug, Clone)]
struct JobSpec {
    queue: usize,
    /// Earlier jobs, as fractions of the jobs submitted so far.
    deps: Vec<prop::sample::Index>,
    gate: Option<usize>,
}

fn job_spec(queues: usize) -> impl Strategy<Value = JobSpec> {
    (
        0..queues,
        prop::collection::vec(any::<prop::sample::Index>(), 0..3),
        prop::option::weighted(0.3, 0..GATES),
    )
        .prop_map(|(queue, deps, gate)| JobSpec { queue, deps, gate })
}

fn scenario() -> impl Strategy<Value = (usize, Vec<JobSpec>, [bool; GATES])> {
    (1usize..=4).prop_flat_map(|queues| {
        (
            Just(queues),
            prop::collection::vec(job_spec(queues), 1..40),
            any::<[bool; GATES]>(),
        )
    })
}

/// What each job's outcome must be: failed iff a gate or job it depends on failed.
fn oracle(jobs: &[(Vec<usize>, Option<usize>)], gate_fails: &[bool; GATES]) -> Vec<bool> {
    let mut ok: Vec<bool> = Vec::with_capacity(jobs.len());
    for (deps, gate) in jobs {
        let gate_ok = gate.is_none_or(|g| !gate_fails[g]);
        ok.push(gate_ok && deps.iter().all(|&d| ok[d]));
    }
    ok
}

fn run_case(queues: usize, specs: &[JobSpec], gate_fails: [bool; GATES]) {
    let rig = Rig::new(1);
    let qs: Vec<ExecQueue> = (0..queues)
        .map(|i| {
            let engine = if i % 2 == 0 {
                Engine::Copy
            } else {
                Engine::Compute
            };
            rig.queue(0, engine, NEVER)
        })
        .collect();
    let gates: Vec<Arc<Fence>> = (0..GATES)
        .map(|_| Fence::new(FenceContext::alloc(), 1))
        .collect();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut fences: Vec<Arc<Fence>> = Vec::new();
    let mut graph = Vec::new();
    for (k, spec) in specs.iter().enumerate() {
        let deps: Vec<usize> = if k == 0 {
            Vec::new()
        } else {
            spec.deps.iter().map(|i| i.index(k)).collect()
        };
        let mut dep_fences: Vec<Arc<Fence>> = deps.iter().map(|&d| fences[d].clone()).collect();
        dep_fences.extend(spec.gate.map(|g| gates[g].clone()));
        let job = Job::commands(store(8 * k as u64, k as u64 + 1)).with_deps(dep_fences.clone());
        let f = qs[spec.queue].submit(job).unwrap();
        let (o, q) = (order.clone(), spec.queue);
        f.on_signal(move |f| {
            let after_deps = dep_fences.iter().all(|d| d.is_signalled());
            o.lock().push((q, f.seqno(), after_deps));
        });
        fences.push(f);
        graph.push((deps, spec.gate));
    }
    for (g, fails) in gates.iter().zip(gate_fails) {
        if fails {
            g.set_error(GATE_FAULT).unwrap();
        }
        g.signal().unwrap();
    }
    let want = oracle(&graph, &gate_fails);
    for (k, f) in fences.iter().enumerate() {
        let expect = if want[k] { Ok(()) } else { Err(GATE_FAULT) };
        assert_eq!(wait(f), expect, "job {k}");
        let ran = rig.read(0, 8 * k as u64) == k as u64 + 1;
        assert_eq!(ran, want[k], "job {k}'s payload ran: {ran}");
    }
    let deadline = std::time::Instant::now() + PATIENCE;
    while order.lock().len() < specs.len() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let order = order.lock();
    assert!(
        order.iter().all(|r| r.2),
        "a fence signalled before a dependency"
    );
    for q in 0..queues {
        let seqnos: Vec<u64> = order.iter().filter(|r| r.0 == q).map(|r| r.1).collect();
        assert!(
            seqnos.windows(2).all(|w| w[0] < w[1]),
            "queue {q}: {seqnos:?}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: simgpu::testkit::proptest_cases(24), ..ProptestConfig::default() })]

    #[test]
    fn scheduler_matches_the_dependency_oracle((queues, specs, gate_fails) in scenario()) {
        run_case(queues, &specs, gate_fails);
    }
}
