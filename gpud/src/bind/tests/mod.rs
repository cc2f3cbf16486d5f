//! Bind-engine tests at the driver API level on simgpu in thread mode.

mod async_binds;
mod claims_oracle;
mod contexts;
mod evict;
mod exec_vm;
mod failpoints;
mod fault_mode;
mod hang;
mod isolation;
mod oracle;
mod queues_stress;
mod rig;
mod scenarios;
mod svm;
mod svm_migrate;
mod userptr;
mod zap;
