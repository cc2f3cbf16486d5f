//! The Linux userfaultfd ABI, as both ends of the host transport use it: a client creates a
//! userfaultfd for its own address space and registers its GPU-visible ranges
//! ([`create`], [`register_events`]); gpud, holding the descriptor the client passed, reads
//! the events ([`read_events`]) that tell it the client unmapped, moved or dropped them.
//!
//! Owns: the few kernel structures involved (`uffdio_api`, `uffdio_register`, `uffd_msg`),
//! declared once, the ioctls on them, and the parse of event messages into [`UffdEvent`].
//! One of the host transport's `unsafe` modules (the ioctls and the creation of the fd).
//! Must not: decide what an event means for GPU mappings (gpud's `svm` does).
//!
//! Why registration uses write-protect mode: gpud needs the *events* of a range (UNMAP,
//! REMAP, REMOVE), which the kernel sends only for registered ranges, and never its faults:
//! no page of a GPU-visible range is ever write-protected, so WP mode on shared memory
//! (`UFFD_FEATURE_WP_HUGETLBFS_SHMEM`, Linux 5.19+) registers the range for events with no
//! fault that could make the client wait for gpud. MISSING mode would make a client that
//! touches a hole punched in its memfd wait until gpud answers.

#![allow(unsafe_code)]

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use rustix::io::Errno;
use rustix::ioctl::{opcode, Ioctl, IoctlOutput, Opcode, Updater};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `UFFD_API`.
const UFFD_API: u64 = 0xaa;
/// `UFFD_USER_MODE_ONLY`: faults from kernel mode are not handled (allowed unprivileged).
const UFFD_USER_MODE_ONLY: u32 = 1;

/// `UFFD_FEATURE_EVENT_REMAP`.
pub const FEATURE_EVENT_REMAP: u64 = 1 << 2;
/// `UFFD_FEATURE_EVENT_REMOVE`.
pub const FEATURE_EVENT_REMOVE: u64 = 1 << 3;
/// `UFFD_FEATURE_EVENT_UNMAP`.
pub const FEATURE_EVENT_UNMAP: u64 = 1 << 6;
/// `UFFD_FEATURE_WP_HUGETLBFS_SHMEM`: write-protect mode on shared memory.
pub const FEATURE_WP_SHMEM: u64 = 1 << 12;
/// What a GPU-visible range needs: its events, and WP registration of shared memory.
pub const EVENT_FEATURES: u64 =
    FEATURE_EVENT_REMAP | FEATURE_EVENT_REMOVE | FEATURE_EVENT_UNMAP | FEATURE_WP_SHMEM;

/// `UFFDIO_REGISTER_MODE_WP`.
const REGISTER_MODE_WP: u64 = 1 << 1;

/// `UFFD_EVENT_*` codes of `uffd_msg.event`.
mod event {
    pub const PAGEFAULT: u8 = 0x12;
    pub const FORK: u8 = 0x13;
    pub const REMAP: u8 = 0x14;
    pub const REMOVE: u8 = 0x15;
    pub const UNMAP: u8 = 0x16;
}

/// `struct uffdio_api`.
#[repr(C)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

/// `struct uffdio_register` (`struct uffdio_range` inlined).
#[repr(C)]
struct UffdioRegister {
    start: u64,
    len: u64,
    mode: u64,
    ioctls: u64,
}

/// `struct uffd_msg`: 32 bytes, the event code first, the event's arguments from byte 8.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
struct UffdMsg {
    event: u8,
    reserved1: u8,
    reserved2: u16,
    reserved3: u32,
    /// The union `arg`: pagefault `{flags, address, ptid}`, remap `{from, to, len}`,
    /// remove / unmap `{start, end}`.
    arg: [u64; 3],
}

const UFFDIO_API: Opcode = opcode::read_write::<UffdioApi>(0xaa, 0x3f);
const UFFDIO_REGISTER: Opcode = opcode::read_write::<UffdioRegister>(0xaa, 0x00);
/// `USERFAULTFD_IOC_NEW` on `/dev/userfaultfd`: returns a new userfaultfd.
const USERFAULTFD_IOC_NEW: Opcode = opcode::none(0xaa, 0x00);

/// `USERFAULTFD_IOC_NEW`, whose result is the new descriptor.
struct NewUffd(usize);

// SAFETY: USERFAULTFD_IOC_NEW takes its flags as the integer argument itself (no pointer is
// dereferenced), and its non-negative result is a new descriptor owned by the caller.
unsafe impl Ioctl for NewUffd {
    type Output = IoctlOutput;
    const IS_MUTATING: bool = false;

    fn opcode(&self) -> Opcode {
        USERFAULTFD_IOC_NEW
    }

    fn as_ptr(&mut self) -> *mut std::ffi::c_void {
        self.0 as *mut std::ffi::c_void
    }

    unsafe fn output_from_ptr(
        out: IoctlOutput,
        _: *mut std::ffi::c_void,
    ) -> rustix::io::Result<IoctlOutput> {
        Ok(out)
    }
}

