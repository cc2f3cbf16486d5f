//! simgpu: the simulated GPU.
//!
//! Will own: a PCI device model (config space, BAR0 registers, BAR2 VRAM aperture, MSI-X),
//! a physical-memory model for system memory (DMA only), VRAM, a 4-level MMU with a TLB that
//! keeps stale translations until invalidated, copy and compute engines fed by rings, faults,
//! hang injection and reset, interrupts, and counters. It never depends on gpud.

#![forbid(unsafe_code)]
