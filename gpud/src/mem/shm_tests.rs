//! Tests of the shared-memory windows: atomic access, per-object memfds bound over window
//! pieces and unbound again, and a property test of page ownership against a model.

use super::*;
use crate::hw::sim::dma::HeapDma;
use crate::hw::DmaMemory;
use proptest::prelude::*;
use rustix::io::{pread, pwrite};
use std::sync::Arc;

const P: u64 = SHM_PAGE;

fn pool(pages: u64) -> Arc<ShmPool> {
    Arc::new(ShmPool::with_budget("gpud-test", pages * P, MapBudget::new(1024)).unwrap())
}

fn piece(page: u64, pages: u64) -> Piece {
    Piece {
        addr: page * P,
        len: pages * P,
    }
}

/// Everything readable through `fd`: pread stops at the end of the file.
fn read_all(fd: BorrowedFd<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = pread(fd, &mut buf, out.len() as u64).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn bytes_and_atomics_round_trip_and_bounds_are_typed_errors() {
    let p = ShmPool::new("gpud-test", 1 << 16).unwrap();
    p.write(3, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]).unwrap();
    let mut b = [0u8; 13];
    p.read(2, &mut b).unwrap();
    assert_eq!(b, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0]);
    p.store_u64(8, 0x1122_3344_5566_7788).unwrap();
    assert_eq!(p.load_u32(12).unwrap(), 0x1122_3344);
    assert_eq!(p.fetch_add_u32(16, 5).unwrap(), 0);
    assert_eq!(p.compare_exchange_u64(16, 5, 9).unwrap(), Ok(5));
    assert_eq!(p.compare_exchange_u64(16, 5, 1).unwrap(), Err(9));
    assert_eq!(
        p.load_u64(3),
        Err(MemError::Misaligned { addr: 3, align: 8 })
    );
    assert!(matches!(
        p.read(1 << 16, &mut b),
        Err(MemError::OutOfRange { .. })
    ));
    assert!(matches!(
        ShmPool::new("x", 100),
        Err(ShmError::Size { size: 100 })
    ));
}

/// An object bound over two pieces (out of window order) is one memfd of exactly their size,
/// with file offset = offset in the object; window and fd see each other's writes.
#[test]
fn object_fd_is_exactly_the_object_mapped_piecewise() {
    let pool = pool(16);
    let obj = pool.bind(&[piece(9, 2), piece(3, 1)]).unwrap();
    let fd = obj.fd().try_clone_to_owned().unwrap();
    assert_eq!(rustix::fs::fstat(&fd).unwrap().st_size as u64, 3 * P);
    pool.write(9 * P + 5, b"first").unwrap();
    pool.write(3 * P, b"third").unwrap();
    let mut buf = [0u8; 5];
    pread(&fd, &mut buf, 5).unwrap();
    assert_eq!(&buf, b"first");
    pread(&fd, &mut buf, 2 * P).unwrap();
    assert_eq!(&buf, b"third");
    pwrite(&fd, b"CLIENT", P + 7).unwrap();
    let mut back = [0u8; 6];
    pool.read(10 * P + 7, &mut back).unwrap();
    assert_eq!(&back, b"CLIENT");
    // Nothing past the object is reachable through its fd.
    assert_eq!(pread(&fd, &mut buf, 3 * P).unwrap(), 0);
    // Sealed: a holder cannot resize it (shrinking would fault the daemon's accesses).
    assert!(rustix::fs::ftruncate(&fd, 0).is_err());
    assert!(rustix::fs::ftruncate(&fd, 64 * P).is_err());
    assert_eq!(pool.budget().used(), 2);
    drop(obj);
    assert_eq!(pool.budget().used(), 0);
}

