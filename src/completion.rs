//! Settling write promises from the engine's commit thread.
//!
//! Each JS `Database` handle owns one threadsafe function. A completion
//! (called on the commit thread) appends its outcome to a queue and, only
//! if no call is already scheduled, schedules one; the JS thread then
//! drains the whole queue in one call. A group of 64 commits therefore
//! costs one hop to the JS thread, not 64, and no libuv pool thread ever
//! waits for an fsync.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

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

type SettleFn = ThreadsafeFunction<(), (), Settled, napi::Status, false, true>;

#[derive(Default)]
struct Queue {
    settled: Mutex<Settled>,
    scheduled: AtomicBool,
}

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
            .build_callback(move |_ctx| {
                // Cleared before draining: an outcome pushed after this
                // point schedules its own call instead of being stranded.
                drain.scheduled.store(false, Ordering::Release);
                Ok(std::mem::take(&mut *drain.settled.lock()))
            })
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
