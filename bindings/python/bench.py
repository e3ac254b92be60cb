"""Python point reads, puts and batches: toondb_storage against sqlite3 and
py-lmdb, in one run, on the same data (16-byte keys, 100-byte values).

    cargo build -p toondb-ffi --release
    flock /work/bench.lock python3 bindings/python/bench.py --runs 3

Every run opens a fresh database per store and, for each store in turn
(the order rotates between runs): puts of every key in ascending order, one
commit each; batches of --batch puts in random order (each key rewritten
once); --reads single-key reads in one random order; the same reads as
multi-gets of --multi keys (toondb `get_many`, py-lmdb `Cursor.getmulti`,
sqlite3 `SELECT ... WHERE k IN (...)`). The tables give toondb's rate
divided by each peer's from the same run, min/median/max over the runs,
per wall-clock second and per CPU second of the process (all its threads,
toondb's background flush and compaction included: less exposed to other
tenants of a busy machine), then each store's median rate.

Durability is matched at "survives a process crash, not a power cut": toondb
sync=False (WAL written to the OS per commit), SQLite WAL mode with
synchronous=NORMAL, LMDB with sync=False, metasync=False. Reads: py-lmdb
with its normal `txn.get` in one read transaction; sqlite3 with one
prepared SELECT (the module's statement cache reuses it); toondb
`Database.get` (each read at the newest snapshot). After the timed steps,
toondb's reads are timed again after `flush()` + `compact()` (its state
once the memtable has been written out), reported on separate rows.
"""

import argparse
import os
import random
import shutil
import sqlite3
import statistics
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
    return b"key-%012d" % i  # 16 bytes


def timed(fn, ops):
    """(ops per wall-clock second, ops per CPU second of the process)."""
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    return ops / (time.perf_counter() - start), ops / (time.process_time() - cpu)


def chunks(items, size):
    return [items[at : at + size] for at in range(0, len(items), size)]


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
        for part in chunks(keys, size):
            batch([("put", k, VALUE) for k in part])

    def reads(self, keys):
        get = self.db.get
        for k in keys:
            if get(k) is None:
                raise AssertionError(k)

    def multi_reads(self, groups):
        get_many = self.db.get_many
        for group in groups:
            if None in get_many(group):
                raise AssertionError(group)

    def settle(self):
        self.db.flush()
        self.db.compact()

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
        for part in chunks(keys, size):
            self.db.execute("BEGIN")
            self.db.executemany("INSERT OR REPLACE INTO kv VALUES (?, ?)", [(k, VALUE) for k in part])
            self.db.execute("COMMIT")

    def reads(self, keys):
        # One cursor and one SQL string: sqlite3 prepares it once.
        ex = self.db.cursor().execute
        for k in keys:
            if ex("SELECT v FROM kv WHERE k = ?", (k,)).fetchone() is None:
                raise AssertionError(k)

    def multi_reads(self, groups):
        cur = self.db.cursor()
        for group in groups:
            sql = "SELECT k, v FROM kv WHERE k IN (%s)" % ",".join("?" * len(group))
            found = dict(cur.execute(sql, group).fetchall())
            if None in [found.get(k) for k in group]:
                raise AssertionError(group)

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
        for part in chunks(keys, size):
            with self.env.begin(write=True) as txn:
                put = txn.put
                for k in part:
                    put(k, VALUE)

    def reads(self, keys):
        # One read transaction for all reads, py-lmdb's normal use.
        with self.env.begin() as txn:
            get = txn.get
            for k in keys:
                if get(k) is None:
                    raise AssertionError(k)

    def multi_reads(self, groups):
        with self.env.begin() as txn, txn.cursor() as cur:
            getmulti = cur.getmulti
            for group in groups:
                if len(getmulti(group)) != len(group):
                    raise AssertionError(group)

    def close(self):
        self.env.close()


def run_store(store_cls, root, seq, shuffled, reads, args):
    path = os.path.join(root, store_cls.name)
    os.makedirs(path)
    store = store_cls(path)
    groups = chunks(reads, args.multi)
    out = {
        "puts": timed(lambda: store.puts(seq), len(seq)),
        "batch puts": timed(lambda: store.batches(shuffled, args.batch), len(shuffled)),
        "reads": timed(lambda: store.reads(reads), len(reads)),
        "multi-get reads": timed(lambda: store.multi_reads(groups), len(reads)),
    }
    if hasattr(store, "settle"):
        store.settle()
        out["reads, compacted"] = timed(lambda: store.reads(reads), len(reads))
        out["multi-get reads, compacted"] = timed(lambda: store.multi_reads(groups), len(reads))
    store.close()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--reads", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--multi", type=int, default=1000, help="keys per multi-get")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    stores = [Toondb, Sqlite] + ([Lmdb] if lmdb else [])
    if not lmdb:
        print("NOTICE: py-lmdb is not installed (pip install lmdb); skipping it")
    rng = random.Random(42)
    seq = [key(i) for i in range(args.keys)]
    shuffled = seq[:]
    rng.shuffle(shuffled)
    reads = [seq[rng.randrange(args.keys)] for _ in range(args.reads)]
    runs = []
    for r in range(args.runs):
        order = stores[r % len(stores) :] + stores[: r % len(stores)]
        root = tempfile.mkdtemp(prefix="toondb-bench-")
        try:
            runs.append({s.name: run_store(s, root, seq, shuffled, reads, args) for s in order})
        finally:
            shutil.rmtree(root, True)

    print(
        "python %s, %d keys (16 B) x 100 B values, %d random reads, batches of %d, "
        "multi-gets of %d, %d runs"
        % (sys.version.split()[0], args.keys, args.reads, args.batch, args.multi, args.runs)
    )
    peers = [s.name for s in stores if s is not Toondb]
    metrics = list(runs[0]["toondb_storage"])
    for clock, label in ((0, "wall-clock"), (1, "CPU time")):
        print()
        print("toondb_storage / peer, same run, %s: min / median / max" % label)
        print("| workload | " + " | ".join("÷ %s" % p for p in peers) + " |")
        print("|---|" + "---|" * len(peers))
        for m in metrics:
            base = m.replace(", compacted", "")
            cells = []
            for p in peers:
                ratios = sorted(run["toondb_storage"][m][clock] / run[p][base][clock] for run in runs)
                cells.append(
                    "%.2fx / %.2fx / %.2fx" % (ratios[0], statistics.median(ratios), ratios[-1])
                )
            print("| %s | %s |" % (m, " | ".join(cells)))
    print()
    print("median ops/s (wall-clock)")
    print("| store | " + " | ".join(metrics) + " |")
    print("|---|" + "---:|" * len(metrics))
    for s in stores:
        cells = []
        for m in metrics:
            values = [run[s.name][m][0] for run in runs if m in run[s.name]]
            cells.append("%.0f" % statistics.median(values) if values else "-")
        print("| %s | %s |" % (s.name, " | ".join(cells)))

if __name__ == "__main__":
    main()
