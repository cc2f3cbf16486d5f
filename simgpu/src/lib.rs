//! simgpu: a register-level simulated PCI GPU.
//!
//! Owns the device model: PCI config space ([`pci`]), the BAR0 register map ([`regs`]),
//! physical memory ([`mem`]), the MMU and TLB ([`mmu`], [`pte`]), the freed-page check
//! ([`freed`]), the command set ([`cmd`]) and the Intel MI_* subset ([`mi`]),
//! engines ([`engine`]) fed by hardware queues ([`queue`]), the fault queue ([`fault`]), the device state machine
//! ([`device`]) and the handle a platform holds ([`SimGpu`]). It never depends on gpud: a
//! driver reaches it only through registers, memory and interrupts. The programming model is
//! documented in `docs/simgpu.md`.

#![forbid(unsafe_code)]

pub mod cmd;
pub mod device;
pub mod engine;
pub mod fault;
pub mod freed;
pub mod gpu;
pub mod mem;
pub mod mi;
pub mod mmu;
pub mod pci;
pub mod pte;
pub mod queue;
pub mod regs;
pub mod testkit;

pub use device::{Config, Counters};
pub use engine::{ENGINES, ENGINE_COMPUTE, ENGINE_COPY};
pub use gpu::{InterruptSink, SimGpu};
pub use mem::{HeapMemory, Location, MemError, PhysMemory};
