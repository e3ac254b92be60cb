import unittest

from toondb_storage import Database, ToondbError

from ._util import DbTest

KEYS = [b"a", b"users/1", b"users/2", b"users/3", b"users0", b"z"]


class Iterators(DbTest):
    def setUp(self):
        super().setUp()
        self.db = Database.open(self.path())
        self.addCleanup(self.db.close)
        self.db.batch([("put", k, b"v:" + k) for k in KEYS])

    def keys(self, it):
        return [k for k, _ in it]

    def test_everything_in_order(self):
        self.assertEqual(list(self.db.iterator()), [(k, b"v:" + k) for k in KEYS])

    def test_prefix_reverse_limit(self):
        self.assertEqual(self.keys(self.db.iterator(prefix=b"users/")), KEYS[1:4])
        self.assertEqual(self.keys(self.db.iterator(prefix="users/", reverse=True)), KEYS[3:0:-1])
        self.assertEqual(self.keys(self.db.iterator(prefix=b"users/", limit=2)), KEYS[1:3])
        self.assertEqual(self.keys(self.db.iterator(limit=0)), [])

    def test_bounds(self):
        self.assertEqual(self.keys(self.db.iterator(gt=b"a", lt=b"users/3")), [b"users/1", b"users/2"])
        self.assertEqual(self.keys(self.db.iterator(gte=b"users/2", lte=b"users0")), KEYS[2:5])
        self.assertEqual(self.keys(self.db.iterator(prefix=b"users/", gt=b"users/1")), KEYS[2:4])
        self.assertEqual(self.keys(self.db.iterator(prefix=b"users/", lt=b"users/3", reverse=True)), KEYS[2:0:-1])
        with self.assertRaises(ToondbError) as cm:
            self.db.iterator(gt=b"a", gte=b"a")
        self.assertEqual(cm.exception.code, "TOONDB_INVALID_ARGUMENT")

    def test_seek(self):
        it = self.db.iterator()
        it.seek(b"users/2")
        self.assertEqual(next(it)[0], b"users/2")
        it.seek(b"b")
        self.assertEqual(self.keys(it), KEYS[1:])
        rev = self.db.iterator(reverse=True)
        rev.seek(b"users/25")
        self.assertEqual(self.keys(rev), [b"users/2", b"users/1", b"a"])

    def test_iterator_reads_a_snapshot(self):
        it = self.db.iterator()
        self.db.put(b"b-late", b"x")
        self.db.delete(b"z")
        self.assertEqual(self.keys(it), KEYS)

    def test_snapshot_and_transaction_iterators(self):
        with self.db.snapshot() as snap:
            self.db.put(b"users/4", b"new")
            self.assertIsNone(snap.get(b"users/4"))
            self.assertEqual(self.keys(snap.iterator(prefix=b"users/")), KEYS[1:4])
        with self.assertRaises(ToondbError) as cm:
            snap.get(b"a")
        self.assertEqual(cm.exception.code, "TOONDB_CLOSED")
        with self.db.transaction() as txn:
            txn.put(b"users/0", b"mine")
            txn.delete(b"users/1")
            self.assertEqual(
                self.keys(txn.iterator(prefix=b"users/")), [b"users/0", b"users/2", b"users/3", b"users/4"]
            )

    def test_closed_iterator(self):
        with self.db.iterator() as it:
            next(it)
        with self.assertRaises(ToondbError) as cm:
            next(it)
        self.assertEqual(cm.exception.code, "TOONDB_CLOSED")


if __name__ == "__main__":
    unittest.main()