/// After unbind the window shows the pool's memory again, a stale holder keeps the old pages
/// and the next object over the same range is invisible to it.
#[test]
fn unbind_recovers_the_range_and_stale_holders_stay_private() {
    let pool = pool(8);
    pool.write(2 * P, b"driver data").unwrap();
    let a = pool.bind(&[piece(2, 2)]).unwrap();
    let mut buf = [0u8; 11];
    pool.read(2 * P, &mut buf).unwrap();
    assert_eq!(buf, [0; 11], "a new object starts zeroed");
    pool.write(2 * P, b"secret of A").unwrap();
    let stale = a.fd().try_clone_to_owned().unwrap();
    a.unbind().unwrap();
    pool.read(2 * P, &mut buf).unwrap();
    assert_eq!(
        buf, [0; 11],
        "the pool's pages came back (zeroed when A was bound)"
    );
    pool.write(2 * P, b"page tables").unwrap();
    let b = pool.bind(&[piece(2, 2)]).unwrap();
    pool.write(2 * P, b"secret of B").unwrap();
    pread(&stale, &mut buf, 0).unwrap();
    assert_eq!(
        &buf, b"secret of A",
        "A's holder sees A's pages, not B's nor the pool's"
    );
    pwrite(&stale, b"scribble", 0).unwrap();
    pool.read(2 * P, &mut buf).unwrap();
    assert_eq!(&buf, b"secret of B", "a stale holder cannot write into B");
    drop(b);
}

#[test]
fn budget_and_bad_pieces_fail_cleanly() {
    let pool = Arc::new(ShmPool::with_budget("gpud-test", 8 * P, MapBudget::new(2)).unwrap());
    let a = pool.bind(&[piece(0, 1), piece(2, 1)]).unwrap();
    let e = pool.bind(&[piece(4, 1)]).unwrap_err();
    assert_eq!(
        e.error,
        ShareError::Limit {
            used: 2,
            pieces: 1,
            limit: 2
        }
    );
    assert!(!e.range_lost);
    drop(a);
    let b = pool.bind(&[piece(4, 1)]).unwrap();
    for bad in [piece(7, 2), Piece { addr: 5, len: P }, piece(1, 0)] {
        assert!(matches!(
            pool.bind(&[bad]).unwrap_err().error,
            ShareError::Range { .. }
        ));
    }
    assert!(matches!(
        pool.bind(&[]).unwrap_err().error,
        ShareError::Range { .. }
    ));
    assert_eq!(pool.budget().used(), 1, "failed binds take nothing");
    drop(b);
}

/// The device walks page tables kept in the pool and reaches pages in it.
#[test]
fn page_tables_in_the_pool_are_walked_by_the_device() {
    use crate::vm::pagetable::memory::SysPtMemory;
    use crate::vm::pagetable::{MapTarget, PageTable, PhysSeg, PtConfig, PtOp};
    let pool = Arc::new(ShmPool::new("gpud-test", 4 << 20).unwrap());
    let dma: Arc<dyn DmaMemory> = Arc::new(HeapDma::new(pool.clone()));
    let mut pt =
        PageTable::new(Arc::new(SysPtMemory::new(dma.clone())), PtConfig::default()).unwrap();
    let page = dma.alloc(4096).unwrap();
    let target = MapTarget::Pages {
        location: crate::hw::MemLocation::System,
        flags: crate::hw::pte::LeafFlags::default(),
        segments: vec![PhysSeg {
            addr: page.addr,
            len: 4096,
        }],
    };
    let op = PtOp::Map {
        va: crate::types::GpuVa(0x5000),
        len: 4096,
        target,
    };
    let _ = pt.prepare(&[op]).unwrap().commit();
    let vram = simgpu::HeapMemory::new(4096);
    let mems = simgpu::mmu::Memories {
        sys: &*pool,
        vram: &vram,
    };
    let root = simgpu::mmu::PtRoot {
        addr: pt.root().addr.get(),
        location: simgpu::Location::System,
    };
    let t = simgpu::mmu::Mmu::new(4)
        .translate(mems, 0, root, 0x5010, simgpu::mmu::Access::Read)
        .unwrap();
    assert_eq!(t.phys, page.addr.get() + 0x10);
}

