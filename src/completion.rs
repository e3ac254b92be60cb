//! Settling write promises from the engine's commit thread.
//!
//! Each JS `Database` handle owns one threadsafe function. A completion
//! (called on the commit thread) appends its outcome to a queue and, only
//! if no call is already scheduled, schedules one; the JS thread then
//! drains the whole queue in one call. A group of 64 commits therefore
//! costs one hop to the JS thread, not 64, and no libuv pool thread ever
//! waits for an fsync.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use napi::bindgen_prelude::Function;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::Env;
use parking_lot::Mutex;
use toondb_storage::{Result as EngineResult, Timestamp};

use crate::errors::{from_napi, Result};

/// A write that failed: the id the JS side gave it and the error.
#[napi(object)]
#[derive(Debug, Clone)]
pub struct SettledError {
    pub id: u32,
    pub code: String,
    pub message: String,
}

/// Outcomes delivered to JS in one call: ids of successful writes, and the
/// failed ones.
#[napi(object)]
#[derive(Debug, Clone, Default)]
pub struct Settled {
    pub ok: Vec<u32>,
    pub failed: Vec<SettledError>,
}

impl Settled {
    fn is_empty(&self) -> bool {
        self.ok.is_empty() && self.failed.is_empty()
    }

    fn append(&mut self, mut more: Settled) {
        self.ok.append(&mut more.ok);
        self.failed.append(&mut more.failed);
    }
}

fn multi_core() -> bool {
    static MULTI: OnceLock<bool> = OnceLock::new();
    *MULTI.get_or_init(|| std::thread::available_parallelism().is_ok_and(|n| n.get() > 1))
}

type SettleFn = ThreadsafeFunction<(), (), Settled, napi::Status, false, true>;

#[derive(Default)]
struct Queue {
    settled: Mutex<Settled>,
    scheduled: AtomicBool,
    /// Requests whose engine notice arrived but whose outcome has not been
    /// pushed yet (see `notice`).
    noticed: AtomicUsize,
}

impl Queue {
    fn take(&self) -> Settled {
        std::mem::take(&mut *self.settled.lock())
    }

    /// Runs on the JS thread for each scheduled call: everything settled so
    /// far. Woken early by a notice, it waits (briefly, bounded) for the
    /// outcome that notice announced rather than return empty-handed and
    /// need a second wake-up.
    fn drain(&self) -> Settled {
        let deadline = Instant::now() + NOTICE_WAIT;
        let mut settled = self.take();
        while settled.is_empty()
            && self.noticed.load(Ordering::Acquire) > 0
            && Instant::now() < deadline
        {
            std::hint::spin_loop();
            settled = self.take();
        }
        // Cleared only now, and drained once more after: an outcome pushed
        // before this point saw `scheduled` set and is in this drain, and
        // one pushed after it schedules its own call.
        self.scheduled.store(false, Ordering::Release);
        settled.append(self.take());
        settled
    }
}

/// Longest the JS thread waits for an announced outcome. The engine gives
/// notice only when at most ~128 memtable inserts remain (~50 µs here),
/// while waking the JS thread takes ~35 µs, so the wait is usually nil.
const NOTICE_WAIT: Duration = Duration::from_micros(100);

pub struct Completions {
    queue: Arc<Queue>,
    tsfn: Mutex<SettleFn>,
}

impl Completions {
    /// Wraps the JS function `settle(settled)` that resolves and rejects
    /// the pending promises by id.
    pub fn new(settle: Function<'_, Settled, ()>) -> Result<Arc<Completions>> {
        let queue = Arc::new(Queue::default());
        let drain = queue.clone();
        let tsfn = settle
            .build_threadsafe_function::<()>()
            .callee_handled::<false>()
            .weak::<true>()
            .build_callback(move |_ctx| Ok(drain.drain()))
            .map_err(from_napi)?;
        Ok(Arc::new(Completions {
            queue,
            tsfn: Mutex::new(tsfn),
        }))
    }

    /// The engine callback for the write the JS side calls `id`.
    pub fn callback(
        self: &Arc<Self>,
        id: u32,
    ) -> impl FnOnce(EngineResult<Timestamp>) + Send + 'static {
        let this = self.clone();
        move |result| this.push(id, result)
    }

    /// The engine's early notice (`Database::submit_with_notice`) and the
    /// final callback for the write `id`. The notice schedules the call to
    /// the JS thread right away, so that thread wakes while the engine
    /// finishes the commit in memory. `None` on a single CPU, where a JS
    /// thread waiting for the commit thread would only hold it up.
    #[allow(clippy::type_complexity)]
    pub fn notice_and_callback(
        self: &Arc<Self>,
        id: u32,
    ) -> (
        Option<impl FnOnce() + Send + 'static>,
        impl FnOnce(EngineResult<Timestamp>) + Send + 'static,
    ) {
        let noticed = Arc::new(AtomicBool::new(false));
        let notice = multi_core().then(|| {
            let (this, noticed) = (self.clone(), noticed.clone());
            move || {
                noticed.store(true, Ordering::Release);
                this.queue.noticed.fetch_add(1, Ordering::AcqRel);
                this.schedule();
            }
        });
        let this = self.clone();
        let done = move |result| {
            this.push(id, result);
            if noticed.load(Ordering::Acquire) {
                this.queue.noticed.fetch_sub(1, Ordering::AcqRel);
            }
        };
        (notice, done)
    }

    fn push(&self, id: u32, result: EngineResult<Timestamp>) {
        {
            let mut settled = self.queue.settled.lock();
            match result {
                Ok(_) => settled.ok.push(id),
                Err(e) => settled.failed.push(SettledError {
                    id,
                    code: e.kind().code().to_owned(),
                    message: e.message().to_owned(),
                }),
            }
        }
        self.schedule();
    }

    /// Makes sure a call to the JS thread is on its way.
    fn schedule(&self) {
        if !self.queue.scheduled.swap(true, Ordering::AcqRel) {
            let status = self
                .tsfn
                .lock()
                .call((), ThreadsafeFunctionCallMode::NonBlocking);
            if status != napi::Status::Ok {
                // Not scheduled after all (the JS side is going away): let
                // the next outcome try again instead of waiting forever.
                self.queue.scheduled.store(false, Ordering::Release);
            }
        }
    }

    /// Keeps the Node event loop alive while writes are in flight (`true`),
    /// and lets the process exit when idle (`false`).
    #[allow(deprecated)] // refer/unref are the napi calls for exactly this
    pub fn keep_alive(&self, env: &Env, active: bool) -> Result<()> {
        let mut tsfn = self.tsfn.lock();
        if active {
            tsfn.refer(env).map_err(from_napi)
        } else {
            tsfn.unref(env).map_err(from_napi)
        }
    }
}
