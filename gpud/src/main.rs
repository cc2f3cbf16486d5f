//! The gpud binary: pick a platform, build the device, run.
//!
//! `gpud demo` runs the driver on the simulated GPU and shows it doing real work;
//! `gpud serve` runs the daemon (see README); `gpud pcid` is the Redox PCI driver that
//! pcid-spawner starts (only in builds with feature `redox`).

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        // The demo and `serve` run on the Linux host transport.
        #[cfg(target_os = "linux")]
        Some("demo") => match gpud::demo::run(&mut std::io::stdout())
            .and_then(|()| gpud::demo::clients::run(&mut std::io::stdout()))
        {
            Ok(()) => {
                println!("gpud demo: ok");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("gpud demo: failed: {e}");
                ExitCode::FAILURE
            }
        },
        // Hidden: the client processes the demo starts.
        #[cfg(target_os = "linux")]
        Some("demo-client") => match gpud::demo::clients::client_main(&args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("gpud demo-client: {e}");
                ExitCode::FAILURE
            }
        },
        #[cfg(target_os = "linux")]
        Some("serve") => match gpud::platform::host::serve_main(&args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("gpud serve: {e}");
                ExitCode::FAILURE
            }
        },
        Some("pcid") => pcid(),
        _ => {
            eprintln!(
                "usage: gpud demo | gpud serve [--socket PATH] [--until-stdin-eof] | gpud pcid"
            );
            ExitCode::from(2)
        }
    }
}

/// Serves the PCI function pcid-spawner handed over, until the scheme is unmounted.
#[cfg(feature = "redox")]
fn pcid() -> ExitCode {
    match gpud::platform::redox::run_pcid() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gpud pcid: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Without the Redox syscall layer there is no pcid to talk to.
#[cfg(not(feature = "redox"))]
fn pcid() -> ExitCode {
    eprintln!(
        "gpud pcid: this gpud was built without Redox support (feature `redox`); \
         on other hosts run `gpud serve`"
    );
    ExitCode::FAILURE
}