/// What the model does: allocate an object over free pages, free one, write through the
/// window, write through an object's fd (a client), write a free page (the driver).
#[derive(Debug, Clone)]
enum Act {
    Alloc { pages: Vec<u8> },
    Free(usize),
    WindowWrite { page: u8, seed: u8 },
    FdWrite { obj: usize, page: u8, seed: u8 },
}

const PAGES: u64 = 24;

fn act() -> impl Strategy<Value = Act> {
    prop_oneof![
        proptest::collection::vec(0..PAGES as u8, 1..5).prop_map(|pages| Act::Alloc { pages }),
        any::<usize>().prop_map(Act::Free),
        (0..PAGES as u8, any::<u8>()).prop_map(|(page, seed)| Act::WindowWrite { page, seed }),
        (any::<usize>(), 0..4u8, any::<u8>()).prop_map(|(obj, page, seed)| Act::FdWrite {
            obj,
            page,
            seed
        }),
    ]
}

/// An object of the model: its window pages in object order and its bytes.
struct Obj {
    pages: Vec<u64>,
    bytes: Vec<u8>,
    fd: OwnedFd,
    live: Option<ShmObject>,
}

fn page_of(seed: u8) -> Vec<u8> {
    (0..P)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(simgpu::testkit::proptest_cases(48)))]

    /// Every byte read through the window equals its owner's bytes (a live object's, or the
    /// pool's), and every fd ever handed out reads exactly its object's bytes, also after the
    /// object was freed and its pages reused by others.
    #[test]
    fn window_pages_always_show_their_owner(acts in proptest::collection::vec(act(), 1..40)) {
        let pool = pool(PAGES);
        let mut owner: Vec<Option<usize>> = vec![None; PAGES as usize];
        let mut pool_bytes = vec![0u8; (PAGES * P) as usize];
        let mut objs: Vec<Obj> = Vec::new();
        for a in acts {
            match a {
                Act::Alloc { pages } => {
                    let mut want: Vec<u64> = Vec::new();
                    for p in pages.into_iter().map(u64::from) {
                        if owner[p as usize].is_none() && !want.contains(&p) {
                            want.push(p);
                        }
                    }
                    if want.is_empty() { continue; }
                    let pieces: Vec<Piece> = want.iter().map(|&p| piece(p, 1)).collect();
                    let o = pool.bind(&pieces).unwrap();
                    for &p in &want {
                        owner[p as usize] = Some(objs.len());
                        let at = (p * P) as usize;
                        pool_bytes[at..at + P as usize].fill(0);
                    }
                    objs.push(Obj {
                        bytes: vec![0; want.len() * P as usize],
                        pages: want,
                        fd: o.fd().try_clone_to_owned().unwrap(),
                        live: Some(o),
                    });
                }
                Act::Free(i) => {
                    let live: Vec<usize> = (0..objs.len()).filter(|&k| objs[k].live.is_some()).collect();
                    if live.is_empty() { continue; }
                    let k = live[i % live.len()];
                    objs[k].live.take().unwrap().unbind().unwrap();
                    for &p in &objs[k].pages { owner[p as usize] = None; }
                }
                Act::WindowWrite { page, seed } => {
                    let p = u64::from(page);
                    let data = page_of(seed);
                    pool.write(p * P, &data).unwrap();
                    match owner[p as usize] {
                        Some(k) => {
                            let i = objs[k].pages.iter().position(|&q| q == p).unwrap() * P as usize;
                            objs[k].bytes[i..i + P as usize].copy_from_slice(&data);
                        }
                        None => {
                            let at = (p * P) as usize;
                            pool_bytes[at..at + P as usize].copy_from_slice(&data);
                        }
                    }
                }
                Act::FdWrite { obj, page, seed } => {
                    if objs.is_empty() { continue; }
                    let n = objs.len();
                    let o = &mut objs[obj % n];
                    let i = u64::from(page) % o.pages.len() as u64;
                    let data = page_of(seed);
                    prop_assert_eq!(pwrite(&o.fd, &data, i * P).unwrap(), P as usize);
                    let at = (i * P) as usize;
                    o.bytes[at..at + P as usize].copy_from_slice(&data);
                }
            }
            let mut window = vec![0u8; (PAGES * P) as usize];
            pool.read(0, &mut window).unwrap();
            for p in 0..PAGES as usize {
                let got = &window[p * P as usize..(p + 1) * P as usize];
                let want = match owner[p] {
                    Some(k) => {
                        let i = objs[k].pages.iter().position(|&q| q == p as u64).unwrap() * P as usize;
                        &objs[k].bytes[i..i + P as usize]
                    }
                    None => &pool_bytes[p * P as usize..(p + 1) * P as usize],
                };
                prop_assert!(got == want, "window page {} differs from its owner {:?}", p, owner[p]);
            }
            for o in &objs {
                prop_assert!(read_all(o.fd.as_fd()) == o.bytes, "an fd shows foreign bytes");
            }
        }
        let live = objs.iter().filter(|o| o.live.is_some()).count() as u64;
        let pieces: u64 = objs.iter().filter(|o| o.live.is_some()).map(|o| o.pages.len() as u64).sum();
        prop_assert!(live <= pieces);
        prop_assert_eq!(pool.budget().used(), pieces);
    }
}

