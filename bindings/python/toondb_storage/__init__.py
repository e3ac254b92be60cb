"""toondb_storage: Python bindings for the toondb-storage engine, over its C
ABI (libtoondb, crates/toondb-ffi) through ctypes.

    from toondb_storage import Database, ToondbError
    with Database.open(path, sync=True) as db:
        db.put(b"users/1", b"Alice")
        db.get(b"users/1")                      # bytes | None
        db.batch([("put", b"a", b"1"), ("del", b"b")])
        with db.transaction() as txn:           # commits on exit, rolls back on exception
            txn.put(b"acct/a", b"90")
        for key, value in db.iterator(prefix=b"users/", reverse=True): ...
        with db.snapshot() as snap: snap.get(b"users/1")

Keys and values are bytes-like; str is encoded as UTF-8. Errors are
ToondbError with .code, the same strings as the Node binding's err.code
("TOONDB_CONFLICT", "TOONDB_CLOSED", ...). Every call into the library
releases the GIL. See docs/ffi.md.
"""

from ._database import (
    Database,
    Iterator,
    Snapshot,
    ToondbError,
    Transaction,
)
from ._native import version as _version

__version__ = _version().decode()

__all__ = ["Database", "Iterator", "Snapshot", "ToondbError", "Transaction", "__version__"]
