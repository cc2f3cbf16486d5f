//! libgpu: the safe client API for applications of the `gpu` scheme.
//!
//! Will own: `Device::open`, `Vm`, `Bo` (create, mmap, export/import), `ExecQueue`,
//! `Syncobj`, a VM_BIND builder, `exec`, waits, and an encoder for the simgpu command set;
//! over the host transport and over Redox scheme fds.

#![forbid(unsafe_code)]
