//! `Vm::mapping_table` end to end over the host transport and the fake driver: random mapping
//! sets are bound, read back through the VM view, parsed, and compared with what was bound.

mod common;

use common::Server;
use libgpu::flags::{BoCreateFlags, Placement, VmCreateFlags};
use libgpu::{Bo, MappingKind, Vm, VmMapping};
use proptest::prelude::*;

const PAGE: u64 = 0x1000;
/// Pages per test BO.
const BO_PAGES: u64 = 8;

/// One generated mapping: gap before it, length, kind, read-only, BO and BO offset (pages).
#[derive(Debug, Clone, Copy)]
struct Spec {
    gap: u64,
    len: u64,
    kind: u8,
    ro: bool,
    bo: usize,
    off: u64,
}

fn spec() -> impl Strategy<Value = Spec> {
    (0u64..4, 1u64..5, 0u8..4, any::<bool>(), 0usize..3, 0u64..4).prop_map(
        |(gap, len, kind, ro, bo, off)| Spec {
            gap,
            len,
            kind,
            ro,
            bo,
            off,
        },
    )
}

/// What `bind` made: the VM, the BOs still named (dropping one destroys its id), and the
/// table the view must report.
type Bound = (Vm, Vec<Option<Bo>>, Vec<VmMapping>);

/// Bind `specs` into a fresh VM.
fn bind(dev: &libgpu::Device, specs: &[Spec], drop_first_bo: bool) -> Bound {
    let flags = VmCreateFlags::LR_MODE | VmCreateFlags::FAULT_MODE;
    let vm = Vm::create(dev, flags).expect("vm");
    let mut bos: Vec<Option<Bo>> = (0..3)
        .map(|_| {
            Some(
                Bo::create(
                    dev,
                    BO_PAGES * PAGE,
                    Placement::SYSTEM,
                    BoCreateFlags::empty(),
                )
                .expect("bo"),
            )
        })
        .collect();
    let ids: Vec<_> = bos.iter().flatten().map(Bo::id).collect();
    let mut b = vm.bind();
    let mut expected = Vec::new();
    let mut va = 0x10_0000;
    for s in specs {
        va += s.gap * PAGE;
        let (start, range) = (va, s.len * PAGE);
        va += range;
        let (kind, bo, offset, ro) = match s.kind {
            0 => {
                let bo = bos[s.bo].as_ref().expect("live");
                b = b.map(bo, s.off * PAGE, start, range);
                (MappingKind::Bo, Some(ids[s.bo]), s.off * PAGE, s.ro)
            }
            1 => {
                b = b.map_null(start, range);
                (MappingKind::Null, None, 0, false)
            }
            2 => {
                let cpu = 0x7f00_0000_0000 + start;
                b = b.map_userptr(cpu, start, range);
                (MappingKind::Userptr, None, cpu, s.ro)
            }
            _ => {
                b = b.map_cpu_mirror(start, range);
                (MappingKind::Mirror, None, 0, false)
            }
        };
        if ro {
            b = b.readonly();
        }
        expected.push(VmMapping {
            start,
            end: start + range,
            bo,
            offset,
            read_only: ro,
            kind,
        });
    }
    if !specs.is_empty() {
        b.submit().expect("bind");
    }
    if drop_first_bo {
        bos[0].take().expect("bo").destroy().expect("destroy");
        for m in &mut expected {
            if m.bo == Some(ids[0]) {
                m.bo = None;
            }
        }
    }
    (vm, bos, expected)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48), ..ProptestConfig::default() })]

    #[test]
    fn the_view_round_trips_random_tables(
        specs in prop::collection::vec(spec(), 0..40),
        drop_first_bo in any::<bool>(),
    ) {
        let server = Server::start();
        let dev = server.device();
        let (vm, _bos, expected) = bind(&dev, &specs, drop_first_bo);
        let table = vm.table().expect("table");
        prop_assert_eq!(table.vm, vm.id());
        prop_assert_eq!(table.flags, vm.flags());
        prop_assert_eq!(&table.mappings, &expected);
        prop_assert_eq!(vm.mapping_table().expect("mappings"), expected);
    }
}

#[test]
fn a_table_larger_than_one_read_is_paged_in_whole() {
    let server = Server::start();
    let dev = server.device();
    let vm = Vm::create(&dev, VmCreateFlags::empty()).expect("vm");
    let bo = Bo::create(&dev, PAGE, Placement::SYSTEM, BoCreateFlags::empty()).expect("bo");
    let n = 2000u64;
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let mut b = vm.bind();
        for i in chunk {
            b = b.map(&bo, 0, 0x100_0000 + i * 2 * PAGE, PAGE);
        }
        b.submit().expect("bind");
    }
    let table = vm.mapping_table().expect("table");
    assert_eq!(table.len() as u64, n);
    for (i, m) in table.iter().enumerate() {
        assert_eq!(m.start, 0x100_0000 + i as u64 * 2 * PAGE);
        assert_eq!((m.end - m.start, m.bo), (PAGE, Some(bo.id())));
    }
}
