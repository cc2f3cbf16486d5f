//! The driver's worker thread: work a request handler must not wait for.
//!
//! Owns: [`Worker`], one thread running boxed jobs in submission order — today the
//! preparation of an EXEC whose VM has evicted BOs (validating them back moves memory
//! through the copy engine and waits for the copies and for the jobs still using the memory
//! it evicts). Must not: be given work that waits for the request loop (the loop never waits
//! for the worker either: a parked call learns of the outcome through a fence).

use parking_lot::Mutex;
use std::sync::mpsc::{channel, Sender};
use std::thread::JoinHandle;

type Work = Box<dyn FnOnce() + Send>;

/// One worker thread; jobs run in the order they were given.
pub(crate) struct Worker {
    tx: Mutex<Option<Sender<Work>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Worker {
    /// A worker named `name`; without a thread (spawn refused) jobs run on the caller.
    pub(crate) fn new(name: &str) -> Self {
        let (tx, rx) = channel::<Work>();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                while let Ok(work) = rx.recv() {
                    work();
                }
            })
            .ok();
        Self {
            tx: Mutex::new(thread.is_some().then_some(tx)),
            thread: Mutex::new(thread),
        }
    }

    /// Runs `work` on the worker (on this thread if the worker is gone).
    pub(crate) fn run(&self, work: impl FnOnce() + Send + 'static) {
        let tx = self.tx.lock().clone();
        match tx {
            Some(tx) => {
                if let Err(e) = tx.send(Box::new(work)) {
                    (e.0)();
                }
            }
            None => work(),
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.tx.get_mut().take();
        if let Some(t) = self.thread.get_mut().take() {
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}
