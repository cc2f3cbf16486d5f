//! The `gpud demo` command (stub until the demo steps are written).

pub mod pagetable;
