//! VM views against the fake driver: the `vm/<id>` grammar on device and root handles,
//! isolation, the table text, paging, destroy while open, limits, and what a view refuses.

mod common;

use common::*;
use gpu_scheme::testing::caller;
use gpu_scheme::uapi::flags::*;
use gpu_scheme::uapi::*;
use gpu_scheme::Limits;
use redox_scheme::scheme::SchemeSync;
use syscall::error::*;
use syscall::flag::MapFlags;

/// The whole text of a view, or its errno.
fn view(h: &mut Harness, id: usize) -> Result<String, i32> {
    let mut buf = vec![0u8; 1 << 16];
    let n =
        h.s.read(id, &mut buf, 0, 0, &caller())
            .map_err(|e| e.errno)?;
    Ok(String::from_utf8(buf[..n].to_vec()).expect("utf8"))
}

/// The value of header line `key`.
fn header(text: &str, key: &str) -> String {
    let prefix = format!("{key}: ");
    let line = text.lines().find_map(|l| l.strip_prefix(prefix.as_str()));
    line.unwrap_or_else(|| panic!("no {key} in {text}"))
        .to_string()
}

fn fpath(h: &mut Harness, id: usize) -> String {
    let mut buf = [0u8; 128];
    let n = h.s.fpath(id, &mut buf, &caller()).expect("fpath");
    String::from_utf8(buf[..n].to_vec()).expect("utf8")
}

fn op(kind: BindOpKind, addr: u64, range: u64, flags: BindFlags) -> BindOp {
    BindOp {
        kind,
        addr,
        range,
        flags,
        pat_index: 0,
    }
}

#[test]
fn vm_paths_on_a_device_handle() {
    let mut h = Harness::new();
    let dev = h.open();
    let vm = h.vm(dev, VmCreateFlags::empty());
    assert!(h.dup(dev, &format!("vm/{}", vm.0)).is_ok());
    for bad in [
        "vm/0".to_string(),
        "vm/01".into(),
        format!("vm/0{}", vm.0),
        format!("vm/{}", vm.0 + 1),
        "vm/4294967296".into(),
        "vm/18446744073709551616".into(),
        "vm/99999999999999999999999999".into(),
        "vm/".into(),
        "vm".into(),
        "vm/-1".into(),
        format!("vm/{}/", vm.0),
        format!("client/1/vm/{}", vm.0),
    ] {
        assert_eq!(h.dup(dev, &bad), Err(ENOENT), "{bad}");
    }
    // Not an object id of another kind either.
    let bo = h.bo(dev, 0x1000, None);
    assert_eq!(h.dup(dev, &format!("vm/{}", bo.0)), Err(ENOENT));
}

#[test]
fn another_clients_vm_is_enoent_and_same_numbers_name_own_vms() {
    let mut h = Harness::new();
    let a = h.open();
    let b = h.open();
    let vm_a = h.vm(a, VmCreateFlags::empty());
    let bo = h.bo(a, 0x2000, None);
    h.call(a, &bind(vm_a, vec![map(bo, 0x10000, 0x2000)], vec![]))
        .expect("bind");
    // B has no VM: A's id names nothing in B.
    assert_eq!(h.dup(b, &format!("vm/{}", vm_a.0)), Err(ENOENT));
    // B's own VM with the same number shows B's (empty) table, never A's.
    let vm_b = h.vm(b, VmCreateFlags::empty());
    assert_eq!(vm_b, vm_a, "ids are per client, both start at 1");
    let vb = h.dup(b, &format!("vm/{}", vm_b.0)).expect("own view");
    let text = view(&mut h, vb).expect("read");
    assert_eq!(header(&text, "mappings"), "0");
    assert!(!text.contains("0x000000010000"), "{text}");
}

