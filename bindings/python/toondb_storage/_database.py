"""The Python classes: thin conversions over the C functions in _native."""

import ctypes
import os
import threading
from array import array
from ctypes import byref, c_bool, c_size_t, c_uint64, c_void_p, pointer, string_at

from . import _native as n


class ToondbError(Exception):
    """An engine error. ``code`` is the stable name shared with the Node
    binding (``"TOONDB_CONFLICT"``, ``"TOONDB_CLOSED"``,
    ``"TOONDB_INVALID_ARGUMENT"``, ``"TOONDB_CORRUPTION"``,
    ``"TOONDB_LOCKED"``, ``"TOONDB_IO"``, ``"TOONDB_NOT_FOUND"``,
    ``"TOONDB_INTERNAL"``); ``number`` is the C ABI's numeric code."""

    def __init__(self, code, message, number=None):
        super().__init__("%s: %s" % (code, message))
        self.code = code
        self.message = message
        self.number = number


_names = {}


def _code_name(number):
    name = _names.get(number)
    if name is None:
        name = _names[number] = n.code_name(number).decode()
    return name


class _Scratch:
    """Per-thread out-parameters, allocated once so a call allocates none."""

    CAP = 4096

    def __init__(self):
        self.err = c_void_p()
        self.perr = pointer(self.err)
        self.n = c_size_t()
        self.pn = pointer(self.n)
        self.found = c_bool()
        self.pfound = pointer(self.found)
        self.set_buffer(self.CAP)
        self.key = c_void_p()
        self.pkey = pointer(self.key)
        self.val = c_void_p()
        self.pval = pointer(self.val)
        self.vn = c_size_t()
        self.pvn = pointer(self.vn)

    def set_buffer(self, cap):
        self.cap = cap
        self.cap_c = c_size_t(cap)
        self.buf = ctypes.create_string_buffer(cap)
        self.view = memoryview(self.buf).cast("B")


_tls = threading.local()


def _scratch():
    try:
        return _tls.s
    except AttributeError:
        s = _tls.s = _Scratch()
        return s


_size = n.size
_SIZES = n.SIZES
_fast_get_buf = n.fast_get_buf
_fast_get_many = n.fast_get_many
_fast_snapshot_get_buf = n.fast_snapshot_get_buf
_fast_txn_get_buf = n.fast_txn_get_buf
_ABSENT = n.ABSENT
_fast_put = n.fast_put
_fast_delete = n.fast_delete
_fast_txn_put = n.fast_txn_put
_fast_iter_next = n.fast_iter_next


def _raise(rc, s):
    e = s.err.value
    s.err.value = None
    message = ""
    if e:
        message = n.error_message(e).decode("utf-8", "replace")
        n.error_free(e)
    raise ToondbError(_code_name(rc), message, rc)


def _bytes(x, what="key"):
    if type(x) is bytes:
        return x
    if isinstance(x, str):
        return x.encode("utf-8")
    if isinstance(x, (bytes, bytearray, memoryview)):
        return bytes(x)
    raise TypeError("%s must be bytes-like or str, not %s" % (what, type(x).__name__))


def _sync(sync):
    return -1 if sync is None else int(bool(sync))


def _get_buf(fn, hp, key):
    """A read through one of the ``*_get_buf`` functions."""
    k = key if type(key) is bytes else _bytes(key)
    s = _scratch()
    rc = fn(hp, k, _size(len(k)), s.buf, s.cap_c, s.perr)
    if 0 <= rc <= s.cap:
        return s.view[:rc].tobytes()
    return _get_buf_slow(fn, hp, k, rc, s)


def _get_buf_slow(fn, hp, k, rc, s):
    """The uncommon outcomes of a ``*_get_buf`` call: absent, an error, or a
    value longer than the scratch buffer (grown, then read again: the value
    may have changed in between, hence the loop)."""
    while True:
        if rc == _ABSENT:
            return None
        if rc < 0:
            _raise(-1 - rc, s)
        if rc <= s.cap:
            return s.view[:rc].tobytes()
        s.set_buffer(max(rc, 2 * s.cap))
        rc = fn(hp, k, _size(len(k)), s.buf, s.cap_c, s.perr)


