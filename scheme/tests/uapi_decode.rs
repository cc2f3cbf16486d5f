//! Decoder tests: round trips, arbitrary bytes, and the documented errno of every invalid input.

use gpu_scheme::errno::SchemeError;
use gpu_scheme::uapi::flags::*;
use gpu_scheme::uapi::wire::{self, *};
use gpu_scheme::uapi::*;
use proptest::prelude::*;
use syscall::error::*;

fn errno_of(op: u64, payload: &[u8]) -> i32 {
    match decode(op, payload) {
        Ok(r) => panic!("decoded {r:?}, expected an error"),
        Err(e) => SchemeError::from(e).errno(),
    }
}

fn page() -> impl Strategy<Value = u64> {
    (0u64..1 << 36).prop_map(|p| p * 4096)
}

fn range() -> impl Strategy<Value = u64> {
    (1u64..1 << 20).prop_map(|p| p * 4096)
}

fn bind_op() -> impl Strategy<Value = BindOp> {
    let kind = prop_oneof![
        (1u32..100, page()).prop_map(|(b, o)| BindOpKind::Map {
            bo: BoId(b),
            bo_offset: o
        }),
        Just(BindOpKind::MapNull),
        Just(BindOpKind::MapCpuMirror),
        page().prop_map(|u| BindOpKind::MapUserptr { userptr: u }),
        Just(BindOpKind::Unmap),
        (1u32..100).prop_map(|b| BindOpKind::UnmapAll { bo: BoId(b) }),
        prop_oneof![
            Just(Region::System),
            Just(Region::Vram),
            Just(Region::Preferred)
        ]
        .prop_map(|region| BindOpKind::Prefetch { region }),
    ];
    (kind, page(), range(), 0u32..4, any::<u16>()).prop_map(|(kind, addr, range, f, pat)| {
        let (addr, range) = match kind {
            BindOpKind::UnmapAll { .. } => (0, 0),
            _ => (addr, range),
        };
        let flags = BindFlags::from_bits_truncate(f);
        BindOp {
            kind,
            addr,
            range,
            flags,
            pat_index: pat,
        }
    })
}

fn sync(user_fence: bool) -> impl Strategy<Value = SyncSpec> {
    let syncobj = (1u32..50, any::<bool>()).prop_map(|(id, signal)| SyncSpec {
        kind: SyncKind::Syncobj(SyncobjId(id)),
        signal,
    });
    let timeline = (1u32..50, 1u64.., any::<bool>()).prop_map(|(id, p, signal)| SyncSpec {
        kind: SyncKind::Timeline(SyncobjId(id), p),
        signal,
    });
    let fence = (0u64..1 << 45, any::<u64>()).prop_map(|(a, value)| SyncSpec {
        kind: SyncKind::UserFence { addr: a * 8, value },
        signal: true,
    });
    if user_fence {
        prop_oneof![syncobj, timeline, fence].boxed()
    } else {
        prop_oneof![syncobj, timeline].boxed()
    }
}

fn syncs(user_fence_ok: bool) -> impl Strategy<Value = Vec<SyncSpec>> {
    (
        prop::collection::vec(sync(false), 0..6),
        prop::option::of(sync(user_fence_ok)),
    )
        .prop_map(|(mut v, extra)| {
            v.extend(extra);
            v
        })
}

fn timeout() -> impl Strategy<Value = Timeout> {
    prop_oneof![
        Just(Timeout::Forever),
        Just(Timeout::Poll),
        (1u64..i64::MAX as u64).prop_map(Timeout::Relative),
        (0u64..i64::MAX as u64).prop_map(Timeout::Absolute),
    ]
}

fn point() -> impl Strategy<Value = SyncobjPoint> {
    (0u32..50, any::<u64>()).prop_map(|(s, p)| SyncobjPoint {
        syncobj: SyncobjId(s),
        point: p,
    })
}