/// A userfaultfd this process created, and whether it handles kernel-mode faults too.
#[derive(Debug)]
pub struct Created {
    /// The descriptor (close-on-exec, non-blocking).
    pub fd: OwnedFd,
    /// Created through `/dev/userfaultfd` or the privileged syscall (full mode), not as
    /// `UFFD_USER_MODE_ONLY`.
    pub full_mode: bool,
}

/// Creates a userfaultfd for this process's address space with `features` enabled: full
/// mode through `/dev/userfaultfd` if this process may open it, else through the syscall
/// (full mode when privileged or `vm.unprivileged_userfaultfd = 1`), else user-mode only.
pub fn create(features: u64) -> Result<Created, Errno> {
    let flags = (rustix::fs::OFlags::CLOEXEC | rustix::fs::OFlags::NONBLOCK).bits() as usize;
    let from_dev = rustix::fs::open(
        "/dev/userfaultfd",
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .and_then(|dev| {
        // SAFETY: NewUffd passes the flags by value; see its `Ioctl` impl.
        let raw = unsafe { rustix::ioctl::ioctl(&dev, NewUffd(flags)) }?;
        // SAFETY: a successful USERFAULTFD_IOC_NEW returns a fresh descriptor nobody owns.
        Ok(unsafe { OwnedFd::from_raw_fd(raw) })
    });
    let uf = rustix::mm::UserfaultfdFlags::CLOEXEC | rustix::mm::UserfaultfdFlags::NONBLOCK;
    let (fd, full_mode) = match from_dev {
        Ok(fd) => (fd, true),
        // SAFETY: the call only creates a descriptor; what it allows is used by this module
        // for registration and event reads only.
        Err(_) => match unsafe { rustix::mm::userfaultfd(uf) } {
            Ok(fd) => (fd, true),
            Err(_) => {
                let user_only =
                    uf | rustix::mm::UserfaultfdFlags::from_bits_retain(UFFD_USER_MODE_ONLY);
                // SAFETY: as above.
                (unsafe { rustix::mm::userfaultfd(user_only) }?, false)
            }
        },
    };
    let mut api = UffdioApi {
        api: UFFD_API,
        features,
        ioctls: 0,
    };
    // SAFETY: UFFDIO_API reads and writes exactly a `struct uffdio_api`, which `UffdioApi` is.
    unsafe { rustix::ioctl::ioctl(&fd, Updater::<UFFDIO_API, UffdioApi>::new(&mut api)) }?;
    Ok(Created { fd, full_mode })
}

/// Registers `[start, start + len)` of the creating process's address space with `uffd` for
/// events only (write-protect mode, nothing is ever write-protected; see the module docs).
/// `EINVAL` when the range is not mapped or not page aligned, `EBUSY` when another
/// userfaultfd already registered part of it.
pub fn register_events(uffd: BorrowedFd<'_>, start: u64, len: u64) -> Result<(), Errno> {
    let mut reg = UffdioRegister {
        start,
        len,
        mode: REGISTER_MODE_WP,
        ioctls: 0,
    };
    // SAFETY: UFFDIO_REGISTER reads and writes exactly a `struct uffdio_register`. It only
    // marks the range for events; the range itself is not touched.
    unsafe {
        rustix::ioctl::ioctl(
            uffd,
            Updater::<UFFDIO_REGISTER, UffdioRegister>::new(&mut reg),
        )
    }
}

/// An event of a client's address space, as gpud reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UffdEvent {
    /// `[start, end)` was unmapped (munmap, or mmap / mremap over it).
    Unmap {
        /// First byte.
        start: u64,
        /// One past the last byte.
        end: u64,
    },
    /// `[from, from + len)` moved to `to` (mremap). An Unmap of the old range follows.
    Remap {
        /// Old address.
        from: u64,
        /// New address.
        to: u64,
        /// Bytes.
        len: u64,
    },
    /// The pages of `[start, end)` were dropped (madvise DONTNEED / REMOVE).
    Remove {
        /// First byte.
        start: u64,
        /// One past the last byte.
        end: u64,
    },
    /// A page fault (gpud registers nothing that faults; counted and ignored).
    Pagefault {
        /// The faulting address.
        addr: u64,
        /// A write fault.
        write: bool,
    },
    /// An event gpud does not handle (fork is never enabled).
    Other(u8),
}

impl UffdEvent {
    fn parse(m: &UffdMsg) -> UffdEvent {
        let [a, b, c] = m.arg;
        match m.event {
            event::UNMAP => UffdEvent::Unmap { start: a, end: b },
            event::REMOVE => UffdEvent::Remove { start: a, end: b },
            event::REMAP => UffdEvent::Remap {
                from: a,
                to: b,
                len: c,
            },
            event::PAGEFAULT => UffdEvent::Pagefault {
                addr: b,
                write: a & 1 != 0,
            },
            other => {
                let _ = event::FORK;
                UffdEvent::Other(other)
            }
        }
    }
}

