"""Where a Python point read's time goes: the ctypes call alone, the copy
out, the binding's wrapper, the engine, next to py-lmdb's whole `txn.get`.

    cargo build -p toondb-ffi --release
    flock /work/bench.lock python3 bindings/python/bench_floor.py [--rounds 5]

Microseconds per operation, min / median / max over the rounds, 200,000
operations per round, 100,000 16-byte keys with 100-byte values (toondb
flushed and compacted into one table; a second toondb database holds one
key, so its reads cost the engine as little as a read can).
"""

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from toondb_storage import Database  # noqa: E402
from toondb_storage import _native as native  # noqa: E402
from toondb_storage._database import _scratch  # noqa: E402

try:
    import lmdb
except ImportError:  # pragma: no cover
    lmdb = None

N = 200_000
VALUE = b"v" * 100


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="toondb-floor-")
    try:
        run(root, args.rounds)
    finally:
        shutil.rmtree(root, True)


def run(root, rounds):
    keys = [b"key-%012d" % i for i in range(100_000)]
    rng = random.Random(42)
    reads = [keys[rng.randrange(len(keys))] for _ in range(N)]
    db = Database.open(os.path.join(root, "db"))
    for at in range(0, len(keys), 1000):
        db.batch([("put", k, VALUE) for k in keys[at : at + 1000]])
    db.flush()
    db.compact()
    one = keys[1]
    tiny = Database.open(os.path.join(root, "tiny"))
    tiny.put(one, VALUE)
    env = None
    if lmdb:
        env = lmdb.open(os.path.join(root, "lmdb"), map_size=1 << 30, sync=False, metasync=False)
        with env.begin(write=True) as txn:
            for k in keys:
                txn.put(k, VALUE)

    s = _scratch()
    noop = native.lib["toondb_abi_version"]  # takes no arguments, ignores extra ones
    get_buf = native.fast_get_buf
    hp, size, buf, cap, perr, view = db._hp, native.SIZES[16], s.buf, s.cap_c, s.perr, s.view
    times = {}

    def timed(name, fn):
        start = time.perf_counter()
        fn()
        times.setdefault(name, []).append((time.perf_counter() - start) / N * 1e6)

    for _ in range(rounds):
        timed("empty Python loop", lambda: [None for k in reads])
        timed("ctypes call, no arguments", lambda: [noop() for k in reads])
        timed(
            "ctypes call with toondb_get_buf's 6 arguments (to a no-op)",
            lambda: [noop(hp, k, size, buf, cap, perr) for k in reads],
        )
        timed("copy out: memoryview[:100].tobytes()", lambda: [view[:100].tobytes() for k in reads])
        tiny_get = tiny.get
        timed("Database.get, 1-key database", lambda: [tiny_get(one) for k in reads])
        timed(
            "toondb_get_buf alone, 100K keys",
            lambda: [get_buf(hp, k, size, buf, cap, perr) for k in reads],
        )
        db_get = db.get
        timed("Database.get, 100K keys", lambda: [db_get(k) for k in reads])
        if env is not None:
            with env.begin() as txn:
                lmdb_get = txn.get
                timed("py-lmdb txn.get, 100K keys", lambda: [lmdb_get(k) for k in reads])
    print("| step | min µs | median µs | max µs |")
    print("|---|---:|---:|---:|")
    for name, values in times.items():
        print("| %s | %.2f | %.2f | %.2f |" % (name, min(values), statistics.median(values), max(values)))
    db.close()
    tiny.close()
    if env is not None:
        env.close()


if __name__ == "__main__":
    main()