def _scan_options(gt, gte, lt, lte, prefix, reverse, limit):
    o = n.ScanOptions()
    for name, value in (("gt", gt), ("gte", gte), ("lt", lt), ("lte", lte), ("prefix", prefix)):
        if value is not None:
            b = _bytes(value, name)
            setattr(o, name, b)
            setattr(o, name + "_len", len(b))
    o.reverse = bool(reverse)
    if limit is not None:
        if limit < 0:
            raise ValueError("limit must be >= 0")
        if limit == 0:
            o.limit = 0
            return o, True
        o.limit = int(limit)
    return o, False


def _flat_puts(ops):
    """The flat arrays of a batch made only of ("put", bytes, bytes) tuples,
    built with a few C-speed passes instead of a Python loop; None for any
    other batch (the general loop handles it)."""
    if set(map(type, ops)) != {tuple}:
        return None
    try:
        parts = [x for _, k, v in ops for x in (k, v)]
    except ValueError:  # a ("del", key) among them
        return None
    count = len(ops)
    if [op[0] for op in ops].count("put") != count or set(map(type, parts)) != {bytes}:
        return None
    return b"\x01" * count, array("I", map(len, parts)), b"".join(parts)


class _Handle:
    """Owns one C handle and frees it when collected."""

    _free = None

    def __init__(self, handle):
        self._h = handle
        self._hp = c_void_p(handle)  # for the argtypes-free fast calls

    def __del__(self):
        h, self._h = getattr(self, "_h", None), None
        if h and self._free is not None:
            self._free(h)


