//! A gpu scheme server over the fake driver on a temporary socket, for end-to-end tests of
//! libgpu through the real host transport.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use gpu_scheme::host::HostServer;
use gpu_scheme::testing::FakeDriver;
use gpu_scheme::{GpuScheme, Limits};
use libgpu::Device;

/// A server thread; stopped and its socket removed on drop.
pub struct Server {
    pub path: PathBuf,
    pub driver: FakeDriver,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl Server {
    pub fn start() -> Server {
        Self::with_limits(Limits::default())
    }

    pub fn with_limits(limits: Limits) -> Server {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("libgpu-test-{}-{n}.sock", std::process::id());
        let path = std::env::temp_dir().join(name);
        let _ = std::fs::remove_file(&path);
        let driver = FakeDriver::new();
        let scheme = GpuScheme::new(driver.clone(), limits);
        let mut server = HostServer::bind(&path, scheme).expect("bind");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            server
                .serve(Duration::from_millis(5), |_| flag.load(Ordering::Relaxed))
                .expect("serve");
        });
        Server {
            path,
            driver,
            stop,
            thread: Some(thread),
        }
    }

    pub fn device(&self) -> Device {
        Device::open_at(&self.path).expect("open device")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Poll `cond` for up to 10 s (generous for a loaded machine; normally milliseconds).
pub fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..5000 {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    panic!("never happened: {what}");
}

/// The value of `key: value` in a stats text.
pub fn stat(text: &str, key: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
}
