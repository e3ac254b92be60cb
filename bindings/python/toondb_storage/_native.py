"""Loading libtoondb and declaring the C functions (include/toondb.h).

ctypes.CDLL releases the GIL for the duration of every call, so a Python
thread blocked in a commit (or an fsync) lets the others run, and commits
from several threads share the engine's group commit.
"""

import ctypes
import os
import sys
from ctypes import (
    POINTER,
    Structure,
    c_bool,
    c_char_p,
    c_int32,
    c_int64,
    c_size_t,
    c_uint32,
    c_uint64,
    c_void_p,
)

ABI_VERSION = 1

_here = os.path.dirname(os.path.abspath(__file__))
_libname = {"darwin": "libtoondb.dylib", "win32": "toondb.dll"}.get(sys.platform, "libtoondb.so")


def _candidates():
    env = os.environ.get("TOONDB_LIBRARY")
    if env:
        yield env
        return
    yield os.path.join(_here, _libname)
    # A source checkout: bindings/python/toondb_storage -> repository root.
    root = os.path.normpath(os.path.join(_here, "..", "..", ".."))
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(root, "target")
    for profile in ("release", "debug"):
        yield os.path.join(target, profile, _libname)


def _load():
    tried = []
    for path in _candidates():
        if os.path.exists(path):
            return ctypes.CDLL(path)
        tried.append(path)
    raise ImportError(
        "toondb_storage: cannot find %s (tried %s); build it with "
        "`cargo build -p toondb-ffi --release` or set TOONDB_LIBRARY" % (_libname, ", ".join(tried))
    )


lib = _load()


class Options(Structure):
    _fields_ = [
        ("struct_size", c_size_t),
        ("create_if_missing", c_bool),
        ("error_if_exists", c_bool),
        ("sync", c_bool),
        ("auto_compaction", c_bool),
        ("memtable_size", c_uint64),
        ("block_size", c_uint64),
        ("compression", c_int32),
        ("bloom_bits_per_key", c_int32),
        # toondb_options_init writes the whole struct of the library's
        # header, so this must list every field of ToondbOptions.
        ("cache_size", c_int64),
        ("max_open_files", c_int64),
        ("hash_index", c_int32),
        ("dynamic_level_bytes", c_int32),
    ]


class ScanOptions(Structure):
    _fields_ = [
        ("gt", c_char_p),
        ("gt_len", c_size_t),
        ("gte", c_char_p),
        ("gte_len", c_size_t),
        ("lt", c_char_p),
        ("lt_len", c_size_t),
        ("lte", c_char_p),
        ("lte_len", c_size_t),
        ("prefix", c_char_p),
        ("prefix_len", c_size_t),
        ("reverse", c_bool),
        ("limit", c_uint64),
    ]


STATS_LEVELS = 8


class Stats(Structure):
    _fields_ = [("struct_size", c_size_t)] + [
        (name, c_uint64)
        for name in (
            "visible_ts memtable_bytes immutable_memtables tables table_bytes "
            "pending_compaction_bytes compactions trivial_moves compaction_errors "
            "compaction_bytes_read compaction_bytes_written live_bytes_estimate "
            "table_bytes_read data_blocks_read bloom_checked bloom_useful commits "
            "commit_groups wal_bytes_written wal_syncs write_slowdowns write_stalls "
            "write_stall_micros flushes flush_bytes_written conflicts live_snapshots "
            "oldest_snapshot_ts recovered_records background_error level_count"
        ).split()
    ] + [
        ("level_tables", c_uint64 * STATS_LEVELS),
        ("level_bytes", c_uint64 * STATS_LEVELS),
    ] + [
        (name, c_uint64)
        for name in (
            "block_cache_hits block_cache_misses block_cache_evictions block_cache_bytes "
            "block_cache_capacity open_tables table_cache_hits table_cache_misses "
            "hash_index_checked hash_index_useful checkpoints checkpoint_bytes_written "
            "checkpoint_errors checkpoint_tables maintenance_busy pending_wal_syncs memtable_index_bytes"
        ).split()
    ]


P = c_void_p  # every handle is an opaque pointer
ERR = POINTER(c_void_p)
SZ = POINTER(c_size_t)
BOOL = POINTER(c_bool)
BUF = c_char_p  # input bytes: ctypes passes a bytes object's own buffer


def _fn(name, restype, *argtypes):
    f = getattr(lib, name)
    f.restype = restype
    f.argtypes = list(argtypes)
    return f


