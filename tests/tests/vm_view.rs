//! VM views against the live daemon: a client reads its whole mapping table back through
//! libgpu, another client cannot open it, and `gpuctl vm` run as a process prints it through
//! the root.

use gpu_tests::{gpuctl, sys_bo, Daemon};
use libgpu::errno::ENOENT;
use libgpu::flags::VmCreateFlags;
use libgpu::{MappingKind, TransportError, Vm, VmTable};
use std::path::Path;
use std::process::{Command, Output};

const PAGE: u64 = 0x1000;
const MAPPINGS: u64 = 100;

/// A VM with `MAPPINGS` one-page mappings of a 4-page BO, bound in a scrambled VA order.
/// Returns the VM, the BO (kept alive) and the (start, BO offset) pairs in VA order.
fn vm_with_mappings(dev: &libgpu::Device) -> (Vm, libgpu::Bo, Vec<(u64, u64)>) {
    let vm = Vm::create(dev, VmCreateFlags::empty()).expect("vm");
    let bo = sys_bo(dev, 4 * PAGE);
    let mut expected: Vec<(u64, u64)> = (0..MAPPINGS)
        .map(|i| (0x100_0000 + i * 3 * PAGE, (i % 4) * PAGE))
        .collect();
    let mut b = vm.bind();
    // 37 is coprime with 100: every index once, far from VA order.
    for k in 0..MAPPINGS {
        let (va, offset) = expected[((k * 37) % MAPPINGS) as usize];
        b = b.map(&bo, offset, va, PAGE);
    }
    b.submit().expect("bind 100 mappings");
    expected.sort();
    (vm, bo, expected)
}

#[test]
fn a_client_reads_back_all_100_mappings_in_va_order() {
    let d = Daemon::start();
    let a = d.device();
    let (vm, bo, expected) = vm_with_mappings(&a);
    let table = vm.mapping_table().expect("table");
    assert_eq!(table.len(), expected.len());
    for (m, (va, offset)) in table.iter().zip(&expected) {
        assert_eq!((m.start, m.end), (*va, va + PAGE));
        assert_eq!((m.bo, m.offset), (Some(bo.id()), *offset));
        assert_eq!((m.kind, m.read_only), (MappingKind::Bo, false));
    }
    // A partial unmap is visible at once, as a split.
    let (va0, _) = expected[0];
    vm.bind().unmap(va0, PAGE).submit().expect("unmap");
    let after = vm.mapping_table().expect("table");
    assert_eq!(after.len(), expected.len() - 1);
    assert!(after.iter().all(|m| m.start != va0));
}

#[test]
fn another_client_cannot_open_the_view() {
    let d = Daemon::start();
    let a = d.device();
    let b = d.device();
    let (vm, _bo, _) = vm_with_mappings(&a);
    let path = format!("vm/{}", vm.id().0);
    match b.handle().dup(&path) {
        Err(TransportError::Scheme(e)) => assert_eq!(e, ENOENT),
        Err(other) => panic!("transport failure {other:?}"),
        Ok(_) => panic!("client B opened client A's VM view"),
    }
    // B's own VM with the same id shows B's table, not A's.
    let own = Vm::create(&b, VmCreateFlags::empty()).expect("vm");
    assert_eq!(own.id(), vm.id(), "ids are per client");
    assert!(own.mapping_table().expect("own table").is_empty());
}

fn run_gpuctl(bin: &Path, socket: &Path, args: &[&str]) -> Output {
    Command::new(bin)
        .args(args)
        .arg("--socket")
        .arg(socket)
        .output()
        .expect("gpuctl runs")
}

#[test]
fn gpuctl_vm_prints_the_whole_table_by_daemon_id_and_by_client() {
    let d = Daemon::start();
    let a = d.device();
    let (vm, bo, expected) = vm_with_mappings(&a);
    let own = vm.table().expect("view");
    let bin = gpuctl();
    for arg in [
        own.daemon_id.to_string(),
        format!("{}:{}", own.client, vm.id().0),
    ] {
        let out = run_gpuctl(&bin, d.socket(), &["vm", &arg]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "gpuctl vm {arg}: {out:?}");
        let table = VmTable::parse(&text).expect("gpuctl prints the view text");
        assert_eq!(table, own, "gpuctl vm {arg}");
        assert_eq!(text.lines().count() as u64, 5 + MAPPINGS);
        let first = format!(
            "{:#014x} {:#014x} bo={}",
            expected[0].0,
            expected[0].0 + PAGE,
            bo.id().0
        );
        assert!(text.contains(&first), "{text}");
    }
    let out = run_gpuctl(&bin, d.socket(), &["vm", "99999"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no VM 99999"));
    // --json for every command: one JSON value with the same facts.
    let json = |args: &[&str]| {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = run_gpuctl(&bin, d.socket(), &all);
        assert!(out.status.success(), "gpuctl {args:?}: {out:?}");
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("gpuctl --json")
    };
    let arg = own.daemon_id.to_string();
    let table = json(&["vm", &arg]);
    assert_eq!(
        table["mappings"].as_array().map(Vec::len),
        Some(MAPPINGS as usize)
    );
    assert_eq!(table["mappings"][0]["start"], expected[0].0);
    assert_eq!(table["mappings"][0]["bo"], bo.id().0);
    assert_eq!(json(&["info"])["vram-total"], 16u64 << 20);
    let stats = json(&["stats"]);
    assert_eq!(stats[format!("vm-{}-mappings", own.daemon_id)], MAPPINGS);
    let blocks = json(&["clients"]);
    assert!(
        blocks
            .as_array()
            .is_some_and(|b| b.iter().any(|c| c["client-id"] == own.client)),
        "{blocks}"
    );
    // info, clients and stats keep working.
    for cmd in ["info", "clients", "stats"] {
        let out = run_gpuctl(&bin, d.socket(), &[cmd]);
        assert!(out.status.success(), "gpuctl {cmd}: {out:?}");
    }
    // No daemon on the socket: the error names the next step.
    let gone = d.socket().with_extension("absent");
    let out = run_gpuctl(&bin, &gone, &["info"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("start it with `gpud serve`"), "{err}");
    let clients = run_gpuctl(&bin, d.socket(), &["clients"]);
    let clients = String::from_utf8_lossy(&clients.stdout).into_owned();
    assert!(
        clients.contains(&format!("client-id: {}", own.client)),
        "{clients}"
    );
}
