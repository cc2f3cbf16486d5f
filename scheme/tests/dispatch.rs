//! The server driven through redox-scheme's own decoder (`Op::from_sqe_unchecked` +
//! `handle_sync_dont_consume`), as the kernel drives it on Redox.

mod common;

use common::*;
use gpu_scheme::dispatch::{caller_ctx, dispatch, Peer, TransportOp};
use gpu_scheme::uapi::flags::*;
use gpu_scheme::uapi::wire::*;
use gpu_scheme::uapi::*;
use redox_scheme::scheme::{SchemeResponse, SchemeState};
use redox_scheme::OpenResult;
use syscall::error::*;
use syscall::flag::{EventFlags, MapFlags, MunmapFlags};

fn regular(r: SchemeResponse) -> Result<usize, i32> {
    match r {
        SchemeResponse::Regular(r) => r.map_err(|e| e.errno),
        other => panic!("unexpected {other:?}"),
    }
}

fn opened_id(r: SchemeResponse) -> Result<usize, i32> {
    match r {
        SchemeResponse::Opened(Ok(OpenResult::ThisScheme { number, .. })) => Ok(number),
        SchemeResponse::Opened(Err(e)) => Err(e.errno),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn full_path_through_the_redox_decoder() {
    let mut h = Harness::new();
    let mut st = SchemeState::new();
    let root = h.root;
    let dev = opened_id(dispatch(
        &mut h.s,
        &mut st,
        TransportOp::OpenAt {
            dirfd: root,
            path: "card0",
        },
        1,
        Peer { pid: 7, uid: 0 },
    ))
    .unwrap();
    assert_eq!(
        opened_id(dispatch(
            &mut h.s,
            &mut st,
            TransportOp::OpenAt {
                dirfd: root,
                path: "card9"
            },
            2,
            Peer { pid: 7, uid: 0 }
        )),
        Err(ENOENT)
    );

    let (op, mut p) = encode(&Request::SyncobjCreate { signaled: false });
    let r = dispatch(
        &mut h.s,
        &mut st,
        TransportOp::Call {
            fd: dev,
            second: None,
            payload: &mut p,
            metadata: [op, 0, 0],
        },
        3,
        Peer { pid: 7, uid: 0 },
    );
    assert_eq!(regular(r), Ok(0));
    let s = read_args::<SyncobjCreateArgs>(&p).unwrap().syncobj_id;
    assert_ne!(s, 0);

    let (op, mut p) = encode(&Request::BoCreate(BoCreateRequest {
        size: 0x2000,
        placement: Placement::SYSTEM,
        flags: BoCreateFlags::empty(),
        vm: None,
    }));
    regular(dispatch(
        &mut h.s,
        &mut st,
        TransportOp::Call {
            fd: dev,
            second: None,
            payload: &mut p,
            metadata: [op, 0, 0],
        },
        4,
        Peer { pid: 7, uid: 0 },
    ))
    .unwrap();
    let bo = read_args::<BoCreateArgs>(&p).unwrap().bo_id;
    let path = format!("bo/{bo}");
    let boh = opened_id(dispatch(
        &mut h.s,
        &mut st,
        TransportOp::Dup {
            fd: dev,
            buf: path.as_bytes(),
        },
        5,
        Peer { pid: 7, uid: 0 },
    ))
    .unwrap();
    let f = MapFlags::PROT_READ | MapFlags::MAP_SHARED;
    let addr = regular(dispatch(
        &mut h.s,
        &mut st,
        TransportOp::MmapPrep {
            fd: boh,
            offset: 0x1000,
            len: 0x1000,
            flags: f,
        },
        6,
        Peer { pid: 7, uid: 0 },
    ))
    .unwrap();
    assert_eq!(addr % 4096, 0);
    regular(dispatch(
        &mut h.s,
        &mut st,
        TransportOp::Munmap {
            fd: boh,
            offset: 0x1000,
            len: 0x1000,
            flags: MunmapFlags::empty(),
        },
        7,
        Peer { pid: 7, uid: 0 },
    ))
    .unwrap();

    // Import through MULTIPLE_IDS, as call_multiple_ids on Redox.
    let other = opened_id(dispatch(
        &mut h.s,
        &mut st,
        TransportOp::OpenAt {
            dirfd: root,
            path: "card0",
        },
        8,
        Peer { pid: 9, uid: 0 },
    ))
    .unwrap();
    let (op, mut p) = encode(&Request::Import {
        kind: ObjectKind::Bo,
        token: None,
    });
    regular(dispatch(
        &mut h.s,
        &mut st,
        TransportOp::Call {
            fd: other,
            second: Some(boh),
            payload: &mut p,
            metadata: [op, 0, 0],
        },
        9,
        Peer { pid: 9, uid: 0 },
    ))
    .unwrap();
    assert_ne!(read_args::<ImportArgs>(&p).unwrap().id, 0);

    let mut buf = [0u8; 512];
    let n = regular(dispatch(
        &mut h.s,
        &mut st,
        TransportOp::Read {
            fd: dev,
            buf: &mut buf,
            offset: 0,
        },
        10,
        Peer { pid: 7, uid: 0 },
    ))
    .unwrap();
    assert!(std::str::from_utf8(&buf[..n])
        .unwrap()
        .contains("client-bos: 1"));
    let ev = regular(dispatch(
        &mut h.s,
        &mut st,
        TransportOp::Fevent {
            fd: dev,
            flags: EventFlags::EVENT_READ,
        },
        11,
        Peer { pid: 7, uid: 0 },
    ));
    assert_eq!(ev, Ok(0));
    let (op, mut p) = encode(&Request::DeviceQuery);
    let r = dispatch(
        &mut h.s,
        &mut st,
        TransportOp::Call {
            fd: 4242,
            second: None,
            payload: &mut p,
            metadata: [op, 0, 0],
        },
        12,
        Peer { pid: 7, uid: 0 },
    );
    assert_eq!(regular(r), Err(EBADF));
}

#[test]
fn parked_requests_are_told_apart_by_request_id() {
    let mut h = Harness::new();
    let mut st = SchemeState::new();
    let dev = h.open();
    let vm = h.vm(dev, VmCreateFlags::empty());
    let s = h.syncobj(dev, false);
    h.call(dev, &bind(vm, vec![], vec![signal(s)])).unwrap();
    let wait = |timeout| syncobj_wait(&[s], SyncobjWaitFlags::empty(), timeout);
    let mut run = |h: &mut Harness, tag, timeout| {
        let (op, mut p) = encode(&wait(timeout));
        regular(dispatch(
            &mut h.s,
            &mut st,
            TransportOp::Call {
                fd: dev,
                second: None,
                payload: &mut p,
                metadata: [op, 0, 0],
            },
            tag,
            Peer { pid: 1, uid: 0 },
        ))
    };
    assert_eq!(run(&mut h, 100, Timeout::Relative(10)), Err(EWOULDBLOCK));
    h.driver().advance(5);
    assert_eq!(run(&mut h, 200, Timeout::Relative(10)), Err(EWOULDBLOCK));
    assert_eq!(h.s.parked_count(), 2);
    h.driver().advance(6);
    assert_eq!(
        run(&mut h, 100, Timeout::Relative(10)),
        Err(ETIME),
        "first deadline passed"
    );
    assert_eq!(
        run(&mut h, 200, Timeout::Relative(10)),
        Err(EWOULDBLOCK),
        "second still running"
    );
    h.s.cancel(caller_ctx(1, 200).id);
    assert_eq!(h.s.parked_count(), 0);
}
