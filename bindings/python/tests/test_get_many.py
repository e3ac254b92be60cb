import os
import random
import threading
import unittest

from toondb_storage import Database, ToondbError

from ._util import DbTest


def in_fresh_thread(fn):
    """Runs fn in a new thread, whose per-thread read buffer starts small
    (4 KiB), so values longer than it take the grow-and-retry path."""
    out = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as e:  # re-raised in the caller
            out["error"] = e

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


class GetMany(DbTest):
    def test_matches_single_gets_against_a_model(self):
        rng = random.Random(7)
        model = {}
        with Database.open(self.path(), memtable_size=64 << 10) as db:
            for i in range(3000):
                k = b"k%05d" % rng.randrange(2000)
                if rng.random() < 0.2:
                    db.delete(k)
                    model.pop(k, None)
                else:
                    v = os.urandom(rng.choice((0, 1, 10, 300, 5000)))
                    db.put(k, v)
                    model[k] = v
            keys = [b"k%05d" % rng.randrange(2200) for _ in range(500)] + [b"k00001"] * 3
            expected = [model.get(k) for k in keys]
            self.assertEqual(db.get_many(keys), expected)
            self.assertEqual([db.get(k) for k in keys], expected)
            # Values totalling far more than the 4 KiB starting buffer.
            self.assertEqual(in_fresh_thread(lambda: db.get_many(keys)), expected)
            self.assertEqual(db.get_many([]), [])
            self.assertEqual(db.get_many(["k00001", bytearray(b"nope")])[1], None)

    def test_reads_one_snapshot(self):
        # A writer rewrites 100 keys with one value per batch; every
        # get_many of them must see one batch, never a mix.
        keys = [b"k%03d" % i for i in range(100)]
        with Database.open(self.path()) as db:
            db.batch([("put", k, b"0") for k in keys])
            stop = threading.Event()

            def writer():
                i = 0
                while not stop.is_set():
                    i += 1
                    v = str(i).encode()
                    db.batch([("put", k, v) for k in keys])

            t = threading.Thread(target=writer)
            t.start()
            try:
                for _ in range(300):
                    values = db.get_many(keys)
                    self.assertEqual(len(set(values)), 1, values)
            finally:
                stop.set()
                t.join()

    def test_errors(self):
        db = Database.open(self.path())
        with self.assertRaises(ToondbError) as cm:
            db.get_many([b"ok", b""])
        self.assertEqual(cm.exception.code, "TOONDB_INVALID_ARGUMENT")
        with self.assertRaises(TypeError):
            db.get_many([b"ok", 3])
        db.close()
        with self.assertRaises(ToondbError) as cm:
            db.get_many([b"a"])
        self.assertEqual(cm.exception.code, "TOONDB_CLOSED")
        with self.assertRaises(ToondbError) as cm:
            db.get(b"a")
        self.assertEqual(cm.exception.code, "TOONDB_CLOSED")


class LargeValuesThroughEveryReader(DbTest):
    def test_snapshot_and_transaction_reads_grow_the_buffer(self):
        big = os.urandom(200_000)
        with Database.open(self.path()) as db:
            db.put(b"big", big)
            db.put(b"small", b"s")

            def reads():
                with db.snapshot() as snap:
                    got = [snap.get(b"big"), snap.get(b"small"), snap.get(b"none")]
                with db.transaction() as txn:
                    txn.put(b"own", big[:5000])
                    got += [txn.get(b"big"), txn.get(b"own"), txn.get(b"none")]
                got.append(db.get(b"big"))
                return got

            self.assertEqual(
                in_fresh_thread(reads), [big, b"s", None, big, big[:5000], None, big]
            )


if __name__ == "__main__":
    unittest.main()