fn vm_flags() -> impl Strategy<Value = VmCreateFlags> {
    prop_oneof![
        Just(VmCreateFlags::empty()),
        Just(VmCreateFlags::SCRATCH_PAGE),
        Just(VmCreateFlags::LR_MODE),
        Just(VmCreateFlags::LR_MODE | VmCreateFlags::SCRATCH_PAGE),
        Just(VmCreateFlags::LR_MODE | VmCreateFlags::FAULT_MODE),
    ]
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        Just(Request::DeviceQuery),
        vm_flags().prop_map(Request::VmCreate),
        any::<u32>().prop_map(|i| Request::VmDestroy(VmId(i))),
        any::<u32>().prop_map(|i| Request::BoDestroy(BoId(i))),
        any::<u32>().prop_map(|i| Request::ExecQueueDestroy(QueueId(i))),
        any::<u32>().prop_map(|i| Request::SyncobjDestroy(SyncobjId(i))),
        (range(), 1u32..4, 0u32..4, prop::option::of(1u32..9)).prop_map(|(size, p, f, vm)| {
            Request::BoCreate(BoCreateRequest {
                size,
                placement: Placement::from_bits_truncate(p),
                flags: BoCreateFlags::from_bits_truncate(f),
                vm: vm.map(VmId),
            })
        }),
        (
            any::<u32>(),
            prop_oneof![
                Just(EngineClass::Copy),
                Just(EngineClass::Compute),
                Just(EngineClass::VmBind)
            ],
            prop_oneof![
                Just(QueuePriority::Low),
                Just(QueuePriority::Normal),
                Just(QueuePriority::High)
            ],
            prop_oneof![Just(BatchFormat::Native), Just(BatchFormat::Intel)]
        )
            .prop_map(|(vm, class, priority, batches)| Request::ExecQueueCreate {
                vm: VmId(vm),
                class,
                priority,
                batches
            }),
        (
            any::<u32>(),
            prop::option::of(1u32..9),
            prop::collection::vec(bind_op(), 0..5)
        )
            .prop_flat_map(|(vm, q, ops)| {
                let uf = !ops.is_empty();
                syncs(uf).prop_map(move |syncs| {
                    Request::VmBind(VmBindRequest {
                        vm: VmId(vm),
                        queue: q.map(QueueId),
                        ops: ops.clone(),
                        syncs,
                    })
                })
            }),
        (
            any::<u32>(),
            prop::collection::vec((0u64..1 << 45).prop_map(|a| a * 8), 0..4),
            syncs(true)
        )
            .prop_map(|(q, batches, syncs)| Request::Exec(ExecRequest {
                queue: QueueId(q),
                batches,
                syncs
            })),
        (
            any::<u32>(),
            prop::option::of(1u32..9),
            0u64..1 << 45,
            0u16..6,
            any::<u64>(),
            any::<u64>(),
            timeout()
        )
            .prop_map(|(vm, q, a, op, value, mask, timeout)| {
                Request::WaitUserFence(WaitUserFenceRequest {
                    vm: VmId(vm),
                    queue: q.map(QueueId),
                    addr: a * 8,
                    op: WaitOp::from_raw(op).unwrap_or(WaitOp::Eq),
                    value,
                    mask,
                    timeout,
                })
            }),
        any::<bool>().prop_map(|signaled| Request::SyncobjCreate { signaled }),
        (prop::collection::vec(point(), 1..6), 0u32..4, timeout()).prop_map(
            |(points, f, timeout)| {
                Request::SyncobjWait(SyncobjWaitRequest {
                    points,
                    flags: SyncobjWaitFlags::from_bits_truncate(f),
                    timeout,
                })
            }
        ),
        prop::collection::vec(point(), 1..6).prop_map(Request::SyncobjSignal),
        any::<u32>().prop_map(|i| Request::SyncobjQuery(SyncobjId(i))),
        prop::collection::vec(any::<u32>().prop_map(SyncobjId), 1..6)
            .prop_map(Request::SyncobjReset),
        (point(), point(), any::<bool>()).prop_map(|(src, dst, wait_for_submit)| {
            Request::SyncobjTransfer(SyncobjTransferRequest {
                src,
                dst,
                wait_for_submit,
            })
        }),
        Just(Request::ExportToken),
        (
            prop_oneof![Just(ObjectKind::Bo), Just(ObjectKind::Syncobj)],
            prop::option::of(any::<[u64; 2]>())
        )
            .prop_map(|(kind, t)| Request::Import {
                kind,
                token: t.filter(|t| *t != [0, 0]).map(Token),
            }),
    ]
}

fn layout() -> impl Strategy<Value = Layout> {
    (0u32..8, 0u32..8).prop_map(|(a, s)| Layout {
        args_extra: a * 8,
        stride_extra: s * 8,
    })
}