/// Threads bind, write, check and unbind objects over a shared page pool at once while
/// another thread keeps using a pool page: every object shows only its own bytes, stale
/// holders keep theirs, the pool page is never disturbed, and the budget returns to zero.
#[test]
fn stress_concurrent_binds_and_unbinds() {
    use parking_lot::Mutex;
    use std::sync::atomic::AtomicBool;
    const N: u64 = 48;
    let pool = pool(N);
    // Page 0 stays the pool's: a counter bumped throughout.
    let free = Arc::new(Mutex::new((1..N).collect::<Vec<u64>>()));
    let stop = Arc::new(AtomicBool::new(false));
    let counter = {
        let (pool, stop) = (pool.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                pool.fetch_add_u64(0, 1).unwrap();
                n += 1;
            }
            n
        })
    };
    let workers: Vec<_> = (0..4u64)
        .map(|t| {
            let (pool, free) = (pool.clone(), free.clone());
            std::thread::spawn(move || {
                let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ t;
                for i in 0..150u64 {
                    rng = rng
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let want = 1 + (rng >> 60) % 3;
                    let pages: Vec<u64> = {
                        let mut f = free.lock();
                        let n = (want as usize).min(f.len());
                        let at = (rng >> 20) as usize % (f.len() - n + 1);
                        f.drain(at..at + n).collect()
                    };
                    if pages.is_empty() {
                        continue;
                    }
                    let pieces: Vec<Piece> = pages.iter().map(|&p| piece(p, 1)).collect();
                    let obj = pool.bind(&pieces).unwrap();
                    let tag = (t << 32 | i).to_le_bytes();
                    for (k, &p) in pages.iter().enumerate() {
                        pool.write(p * P + 8 * k as u64, &tag).unwrap();
                    }
                    let fd = obj.fd().try_clone_to_owned().unwrap();
                    let bytes = read_all(fd.as_fd());
                    for k in 0..pages.len() {
                        let at = k * P as usize + 8 * k;
                        assert_eq!(&bytes[at..at + 8], &tag, "object shows its own bytes");
                    }
                    obj.unbind().unwrap();
                    free.lock().extend(pages);
                    assert_eq!(
                        read_all(fd.as_fd()),
                        bytes,
                        "a stale holder keeps its bytes"
                    );
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let bumps = counter.join().unwrap();
    assert_eq!(
        pool.load_u64(0).unwrap(),
        bumps,
        "the pool page was never disturbed"
    );
    assert_eq!(pool.budget().used(), 0);
    let mut all = vec![0u8; ((N - 1) * P) as usize];
    pool.read(P, &mut all).unwrap();
    assert!(
        all.iter().all(|&b| b == 0),
        "unbound pages read as the pool's (zeroed) pages"
    );
}

/// A client's memfd, `pages` long, each page filled with its index + 1; sealed as asked.
fn client_memfd(pages: u64, seal_shrink: bool) -> OwnedFd {
    use rustix::fs::{fcntl_add_seals, memfd_create, MemfdFlags, SealFlags};
    let fd = memfd_create("client", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING).unwrap();
    rustix::fs::ftruncate(&fd, pages * P).unwrap();
    for i in 0..pages {
        pwrite(&fd, &vec![i as u8 + 1; P as usize], i * P).unwrap();
    }
    if seal_shrink {
        fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW).unwrap();
    }
    fd
}

#[test]
fn foreign_memfd_is_reached_in_place_and_unbind_recovers_the_pool() {
    let p = pool(8);
    p.write(2 * P, &[0x55; 8]).unwrap();
    let client = client_memfd(4, true);
    // Client pages 1..3 over window pages 2 and 5: the device reaches the client's pages.
    let obj = p
        .bind_foreign(&[piece(2, 1), piece(5, 1)], client.as_fd(), P)
        .unwrap();
    let mut b = [0u8; 4];
    p.read(2 * P, &mut b).unwrap();
    assert_eq!(b, [2; 4]);
    p.read(5 * P, &mut b).unwrap();
    assert_eq!(b, [3; 4]);
    // Device writes land in the client's page cache (zero copy, coherent both ways).
    p.write(5 * P + 8, &[9; 4]).unwrap();
    let mut c = [0u8; 4];
    pread(&client, &mut c, 2 * P + 8).unwrap();
    assert_eq!(c, [9; 4]);
    pwrite(&client, &[7; 4], P + 16).unwrap();
    p.read(2 * P + 16, &mut b).unwrap();
    assert_eq!(b, [7; 4]);
    assert_eq!(p.budget().used(), 2);
    obj.unbind().unwrap();
    assert_eq!(p.budget().used(), 0);
    // The pool's memory is back (zero: its page was given back while the object covered
    // it); the client's pages are untouched by later window writes.
    p.read(2 * P, &mut b).unwrap();
    assert_eq!(b, [0; 4]);
    p.write(2 * P, &[0xee; 4]).unwrap();
    pread(&client, &mut c, P).unwrap();
    assert_eq!(c, [2; 4]);
}

#[test]
fn foreign_memfd_must_be_sealed_long_enough_and_a_memfd() {
    let p = pool(8);
    let unsealed = client_memfd(2, false);
    let refused = |r: Result<ShmObject, BindFailure>| match r {
        Err(BindFailure {
            error: ShareError::Foreign(_),
            range_lost: false,
        }) => {}
        other => panic!("expected a Foreign refusal, got {other:?}"),
    };
    refused(p.bind_foreign(&[piece(0, 1)], unsealed.as_fd(), 0));
    let sealed = client_memfd(2, true);
    refused(p.bind_foreign(&[piece(0, 2)], sealed.as_fd(), P));
    let (pipe, _w) = rustix::pipe::pipe().unwrap();
    refused(p.bind_foreign(&[piece(0, 1)], pipe.as_fd(), 0));
    assert!(p.bind_foreign(&[piece(0, 1)], sealed.as_fd(), 3).is_err());
    assert_eq!(p.budget().used(), 0, "refusals take no budget");
    drop(p.bind_foreign(&[piece(0, 2)], sealed.as_fd(), 0).unwrap());
    assert_eq!(
        p.budget().used(),
        0,
        "dropping an object gives its budget back"
    );
}
