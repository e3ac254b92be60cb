"""Python point reads, puts and batches: toondb_storage against sqlite3 and
py-lmdb, in one run, on the same data (16-byte keys, 100-byte values).

    cargo build -p toondb-ffi --release
    python3 bindings/python/bench.py [--keys 100000] [--reads 200000]

Durability is matched at "survives a process crash, not a power cut": toondb
sync=False (WAL written to the OS per commit), SQLite WAL mode with
synchronous=NORMAL, LMDB with sync=False, metasync=False. Each put is its
own transaction/commit; each batch is 1000 puts in one atomic write.
py-lmdb is skipped (with a notice) when it is not installed.
"""

import argparse
import os
import random
import shutil
import sqlite3
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from toondb_storage import Database  # noqa: E402

try:
    import lmdb
except ImportError:  # pragma: no cover
    lmdb = None

VALUE = b"v" * 100


def key(i):
    return b"key-%011d" % i  # 16 bytes


def timed(fn, ops):
    start = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - start
    return ops / elapsed


class Toondb:
    name = "toondb_storage"

    def __init__(self, path):
        self.db = Database.open(path, sync=False)

    def puts(self, keys):
        put = self.db.put
        for k in keys:
            put(k, VALUE)

    def batches(self, keys, size):
        batch = self.db.batch
        for at in range(0, len(keys), size):
            batch([("put", k, VALUE) for k in keys[at : at + size]])

    def reads(self, keys):
        get = self.db.get
        for k in keys:
            if get(k) is None:
                raise AssertionError(k)

    def close(self):
        self.db.close()


class Sqlite:
    name = "sqlite3"

    def __init__(self, path):
        self.db = sqlite3.connect(os.path.join(path, "kv.sqlite"), isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("CREATE TABLE kv (k BLOB PRIMARY KEY, v BLOB) WITHOUT ROWID")

    def puts(self, keys):
        ex = self.db.execute
        for k in keys:
            ex("INSERT OR REPLACE INTO kv VALUES (?, ?)", (k, VALUE))

    def batches(self, keys, size):
        for at in range(0, len(keys), size):
            self.db.execute("BEGIN")
            self.db.executemany(
                "INSERT OR REPLACE INTO kv VALUES (?, ?)", [(k, VALUE) for k in keys[at : at + size]]
            )
            self.db.execute("COMMIT")

    def reads(self, keys):
        ex = self.db.execute
        for k in keys:
            if ex("SELECT v FROM kv WHERE k = ?", (k,)).fetchone() is None:
                raise AssertionError(k)

    def close(self):
        self.db.close()


class Lmdb:
    name = "lmdb"

    def __init__(self, path):
        self.env = lmdb.open(path, map_size=4 << 30, sync=False, metasync=False, writemap=False)

    def puts(self, keys):
        begin = self.env.begin
        for k in keys:
            with begin(write=True) as txn:
                txn.put(k, VALUE)

    def batches(self, keys, size):
        for at in range(0, len(keys), size):
            with self.env.begin(write=True) as txn:
                for k in keys[at : at + size]:
                    txn.put(k, VALUE)

    def reads(self, keys):
        # One read transaction for all reads: LMDB's best case (a snapshot
        # per read is what toondb's get does; see reads_txn_each).
        with self.env.begin() as txn:
            get = txn.get
            for k in keys:
                if get(k) is None:
                    raise AssertionError(k)

    def reads_txn_each(self, keys):
        begin = self.env.begin
        for k in keys:
            with begin() as txn:
                if txn.get(k) is None:
                    raise AssertionError(k)

    def close(self):
        self.env.close()


def run(store_cls, root, n_keys, n_reads, batch):
    path = os.path.join(root, store_cls.name)
    os.makedirs(path)
    store = store_cls(path)
    rng = random.Random(42)
    seq = [key(i) for i in range(n_keys)]
    shuffled = seq[:]
    rng.shuffle(shuffled)
    out = {}
    out["puts"] = timed(lambda: store.puts(seq), n_keys)
    out["batch"] = timed(lambda: store.batches(shuffled, batch), n_keys)
    reads = [seq[rng.randrange(n_keys)] for _ in range(n_reads)]
    out["reads"] = timed(lambda: store.reads(reads), n_reads)
    if hasattr(store, "reads_txn_each"):
        out["reads (txn per get)"] = timed(lambda: store.reads_txn_each(reads), n_reads)
    store.close()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--reads", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=1000)
    args = ap.parse_args()
    stores = [Toondb, Sqlite] + ([Lmdb] if lmdb else [])
    if not lmdb:
        print("NOTICE: py-lmdb is not installed (pip install lmdb); skipping it")
    root = tempfile.mkdtemp(prefix="toondb-bench-")
    try:
        results = {s.name: run(s, root, args.keys, args.reads, args.batch) for s in stores}
    finally:
        shutil.rmtree(root, True)
    print(
        "python %s, %d keys (16 B) x 100 B values, %d random reads, batches of %d"
        % (sys.version.split()[0], args.keys, args.reads, args.batch)
    )
    print("%-16s %14s %14s %14s %20s" % ("store", "puts/s", "batch puts/s", "reads/s", "reads/s (txn/get)"))
    for name, r in results.items():
        print(
            "%-16s %14.0f %14.0f %14.0f %20s"
            % (name, r["puts"], r["batch"], r["reads"], "%.0f" % r["reads (txn per get)"] if "reads (txn per get)" in r else "-")
        )


if __name__ == "__main__":
    main()