class Database(_Handle):
    """An open database. Safe to share between threads."""

    _free = staticmethod(n.db_free)

    @classmethod
    def open(
        cls,
        path,
        *,
        sync=False,
        create_if_missing=True,
        error_if_exists=False,
        memtable_size=None,
        block_size=None,
        compression=None,
        bloom_bits_per_key=None,
        auto_compaction=True,
        cache_size=None,
        max_open_files=None,
        hash_index=None,
        dynamic_level_bytes=None,
    ):
        """Opens (creating if missing) the database in directory ``path``.
        ``sync=True`` makes every write wait for fsync by default.
        ``compression`` is None/"none", "lz4" or "zstd"."""
        o = n.Options()
        n.options_init(byref(o))
        o.sync = bool(sync)
        o.create_if_missing = bool(create_if_missing)
        o.error_if_exists = bool(error_if_exists)
        o.auto_compaction = bool(auto_compaction)
        if memtable_size is not None:
            o.memtable_size = int(memtable_size)
        if block_size is not None:
            o.block_size = int(block_size)
        if compression is not None:
            kinds = {"none": 0, "lz4": 1, "zstd": 2}
            if compression not in kinds:
                raise ToondbError(
                    "TOONDB_INVALID_ARGUMENT", "compression must be 'none', 'lz4' or 'zstd'"
                )
            o.compression = kinds[compression]
        if bloom_bits_per_key is not None:
            o.bloom_bits_per_key = int(bloom_bits_per_key)
        if cache_size is not None:
            o.cache_size = int(cache_size)
        if max_open_files is not None:
            o.max_open_files = int(max_open_files)
        if hash_index is not None:
            o.hash_index = 1 if hash_index else 0
        if dynamic_level_bytes is not None:
            o.dynamic_level_bytes = 1 if dynamic_level_bytes else 0
        handle = c_void_p()
        s = _scratch()
        p = os.fsencode(path)
        rc = n.open_(p, byref(o), byref(handle), s.perr)
        if rc:
            _raise(rc, s)
        db = cls(handle.value)
        db.path = path
        return db

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return "Database(%r)" % (getattr(self, "path", None),)

    def close(self):
        """Waits for queued writes, syncs the WAL and closes. Later calls
        raise ToondbError TOONDB_CLOSED. Closing twice is fine."""
        s = _scratch()
        rc = n.close(self._h, s.perr)
        if rc:
            _raise(rc, s)

    def get(self, key):
        """The value of ``key`` (bytes) or None."""
        # One C call: toondb_get_buf copies the value into this thread's
        # scratch buffer and returns its length (TOONDB_ABSENT, or -1 - code
        # on failure); the only Python object made is the returned bytes.
        k = key if type(key) is bytes else _bytes(key)
        kl = len(k)
        try:
            s = _tls.s
        except AttributeError:
            s = _scratch()
        rc = _fast_get_buf(self._hp, k, _SIZES[kl] if kl <= 1024 else c_size_t(kl), s.buf, s.cap_c, s.perr)
        if 0 <= rc <= s.cap:
            return s.view[:rc].tobytes()
        return _get_buf_slow(_fast_get_buf, self._hp, k, rc, s)

    def get_many(self, keys):
        """The values of ``keys`` (a list of bytes or None, in order), all
        read at one snapshot in one C call."""
        ks = [k if type(k) is bytes else _bytes(k) for k in keys]
        count = len(ks)
        if not count:
            return []
        lens = array("I", map(len, ks))
        joined = b"".join(ks)
        value_lens = array("q", bytes(8 * count))
        s = _scratch()
        while True:
            rc = _fast_get_many(
                self._hp, joined, c_void_p(lens.buffer_info()[0]), c_size_t(count),
                s.buf, s.cap_c, c_void_p(value_lens.buffer_info()[0]), s.pn, s.perr,
            )
            if rc:
                _raise(rc, s)
            needed = s.n.value
            if needed <= s.cap:
                break
            s.set_buffer(max(needed, 2 * s.cap))  # and read again
        data = s.view[:needed].tobytes()
        out = []
        add = out.append
        at = 0
        for vl in value_lens:
            if vl < 0:
                add(None)
            else:
                end = at + vl
                add(data[at:end])
                at = end
        return out

    def put(self, key, value, *, sync=None):
        k = key if type(key) is bytes else _bytes(key)
        v = value if type(value) is bytes else _bytes(value, "value")
        kl, vl = len(k), len(v)
        try:
            s = _tls.s
        except AttributeError:
            s = _scratch()
        rc = _fast_put(
            self._hp,
            k, _SIZES[kl] if kl <= 1024 else c_size_t(kl),
            v, _SIZES[vl] if vl <= 1024 else c_size_t(vl),
            -1 if sync is None else (1 if sync else 0),
            s.perr,
        )
        if rc:
            _raise(rc, s)

    def delete(self, key, *, sync=None):
        k = key if type(key) is bytes else _bytes(key)
        s = _scratch()
        rc = _fast_delete(self._hp, k, _size(len(k)), _sync(sync), s.perr)
        if rc:
            _raise(rc, s)

    def delete_range(self, start, end, *, sync=None):
        """Deletes every key in ``[start, end)`` with one range tombstone:
        no key is read, so the cost does not depend on how many keys the
        range holds. Snapshots and transactions opened before keep seeing
        the keys. An empty range (``start >= end``) raises
        ``TOONDB_INVALID_ARGUMENT``."""
        s_, e_ = _bytes(start, "start"), _bytes(end, "end")
        s = _scratch()
        rc = n.delete_range(self._h, s_, len(s_), e_, len(e_), _sync(sync), s.perr)
        if rc:
            _raise(rc, s)

    def batch(self, ops, *, sync=None):
        """Applies ``ops`` atomically, in one call: each is ``("put", key,
        value)`` or ``("del", key)`` (also ``"delete"``), or a dict with
        ``type``, ``key`` and ``value`` as in the Node API."""
        if type(ops) is not list:
            ops = list(ops)
        flat = _flat_puts(ops)
        if flat is not None:
            kinds, lens, data = flat
            self._write_flat(kinds, lens, data, sync)
            return
        kinds = bytearray()
        lens = array("I")
        parts = []
        add_kind, add_len, add_part = kinds.append, lens.append, parts.append
        for op in ops:
            if type(op) is dict:
                op = (op.get("type"), op.get("key"), op.get("value"))
            kind = op[0]
            if kind == "put":
                _, k, v = op
                if type(k) is not bytes:
                    k = _bytes(k)
                if type(v) is not bytes:
                    v = _bytes(v, "value")
                add_kind(1)
                add_len(len(k))
                add_len(len(v))
                add_part(k)
                add_part(v)
            elif kind == "del" or kind == "delete":
                k = op[1]
                if type(k) is not bytes:
                    k = _bytes(k)
                add_kind(0)
                add_len(len(k))
                add_len(0)
                add_part(k)
            else:
                raise ToondbError(
                    "TOONDB_INVALID_ARGUMENT", "batch op type must be 'put' or 'del', got %r" % (kind,)
                )
        self._write_flat(bytes(kinds), lens, b"".join(parts), sync)

    def _write_flat(self, kinds, lens, data, sync):
        s = _scratch()
        rc = n.write_flat(
            self._h,
            kinds,
            lens.buffer_info()[0] if lens else None,
            len(kinds),
            data,
            len(data),
            _sync(sync),
            s.perr,
        )
        if rc:
            _raise(rc, s)

    def transaction(self, *, isolation="snapshot", sync=None):
        """Begins a transaction ("snapshot" or "serializable" isolation);
        use it as a context manager to commit on exit."""
        iso = {"snapshot": 0, "serializable": 1}.get(isolation)
        if iso is None:
            raise ToondbError(
                "TOONDB_INVALID_ARGUMENT", "isolation must be 'snapshot' or 'serializable'"
            )
        handle = c_void_p()
        s = _scratch()
        rc = n.txn_begin(self._h, iso, _sync(sync), byref(handle), s.perr)
        if rc:
            _raise(rc, s)
        return Transaction(handle.value)

    def snapshot(self):
        """A consistent read-only view as of now; release it when done."""
        handle = c_void_p()
        s = _scratch()
        rc = n.snapshot(self._h, byref(handle), s.perr)
        if rc:
            _raise(rc, s)
        return Snapshot(handle.value)

    def iterator(self, *, gt=None, gte=None, lt=None, lte=None, prefix=None, reverse=False, limit=None):
        """(key, value) pairs in key order, read at a snapshot taken now."""
        return Iterator._make(n.iter_db, self._h, gt, gte, lt, lte, prefix, reverse, limit)

    def flush(self):
        s = _scratch()
        rc = n.flush(self._h, s.perr)
        if rc:
            _raise(rc, s)

    def compact(self, *, gte=None, lt=None):
        """Compacts everything, or the tables holding keys in [gte, lt)."""
        s = _scratch()
        if gte is None and lt is None:
            rc = n.compact(self._h, s.perr)
        else:
            lo = None if gte is None else _bytes(gte)
            hi = None if lt is None else _bytes(lt)
            rc = n.compact_range(
                self._h, lo, len(lo or b""), hi, len(hi or b""), s.perr
            )
        if rc:
            _raise(rc, s)

    def stats(self):
        """The engine's counters as a dict (levels as a list of dicts)."""
        st = n.Stats()
        st.struct_size = ctypes.sizeof(n.Stats)
        s = _scratch()
        rc = n.stats(self._h, byref(st), s.perr)
        if rc:
            _raise(rc, s)
        out = {
            name: getattr(st, name)
            for name, _ in n.Stats._fields_
            if name not in ("struct_size", "level_tables", "level_bytes", "level_count")
        }
        out["background_error"] = bool(st.background_error)
        out["levels"] = [
            {"tables": st.level_tables[i], "bytes": st.level_bytes[i]} for i in range(st.level_count)
        ]
        return out


