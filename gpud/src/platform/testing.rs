//! Test support for the platform layer: scheme requests built from SQEs, responses read back
//! as CQEs, and recording fakes of every `sys` trait.
//!
//! Owns: the only `unsafe` of the platform tests (the `Request`/`Response` transmutes, which
//! redox-scheme offers no constructor or accessor for). Every pointer placed in an SQE here
//! points to `'static` memory (string literals or leaked buffers), so the `Op`s decoded from
//! these requests never dangle. Must not: be used outside `#[cfg(test)]`.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use pcid_config::protocol::{
    MsiInfo, MsixInfo, PciFeature, PciFeatureInfo, PcidServerResponseError, SubdriverArguments,
};
use pcid_config::wire;
use pcid_config::{PcidClientRequest, PcidClientResponse};
use redox_scheme::scheme::SchemeSync;
use redox_scheme::{Request, Response};
use syscall::schemev2::{Cqe, Opcode, Sqe};

use super::sys::*;
use crate::types::{CpuVa, PhysAddr};

/// Turns an SQE into a `Request`.
fn request(sqe: Sqe) -> Request {
    // SAFETY: `Request` is `#[repr(transparent)]` over `Sqe` (redox-scheme 0.12), and every
    // SQE built in this module carries only pointers to `'static` memory.
    unsafe { std::mem::transmute::<Sqe, Request>(sqe) }
}

/// Reads a `Response` back as the CQE the kernel would receive.
pub fn cqe(response: Response) -> Cqe {
    // SAFETY: `Response` is `#[repr(transparent)]` over `Cqe` (redox-scheme 0.12).
    unsafe { std::mem::transmute::<Response, Cqe>(response) }
}

fn sqe(opcode: Opcode, tag: u32, args: [u64; 6]) -> Sqe {
    Sqe {
        opcode: opcode as u8,
        tag,
        args,
        ..Default::default()
    }
}

/// `openat(dirfd, path)` by uid 0.
pub fn openat(tag: u32, dirfd: usize, path: &'static str, fcntl_flags: u32) -> Request {
    let args = [
        dirfd as u64,
        path.as_ptr() as u64,
        path.len() as u64,
        0,
        fcntl_flags.into(),
        0,
    ];
    request(sqe(Opcode::OpenAt, tag, args))
}

/// `dup(fd, path)`: a derived handle (`bo/<id>`, `syncobj/<id>`).
pub fn dup(tag: u32, fd: usize, path: &'static str) -> Request {
    let args = [fd as u64, path.as_ptr() as u64, path.len() as u64, 0, 0, 0];
    request(sqe(Opcode::Dup, tag, args))
}

/// `mmap_prep(fd, offset, len, flags)`: the kernel asking the scheme for a mapping.
pub fn mmap_prep(tag: u32, fd: usize, offset: u64, len: usize, flags: u64) -> Request {
    let args = [fd as u64, len as u64, flags, offset, 0, 0];
    request(sqe(Opcode::MmapPrep, tag, args))
}

/// `munmap(fd, offset, len, flags)`: the kernel reporting that a client mapping went away.
pub fn munmap(tag: u32, fd: usize, offset: u64, len: usize, flags: u64) -> Request {
    let args = [fd as u64, len as u64, flags, offset, 0, 0];
    request(sqe(Opcode::Munmap, tag, args))
}

/// `read(fd, len)` into a leaked buffer.
pub fn read(tag: u32, fd: usize, len: usize, fcntl_flags: u32) -> Request {
    let buf: &'static mut [u8] = Box::leak(vec![0u8; len].into_boxed_slice());
    let args = [
        fd as u64,
        buf.as_mut_ptr() as u64,
        len as u64,
        0,
        fcntl_flags.into(),
        0,
    ];
    request(sqe(Opcode::Read, tag, args))
}

/// A `call` payload handed to the server; leaked so a parked `Op` never dangles.
pub struct Payload {
    ptr: *mut u8,
    len: usize,
}