I32 = c_int32
abi_version = _fn("toondb_abi_version", c_uint32)
version = _fn("toondb_version", c_char_p)
code_name = _fn("toondb_code_name", c_char_p, c_int32)
error_code = _fn("toondb_error_code", I32, P)
error_message = _fn("toondb_error_message", c_char_p, P)
error_free = _fn("toondb_error_free", None, P)
buffer_free = _fn("toondb_buffer_free", None, P, c_size_t)
debug_panic = _fn("toondb_debug_panic", I32, ERR)
options_init = _fn("toondb_options_init", None, POINTER(Options))
open_ = _fn("toondb_open", I32, c_char_p, POINTER(Options), POINTER(P), ERR)
close = _fn("toondb_close", I32, P, ERR)
db_free = _fn("toondb_db_free", None, P)
get = _fn("toondb_get", I32, P, BUF, c_size_t, POINTER(P), SZ, BOOL, ERR)
get_into = _fn("toondb_get_into", I32, P, BUF, c_size_t, P, c_size_t, SZ, BOOL, ERR)
get_buf = _fn("toondb_get_buf", c_int64, P, BUF, c_size_t, P, c_size_t, ERR)
get_many = _fn("toondb_get_many", I32, P, BUF, P, c_size_t, P, c_size_t, P, SZ, ERR)
put = _fn("toondb_put", I32, P, BUF, c_size_t, BUF, c_size_t, I32, ERR)
delete = _fn("toondb_delete", I32, P, BUF, c_size_t, I32, ERR)
delete_range = _fn("toondb_delete_range", I32, P, BUF, c_size_t, BUF, c_size_t, I32, ERR)
write_flat = _fn("toondb_write_flat", I32, P, BUF, P, c_size_t, BUF, c_size_t, I32, ERR)
flush = _fn("toondb_flush", I32, P, ERR)
compact = _fn("toondb_compact", I32, P, ERR)
compact_range = _fn("toondb_compact_range", I32, P, BUF, c_size_t, BUF, c_size_t, ERR)
stats = _fn("toondb_stats", I32, P, POINTER(Stats), ERR)
txn_begin = _fn("toondb_txn_begin", I32, P, I32, I32, POINTER(P), ERR)
txn_get = _fn("toondb_txn_get", I32, P, BUF, c_size_t, POINTER(P), SZ, BOOL, ERR)
txn_get_buf = _fn("toondb_txn_get_buf", c_int64, P, BUF, c_size_t, P, c_size_t, ERR)
txn_put = _fn("toondb_txn_put", I32, P, BUF, c_size_t, BUF, c_size_t, ERR)
txn_delete = _fn("toondb_txn_delete", I32, P, BUF, c_size_t, ERR)
txn_commit = _fn("toondb_txn_commit", I32, P, POINTER(c_uint64), ERR)
txn_rollback = _fn("toondb_txn_rollback", I32, P, ERR)
txn_free = _fn("toondb_txn_free", None, P)
snapshot = _fn("toondb_snapshot", I32, P, POINTER(P), ERR)
snapshot_get = _fn("toondb_snapshot_get", I32, P, BUF, c_size_t, POINTER(P), SZ, BOOL, ERR)
snapshot_get_buf = _fn("toondb_snapshot_get_buf", c_int64, P, BUF, c_size_t, P, c_size_t, ERR)
snapshot_release = _fn("toondb_snapshot_release", I32, P, ERR)
snapshot_free = _fn("toondb_snapshot_free", None, P)
iter_db = _fn("toondb_iter", I32, P, POINTER(ScanOptions), POINTER(P), ERR)
iter_snapshot = _fn("toondb_snapshot_iter", I32, P, POINTER(ScanOptions), POINTER(P), ERR)
iter_txn = _fn("toondb_txn_iter", I32, P, POINTER(ScanOptions), POINTER(P), ERR)
iter_next = _fn("toondb_iter_next", I32, P, BOOL, POINTER(P), SZ, POINTER(P), SZ, ERR)
iter_seek = _fn("toondb_iter_seek", I32, P, BUF, c_size_t, ERR)
iter_close = _fn("toondb_iter_close", I32, P, ERR)
iter_free = _fn("toondb_iter_free", None, P)

if abi_version() != ABI_VERSION:
    raise ImportError(
        "toondb_storage: libtoondb ABI version %d, this package needs %d" % (abi_version(), ABI_VERSION)
    )


# Hot paths: the same functions without argtypes. ctypes' per-argument
# conversion through argtypes is slower (a 3-argument call: 0.61 us with
# argtypes, 0.40-0.47 us without; docs/ffi.md, "Python performance"), so the
# wrappers call these with arguments that are already ctypes objects of the
# right C type (c_void_p handles and pointers, c_size_t lengths from SIZES,
# pointer() out-parameters) or bytes (passed as char *) or small Python ints
# for int32_t parameters. Never a bare Python int for a pointer or size_t:
# without argtypes it is passed as a C int. They release the GIL like every
# CDLL call.
def _raw(name, restype=c_int32):
    f = lib[name]  # indexing makes a new function object; argtypes stay unset
    f.restype = restype
    return f


ABSENT = -1  # TOONDB_ABSENT
fast_get_buf = _raw("toondb_get_buf", c_int64)
fast_snapshot_get_buf = _raw("toondb_snapshot_get_buf", c_int64)
fast_txn_get_buf = _raw("toondb_txn_get_buf", c_int64)
fast_get_many = _raw("toondb_get_many")
fast_put = _raw("toondb_put")
fast_delete = _raw("toondb_delete")
fast_iter_next = _raw("toondb_iter_next")
fast_txn_put = _raw("toondb_txn_put")

# c_size_t objects for small lengths, shared read-only by every thread.
SIZES = [c_size_t(i) for i in range(1025)]


def size(length):
    return SIZES[length] if length <= 1024 else c_size_t(length)