proptest! {
    #[test]
    fn encode_decode_round_trips(req in request(), layout in layout()) {
        let (op, bytes) = encode_with(&req, layout);
        prop_assert_eq!(decode(op, &bytes), Ok(req));
    }

    #[test]
    fn arbitrary_bytes_never_panic(op in 0u64..24, bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = decode(op, &bytes);
    }

    #[test]
    fn mutated_valid_payloads_never_panic(req in request(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let (op, mut bytes) = encode(&req);
        let i = at.index(bytes.len());
        bytes[i] = byte;
        if let Err(e) = decode(op, &bytes) {
            // Whatever breaks, it breaks with one of the documented errno values.
            let errno = SchemeError::from(e).errno();
            prop_assert!([EINVAL, E2BIG, EOPNOTSUPP].contains(&errno), "errno {}", errno);
        }
    }

    #[test]
    fn truncating_any_valid_payload_is_einval(req in request(), cut in any::<prop::sample::Index>()) {
        let (op, bytes) = encode(&req);
        let n = cut.index(bytes.len());
        prop_assert_eq!(errno_of(op, &bytes[..n]), EINVAL);
    }
}

/// One valid request per opcode.
fn sample(op: Opcode) -> Request {
    let fence = SyncSpec {
        kind: SyncKind::UserFence {
            addr: 0x1000,
            value: 1,
        },
        signal: true,
    };
    let map = BindOp {
        kind: BindOpKind::Map {
            bo: BoId(1),
            bo_offset: 0,
        },
        addr: 0x10000,
        range: 0x1000,
        flags: BindFlags::empty(),
        pat_index: 0,
    };
    let p = SyncobjPoint {
        syncobj: SyncobjId(1),
        point: 0,
    };
    match op {
        Opcode::DeviceQuery => Request::DeviceQuery,
        Opcode::VmCreate => Request::VmCreate(VmCreateFlags::empty()),
        Opcode::VmDestroy => Request::VmDestroy(VmId(1)),
        Opcode::BoCreate => Request::BoCreate(BoCreateRequest {
            size: 4096,
            placement: Placement::SYSTEM,
            flags: BoCreateFlags::empty(),
            vm: None,
        }),
        Opcode::BoDestroy => Request::BoDestroy(BoId(1)),
        Opcode::ExecQueueCreate => Request::ExecQueueCreate {
            vm: VmId(1),
            class: EngineClass::Copy,
            priority: QueuePriority::Normal,
            batches: BatchFormat::Native,
        },
        Opcode::ExecQueueDestroy => Request::ExecQueueDestroy(QueueId(1)),
        Opcode::VmBind => Request::VmBind(VmBindRequest {
            vm: VmId(1),
            queue: None,
            ops: vec![map],
            syncs: vec![fence],
        }),
        Opcode::Exec => Request::Exec(ExecRequest {
            queue: QueueId(1),
            batches: vec![0x1000],
            syncs: vec![fence],
        }),
        Opcode::WaitUserFence => Request::WaitUserFence(WaitUserFenceRequest {
            vm: VmId(1),
            queue: None,
            addr: 0x1000,
            op: WaitOp::Eq,
            value: 1,
            mask: !0,
            timeout: Timeout::Poll,
        }),
        Opcode::SyncobjCreate => Request::SyncobjCreate { signaled: false },
        Opcode::SyncobjDestroy => Request::SyncobjDestroy(SyncobjId(1)),
        Opcode::SyncobjWait => Request::SyncobjWait(SyncobjWaitRequest {
            points: vec![p],
            flags: SyncobjWaitFlags::empty(),
            timeout: Timeout::Poll,
        }),
        Opcode::SyncobjSignal => Request::SyncobjSignal(vec![p]),
        Opcode::SyncobjQuery => Request::SyncobjQuery(SyncobjId(1)),
        Opcode::SyncobjReset => Request::SyncobjReset(vec![SyncobjId(1)]),
        Opcode::SyncobjTransfer => Request::SyncobjTransfer(SyncobjTransferRequest {
            src: p,
            dst: p,
            wait_for_submit: false,
        }),
        Opcode::ExportToken => Request::ExportToken,
        Opcode::Import => Request::Import {
            kind: ObjectKind::Bo,
            token: Some(Token([1, 2])),
        },
    }
}

fn set_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_ne_bytes());
}
fn set_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}
fn set_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_ne_bytes());
}