impl Payload {
    /// The bytes as the server left them. Read only after the request was answered.
    pub fn bytes(&self) -> Vec<u8> {
        // SAFETY: `ptr`/`len` come from a leaked `Box<[u8]>` that lives forever; the request
        // that borrowed it has been answered, so nothing writes it while we copy.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }.to_vec()
    }
}

/// `call(fd, payload, metadata)` (the ioctl path; `metadata[0]` is the opcode).
pub fn call(tag: u32, fd: usize, payload: Vec<u8>, metadata: [u64; 3]) -> (Request, Payload) {
    let buf: &'static mut [u8] = Box::leak(payload.into_boxed_slice());
    let (ptr, len) = (buf.as_mut_ptr(), buf.len());
    let args = [
        fd as u64,
        ptr as u64,
        len as u64,
        metadata[0],
        metadata[1],
        metadata[2],
    ];
    (request(sqe(Opcode::Call, tag, args)), Payload { ptr, len })
}

/// `close` message for handle `id` (the last reference went away).
pub fn on_close(id: usize) -> Request {
    request(sqe(Opcode::CloseMsg, 0, [id as u64, 0, 0, 0, 0, 0]))
}

/// The caller of request `tag` was interrupted.
pub fn cancel(tag: u32) -> Request {
    request(sqe(Opcode::Cancel, tag, [0; 6]))
}

/// A client pushes `num_fds` fds into handle `id`.
pub fn sendfd(tag: u32, id: usize, num_fds: usize) -> Request {
    request(sqe(
        Opcode::Sendfd,
        tag,
        [id as u64, 0, 0, num_fds as u64, 0, 0],
    ))
}

/// An opcode this redox-scheme does not decode into an `Op`.
pub fn undecodable(tag: u32) -> Request {
    request(Sqe {
        opcode: 0xfe,
        tag,
        ..Default::default()
    })
}

/// The CQE result as the kernel demuxes it.
pub fn result(c: &Cqe) -> Result<usize, i32> {
    syscall::Error::demux(c.result as usize).map_err(|e| e.errno)
}

/// A scripted scheme socket that records everything written.
#[derive(Default)]
pub struct FakeSocket {
    /// Requests to hand out, in order.
    pub incoming: VecDeque<Request>,
    /// After `incoming` drains: `true` = unmounted (`Ok(None)`), else `EAGAIN`.
    pub eof: bool,
    /// Responses written, as CQEs.
    pub written: Vec<Cqe>,
    /// Fail every write with this errno.
    pub fail_write: Option<i32>,
}

impl SchemeSocket for FakeSocket {
    fn next_request(&mut self) -> Result<Option<Request>, SysError> {
        match self.incoming.pop_front() {
            Some(r) => Ok(Some(r)),
            None if self.eof => Ok(None),
            None => Err(SysError::new(syscall::EAGAIN)),
        }
    }
    fn write_response(&mut self, response: Response) -> Result<(), SysError> {
        if let Some(errno) = self.fail_write {
            return Err(SysError::new(errno));
        }
        self.written.push(cqe(response));
        Ok(())
    }
    fn raw_fd(&self) -> usize {
        3
    }
}

/// An IRQ handle with a settable counter.
#[derive(Default)]
pub struct FakeIrq {
    /// The counter value the next read returns (then cleared).
    pub pending: Option<u64>,
    /// Counters acknowledged.
    pub acked: Vec<u64>,
    /// The fd number reported.
    pub fd: usize,
}

impl IrqHandle for FakeIrq {
    fn raw_fd(&self) -> usize {
        self.fd
    }
    fn read_count(&mut self) -> Result<Option<u64>, SysError> {
        Ok(self.pending.take())
    }
    fn ack(&mut self, count: u64) -> Result<(), SysError> {
        self.acked.push(count);
        Ok(())
    }
}

/// An event queue replaying wake-ups, then failing with `EPIPE` (which ends `run`).
#[derive(Default)]
pub struct FakeQueue {
    /// Wake-ups to replay.
    pub wakes: VecDeque<WakeSource>,
    /// Every `arm_timer` call, in order.
    pub armed: Vec<Option<std::time::Duration>>,
}