class Transaction(_Handle):
    """Reads at the snapshot taken when it began plus its own writes. As a
    context manager it commits on exit and rolls back on an exception."""

    _free = staticmethod(n.txn_free)

    def __init__(self, handle):
        super().__init__(handle)
        self._finished = False

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if self._finished:
            return
        if exc_type is None:
            self.commit()
        else:
            self.rollback()

    def get(self, key):
        return _get_buf(_fast_txn_get_buf, self._hp, key)

    def put(self, key, value):
        k = key if type(key) is bytes else _bytes(key)
        v = value if type(value) is bytes else _bytes(value, "value")
        s = _scratch()
        rc = _fast_txn_put(self._hp, k, _size(len(k)), v, _size(len(v)), s.perr)
        if rc:
            _raise(rc, s)

    def delete(self, key):
        k = _bytes(key)
        s = _scratch()
        rc = n.txn_delete(self._h, k, len(k), s.perr)
        if rc:
            _raise(rc, s)

    def iterator(self, *, gt=None, gte=None, lt=None, lte=None, prefix=None, reverse=False, limit=None):
        """The snapshot merged with this transaction's writes."""
        return Iterator._make(n.iter_txn, self._h, gt, gte, lt, lte, prefix, reverse, limit)

    def commit(self):
        """Commits; returns the commit timestamp. Raises ToondbError
        TOONDB_CONFLICT when a concurrent commit won (retry with a new
        transaction). The transaction is finished either way."""
        self._finished = True
        ts = c_uint64()
        s = _scratch()
        rc = n.txn_commit(self._h, byref(ts), s.perr)
        if rc:
            _raise(rc, s)
        return ts.value

    def rollback(self):
        self._finished = True
        s = _scratch()
        rc = n.txn_rollback(self._h, s.perr)
        if rc:
            _raise(rc, s)