#[test]
fn every_call_rejects_bad_framing_with_documented_errno() {
    for op in Opcode::ALL {
        let (raw, good) = encode(&sample(op));
        assert!(decode(raw, &good).is_ok(), "{op:?} sample must decode");
        let known = op.args_size();

        let mut b = good.clone();
        set_u16(&mut b, 0, 2);
        assert_eq!(errno_of(raw, &b), EINVAL, "{op:?} wrong version");

        let mut b = good.clone();
        set_u16(&mut b, 2, 1);
        assert_eq!(errno_of(raw, &b), EINVAL, "{op:?} header pad");

        let mut b = good.clone();
        set_u64(&mut b, 8, 1);
        assert_eq!(errno_of(raw, &b), EINVAL, "{op:?} header reserved");

        let mut b = good.clone();
        set_u32(&mut b, 4, known as u32 - 8);
        assert_eq!(errno_of(raw, &b), EINVAL, "{op:?} args_size too small");

        let mut b = good.clone();
        set_u32(&mut b, 4, wire::MAX_ARGS_SIZE + 8);
        assert_eq!(errno_of(raw, &b), EINVAL, "{op:?} args_size too large");

        // Last 16 bytes of every args struct are `reserved: [u64; 2]`.
        let mut b = good.clone();
        b[16 + known - 1] = 1;
        assert_eq!(errno_of(raw, &b), EINVAL, "{op:?} reserved");

        let mut b = good.clone();
        b.push(0);
        assert_eq!(errno_of(raw, &b), EINVAL, "{op:?} trailing byte");

        assert_eq!(
            errno_of(raw, &good[..good.len() - 1]),
            EINVAL,
            "{op:?} truncated"
        );
        assert_eq!(errno_of(raw, &[]), EINVAL, "{op:?} empty");

        // A newer client's larger struct: zero extension accepted, non-zero is E2BIG.
        let (_, mut b) = encode_with(
            &sample(op),
            Layout {
                args_extra: 8,
                stride_extra: 0,
            },
        );
        assert!(decode(raw, &b).is_ok(), "{op:?} zero extension");
        b[16 + known + 3] = 1;
        assert_eq!(errno_of(raw, &b), E2BIG, "{op:?} non-zero extension");
    }
}

#[test]
fn unknown_opcode_is_enotty() {
    let (_, b) = encode(&Request::DeviceQuery);
    assert_eq!(errno_of(0, &b), ENOTTY);
    assert_eq!(errno_of(99, &b), ENOTTY);
}

#[test]
fn out_fields_must_be_zero_on_input() {
    for (op, at) in [
        (Opcode::VmCreate, 4),
        (Opcode::BoCreate, 20),
        (Opcode::ExecQueueCreate, 8),
        (Opcode::SyncobjCreate, 4),
        (Opcode::SyncobjQuery, 8),
        (Opcode::Import, 4),
        (Opcode::SyncobjWait, 12),
        (Opcode::DeviceQuery, 0),
        (Opcode::ExportToken, 0),
    ] {
        let (raw, mut b) = encode(&sample(op));
        b[16 + at] = 1;
        assert_eq!(errno_of(raw, &b), EINVAL, "{op:?}");
    }
}

fn vm_create_errno(flags: u32) -> Option<i32> {
    let (raw, mut b) = encode(&Request::VmCreate(VmCreateFlags::empty()));
    set_u32(&mut b, 16, flags);
    decode(raw, &b).err().map(|e| SchemeError::from(e).errno())
}

#[test]
fn vm_create_flag_rules() {
    assert_eq!(vm_create_errno(1 << 3), Some(EINVAL), "unknown flag");
    assert_eq!(vm_create_errno(1 << 2), Some(EINVAL), "FAULT without LR");
    assert_eq!(vm_create_errno(1 | 2 | 4), Some(EINVAL), "SCRATCH + FAULT");
    assert_eq!(vm_create_errno(2 | 4), None);
    assert_eq!(vm_create_errno(1 | 2), None);
}

fn bo_create(size: u64, placement: u32, flags: u32) -> Option<i32> {
    let (raw, mut b) = encode(&sample(Opcode::BoCreate));
    set_u64(&mut b, 16, size);
    set_u32(&mut b, 24, placement);
    set_u32(&mut b, 28, flags);
    decode(raw, &b).err().map(|e| SchemeError::from(e).errno())
}

#[test]
fn bo_create_rules() {
    assert_eq!(bo_create(0, 1, 0), Some(EINVAL), "zero size");
    assert_eq!(bo_create(4095, 1, 0), Some(EINVAL), "misaligned size");
    assert_eq!(bo_create(4096, 0, 0), Some(EINVAL), "no placement");
    assert_eq!(bo_create(4096, 4, 0), Some(EINVAL), "unknown placement");
    assert_eq!(bo_create(4096, 1, 4), Some(EINVAL), "unknown flag");
    assert_eq!(bo_create(4096, 3, 3), None);
}

