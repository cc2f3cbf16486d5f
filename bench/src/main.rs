//! gpu-bench: benchmark binary for gpud and simgpu.
//!
//! `gpu-bench <group>... [--json]` runs the named groups (all when none are named). Each group
//! produces one report: a human table by default, one JSON object per line with `--json`.

// `unsafe` only in `userptr` (the client's own mmap/munmap, as a userptr client does).
#![deny(unsafe_code)]

mod bind;
#[cfg(target_os = "linux")]
mod contend;
mod contexts;
mod exec;
mod gpuvm;
mod libgpu;
mod memory;
mod pagetable;
mod report;
mod scheme;
#[cfg(target_os = "linux")]
mod serve;
mod simgpu;
mod svm;
mod sync;
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
mod userptr;

use report::Report;
use std::process::ExitCode;

/// A benchmark group: its name on the command line and the function that measures it.
struct Group {
    name: &'static str,
    run: fn() -> Report,
}

fn groups() -> Vec<Group> {
    vec![
        Group {
            name: "selftest",
            run: report::selftest,
        },
        Group {
            name: "sync",
            run: sync::run,
        },
        Group {
            name: "bind",
            run: bind::bind,
        },
        Group {
            name: "exec",
            run: exec::exec,
        },
        Group {
            name: "gpuvm",
            run: gpuvm::gpuvm,
        },
        Group {
            name: "scheme",
            run: scheme::scheme,
        },
        Group {
            name: "simgpu",
            run: simgpu::simgpu,
        },
        Group {
            name: "libgpu",
            run: libgpu::libgpu,
        },
        Group {
            name: "pagetable",
            run: pagetable::pagetable,
        },
        Group {
            name: "memory",
            run: memory::memory,
        },
        Group {
            name: "svm",
            run: svm::svm,
        },
        #[cfg(target_os = "linux")]
        Group {
            name: "userptr",
            run: userptr::userptr,
        },
    ]
}

fn main() -> ExitCode {
    let mut json = false;
    let mut wanted = Vec::new();
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--json" => json = true,
            "-h" | "--help" => {
                let names: Vec<_> = groups().iter().map(|g| g.name).collect();
                println!("usage: gpu-bench [--json] [{}]...", names.join("|"));
                return ExitCode::SUCCESS;
            }
            other => wanted.push(other.to_string()),
        }
    }
    let all = groups();
    for name in &wanted {
        if !all.iter().any(|g| g.name == name) {
            eprintln!("gpu-bench: unknown group {name:?}");
            return ExitCode::from(2);
        }
    }
    for group in all
        .iter()
        .filter(|g| wanted.is_empty() || wanted.iter().any(|w| w == g.name))
    {
        let report = (group.run)();
        if json {
            println!("{}", report.to_json());
        } else {
            print!("{}", report.to_table());
        }
    }
    ExitCode::SUCCESS
}
