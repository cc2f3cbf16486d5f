//! The driver's hardware abstraction.
//!
//! Owns: small traits per engine (MMU base + TLB invalidation, ring/doorbell, interrupts,
//! fault queue, DMA memory, clock) and their implementations. Must not: know about VMs,
//! buffer objects or clients; it programs hardware and nothing else.