#[test]
fn queue_create_rules() {
    let (raw, good) = encode(&sample(Opcode::ExecQueueCreate));
    let mut b = good.clone();
    set_u16(&mut b, 20, 0);
    assert_eq!(errno_of(raw, &b), EINVAL, "render class unsupported");
    let mut b = good.clone();
    set_u16(&mut b, 22, 4);
    assert_eq!(errno_of(raw, &b), EINVAL, "unknown flag");
    let mut b = good.clone();
    set_u16(&mut b, 22, ExecQueueCreateFlags::INTEL_BATCHES.bits());
    assert!(
        matches!(
            decode(raw, &b),
            Ok(Request::ExecQueueCreate {
                batches: BatchFormat::Intel,
                priority: QueuePriority::Normal,
                ..
            })
        ),
        "INTEL_BATCHES selects Intel batches"
    );
    assert!(matches!(
        decode(raw, &good),
        Ok(Request::ExecQueueCreate {
            batches: BatchFormat::Native,
            ..
        })
    ));
}

/// The args of an EXEC_QUEUE_CREATE (after the 16-byte call header) with `flags` and
/// `priority` as given; `None` when the decoder accepts them, else the errno.
fn priority_errno(flags: u16, priority: u32) -> (Option<i32>, Option<QueuePriority>) {
    let (raw, mut b) = encode(&sample(Opcode::ExecQueueCreate));
    set_u16(&mut b, 22, flags);
    b[28..32].copy_from_slice(&priority.to_le_bytes());
    match decode(raw, &b) {
        Ok(Request::ExecQueueCreate { priority, .. }) => (None, Some(priority)),
        Ok(other) => panic!("decoded as {other:?}"),
        Err(e) => (Some(SchemeError::Decode(e).errno()), None),
    }
}

#[test]
fn queue_priority_rules() {
    let p = ExecQueueCreateFlags::PRIORITY.bits();
    assert_eq!(priority_errno(0, 0), (None, Some(QueuePriority::Normal)));
    assert_eq!(priority_errno(p, 0), (None, Some(QueuePriority::Low)));
    assert_eq!(priority_errno(p, 1), (None, Some(QueuePriority::Normal)));
    assert_eq!(priority_errno(p, 2), (None, Some(QueuePriority::High)));
    assert_eq!(
        priority_errno(p, 3),
        (Some(EINVAL), None),
        "unknown priority"
    );
    assert_eq!(priority_errno(p, u32::MAX), (Some(EINVAL), None));
    assert_eq!(
        priority_errno(0, 2),
        (Some(EINVAL), None),
        "a priority without the flag"
    );
}

/// A VM_BIND with one op, after `edit` changed its wire form.
fn bind_errno(edit: impl FnOnce(&mut BindOpWire)) -> Option<i32> {
    let mut w = encode::bind_op_wire(&BindOp {
        kind: BindOpKind::Map {
            bo: BoId(1),
            bo_offset: 0,
        },
        addr: 0x10000,
        range: 0x1000,
        flags: BindFlags::empty(),
        pat_index: 0,
    });
    edit(&mut w);
    let (raw, mut b) = encode(&Request::VmBind(VmBindRequest {
        vm: VmId(1),
        queue: None,
        ops: vec![BindOp {
            kind: BindOpKind::Unmap,
            addr: 0,
            range: 4096,
            flags: BindFlags::empty(),
            pat_index: 0,
        }],
        syncs: vec![],
    }));
    b[56..120].copy_from_slice(zerocopy::IntoBytes::as_bytes(&w));
    decode(raw, &b).err().map(|e| SchemeError::from(e).errno())
}