/// Reads the events pending on `uffd` without blocking (the descriptor must be non-blocking,
/// as [`create`] makes it), appending them to `out`; returns how many were read (0: none
/// pending). Each read also releases the client thread that waits for it.
pub fn read_events(uffd: BorrowedFd<'_>, out: &mut Vec<UffdEvent>) -> Result<usize, Errno> {
    const BATCH: usize = 64;
    let mut buf = [0u8; BATCH * size_of::<UffdMsg>()];
    let mut total = 0;
    loop {
        let n = match rustix::io::read(uffd, &mut buf) {
            Ok(n) => n,
            Err(Errno::AGAIN) => return Ok(total),
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Err(Errno::PIPE);
        }
        let msgs = buf.get(..n).unwrap_or_default();
        for chunk in msgs.chunks_exact(size_of::<UffdMsg>()) {
            if let Ok(m) = UffdMsg::read_from_bytes(chunk) {
                out.push(UffdEvent::parse(&m));
                total += 1;
            }
        }
        if n < buf.len() {
            return Ok(total);
        }
    }
}

/// Whether `fd` is a userfaultfd (its `/proc/self/fd` link names the anonymous inode).
pub fn is_userfaultfd(fd: BorrowedFd<'_>) -> bool {
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    rustix::fs::readlink(path.as_str(), Vec::new())
        .is_ok_and(|l| l.as_bytes() == b"anon_inode:[userfaultfd]")
}

/// Whether `fd` reads without blocking: its status flags include `O_NONBLOCK`.
pub fn is_nonblocking(fd: impl AsFd) -> bool {
    rustix::fs::fcntl_getfl(fd).is_ok_and(|f| f.contains(rustix::fs::OFlags::NONBLOCK))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_layout_is_the_kernels() {
        assert_eq!(size_of::<UffdMsg>(), 32);
        assert_eq!(size_of::<UffdioApi>(), 24);
        assert_eq!(size_of::<UffdioRegister>(), 32);
        // The numbers of <linux/userfaultfd.h> on x86_64.
        assert_eq!(UFFDIO_API as u64, 0xc018_aa3f);
        assert_eq!(UFFDIO_REGISTER as u64, 0xc020_aa00);
        assert_eq!(USERFAULTFD_IOC_NEW as u64, 0xaa00);
    }

    #[test]
    fn parses_events() {
        let msg = |event, arg| UffdMsg {
            event,
            reserved1: 0,
            reserved2: 0,
            reserved3: 0,
            arg,
        };
        assert_eq!(
            UffdEvent::parse(&msg(0x16, [0x1000, 0x3000, 0])),
            UffdEvent::Unmap {
                start: 0x1000,
                end: 0x3000
            }
        );
        assert_eq!(
            UffdEvent::parse(&msg(0x14, [0x1000, 0x9000, 0x2000])),
            UffdEvent::Remap {
                from: 0x1000,
                to: 0x9000,
                len: 0x2000
            }
        );
        assert_eq!(
            UffdEvent::parse(&msg(0x15, [0x1000, 0x2000, 0])),
            UffdEvent::Remove {
                start: 0x1000,
                end: 0x2000
            }
        );
        assert_eq!(
            UffdEvent::parse(&msg(0x13, [3, 0, 0])),
            UffdEvent::Other(0x13)
        );
    }

    /// A userfaultfd of this process sees its own munmap of a registered shared range.
    #[test]
    fn munmap_of_a_registered_range_is_an_event() {
        let Ok(created) = create(EVENT_FEATURES) else {
            eprintln!("userfaultfd unavailable here; skipped");
            return;
        };
        assert!(is_userfaultfd(created.fd.as_fd()));
        assert!(is_nonblocking(&created.fd));
        let memfd =
            rustix::fs::memfd_create("uffd-test", rustix::fs::MemfdFlags::CLOEXEC).expect("memfd");
        rustix::fs::ftruncate(&memfd, 0x2000).expect("ftruncate");
        let prot = rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE;
        // SAFETY: a fresh mapping at an address the kernel picks, unmapped below.
        let p = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                0x2000,
                prot,
                rustix::mm::MapFlags::SHARED,
                &memfd,
                0,
            )
        }
        .expect("mmap");
        register_events(created.fd.as_fd(), p as u64, 0x2000).expect("register");
        let mut events = Vec::new();
        assert_eq!(read_events(created.fd.as_fd(), &mut events), Ok(0));
        // A munmap waits until its event was read: read it from another thread.
        let fd = created.fd.try_clone().expect("dup");
        let reader = std::thread::spawn(move || {
            let mut events = Vec::new();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while events.is_empty() && std::time::Instant::now() < deadline {
                let _ = read_events(fd.as_fd(), &mut events);
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            events
        });
        // SAFETY: the mapping made above, not referenced by anything.
        unsafe { rustix::mm::munmap(p, 0x2000) }.expect("munmap");
        let events = reader.join().expect("reader");
        assert_eq!(
            events,
            vec![UffdEvent::Unmap {
                start: p as u64,
                end: p as u64 + 0x2000
            }]
        );
        assert!(!is_userfaultfd(memfd.as_fd()));
    }
}
