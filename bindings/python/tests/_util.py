"""Shared helpers: a scratch directory per test."""

import shutil
import tempfile
import unittest


class DbTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="toondb-py-")
        self.addCleanup(shutil.rmtree, self.dir, True)

    def path(self, name="db"):
        import os

        return os.path.join(self.dir, name)