#[test]
fn bind_op_table() {
    use gpu_scheme::uapi::flags::bind_op::*;
    let null = BindFlags::NULL.bits();
    let mirror = BindFlags::CPU_ADDR_MIRROR.bits();
    type Edit = Box<dyn FnOnce(&mut BindOpWire)>;
    let cases: Vec<(&str, Edit, Option<i32>)> = vec![
        ("valid map", Box::new(|_| {}), None),
        ("op > PREFETCH", Box::new(|w| w.op = 5), Some(EINVAL)),
        ("unknown flag", Box::new(|w| w.flags = 1 << 3), Some(EINVAL)),
        (
            "NULL with BO",
            Box::new(move |w| w.flags = null),
            Some(EINVAL),
        ),
        (
            "NULL with offset",
            Box::new(move |w| (w.flags, w.bo_id, w.obj_offset) = (null, 0, 4096)),
            Some(EINVAL),
        ),
        (
            "NULL ok",
            Box::new(move |w| (w.flags, w.bo_id) = (null, 0)),
            None,
        ),
        (
            "MIRROR with BO",
            Box::new(move |w| w.flags = mirror),
            Some(EINVAL),
        ),
        (
            "MIRROR ok",
            Box::new(move |w| (w.flags, w.bo_id) = (mirror, 0)),
            None,
        ),
        (
            "NULL+MIRROR",
            Box::new(move |w| (w.flags, w.bo_id) = (null | mirror, 0)),
            Some(EINVAL),
        ),
        (
            "NULL on UNMAP",
            Box::new(move |w| (w.op, w.flags, w.bo_id) = (UNMAP, null, 0)),
            Some(EINVAL),
        ),
        ("MAP without BO", Box::new(|w| w.bo_id = 0), Some(EINVAL)),
        ("UNMAP with BO", Box::new(|w| w.op = UNMAP), Some(EINVAL)),
        ("UNMAP ok", Box::new(|w| (w.op, w.bo_id) = (UNMAP, 0)), None),
        (
            "USERPTR with BO",
            Box::new(|w| w.op = MAP_USERPTR),
            Some(EINVAL),
        ),
        (
            "USERPTR ok",
            Box::new(|w| (w.op, w.bo_id) = (MAP_USERPTR, 0)),
            None,
        ),
        (
            "UNMAP_ALL without BO",
            Box::new(|w| (w.op, w.bo_id, w.addr, w.range) = (UNMAP_ALL, 0, 0, 0)),
            Some(EINVAL),
        ),
        (
            "UNMAP_ALL with range",
            Box::new(|w| w.op = UNMAP_ALL),
            Some(EINVAL),
        ),
        (
            "UNMAP_ALL ok",
            Box::new(|w| (w.op, w.addr, w.range) = (UNMAP_ALL, 0, 0)),
            None,
        ),
        (
            "PREFETCH with BO",
            Box::new(|w| w.op = PREFETCH),
            Some(EINVAL),
        ),
        (
            "PREFETCH bad region",
            Box::new(|w| (w.op, w.bo_id, w.prefetch_region) = (PREFETCH, 0, 7)),
            Some(EINVAL),
        ),
        (
            "PREFETCH ok",
            Box::new(|w| (w.op, w.bo_id, w.prefetch_region) = (PREFETCH, 0, 1)),
            None,
        ),
        (
            "region on MAP",
            Box::new(|w| w.prefetch_region = 1),
            Some(EINVAL),
        ),
        (
            "addr misaligned",
            Box::new(|w| w.addr = 0x10001),
            Some(EINVAL),
        ),
        (
            "range misaligned",
            Box::new(|w| w.range = 0x1800),
            Some(EINVAL),
        ),
        (
            "offset misaligned",
            Box::new(|w| w.obj_offset = 8),
            Some(EINVAL),
        ),
        ("range zero", Box::new(|w| w.range = 0), Some(EINVAL)),
        (
            "addr overflow",
            Box::new(|w| (w.addr, w.range) = (!0xfff_u64, 0x2000)),
            Some(EINVAL),
        ),
        (
            "offset overflow",
            Box::new(|w| (w.obj_offset, w.range) = (!0xfff_u64, 0x2000)),
            Some(EINVAL),
        ),
        ("pad", Box::new(|w| w.pad = 1), Some(EINVAL)),
        ("pad2", Box::new(|w| w.pad2 = 1), Some(EINVAL)),
        ("reserved", Box::new(|w| w.reserved[1] = 1), Some(EINVAL)),
    ];
    for (name, edit, want) in cases {
        assert_eq!(bind_errno(edit), want, "{name}");
    }
}

