//! The process-wide registry of open databases: an open that is still
//! recovering, or a close still waiting for the maintenance thread, holds
//! up opens of its own path only, never those of other paths; and an open
//! that fails or panics leaves nothing behind that a later open would wait
//! for.

mod support;

use std::path::Path;
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

use support::TableGate;
use toondb_storage::io::{WrappedFs, WritableFile, WriteHook};
use toondb_storage::{Database, Error, ErrorKind, Options};

/// Long enough for any open or close of a tiny database on a loaded VM;
/// a wait this long means the thread is blocked, not slow.
const BLOCKED: Duration = Duration::from_secs(20);

/// What the WAL hook does when an open creates its new segment.
#[derive(Clone, Copy)]
enum OnWal {
    /// Waits until released (and says so on the channel first).
    Hold,
    Fail,
    Panic,
}

#[derive(Clone)]
struct WalHook {
    on: OnWal,
    released: Arc<(Mutex<bool>, Condvar)>,
    entered: Arc<Mutex<Sender<()>>>,
}

impl WalHook {
    fn new(on: OnWal) -> (WalHook, Receiver<()>) {
        let (tx, rx) = channel();
        let hook = WalHook {
            on,
            released: Arc::default(),
            entered: Arc::new(Mutex::new(tx)),
        };
        (hook, rx)
    }

    fn release(&self) {
        *self.released.0.lock().unwrap() = true;
        self.released.1.notify_all();
    }

    fn options(&self) -> Options {
        Options::default().fs(Arc::new(WrappedFs::os(self.clone())))
    }
}

/// Releases the hook when dropped too, so a failing test does not leave an
/// open blocked forever (holding up the other tests of this file when the
/// registry is what is broken).
struct Released(WalHook);

impl Drop for Released {
    fn drop(&mut self) {
        self.0.release();
    }
}

impl WriteHook for WalHook {
    fn before_create(&self, path: &Path) -> toondb_storage::Result<()> {
        if path.extension().is_none_or(|e| e != "wal") {
            return Ok(());
        }
        let _ = self.entered.lock().unwrap().send(());
        match self.on {
            OnWal::Hold => {
                let mut released = self.released.0.lock().unwrap();
                while !*released {
                    released = self.released.1.wait(released).unwrap();
                }
                Ok(())
            }
            OnWal::Fail => Err(Error::new(
                ErrorKind::Io,
                "injected: creating a WAL segment",
            )),
            OnWal::Panic => panic!("injected: creating a WAL segment"),
        }
    }

    fn wrap(&self, _: &Path, file: Box<dyn WritableFile>) -> Box<dyn WritableFile> {
        file
    }
}

fn seed(dir: &Path, n: u32) {
    let db = Database::open(dir).unwrap();
    for i in 0..n {
        db.put(format!("k{i:05}"), format!("v{i}")).unwrap();
    }
    db.close().unwrap();
}

fn check(db: &Database, n: u32) {
    for i in 0..n {
        assert_eq!(
            db.get(format!("k{i:05}")).unwrap(),
            Some(format!("v{i}").into_bytes())
        );
    }
}

/// Opens, writes, closes and reopens `dir` on another thread; says how
/// long it may take before the test calls it blocked.
fn other_path_round_trip(dir: &Path) -> Result<(), RecvTimeoutError> {
    let dir = dir.to_path_buf();
    let (tx, rx) = channel();
    thread::spawn(move || {
        let db = Database::open(&dir).unwrap();
        db.put("other", "path").unwrap();
        db.close().unwrap();
        let db = Database::open(&dir).unwrap();
        assert_eq!(db.get("other").unwrap(), Some(b"path".to_vec()));
        db.close().unwrap();
        let _ = tx.send(());
    });
    rx.recv_timeout(BLOCKED)
}