#[test]
fn table_text_lists_every_mapping_in_va_order() {
    let mut h = Harness::new();
    let dev = h.open();
    let vm = h.vm(dev, VmCreateFlags::SCRATCH_PAGE);
    let bo = h.bo(dev, 0x4000, None);
    let ops = vec![
        op(BindOpKind::MapNull, 0x40_0000, 0x1000, BindFlags::empty()),
        op(
            BindOpKind::Map {
                bo,
                bo_offset: 0x1000,
            },
            0x20_0000,
            0x2000,
            BindFlags::READONLY,
        ),
        op(
            BindOpKind::MapUserptr {
                userptr: 0x7f00_0000,
            },
            0x30_0000,
            0x1000,
            BindFlags::empty(),
        ),
        map(bo, 0x10_0000, 0x4000),
    ];
    h.call(dev, &bind(vm, ops, vec![])).expect("bind");
    let v = h.dup(dev, &format!("vm/{}", vm.0)).expect("view");
    let text = view(&mut h, v).expect("read");
    let client = header(&h.read(dev), "client-id");
    let daemon = header(&text, "vm-daemon-id");
    let expected = format!(
        "vm-id: {}\nvm-daemon-id: {daemon}\nclient: {client}\nmappings: 4\nflags: scratch-page\n\
         0x000000100000 0x000000104000 bo={b} offset=0x0\n\
         0x000000200000 0x000000202000 bo={b} offset=0x1000 ro\n\
         0x000000300000 0x000000301000 bo=- offset=0x7f000000 userptr\n\
         0x000000400000 0x000000401000 bo=- offset=0x0 null\n",
        vm.0,
        b = bo.0
    );
    assert_eq!(text, expected);
    // A BO the client no longer names shows as `bo=-` (the mapping keeps it alive).
    h.call(dev, &Request::BoDestroy(bo)).expect("bo destroy");
    let text = view(&mut h, v).expect("read");
    assert!(text.contains("0x000000104000 bo=- offset=0x0\n"), "{text}");
    // An unmap that splits a mapping shows both pieces.
    let unmap = op(BindOpKind::Unmap, 0x10_1000, 0x1000, BindFlags::empty());
    h.call(dev, &bind(vm, vec![unmap], vec![])).expect("unmap");
    let text = view(&mut h, v).expect("read");
    assert_eq!(header(&text, "mappings"), "5");
    assert!(text.contains("0x000000100000 0x000000101000 bo=- offset=0x0\n"));
    assert!(text.contains("0x000000102000 0x000000104000 bo=- offset=0x2000\n"));
}

#[test]
fn pages_by_offset_through_one_snapshot() {
    let mut h = Harness::new();
    let dev = h.open();
    let vm = h.vm(dev, VmCreateFlags::empty());
    let bo = h.bo(dev, 0x1000, None);
    let ops = (0..300).map(|i| map(bo, 0x100_0000 + i * 0x1000, 0x1000));
    h.call(dev, &bind(vm, ops.collect(), vec![])).expect("bind");
    let v = h.dup(dev, &format!("vm/{}", vm.0)).expect("view");
    let whole = view(&mut h, v).expect("read");
    assert_eq!(whole.lines().count(), 5 + 300);
    assert!(whole.len() > 8192, "more than a page of text");
    // Page in 1000-byte reads; a bind between pages does not tear the snapshot.
    let mut paged = Vec::new();
    let mut buf = [0u8; 1000];
    loop {
        let off = paged.len() as u64;
        let n = h.s.read(v, &mut buf, off, 0, &caller()).expect("read");
        if n == 0 {
            break;
        }
        paged.extend_from_slice(&buf[..n]);
        if off == 0 {
            h.call(dev, &bind(vm, vec![map(bo, 0x800_0000, 0x1000)], vec![]))
                .expect("bind between pages");
        }
    }
    assert_eq!(String::from_utf8(paged).expect("utf8"), whole);
    // A new read from offset 0 sees the new mapping.
    let fresh = view(&mut h, v).expect("read");
    assert_eq!(header(&fresh, "mappings"), "301");
}