/// A VM_BIND with `ops` ops and the given syncs (wire form).
fn sync_errno(ops: usize, syncs: &[SyncWire]) -> Option<i32> {
    let op = BindOp {
        kind: BindOpKind::Unmap,
        addr: 0,
        range: 4096,
        flags: BindFlags::empty(),
        pat_index: 0,
    };
    let (raw, mut b) = encode(&Request::VmBind(VmBindRequest {
        vm: VmId(1),
        queue: None,
        ops: vec![op; ops],
        syncs: vec![],
    }));
    set_u32(&mut b, 16 + 16, syncs.len() as u32);
    set_u32(&mut b, 16 + 20, 48);
    for s in syncs {
        b.extend_from_slice(zerocopy::IntoBytes::as_bytes(s));
    }
    decode(raw, &b).err().map(|e| SchemeError::from(e).errno())
}

#[test]
fn sync_table() {
    let signal = SyncFlags::SIGNAL.bits();
    let obj = SyncWire {
        sync_type: sync_type::SYNCOBJ,
        handle: 1,
        ..Default::default()
    };
    let tl = SyncWire {
        sync_type: sync_type::TIMELINE_SYNCOBJ,
        handle: 1,
        value: 5,
        ..Default::default()
    };
    let uf = SyncWire {
        sync_type: sync_type::USER_FENCE,
        flags: signal,
        addr: 0x1000,
        value: 1,
        ..Default::default()
    };
    assert_eq!(sync_errno(1, &[obj, tl, uf]), None);
    assert_eq!(
        sync_errno(1, &[SyncWire { flags: 2, ..obj }]),
        Some(EINVAL),
        "unknown flag"
    );
    assert_eq!(
        sync_errno(
            1,
            &[SyncWire {
                sync_type: 3,
                ..obj
            }]
        ),
        Some(EINVAL),
        "unknown type"
    );
    assert_eq!(
        sync_errno(1, &[SyncWire { pad: 1, ..obj }]),
        Some(EINVAL),
        "pad"
    );
    assert_eq!(
        sync_errno(
            1,
            &[SyncWire {
                reserved: [1, 0],
                ..obj
            }]
        ),
        Some(EINVAL),
        "reserved"
    );
    assert_eq!(
        sync_errno(1, &[SyncWire { addr: 8, ..obj }]),
        Some(EINVAL),
        "syncobj with addr"
    );
    assert_eq!(
        sync_errno(1, &[SyncWire { value: 0, ..tl }]),
        Some(EINVAL),
        "timeline point 0"
    );
    assert_eq!(
        sync_errno(1, &[SyncWire { flags: 0, ..uf }]),
        Some(EOPNOTSUPP),
        "user fence wait"
    );
    assert_eq!(
        sync_errno(0, &[uf]),
        Some(EOPNOTSUPP),
        "user fence in zero-op bind"
    );
    assert_eq!(sync_errno(1, &[uf, uf]), Some(EINVAL), "two user fences");
    assert_eq!(
        sync_errno(1, &[SyncWire { addr: 0x1004, ..uf }]),
        Some(EINVAL),
        "user fence misaligned"
    );
    assert_eq!(
        sync_errno(1, &[SyncWire { handle: 1, ..uf }]),
        Some(EINVAL),
        "user fence with handle"
    );
    let many = vec![obj; wire::MAX_SYNCS as usize + 1];
    assert_eq!(sync_errno(1, &many), Some(EINVAL), "more than MAX_SYNCS");
    let max = vec![obj; wire::MAX_SYNCS as usize];
    assert_eq!(sync_errno(1, &max), None, "exactly MAX_SYNCS");
}

#[test]
fn strides_are_checked() {
    let req = sample(Opcode::VmBind);
    let (raw, good) = encode(&req);
    for (stride, want) in [
        (56u32, Some(EINVAL)),
        (68, Some(EINVAL)),
        (wire::MAX_STRIDE + 8, Some(EINVAL)),
    ] {
        let mut b = good.clone();
        set_u32(&mut b, 16 + 12, stride);
        assert_eq!(
            decode(raw, &b).err().map(|e| SchemeError::from(e).errno()),
            want,
            "stride {stride}"
        );
    }
    // A newer client's larger elements with non-zero unknown bytes: E2BIG.
    let (raw, mut b) = encode_with(
        &req,
        Layout {
            args_extra: 0,
            stride_extra: 8,
        },
    );
    assert!(decode(raw, &b).is_ok());
    b[56 + 64 + 2] = 1;
    assert_eq!(errno_of(raw, &b), E2BIG);
    // Counts that would overflow size math are rejected by the caps first.
    let mut b = good.clone();
    set_u32(&mut b, 16 + 8, u32::MAX);
    assert_eq!(errno_of(raw, &b), EINVAL);
}

