import os
import time
import unittest

from toondb_storage import Database, ToondbError

from ._util import DbTest


class RoundTrips(DbTest):
    def test_put_get_delete(self):
        with Database.open(self.path()) as db:
            db.put(b"users/1", b"Alice")
            self.assertEqual(db.get(b"users/1"), b"Alice")
            self.assertIsNone(db.get(b"users/2"))
            db.delete(b"users/1")
            self.assertIsNone(db.get(b"users/1"))
            db.delete(b"never-there")

    def test_delete_range(self):
        with Database.open(self.path()) as db:
            for k in (b"a", b"b", b"c", b"d"):
                db.put(k, k)
            snap = db.snapshot()
            db.delete_range(b"b", b"d")
            self.assertEqual([db.get(k) for k in (b"a", b"b", b"c", b"d")], [b"a", None, None, b"d"])
            self.assertEqual(snap.get(b"c"), b"c")
            snap.release()
            with self.assertRaises(ToondbError) as cm:
                db.delete_range(b"d", b"b")
            self.assertEqual(cm.exception.code, "TOONDB_INVALID_ARGUMENT")

    def test_str_and_buffer_types(self):
        with Database.open(self.path()) as db:
            db.put("café", "crème")
            self.assertEqual(db.get("café"), "crème".encode())
            self.assertEqual(db.get(b"caf\xc3\xa9"), "crème".encode())
            db.put(bytearray(b"ba"), memoryview(b"mv"))
            self.assertEqual(db.get(memoryview(b"ba")), b"mv")
            with self.assertRaises(TypeError):
                db.put(1, b"x")
            with self.assertRaises(TypeError):
                db.get(None)

    def test_binary_empty_and_large_values(self):
        with Database.open(self.path()) as db:
            db.put(b"\x00bin\xff", b"")
            self.assertEqual(db.get(b"\x00bin\xff"), b"")
            big = os.urandom(1 << 20)  # larger than the read buffer
            db.put(b"big", big)
            self.assertEqual(db.get(b"big"), big)
            self.assertEqual(db.get(b"\x00bin\xff"), b"")

    def test_invalid_keys(self):
        with Database.open(self.path()) as db:
            with self.assertRaises(ToondbError) as cm:
                db.put(b"", b"v")
            self.assertEqual(cm.exception.code, "TOONDB_INVALID_ARGUMENT")
            with self.assertRaises(ToondbError) as cm:
                db.put(b"k" * (70 * 1024), b"v")
            self.assertEqual(cm.exception.code, "TOONDB_INVALID_ARGUMENT")

    def test_writes_survive_reopen(self):
        import pathlib

        with Database.open(pathlib.Path(self.path()), sync=True) as db:
            db.put(b"a", b"1")
            db.put(b"b", b"2", sync=False)
        with Database.open(self.path()) as db:
            self.assertEqual(db.get(b"a"), b"1")
            self.assertEqual(db.get(b"b"), b"2")

    def test_open_options(self):
        with self.assertRaises(ToondbError):
            Database.open(self.path("missing"), create_if_missing=False)
        with Database.open(self.path(), memtable_size=64 * 1024, compression="lz4", bloom_bits_per_key=8) as db:
            db.put(b"k", b"v")
            with self.assertRaises(ToondbError) as cm:
                Database.open(self.path(), error_if_exists=True)
            self.assertEqual(cm.exception.code, "TOONDB_INVALID_ARGUMENT")
            # The same directory again in this process shares the engine.
            with Database.open(self.path()) as again:
                self.assertEqual(again.get(b"k"), b"v")
        with self.assertRaises(ToondbError) as cm:
            Database.open(self.path(), compression="brotli")
        self.assertEqual(cm.exception.code, "TOONDB_INVALID_ARGUMENT")
        with self.assertRaises(ToondbError) as cm:
            Database.open(self.path(), memtable_size=10)
        self.assertEqual(cm.exception.code, "TOONDB_INVALID_ARGUMENT")


class Batches(DbTest):
    def test_batch_is_applied(self):
        with Database.open(self.path()) as db:
            db.put(b"b", b"old")
            db.batch([("put", b"a", b"1"), ("del", b"b"), ("put", "c", "3"), ("delete", b"zz")])
            self.assertEqual(db.get(b"a"), b"1")
            self.assertIsNone(db.get(b"b"))
            self.assertEqual(db.get(b"c"), b"3")
            db.batch([{"type": "put", "key": b"d", "value": b"4"}, {"type": "del", "key": b"a"}])
            self.assertEqual(db.get(b"d"), b"4")
            self.assertIsNone(db.get(b"a"))
            db.batch([])

    def test_bad_batch_applies_nothing(self):
        with Database.open(self.path()) as db:
            with self.assertRaises(ToondbError) as cm:
                db.batch([("put", b"x", b"1"), ("put", b"", b"empty key")])
            self.assertEqual(cm.exception.code, "TOONDB_INVALID_ARGUMENT")
            self.assertIsNone(db.get(b"x"))
            with self.assertRaises(ToondbError):
                db.batch([("merge", b"x", b"1")])

    def test_batch_shapes(self):
        # The all-bytes-puts fast path and the general path agree.
        with Database.open(self.path()) as db:
            db.batch([("put", b"p1", b"1"), ("put", b"p2", b"")])
            db.batch([("put", "s1", "one"), ("put", b"s2", bytearray(b"two"))])
            db.batch(("put", b"g%d" % i, b"x") for i in range(3))
            db.batch([["put", b"l1", b"1"], ("del", b"p1")])
            self.assertIsNone(db.get(b"p1"))
            self.assertEqual(db.get(b"p2"), b"")
            self.assertEqual(db.get(b"s1"), b"one")
            self.assertEqual(db.get(b"s2"), b"two")
            self.assertEqual(db.get(b"g2"), b"x")
            self.assertEqual(db.get(b"l1"), b"1")
            with self.assertRaises(ToondbError):
                db.batch([("put", b"a", b"1"), ("pux", b"b", b"2")])
            self.assertIsNone(db.get(b"a"))
            with self.assertRaises(TypeError):
                db.batch([("put", b"a", 5)])

    def test_large_batch(self):
        with Database.open(self.path()) as db:
            db.batch([("put", b"k%05d" % i, b"v%d" % i) for i in range(5000)], sync=True)
            self.assertEqual(db.get(b"k04999"), b"v4999")
            self.assertEqual(len(list(db.iterator(prefix=b"k"))), 5000)


