"""A writer process killed with SIGKILL loses no acknowledged write."""

import os
import signal
import subprocess
import sys
import time
import unittest

from toondb_storage import Database

from ._util import DbTest

PYDIR = os.path.normpath(os.path.join(os.path.dirname(__file__), ".."))

WRITER = r"""
import sys
sys.path.insert(0, sys.argv[1])
from toondb_storage import Database
db = Database.open(sys.argv[2], memtable_size=256 * 1024)
out = sys.stdout
i = 0
while True:
    kind = i % 3
    if kind == 0:
        db.put(b"put/%08d" % i, b"v%d" % i, sync=(i % 10 == 0))
    elif kind == 1:
        db.batch([("put", b"batch/%08d/%d" % (i, j), b"x" * 100) for j in range(10)])
    else:
        with db.transaction() as txn:
            txn.put(b"txn/%08d" % i, b"t%d" % i)
            txn.put(b"txn-count", b"%d" % i)
    out.write("%d\n" % i)  # acknowledged
    out.flush()
    i += 1
"""


class Crash(DbTest):
    def test_sigkill_keeps_acknowledged_writes(self):
        path = self.path()
        for round_ in range(2):
            proc = subprocess.Popen(
                [sys.executable, "-c", WRITER, PYDIR, path],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            acked = -1
            deadline = time.time() + 20
            try:
                while time.time() < deadline and acked < 1500 * (round_ + 1):
                    line = proc.stdout.readline()
                    if not line:
                        break
                    acked = int(line)
            finally:
                proc.send_signal(signal.SIGKILL)
                # Lines written before the kill were acknowledged too.
                rest, err = proc.communicate(timeout=30)
            for line in rest.split("\n"):
                if line.strip().isdigit():
                    acked = max(acked, int(line))
            self.assertGreater(acked, 100, err)
            with Database.open(path) as db:
                for i in range(acked + 1):
                    kind = i % 3
                    if kind == 0:
                        self.assertEqual(db.get(b"put/%08d" % i), b"v%d" % i, i)
                    elif kind == 1:
                        got = list(db.iterator(prefix=b"batch/%08d/" % i))
                        self.assertEqual(len(got), 10, i)
                    else:
                        self.assertEqual(db.get(b"txn/%08d" % i), b"t%d" % i, i)


if __name__ == "__main__":
    unittest.main()