#[test]
fn exec_and_wait_rules() {
    let (raw, good) = encode(&sample(Opcode::Exec));
    let mut b = good.clone();
    set_u32(&mut b, 16 + 4, wire::MAX_BATCHES + 1);
    assert_eq!(errno_of(raw, &b), EINVAL, "too many batches");
    let mut b = good.clone();
    set_u64(&mut b, 48, 0x1004);
    assert_eq!(errno_of(raw, &b), EINVAL, "batch misaligned");

    let (raw, good) = encode(&sample(Opcode::WaitUserFence));
    let mut b = good.clone();
    set_u64(&mut b, 24, 0x1001);
    assert_eq!(errno_of(raw, &b), EINVAL, "addr misaligned");
    let mut b = good.clone();
    set_u16(&mut b, 32, 6);
    assert_eq!(errno_of(raw, &b), EINVAL, "unknown op");
    let mut b = good.clone();
    set_u16(&mut b, 34, 2);
    assert_eq!(errno_of(raw, &b), EINVAL, "unknown flag");
}

#[test]
fn syncobj_rules() {
    let (raw, good) = encode(&sample(Opcode::SyncobjWait));
    let mut b = good.clone();
    set_u32(&mut b, 16, 0);
    b.truncate(16 + 40);
    assert_eq!(errno_of(raw, &b), EINVAL, "zero count");
    let mut b = good.clone();
    set_u32(&mut b, 16 + 8, 8);
    assert_eq!(errno_of(raw, &b), EINVAL, "unknown wait flag");
    let mut b = good.clone();
    set_u32(&mut b, 56 + 4, 1);
    assert_eq!(errno_of(raw, &b), EINVAL, "element pad");

    let (raw, good) = encode(&sample(Opcode::SyncobjTransfer));
    let mut b = good.clone();
    set_u32(&mut b, 16 + 24, SyncobjWaitFlags::WAIT_ALL.bits());
    assert_eq!(
        errno_of(raw, &b),
        EINVAL,
        "transfer takes WAIT_FOR_SUBMIT only"
    );

    // SYNCOBJ_RESET: args (24 bytes) at 16, elements at 40.
    let (raw, good) = encode(&sample(Opcode::SyncobjReset));
    assert_eq!(
        decode(raw, &good),
        Ok(Request::SyncobjReset(vec![SyncobjId(1)]))
    );
    let mut b = good.clone();
    set_u32(&mut b, 16, 0);
    b.truncate(16 + 24);
    assert_eq!(errno_of(raw, &b), EINVAL, "reset: zero count");
    let mut b = good.clone();
    set_u64(&mut b, 40 + 8, 3);
    assert_eq!(errno_of(raw, &b), EINVAL, "reset: a point");
    let mut b = good.clone();
    set_u32(&mut b, 40 + 4, 1);
    assert_eq!(errno_of(raw, &b), EINVAL, "reset: element pad");
    let mut b = good.clone();
    set_u32(&mut b, 16, wire::MAX_SYNCOBJ_POINTS + 1);
    assert_eq!(errno_of(raw, &b), EINVAL, "reset: too many");

    let (raw, good) = encode(&sample(Opcode::SyncobjCreate));
    let mut b = good.clone();
    set_u32(&mut b, 16, 2);
    assert_eq!(errno_of(raw, &b), EINVAL, "unknown create flag");

    let (raw, good) = encode(&sample(Opcode::Import));
    let mut b = good.clone();
    set_u32(&mut b, 16, 3);
    assert_eq!(errno_of(raw, &b), EINVAL, "unknown import kind");
}

#[test]
fn replies_land_in_out_fields() {
    let (raw, mut b) = encode(&Request::VmCreate(VmCreateFlags::empty()));
    write_reply(raw, &mut b, &Reply::NewId(7)).unwrap();
    assert_eq!(read_args::<VmCreateArgs>(&b).unwrap().vm_id, 7);
    let (raw, mut b) = encode(&sample(Opcode::ExportToken));
    write_reply(
        raw,
        &mut b,
        &Reply::Token(ObjectKind::Syncobj, Token([3, 4])),
    )
    .unwrap();
    let args = read_args::<ExportTokenArgs>(&b).unwrap();
    assert_eq!((args.kind, args.token), (2, [3, 4]));
    let mut short = vec![0u8; 8];
    assert!(write_reply(
        raw,
        &mut short,
        &Reply::Token(ObjectKind::Bo, Token([1, 1]))
    )
    .is_err());
}