class Caches(DbTest):
    def test_cache_options_and_stats(self):
        opts = dict(compression="lz4", cache_size=16 * 1024, max_open_files=2, memtable_size=64 * 1024)
        with Database.open(self.path(), **opts) as db:
            for t in range(4):
                db.batch([("put", b"k%06d" % i, b"value-%d-" % i * 8) for i in range(t * 1000, (t + 1) * 1000)])
                db.flush()
            for i in range(0, 4000, 7):
                self.assertEqual(db.get(b"k%06d" % i), b"value-%d-" % i * 8)
            st = db.stats()
            self.assertEqual(st["block_cache_capacity"], 16 * 1024)
            self.assertLessEqual(st["block_cache_bytes"], st["block_cache_capacity"])
            self.assertGreater(st["block_cache_misses"], 0)
            self.assertLessEqual(st["open_tables"], 2)
            self.assertGreater(st["table_cache_hits"], 0)

    def test_dynamic_level_bytes_option(self):
        # compact() writes the bottom (level 6) with the default; level 1
        # with the static targets, for data this small.
        for setting, deepest in ((None, 6), (True, 6), (False, 1)):
            path = self.path("dynlevels-%s" % setting)
            with Database.open(path, dynamic_level_bytes=setting) as db:
                db.batch([("put", b"key%04d" % i, b"v") for i in range(300)])
                db.compact()
                used = [i for i, l in enumerate(db.stats()["levels"]) if l["tables"]]
                self.assertEqual(used, [deepest])
                self.assertEqual(db.get(b"key0299"), b"v")

    def test_hash_index_option(self):
        for on in (False, True):
            with Database.open(self.path(), hash_index=on, memtable_size=64 * 1024) as db:
                db.batch([("put", b"k%05d" % i, b"v") for i in range(500)])
                db.flush()
                for i in range(0, 500, 7):
                    self.assertEqual(db.get(b"k%05d" % i), b"v")
                checked = db.stats()["hash_index_checked"]
                if on:
                    self.assertGreaterEqual(checked, 72)
                else:
                    self.assertEqual(checked, 0)


class Maintenance(DbTest):
    def test_checkpoint_stats(self):
        # Past the default 4 MiB WAL size limit the live segment is
        # checkpointed into a table in the background; a flush removes it.
        with Database.open(self.path()) as db:
            value = b"c" * 1000
            for start in range(0, 6000, 500):
                db.batch([("put", b"key%06d" % i, value) for i in range(start, start + 500)])
            for _ in range(3000):
                st = db.stats()
                if st["checkpoints"] >= 1:
                    break
                time.sleep(0.01)
            self.assertGreaterEqual(st["checkpoints"], 1)
            self.assertEqual(st["checkpoint_tables"], st["checkpoints"])
            self.assertEqual((st["checkpoint_errors"], st["flushes"]), (0, 0))
            db.flush()
            st = db.stats()
            self.assertEqual((st["checkpoint_tables"], st["flushes"]), (0, 1))
            self.assertEqual(db.get(b"key004321"), value)

    def test_flush_compact_stats(self):
        with Database.open(self.path(), memtable_size=64 * 1024) as db:
            for round_ in range(3):
                db.batch([("put", b"key%04d" % i, b"value-%d-%d" % (round_, i)) for i in range(1000)])
                db.flush()
            db.compact(gte=b"key0100", lt=b"key0200")
            db.compact()
            st = db.stats()
            self.assertGreaterEqual(st["flushes"], 3)
            self.assertGreaterEqual(st["compactions"] + st["trivial_moves"], 1)
            self.assertGreaterEqual(st["commits"], 3)
            self.assertIsInstance(st["levels"], list)
            self.assertEqual(sum(l["tables"] for l in st["levels"]), st["tables"])
            self.assertFalse(st["background_error"])
            self.assertEqual(db.get(b"key0042"), b"value-2-42")
            # The background-work fields are there, and read 0 once it ends.
            for _ in range(2000):
                st = db.stats()
                if not (st["maintenance_busy"] or st["pending_wal_syncs"] or st["immutable_memtables"]):
                    break
                time.sleep(0.001)
            self.assertEqual((st["maintenance_busy"], st["pending_wal_syncs"]), (0, 0))
            # The active memtable's point index: 8 bytes per 64 of memtable_size.
            self.assertEqual(st["memtable_index_bytes"], 64 * 1024 // 8)


if __name__ == "__main__":
    unittest.main()