impl EventWait for FakeQueue {
    fn wait(&mut self) -> Result<WakeSource, SysError> {
        self.wakes.pop_front().ok_or(SysError::new(syscall::EPIPE))
    }
    fn arm_timer(&mut self, after: Option<std::time::Duration>) -> Result<(), SysError> {
        self.armed.push(after);
        Ok(())
    }
}

/// Shared call log of a [`FakePlatform`] and its channel.
pub type Log = Rc<RefCell<Vec<String>>>;

/// pcid's side of the channel: answers requests from a device description.
pub struct FakePcid {
    /// What `RequestConfig` returns.
    pub args: SubdriverArguments,
    /// What `RequestFeatures` returns.
    pub features: Vec<PciFeature>,
    /// What `FeatureInfo(MsiX)` returns.
    pub msix: MsixInfo,
    /// Answer every request with `InvalidBitPattern`.
    pub refuse_all: bool,
    /// Bytes handed out per `read` (1 exercises reassembly).
    pub read_chunk: usize,
}

/// A channel backed by [`FakePcid`].
pub struct FakeChannel {
    pcid: Rc<FakePcid>,
    log: Log,
    out: VecDeque<u8>,
}

impl FakeChannel {
    /// A channel answering from `pcid`, logging to `log`.
    pub fn new(pcid: Rc<FakePcid>, log: Log) -> Self {
        Self {
            pcid,
            log,
            out: VecDeque::new(),
        }
    }

    fn answer(&self, req: &PcidClientRequest) -> PcidClientResponse {
        use PcidClientRequest as Q;
        use PcidClientResponse as A;
        if self.pcid.refuse_all {
            return A::Error(PcidServerResponseError::InvalidBitPattern);
        }
        match req {
            Q::EnableDevice => A::EnabledDevice,
            Q::RequestConfig => A::Config(self.pcid.args),
            Q::RequestFeatures => A::AllFeatures(self.pcid.features.clone()),
            Q::FeatureInfo(PciFeature::MsiX) => {
                A::FeatureInfo(PciFeature::MsiX, PciFeatureInfo::MsiX(self.pcid.msix))
            }
            Q::FeatureInfo(PciFeature::Msi) => A::FeatureInfo(
                PciFeature::Msi,
                PciFeatureInfo::Msi(MsiInfo {
                    log2_multiple_message_capable: 0,
                    is_64bit: false,
                    has_per_vector_masking: false,
                }),
            ),
            Q::EnableFeature(f) => A::FeatureEnabled(*f),
            Q::SetFeatureInfo(pcid_config::protocol::SetFeatureInfo::Msi(_)) => {
                A::SetFeatureInfo(PciFeature::Msi)
            }
            Q::SetFeatureInfo(_) => A::SetFeatureInfo(PciFeature::MsiX),
            Q::RequestVendorCapabilities => A::VendorCapabilities(vec![]),
            Q::ReadConfig(_) => A::ReadConfig(0),
            Q::WriteConfig(..) => A::WriteConfig,
        }
    }
}

impl ChannelIo for FakeChannel {
    fn write(&mut self, buf: &[u8]) -> Result<usize, SysError> {
        let req: PcidClientRequest =
            wire::from_bytes(buf).map_err(|_| SysError::new(syscall::EINVAL))?;
        self.log.borrow_mut().push(format!("pcid {req:?}"));
        self.out.extend(wire::to_frame(&self.answer(&req)));
        Ok(buf.len())
    }
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, SysError> {
        let n = buf
            .len()
            .min(self.out.len())
            .min(self.pcid.read_chunk.max(1));
        for slot in buf.iter_mut().take(n) {
            *slot = self.out.pop_front().unwrap_or_default();
        }
        Ok(n)
    }
}

/// A BAR backed by a vector of dwords.
pub struct FakeBar {
    /// Which BAR.
    pub bir: u8,
    /// Its contents.
    pub dwords: Vec<u32>,
}