class Snapshot(_Handle):
    """A consistent read-only view; ``release()`` (or leave the ``with``
    block) so old versions can be reclaimed."""

    _free = staticmethod(n.snapshot_free)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()

    def get(self, key):
        return _get_buf(_fast_snapshot_get_buf, self._hp, key)

    def iterator(self, *, gt=None, gte=None, lt=None, lte=None, prefix=None, reverse=False, limit=None):
        return Iterator._make(n.iter_snapshot, self._h, gt, gte, lt, lte, prefix, reverse, limit)

    def release(self):
        s = _scratch()
        rc = n.snapshot_release(self._h, s.perr)
        if rc:
            _raise(rc, s)


class Iterator(_Handle):
    """Yields (key, value) tuples; ``seek(key)`` repositions it."""

    _free = staticmethod(n.iter_free)

    @classmethod
    def _make(cls, fn, parent, gt, gte, lt, lte, prefix, reverse, limit):
        options, empty = _scan_options(gt, gte, lt, lte, prefix, reverse, limit)
        handle = c_void_p()
        s = _scratch()
        rc = fn(parent, byref(options), byref(handle), s.perr)
        if rc:
            _raise(rc, s)
        it = cls(handle.value)
        if empty:
            it.close()
            it._empty = True
        return it

    _empty = False

    def __iter__(self):
        return self

    def __next__(self):
        if self._empty:
            raise StopIteration
        try:
            s = _tls.s
        except AttributeError:
            s = _scratch()
        rc = _fast_iter_next(self._hp, s.pfound, s.pkey, s.pn, s.pval, s.pvn, s.perr)
        if rc:
            _raise(rc, s)
        if not s.found.value:
            raise StopIteration
        kn, vn = s.n.value, s.vn.value
        return (
            string_at(s.key.value, kn) if kn else b"",
            string_at(s.val.value, vn) if vn else b"",
        )

    def seek(self, key):
        """The next entry is the first key >= ``key`` (<= in reverse)."""
        k = _bytes(key)
        s = _scratch()
        rc = n.iter_seek(self._h, k, len(k), s.perr)
        if rc:
            _raise(rc, s)

    def close(self):
        s = _scratch()
        rc = n.iter_close(self._h, s.perr)
        if rc:
            _raise(rc, s)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