#[test]
fn root_views_by_daemon_id_and_by_client() {
    let mut h = Harness::new();
    let dev = h.open();
    let vm = h.vm(dev, VmCreateFlags::LR_MODE);
    let bo = h.bo(dev, 0x1000, None);
    h.call(dev, &bind(vm, vec![map(bo, 0x1000, 0x1000)], vec![]))
        .expect("bind");
    let own = h.dup(dev, &format!("vm/{}", vm.0)).expect("view");
    let text = view(&mut h, own).expect("read");
    let daemon = header(&text, "vm-daemon-id");
    let client = header(&text, "client");
    let root = h.root;
    let by_id = h.dup(root, &format!("vm/{daemon}")).expect("root view");
    assert_eq!(view(&mut h, by_id).expect("read"), text);
    let by_client = h
        .dup(root, &format!("client/{client}/vm/{}", vm.0))
        .expect("root view by client");
    assert_eq!(view(&mut h, by_client).expect("read"), text);
    assert_eq!(fpath(&mut h, by_id), format!("/scheme/gpu/vm/{daemon}"));
    assert_eq!(fpath(&mut h, own), format!("/scheme/gpu/card0/vm/{}", vm.0));
    // Root views do not count against the client.
    assert_eq!(header(&h.read(dev), "client-handles"), "1");
    for bad in [
        format!("vm/{}", daemon.parse::<u64>().expect("id") + 1000),
        "vm/0".into(),
        format!("vm/0{daemon}"),
        format!("client/{client}/vm/{}", vm.0 + 1),
        format!(
            "client/{}/vm/{}",
            client.parse::<u64>().expect("id") + 1,
            vm.0
        ),
    ] {
        assert_eq!(h.dup(root, &bad), Err(ENOENT), "{bad}");
    }
    // BO and syncobj paths stay device-only.
    assert_eq!(h.dup(root, &format!("bo/{}", bo.0)), Err(EBADF));
}

#[test]
fn reads_after_the_vm_is_destroyed_are_enoent() {
    let mut h = Harness::new();
    let dev = h.open();
    let vm = h.vm(dev, VmCreateFlags::empty());
    let bo = h.bo(dev, 0x1000, None);
    h.call(dev, &bind(vm, vec![map(bo, 0x1000, 0x1000)], vec![]))
        .expect("bind");
    let v = h.dup(dev, &format!("vm/{}", vm.0)).expect("view");
    let text = view(&mut h, v).expect("read");
    let daemon = header(&text, "vm-daemon-id");
    let root = h.root;
    let rv = h.dup(root, &format!("vm/{daemon}")).expect("root view");
    // Read the first page only, then destroy: no later page may come from the old snapshot.
    let mut buf = [0u8; 16];
    h.s.read(v, &mut buf, 0, 0, &caller()).expect("first page");
    h.call(dev, &Request::VmDestroy(vm)).expect("destroy");
    let err = h.s.read(v, &mut buf, 16, 0, &caller()).map(|_| ());
    assert_eq!(err.map_err(|e| e.errno), Err(ENOENT));
    assert_eq!(view(&mut h, v), Err(ENOENT));
    assert_eq!(view(&mut h, rv), Err(ENOENT));
    // A new VM that reuses nothing of the old one is not shown through the old view.
    let _vm2 = h.vm(dev, VmCreateFlags::empty());
    assert_eq!(view(&mut h, v), Err(ENOENT));
    assert_eq!(h.dup(dev, &format!("vm/{}", vm.0)), Err(ENOENT));
    h.s.on_close(v);
    h.s.on_close(rv);
    assert_eq!(header(&h.read(dev), "client-handles"), "0");
}

#[test]
fn a_view_outlives_its_client_but_reads_enoent_and_then_frees_the_record() {
    let mut h = Harness::new();
    let dev = h.open();
    let vm = h.vm(dev, VmCreateFlags::empty());
    let v = h.dup(dev, &format!("vm/{}", vm.0)).expect("view");
    assert!(view(&mut h, v).is_ok());
    h.s.on_close(dev);
    assert_eq!(view(&mut h, v), Err(ENOENT));
    assert_eq!(h.s.client_count(), 1, "the view keeps the client record");
    h.s.on_close(v);
    assert_eq!(h.s.client_count(), 0);
    assert_eq!(view(&mut h, v), Err(EBADF), "closed handle");
}