impl BarMapping for FakeBar {
    fn base(&self) -> CpuVa {
        CpuVa(0x1000_0000 * (u64::from(self.bir) + 1))
    }
    fn len(&self) -> u64 {
        self.dwords.len() as u64 * 4
    }
    fn read32(&self, offset: u64) -> Option<u32> {
        (offset % 4 == 0).then_some(())?;
        self.dwords.get(usize::try_from(offset / 4).ok()?).copied()
    }
    fn write32(&mut self, offset: u64, value: u32) -> bool {
        let slot = usize::try_from(offset / 4).ok().filter(|_| offset % 4 == 0);
        match slot.and_then(|i| self.dwords.get_mut(i)) {
            Some(d) => {
                *d = value;
                true
            }
            None => false,
        }
    }
}

/// A bump allocator standing in for the memory scheme.
#[derive(Default)]
pub struct FakeDma {
    next: u64,
}

impl DmaMemory for FakeDma {
    fn alloc_zeroed(&mut self, len: u64) -> Result<DmaBuffer, SysError> {
        let len = len.div_ceil(4096) * 4096;
        let at = self.next;
        self.next += len;
        Ok(DmaBuffer {
            cpu: CpuVa(0x7000_0000 + at),
            phys: PhysAddr(0x10_0000 + at),
            len,
        })
    }
    fn free(&mut self, _buf: DmaBuffer) -> Result<(), SysError> {
        Ok(())
    }
    fn access(&self, buf: &DmaBuffer) -> Result<std::sync::Arc<dyn simgpu::PhysMemory>, SysError> {
        // Fresh zeroed backing: the bump allocator's buffers are only addresses.
        Ok(std::sync::Arc::new(simgpu::HeapMemory::new(buf.len)))
    }
}

/// A platform that records every call in order and can fail any named step.
pub struct FakePlatform {
    /// Environment variables.
    pub env: Vec<(&'static str, String)>,
    /// The device pcid describes.
    pub pcid: Rc<FakePcid>,
    /// The call log.
    pub log: Log,
    /// The step name that fails with `EIO` (`"map_bar 2"`, `"register"`, ...).
    pub fail: Option<&'static str>,
}

impl FakePlatform {
    fn call(&self, what: String) -> Result<(), SysError> {
        let failing = self.fail.is_some_and(|f| what.starts_with(f));
        self.log.borrow_mut().push(what);
        if failing {
            Err(SysError::new(syscall::EIO))
        } else {
            Ok(())
        }
    }
    /// The log so far.
    pub fn calls(&self) -> Vec<String> {
        self.log.borrow().clone()
    }
}

impl Platform for FakePlatform {
    type Channel = FakeChannel;
    type Bar = FakeBar;
    type Irq = FakeIrq;
    type Dma = FakeDma;
    type Socket = FakeSocket;
    type Events = FakeQueue;

