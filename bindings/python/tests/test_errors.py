import os
import re
import subprocess
import sys
import unittest

from toondb_storage import Database, ToondbError
from toondb_storage import _native

from ._util import DbTest

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
PYDIR = os.path.join(ROOT, "bindings", "python")


class Codes(unittest.TestCase):
    def test_codes_are_the_node_codes(self):
        names = [_native.code_name(i).decode() for i in range(1, 9)]
        self.assertEqual(
            names,
            [
                "TOONDB_INVALID_ARGUMENT",
                "TOONDB_CLOSED",
                "TOONDB_CORRUPTION",
                "TOONDB_LOCKED",
                "TOONDB_IO",
                "TOONDB_CONFLICT",
                "TOONDB_NOT_FOUND",
                "TOONDB_INTERNAL",
            ],
        )
        # Every code the Node contract documents exists here too.
        dts = os.path.join(ROOT, "index.d.ts")
        if os.path.exists(dts):
            with open(dts) as f:
                documented = set(re.findall(r"TOONDB_[A-Z_]+[A-Z]", f.read()))
            self.assertTrue(documented)
            self.assertLessEqual(documented, set(names))

    def test_panic_becomes_internal(self):
        from ctypes import c_void_p, byref

        err = c_void_p()
        rc = _native.debug_panic(byref(err))
        self.assertEqual(_native.code_name(rc), b"TOONDB_INTERNAL")
        self.assertTrue(_native.error_message(err.value))
        _native.error_free(err.value)


class Closed(DbTest):
    def test_everything_fails_closed_after_close(self):
        db = Database.open(self.path())
        db.put(b"k", b"v")
        txn = db.transaction()
        snap = db.snapshot()
        it = db.iterator()
        db.close()
        db.close()  # twice is fine
        calls = [
            lambda: db.get(b"k"),
            lambda: db.put(b"k", b"v"),
            lambda: db.delete(b"k"),
            lambda: db.batch([("put", b"k", b"v")]),
            db.transaction,
            db.snapshot,
            db.iterator,
            db.flush,
            db.compact,
            db.stats,
            lambda: txn.put(b"k", b"v"),
            txn.commit,
            lambda: snap.get(b"k"),
            lambda: next(it),
        ]
        for call in calls:
            with self.assertRaises(ToondbError) as cm:
                call()
            self.assertEqual(cm.exception.code, "TOONDB_CLOSED")
        del txn, snap, it  # frees the handles after the database's close

    def test_locked_by_another_process(self):
        with Database.open(self.path()) as db:
            db.put(b"k", b"v")
            code = (
                "import sys; sys.path.insert(0, %r)\n"
                "from toondb_storage import Database, ToondbError\n"
                "try:\n"
                "    Database.open(%r)\n"
                "except ToondbError as e:\n"
                "    print(e.code)\n" % (PYDIR, self.path())
            )
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
            self.assertEqual(out.stdout.strip(), "TOONDB_LOCKED", out.stderr)


if __name__ == "__main__":
    unittest.main()
