#!/bin/sh
# The C ABI's tests (npm run test:ffi): builds crates/toondb-ffi, compiles
# the C test with the machine's cc against the cdylib (and links it against
# the staticlib too), runs it under valgrind when valgrind is installed, then
# runs the Python binding's unittest suite over the same library.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
case "$TARGET" in /*) ;; *) TARGET=$ROOT/$TARGET ;; esac
PROFILE=${TOONDB_FFI_PROFILE:-debug}
if [ "$PROFILE" = release ]; then
  cargo build -p toondb-ffi --release
else
  cargo build -p toondb-ffi
fi
LIBDIR=$TARGET/$PROFILE
WORK=$(mktemp -d "${TMPDIR:-/tmp}/toondb-ffi-test.XXXXXX")
trap 'rm -rf "$WORK"' EXIT INT TERM

CC=${CC:-cc}
CFLAGS="-std=c11 -Wall -Wextra -Werror -g -I crates/toondb-ffi/include"
# shellcheck disable=SC2086
$CC $CFLAGS crates/toondb-ffi/tests/c/test_ffi.c -L "$LIBDIR" -ltoondb \
  -Wl,-rpath,"$LIBDIR" -lpthread -o "$WORK/test_ffi"
# The staticlib links too (not run: same code as the cdylib).
# shellcheck disable=SC2086
$CC $CFLAGS crates/toondb-ffi/tests/c/test_ffi.c "$LIBDIR/libtoondb.a" \
  -lpthread -ldl -lm -o "$WORK/test_ffi_static"

mkdir "$WORK/data"
if command -v valgrind >/dev/null 2>&1; then
  RUST_BACKTRACE=0 valgrind --error-exitcode=1 --leak-check=full \
    --show-leak-kinds=definite,indirect,possible \
    --errors-for-leak-kinds=definite,indirect,possible \
    --suppressions=crates/toondb-ffi/tests/c/valgrind.supp \
    "$WORK/test_ffi" "$WORK/data"
  echo "C test: valgrind reported no errors and no leaks"
else
  echo "NOTICE: valgrind is not installed; running the C test without it"
  RUST_BACKTRACE=0 "$WORK/test_ffi" "$WORK/data"
fi

RUST_BACKTRACE=0 TOONDB_LIBRARY="$LIBDIR/libtoondb.so" PYTHONDONTWRITEBYTECODE=1 \
  python3 -m unittest discover -s bindings/python/tests -t bindings/python -v