    fn env_var(&self, name: &str) -> Option<String> {
        self.env
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
    }
    fn open_channel(&mut self, fd: usize) -> Result<FakeChannel, SysError> {
        self.call(format!("open_channel {fd}"))?;
        Ok(FakeChannel::new(self.pcid.clone(), self.log.clone()))
    }
    fn map_bar(
        &mut self,
        _: &FakeChannel,
        bir: u8,
        size: u64,
        mt: MemoryType,
    ) -> Result<FakeBar, SysError> {
        self.call(format!("map_bar {bir} {size:#x} {mt:?}"))?;
        let dwords = usize::try_from(size / 4).map_err(|_| SysError::new(syscall::EINVAL))?;
        Ok(FakeBar {
            bir,
            dwords: vec![0xdead_beef; dwords],
        })
    }
    fn alloc_msi_vector(&mut self) -> Result<(FakeIrq, MsiMessage), SysError> {
        self.call("alloc_msi_vector".into())?;
        let msg = MsiMessage {
            addr: 0xfee0_0000,
            data: 0x30,
        };
        Ok((
            FakeIrq {
                fd: 10,
                ..Default::default()
            },
            msg,
        ))
    }
    fn open_legacy_irq(&mut self, line: u8) -> Result<FakeIrq, SysError> {
        self.call(format!("open_legacy_irq {line}"))?;
        Ok(FakeIrq {
            fd: 11,
            ..Default::default()
        })
    }
    fn open_dma(&mut self) -> Result<FakeDma, SysError> {
        self.call("open_dma".into())?;
        Ok(FakeDma::default())
    }
    fn create_socket(&mut self) -> Result<FakeSocket, SysError> {
        self.call("create_socket".into())?;
        Ok(FakeSocket::default())
    }
    fn create_event_queue(&mut self, s: &FakeSocket, irq: &FakeIrq) -> Result<FakeQueue, SysError> {
        self.call(format!(
            "create_event_queue socket={} irq={}",
            s.raw_fd(),
            irq.raw_fd()
        ))?;
        Ok(FakeQueue::default())
    }
    fn register_scheme<S: SchemeSync>(
        &mut self,
        _: &FakeSocket,
        name: &str,
        scheme: &mut S,
    ) -> Result<(), SysError> {
        let root = scheme.scheme_root().map_err(SysError::from)?;
        self.call(format!("register {name} root={root}"))
    }
    fn enter_null_namespace(&mut self) -> Result<(), SysError> {
        self.call("setrens".into())
    }
    fn notify_ready(&mut self, fd: usize) -> Result<(), SysError> {
        self.call(format!("notify_ready {fd}"))
    }
}

/// A tiny scheme: `card0` opens handles 1, 2, ...; `read` blocks until `ready`.
#[derive(Default)]
pub struct TestScheme {
    next: usize,
    /// Whether reads can complete.
    pub ready: bool,
    /// Handles closed, in order.
    pub closed: Vec<usize>,
}

impl SchemeSync for TestScheme {
    fn scheme_root(&mut self) -> syscall::Result<usize> {
        Ok(0)
    }
    fn openat(
        &mut self,
        dirfd: usize,
        path: &str,
        _flags: usize,
        _fcntl_flags: u32,
        _ctx: &redox_scheme::CallerCtx,
    ) -> syscall::Result<redox_scheme::OpenResult> {
        if dirfd != 0 {
            return Err(syscall::Error::new(syscall::EACCES));
        }
        if path != "card0" {
            return Err(syscall::Error::new(syscall::ENOENT));
        }
        self.next += 1;
        Ok(redox_scheme::OpenResult::ThisScheme {
            number: self.next,
            flags: syscall::schemev2::NewFdFlags::empty(),
        })
    }
    fn read(
        &mut self,
        id: usize,
        buf: &mut [u8],
        _offset: u64,
        _fcntl_flags: u32,
        _ctx: &redox_scheme::CallerCtx,
    ) -> syscall::Result<usize> {
        if id == 0 || id > self.next {
            return Err(syscall::Error::new(syscall::EBADF));
        }
        if !self.ready {
            return Err(syscall::Error::new(syscall::EWOULDBLOCK));
        }
        buf.fill(0xab);
        Ok(buf.len())
    }
    fn on_close(&mut self, id: usize) {
        self.closed.push(id);
    }
    fn on_sendfd(&mut self, req: &redox_scheme::SendFdRequest) -> syscall::Result<usize> {
        Ok(req.num_fds())
    }
}

/// Driver hooks for [`TestScheme`]: an IRQ makes reads ready and posts one fevent.
#[derive(Default)]
pub struct TestEvents {
    /// Whether IRQs are this device's.
    pub foreign: bool,
    /// IRQs handled.
    pub irqs: usize,
    posted: bool,
}

impl super::event_loop::DeviceEvents<TestScheme> for TestEvents {
    fn handle_irq(&mut self, scheme: &mut TestScheme) -> super::event_loop::IrqOutcome {
        if self.foreign {
            return super::event_loop::IrqOutcome::NotMine;
        }
        self.irqs += 1;
        scheme.ready = true;
        super::event_loop::IrqOutcome::Handled
    }
    fn take_fevents(
        &mut self,
        scheme: &mut TestScheme,
        out: &mut Vec<(usize, syscall::flag::EventFlags)>,
    ) {
        if scheme.ready && !self.posted {
            self.posted = true;
            out.push((1, syscall::flag::EventFlags::EVENT_READ));
        }
    }
}
