import threading
import unittest

from toondb_storage import Database, ToondbError

from ._util import DbTest


class Transactions(DbTest):
    def test_commit_on_exit(self):
        with Database.open(self.path()) as db:
            db.put(b"acct/a", b"100")
            with db.transaction() as txn:
                self.assertEqual(txn.get(b"acct/a"), b"100")
                txn.put(b"acct/a", b"90")
                txn.put(b"acct/b", b"10")
                txn.delete(b"acct/c")
                self.assertEqual(txn.get(b"acct/a"), b"90")  # own write
                self.assertIsNone(txn.get(b"acct/c"))
                self.assertEqual(db.get(b"acct/a"), b"100")  # not yet
            self.assertEqual(db.get(b"acct/a"), b"90")
            self.assertEqual(db.get(b"acct/b"), b"10")

    def test_rollback_on_exception(self):
        with Database.open(self.path()) as db:
            with self.assertRaises(RuntimeError):
                with db.transaction() as txn:
                    txn.put(b"k", b"v")
                    raise RuntimeError("boom")
            self.assertIsNone(db.get(b"k"))
            txn = db.transaction()
            txn.put(b"k", b"v")
            txn.rollback()
            self.assertIsNone(db.get(b"k"))

    def test_explicit_commit_inside_with(self):
        with Database.open(self.path()) as db:
            with db.transaction() as txn:
                txn.put(b"k", b"v")
                self.assertGreater(txn.commit(), 0)
            self.assertEqual(db.get(b"k"), b"v")

    def test_finished_transaction_is_closed(self):
        with Database.open(self.path()) as db:
            txn = db.transaction()
            txn.put(b"k", b"v")
            txn.commit()
            for call in (lambda: txn.put(b"k", b"w"), lambda: txn.get(b"k"), txn.commit, txn.rollback):
                with self.assertRaises(ToondbError) as cm:
                    call()
                self.assertEqual(cm.exception.code, "TOONDB_CLOSED")

    def test_conflict(self):
        with Database.open(self.path()) as db:
            t1, t2 = db.transaction(), db.transaction()
            t1.put(b"x", b"1")
            t2.put(b"x", b"2")
            t1.commit()
            with self.assertRaises(ToondbError) as cm:
                t2.commit()
            self.assertEqual(cm.exception.code, "TOONDB_CONFLICT")
            self.assertEqual(cm.exception.number, 6)
            self.assertEqual(db.get(b"x"), b"1")

    def test_serializable_read_conflict(self):
        with Database.open(self.path()) as db:
            db.put(b"r", b"0")
            txn = db.transaction(isolation="serializable")
            txn.get(b"r")
            db.put(b"r", b"1")
            txn.put(b"w", b"1")
            with self.assertRaises(ToondbError) as cm:
                txn.commit()
            self.assertEqual(cm.exception.code, "TOONDB_CONFLICT")
            with self.assertRaises(ToondbError):
                db.transaction(isolation="chaos")

    def test_threads_increment_with_retries(self):
        threads, increments = 4, 40
        with Database.open(self.path(), sync=True) as db:
            errors = []

            def work(tid):
                try:
                    for i in range(increments):
                        while True:
                            try:
                                with db.transaction() as txn:
                                    c = int(txn.get(b"counter") or b"0")
                                    txn.put(b"counter", str(c + 1))
                                    txn.put(b"t%d/%d" % (tid, i), b"1")
                                break
                            except ToondbError as e:
                                if e.code != "TOONDB_CONFLICT":
                                    raise
                except Exception as e:  # pragma: no cover - reported below
                    errors.append(e)

            ts = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            self.assertEqual(errors, [])
            self.assertEqual(db.get(b"counter"), str(threads * increments).encode())
            self.assertEqual(len(list(db.iterator(prefix=b"t"))), threads * increments)

    def test_threads_share_group_commit(self):
        # Durable puts from several threads: ctypes releases the GIL during
        # each call, so commits wait on the same fsync (fewer WAL syncs
        # than commits). With the GIL held, every put would sync alone.
        threads, puts = 8, 40
        with Database.open(self.path(), sync=True) as db:
            before = db.stats()

            def work(tid):
                for i in range(puts):
                    db.put(b"g%d/%d" % (tid, i), b"v")

            ts = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            after = db.stats()
            commits = after["commits"] - before["commits"]
            syncs = after["wal_syncs"] - before["wal_syncs"]
            self.assertEqual(commits, threads * puts)
            self.assertLess(syncs, commits, "no commit shared an fsync")


if __name__ == "__main__":
    unittest.main()