/// Starts an open of `dir` on another thread and checks it is still
/// waiting a moment later (it may only be slow, so this can miss a defect,
/// never invent one); the receiver gets its outcome.
fn open_waiting(dir: &Path, went_ahead: &str) -> Receiver<toondb_storage::Result<Database>> {
    let (tx, rx) = channel();
    let dir = dir.to_path_buf();
    thread::spawn(move || {
        let _ = tx.send(Database::open(dir));
    });
    thread::sleep(Duration::from_millis(100));
    assert!(rx.try_recv().is_err(), "{went_ahead}");
    rx
}

#[test]
fn an_open_still_recovering_holds_up_its_own_path_only() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    seed(a.path(), 500);
    let (hook, entered) = WalHook::new(OnWal::Hold);
    let hook = Released(hook);
    let hook = &hook.0;
    let opening = {
        let (dir, options) = (a.path().to_path_buf(), hook.options());
        thread::spawn(move || Database::open_with(dir, options))
    };
    entered
        .recv_timeout(BLOCKED)
        .expect("the open reached its WAL");
    // Another path opens and closes while this one is held.
    other_path_round_trip(b.path()).expect("an open of another path waited for this one");
    // The same path waits: it may not take the directory lock or share an
    // engine that is not there yet.
    let second = open_waiting(a.path(), "a second open of the path went ahead");
    hook.release();
    let first = opening.join().unwrap().unwrap();
    let second = second.recv_timeout(BLOCKED).unwrap().unwrap();
    check(&first, 500);
    check(&second, 500);
    first.put("after", "both").unwrap();
    assert_eq!(second.get("after").unwrap(), Some(b"both".to_vec()));
    first.close().unwrap();
    second.close().unwrap();
    let db = Database::open(a.path()).unwrap();
    check(&db, 500);
    assert_eq!(db.get("after").unwrap(), Some(b"both".to_vec()));
}

#[test]
fn a_close_waiting_for_a_flush_holds_up_its_own_path_only() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let gate = TableGate::default();
    let options = Options::default()
        .memtable_size(4 << 10)
        .fs(Arc::new(WrappedFs::os(gate.clone())));
    let db = Database::open_with(a.path(), options).unwrap();
    let mut n = 0;
    while db.stats().immutable_memtables == 0 {
        db.put(format!("k{n:05}"), format!("v{n}")).unwrap();
        n += 1;
    }
    // The flush waits at the gate, so the close waits for the flush.
    let (tx, closed) = channel();
    thread::spawn(move || {
        let _ = tx.send(db.close());
    });
    thread::sleep(Duration::from_millis(100));
    assert!(
        closed.try_recv().is_err(),
        "the close did not wait for the flush"
    );
    other_path_round_trip(b.path()).expect("an open of another path waited for this close");
    let reopened = open_waiting(a.path(), "an open of the path went ahead of its close");
    gate.release();
    closed.recv_timeout(BLOCKED).unwrap().unwrap();
    let db = reopened.recv_timeout(BLOCKED).unwrap().unwrap();
    check(&db, n);
    db.close().unwrap();
}

#[test]
fn an_open_that_fails_or_panics_leaves_nothing_to_wait_for() {
    for on in [OnWal::Fail, OnWal::Panic] {
        let a = tempfile::tempdir().unwrap();
        seed(a.path(), 50);
        let (hook, _entered) = WalHook::new(on);
        let options = hook.options();
        let dir = a.path().to_path_buf();
        let outcome = thread::spawn(move || Database::open_with(dir, options)).join();
        match on {
            OnWal::Fail => assert_eq!(outcome.unwrap().unwrap_err().kind(), ErrorKind::Io),
            _ => assert!(outcome.is_err(), "the hook's panic reaches the caller"),
        }
        let (tx, rx) = channel();
        let dir = a.path().to_path_buf();
        thread::spawn(move || {
            let _ = tx.send(Database::open(dir).map(|db| {
                check(&db, 50);
                db.close()
            }));
        });
        rx.recv_timeout(BLOCKED)
            .expect("a later open waited for the failed one")
            .unwrap()
            .unwrap();
    }
}
