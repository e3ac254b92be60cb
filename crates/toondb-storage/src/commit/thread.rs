//! The commit thread's loop: wait for a request, gather the group behind
//! it, hand the group to the `Committer`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TryRecvError};

use super::{CommitMsg, MAX_GROUP_BYTES, MAX_GROUP_LEN};
use crate::engine::Engine;
use crate::error::Error;

/// The commit thread: drains the request channel in groups and runs them
/// through the engine's `Committer`.
pub(crate) struct CommitThread {
    engine: Arc<Engine>,
    rx: Receiver<CommitMsg>,
    spin: SpinPolicy,
}

impl CommitThread {
    pub fn new(engine: Arc<Engine>, rx: Receiver<CommitMsg>) -> Self {
        CommitThread {
            engine,
            rx,
            spin: SpinPolicy::new(),
        }
    }

    pub fn run(mut self) {
        let mut after_durable = false;
        while let Some(first) = self.next_request(after_durable) {
            let mut bytes = first.bytes();
            let mut group = vec![first];
            while group.len() < MAX_GROUP_LEN && bytes < MAX_GROUP_BYTES {
                match self.rx.try_recv() {
                    Ok(msg) => {
                        bytes += msg.bytes();
                        group.push(msg);
                    }
                    Err(_) => break,
                }
            }
            let n = group.len();
            after_durable = group.iter().any(CommitMsg::is_durable);
            let mut committer = self.engine.committer.lock();
            match committer.as_mut() {
                Some(c) => {
                    if catch_unwind(AssertUnwindSafe(|| c.process(&self.engine, group))).is_err() {
                        // The group's completions were dropped during
                        // unwinding and so report `Closed`; later writes
                        // report this error. A failure of the commit's own
                        // work, like a failed WAL append: an open whose
                        // purge write this was must fail
                        // (`purge_dropped_tables_at_open`).
                        self.engine
                            .set_commit_error(Error::internal("the commit thread panicked"));
                    }
                }
                None => drop(group), // completes every member with `Closed`
            }
            // Decremented under the lock, after processing: a caller that
            // sees zero while holding the lock knows nothing is ahead of it.
            self.engine.queued.fetch_sub(n, Ordering::AcqRel);
        }
        // Shutdown: whatever was acknowledged as written reaches the disk,
        // whatever else failed before (a failed flush leaves the WAL
        // healthy, and it is then the only copy of those writes). A writer
        // that already failed refuses, and its failure is already the
        // background error; `Engine::shutdown` reports either.
        if let Some(mut c) = self.engine.committer.lock().take() {
            // The sync point after the sync records that the whole segment
            // is durable, so later damage to it reads as corruption rather
            // than as an unsynced tail (WalWriter::sync_and_mark).
            if let Err(e) = c.sync_and_mark(&self.engine) {
                self.engine
                    .set_bg_error(e.context("syncing the WAL at close"));
            }
        }
    }

    /// The next request, or `None` once every sender is gone. After a
    /// durable group the thread may poll for a while before sleeping (see
    /// `SpinPolicy`).
    fn next_request(&mut self, after_durable: bool) -> Option<CommitMsg> {
        if !after_durable {
            return self.rx.recv().ok();
        }
        let started = Instant::now();
        let msg = if self.spin.should_spin() {
            match poll_until(&self.rx, started + SPIN_WINDOW) {
                Polled::Got(msg) => Some(msg),
                Polled::Disconnected => None,
                Polled::TimedOut => self.rx.recv().ok(),
            }
        } else {
            self.rx.recv().ok()
        };
        self.spin.observe(started.elapsed() <= SPIN_WINDOW);
        msg
    }
}

/// How long the commit thread polls for the next request after a durable
/// group before it sleeps. A one-at-a-time durable writer in Node takes
/// 50-70 µs on this machine to see its write settle and send the next one;
/// if the thread sleeps meanwhile, waking it costs the sender a futex wake
/// and the thread ~15-25 µs before it runs (docs/performance.md).
const SPIN_WINDOW: Duration = Duration::from_micros(200);

/// Decides whether polling is likely to pay, from how soon the next request
/// followed recent durable groups (measured whether or not the thread
/// polled), so a writer that pauses between durable writes does not make
/// the thread burn 200 µs of CPU per write. Polling never happens on a
/// single CPU, where the sender cannot run while this thread polls.
struct SpinPolicy {
    enabled: bool,
    /// Recent hits minus misses, clamped; poll while it is positive.
    credit: i8,
}

const MAX_CREDIT: i8 = 4;

impl SpinPolicy {
    fn new() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        SpinPolicy {
            enabled: cpus > 1,
            credit: 0,
        }
    }

    fn should_spin(&self) -> bool {
        self.enabled && self.credit > 0
    }

    /// Records whether the next request arrived within the window.
    fn observe(&mut self, within_window: bool) {
        self.credit = if within_window {
            (self.credit + 1).min(MAX_CREDIT)
        } else {
            (self.credit - 1).max(-MAX_CREDIT)
        };
    }
}

enum Polled {
    Got(CommitMsg),
    Disconnected,
    TimedOut,
}

fn poll_until(rx: &Receiver<CommitMsg>, deadline: Instant) -> Polled {
    loop {
        match rx.try_recv() {
            Ok(msg) => return Polled::Got(msg),
            Err(TryRecvError::Disconnected) => return Polled::Disconnected,
            Err(TryRecvError::Empty) => {}
        }
        if Instant::now() >= deadline {
            return Polled::TimedOut;
        }
        for _ in 0..32 {
            std::hint::spin_loop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polling_starts_after_quick_follow_ups_and_stops_after_slow_ones() {
        let mut p = SpinPolicy {
            enabled: true,
            credit: 0,
        };
        assert!(!p.should_spin(), "no evidence yet");
        p.observe(true);
        assert!(p.should_spin());
        for _ in 0..10 {
            p.observe(true);
        }
        // Credit is capped, so a writer that slows down stops polling soon.
        for _ in 0..=MAX_CREDIT {
            p.observe(false);
        }
        assert!(!p.should_spin());
        p.observe(true);
        assert!(
            !p.should_spin(),
            "one quick request after misses is not enough"
        );
    }

    #[test]
    fn never_polls_on_one_cpu() {
        let mut p = SpinPolicy {
            enabled: false,
            credit: 0,
        };
        for _ in 0..10 {
            p.observe(true);
        }
        assert!(!p.should_spin());
    }

    #[test]
    fn poll_until_returns_a_waiting_request_and_times_out_when_empty() {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let deadline = Instant::now() + Duration::from_micros(50);
        assert!(matches!(poll_until(&rx, deadline), Polled::TimedOut));
        tx.send(CommitMsg::Seal {
            done: super::super::Completion::new(|_| {}),
        })
        .unwrap();
        assert!(matches!(
            poll_until(&rx, Instant::now() + SPIN_WINDOW),
            Polled::Got(_)
        ));
        drop(tx);
        assert!(matches!(
            poll_until(&rx, Instant::now() + SPIN_WINDOW),
            Polled::Disconnected
        ));
    }
}