#[test]
fn views_count_against_the_handle_limit() {
    let limits = Limits {
        handles: 2,
        ..Limits::default()
    };
    let mut h = Harness::with_limits(limits);
    let dev = h.open();
    let vm = h.vm(dev, VmCreateFlags::empty());
    let path = format!("vm/{}", vm.0);
    let v1 = h.dup(dev, &path).expect("view 1");
    let s = h.syncobj(dev, false);
    let _s1 = h
        .dup(dev, &format!("syncobj/{}", s.0))
        .expect("syncobj handle");
    assert_eq!(h.dup(dev, &path), Err(EMFILE));
    assert_eq!(header(&h.read(dev), "client-handles"), "2");
    h.s.on_close(v1);
    let _v2 = h.dup(dev, &path).expect("freed by close");
    // The root has its own budget of the same size.
    let daemon = header(&view(&mut h, _v2).expect("read"), "vm-daemon-id");
    let root = h.root;
    let r1 = h.dup(root, &format!("vm/{daemon}")).expect("root view 1");
    let _r2 = h.dup(root, &format!("vm/{daemon}")).expect("root view 2");
    assert_eq!(h.dup(root, &format!("vm/{daemon}")), Err(EMFILE));
    h.s.on_close(r1);
    assert!(h.dup(root, &format!("vm/{daemon}")).is_ok());
}

#[test]
fn a_view_is_not_exportable_mappable_or_callable() {
    let mut h = Harness::new();
    let dev = h.open();
    let vm = h.vm(dev, VmCreateFlags::empty());
    let v = h.dup(dev, &format!("vm/{}", vm.0)).expect("view");
    assert_eq!(h.err(v, &Request::ExportToken), EBADF);
    assert_eq!(h.err(v, &Request::DeviceQuery), EBADF);
    assert_eq!(h.err(v, &Request::VmDestroy(vm)), EBADF);
    let r = h.s.mmap_prep(v, 0, 4096, MapFlags::PROT_READ, &caller());
    assert_eq!(r.map_err(|e| e.errno), Err(EBADF));
    // Nothing can be derived from a view, and IMPORT cannot name it.
    assert_eq!(h.dup(v, &format!("vm/{}", vm.0)), Err(EBADF));
    let import = Request::Import {
        kind: ObjectKind::Bo,
        token: None,
    };
    assert_eq!(h.call2(dev, v, &import), Err(EBADF));
    // The VM is still usable and its view still reads.
    assert!(view(&mut h, v).is_ok());
}

/// Only uid 0 and the administrator's uid see other clients through the root: an ordinary
/// user's root gets the device-wide totals, no client blocks or per-VM lines, and no views.
#[test]
fn the_root_shows_other_clients_only_to_privileged_callers() {
    let mut h = Harness::new();
    let a = h.open();
    let vm = h.vm(a, VmCreateFlags::empty());
    let own = h.dup(a, &format!("vm/{}", vm.0)).unwrap();
    let daemon = header(&view(&mut h, own).unwrap(), "vm-daemon-id");
    let root = h.root;
    let as_user = |uid: u32| {
        let mut c = caller();
        c.uid = uid;
        c
    };
    let read_root = |h: &mut Harness, uid: u32| {
        let mut buf = vec![0u8; 1 << 16];
        let n =
            h.s.read(root, &mut buf, 0, 0, &as_user(uid))
                .expect("root read");
        String::from_utf8(buf[..n].to_vec()).expect("utf8")
    };
    let path = format!("vm/{daemon}");
    let user = read_root(&mut h, 1000);
    assert!(user.contains("device-clients: "), "{user}");
    assert!(!user.contains("client-id:"), "{user}");
    assert!(!user.contains(&format!("vm-{daemon}-")), "{user}");
    let refused =
        h.s.dup(root, path.as_bytes(), &as_user(1000))
            .map(|_| ())
            .map_err(|e| e.errno);
    assert_eq!(refused, Err(EACCES));
    let admin = read_root(&mut h, 0);
    assert!(
        admin.contains("client-id:") && admin.contains(&format!("vm-{daemon}-mappings: 0")),
        "{admin}"
    );
    assert!(h.s.dup(root, path.as_bytes(), &as_user(0)).is_ok());
    // The daemon's own user is an administrator too once named.
    h.s.set_admin_uid(1000);
    assert!(read_root(&mut h, 1000).contains("client-id:"));
    assert!(h.s.dup(root, path.as_bytes(), &as_user(1000)).is_ok());
}
