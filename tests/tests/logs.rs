//! The daemon's logs (`docs/operating.md`, "Logs"): a job hang shows up as an engine reset and
//! a banned queue (warn), clients connecting and leaving (info), and errors returned to a
//! client (debug). This file holds one test so that its process-wide subscriber sees only
//! its own daemon.

use gpu_tests::{Daemon, Gpu};
use libgpu::flags::VmCreateFlags;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// simgpu's test-only HANG command (the queue never completes it until an engine reset).
const HANG: u32 = 0x0001_00FE;
const BATCH_END: u32 = libgpu::cmd::op::BATCH_END as u32 | (1 << 16);

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned()
    }

    /// Waits until a line containing every one of `words` was logged.
    fn wait_for(&self, words: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = self.text();
            if let Some(line) = text.lines().find(|l| words.iter().all(|w| l.contains(w))) {
                return line.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no line with {words:?} in\n{text}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[test]
fn a_hang_logs_the_reset_and_the_ban_and_clients_are_logged() {
    let log = Captured::default();
    let writer = log.clone();
    tracing_subscriber::fmt()
        .with_env_filter("debug")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();
    let d = Daemon::start_with(|cfg| cfg.device.job_timeout = Duration::from_millis(200));
    let dev = d.device();
    log.wait_for(&["INFO", "client connected"]);
    let gpu = Gpu::new(&dev, VmCreateFlags::empty());
    // The wait ends once the job is failed (its result is the syncobj's, not checked here).
    let _ = gpu.run_dwords(&[HANG, BATCH_END]);
    log.wait_for(&["WARN", "job hang: resetting the engine"]);
    log.wait_for(&["WARN", "engine reset", "device_lost=false"]);
    log.wait_for(&["WARN", "exec queue banned", "Hang"]);
    // The banned queue refuses new work; the error returned is logged at debug.
    assert!(gpu.run_dwords(&[BATCH_END]).is_err());
    log.wait_for(&["DEBUG", "request failed", "Exec", "client=Some("]);
    drop(gpu);
    drop(dev);
    log.wait_for(&["INFO", "client disconnected", "queues="]);
}
