/*
 * C test of the toondb ABI: every exported function, its error paths, NULL
 * handles and use after close. Run under valgrind by scripts/test-ffi.sh.
 * Usage: test_ffi <scratch-dir>
 */
#define _POSIX_C_SOURCE 200809L /* nanosleep under -std=c11 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "toondb.h"

static int failures = 0;
static int checks = 0;
static const char *scratch;

#define CHECK(cond)                                                            \
    do {                                                                       \
        checks++;                                                              \
        if (!(cond)) {                                                         \
            failures++;                                                        \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__,   \
                    #cond);                                                    \
        }                                                                      \
    } while (0)

/* Expects `call` to return `code` with an error object of that code. */
#define EXPECT_CODE(code, call)                                                \
    do {                                                                       \
        ToondbError *e_ = NULL;                                                \
        ToondbError **err = &e_;                                               \
        int32_t rc_ = (call);                                                  \
        CHECK(rc_ == (code));                                                  \
        if (rc_ != (code))                                                     \
            fprintf(stderr, "  got %s: %s\n", toondb_code_name(rc_),           \
                    e_ ? toondb_error_message(e_) : "(no error)");             \
        if ((code) == TOONDB_OK) {                                             \
            CHECK(e_ == NULL);                                                 \
        } else {                                                               \
            CHECK(e_ != NULL && toondb_error_code(e_) == (code));              \
            CHECK(e_ != NULL && toondb_error_message(e_)[0] != '\0');          \
        }                                                                      \
        toondb_error_free(e_);                                                 \
    } while (0)

#define OK(call) EXPECT_CODE(TOONDB_OK, call)

/* Expects a *_get_buf `call` to fail with `code`: it returns -1 - code and
 * sets an error object of that code. */
#define EXPECT_LEN_CODE(code, call)                                            \
    do {                                                                       \
        ToondbError *e_ = NULL;                                                \
        ToondbError **err = &e_;                                               \
        int64_t rc_ = (call);                                                  \
        CHECK(rc_ == -1 - (int64_t)(code));                                    \
        CHECK(e_ != NULL && toondb_error_code(e_) == (code));                  \
        toondb_error_free(e_);                                                 \
    } while (0)
#define K(s) (const uint8_t *)(s), strlen(s)

static char *dir_for(const char *name) {
    size_t n = strlen(scratch) + strlen(name) + 2;
    char *p = malloc(n);
    snprintf(p, n, "%s/%s", scratch, name);
    return p;
}

static ToondbDb *open_db(const char *name) {
    char *path = dir_for(name);
    ToondbDb *db = NULL;
    OK(toondb_open(path, NULL, &db, err));
    free(path);
    return db;
}

/* Reads `key` through toondb_get; returns 1 when its value equals `want`
 * (NULL: absent). */
static int has_value(ToondbDb *db, const char *key, const char *want) {
    uint8_t *v = NULL;
    size_t n = 0;
    bool found = true;
    int ok = 0;
    OK(toondb_get(db, K(key), &v, &n, &found, err));
    if (want == NULL)
        ok = !found && v == NULL && n == 0;
    else
        ok = found && n == strlen(want) && memcmp(v, want, n) == 0;
    toondb_buffer_free(v, n);
    return ok;
}

static void test_version_and_codes(void) {
    CHECK(toondb_abi_version() == TOONDB_ABI_VERSION);
    CHECK(strlen(toondb_version()) > 0);
    CHECK(strcmp(toondb_code_name(TOONDB_OK), "TOONDB_OK") == 0);
    CHECK(strcmp(toondb_code_name(TOONDB_CONFLICT), "TOONDB_CONFLICT") == 0);
    CHECK(strcmp(toondb_code_name(TOONDB_CLOSED), "TOONDB_CLOSED") == 0);
    CHECK(strcmp(toondb_code_name(TOONDB_INTERNAL), "TOONDB_INTERNAL") == 0);
    CHECK(strcmp(toondb_code_name(999), "TOONDB_UNKNOWN") == 0);
    CHECK(toondb_error_code(NULL) == TOONDB_INVALID_ARGUMENT);
    CHECK(strcmp(toondb_error_message(NULL), "") == 0);
    toondb_error_free(NULL);
}

static void test_panic_is_caught(void) {
    EXPECT_CODE(TOONDB_INTERNAL, toondb_debug_panic(err));
    CHECK(toondb_debug_panic(NULL) == TOONDB_INTERNAL);
}

static void test_open_options_and_errors(void) {
    ToondbDb *db = NULL;
    EXPECT_CODE(TOONDB_INVALID_ARGUMENT, toondb_open(NULL, NULL, &db, err));
    char *path = dir_for("opts");
    EXPECT_CODE(TOONDB_INVALID_ARGUMENT, toondb_open(path, NULL, NULL, err));

    ToondbOptions o;
    toondb_options_init(&o);
    toondb_options_init(NULL);
    CHECK(o.struct_size == sizeof(ToondbOptions));
    CHECK(o.create_if_missing && !o.error_if_exists);
    o.create_if_missing = false;
    CHECK(toondb_open(path, &o, &db, NULL) != TOONDB_OK); /* missing */
    o.create_if_missing = true;
    o.compression = 7;
    EXPECT_CODE(TOONDB_INVALID_ARGUMENT, toondb_open(path, &o, &db, err));
    o.compression = 1;
    o.bloom_bits_per_key = 99;
    EXPECT_CODE(TOONDB_INVALID_ARGUMENT, toondb_open(path, &o, &db, err));
    o.bloom_bits_per_key = 10;
    o.memtable_size = 100; /* below the minimum */
    EXPECT_CODE(TOONDB_INVALID_ARGUMENT, toondb_open(path, &o, &db, err));
    o.memtable_size = 1 << 20;
    o.sync = true;
    ToondbOptions bad = o;
    bad.struct_size = 0;
    EXPECT_CODE(TOONDB_INVALID_ARGUMENT, toondb_open(path, &bad, &db, err));

    OK(toondb_open(path, &o, &db, err));
    OK(toondb_put(db, K("k"), K("v"), TOONDB_SYNC_DEFAULT, err));
    /* The same directory again in this process shares the engine... */
    ToondbDb *second = NULL;
    OK(toondb_open(path, &o, &second, err));
    CHECK(has_value(second, "k", "v"));
    /* ...unless error_if_exists. */
    o.error_if_exists = true;
    ToondbDb *third = NULL;
    EXPECT_CODE(TOONDB_INVALID_ARGUMENT, toondb_open(path, &o, &third, err));
    CHECK(third == NULL);
    OK(toondb_close(second, err));
    toondb_db_free(second);
    OK(toondb_close(db, err));
    toondb_db_free(db);

    /* Reopen: the write survived. */
    o.error_if_exists = false;
    OK(toondb_open(path, &o, &db, err));
    CHECK(has_value(db, "k", "v"));
    toondb_db_free(db); /* free without close closes */
    free(path);
}

/* hash_index: off, tables have none (no lookup consults one); on (the
 * default) after a compaction rewrites them, lookups do; 2 is refused. */
static void test_hash_index_option(void) {
    char *path = dir_for("hashidx");
    ToondbOptions o;
    toondb_options_init(&o);
    CHECK(o.hash_index < 0); /* the engine's default */
    o.hash_index = 2;
    ToondbDb *db = NULL;
    EXPECT_CODE(TOONDB_INVALID_ARGUMENT, toondb_open(path, &o, &db, err));
    o.hash_index = 0;
    OK(toondb_open(path, &o, &db, err));
    char key[32];
    for (int i = 0; i < 500; i++) {
        snprintf(key, sizeof key, "key%05d", i);
        OK(toondb_put(db, K(key), K("v"), 0, err));
    }
    OK(toondb_flush(db, err));
    for (int i = 0; i < 500; i += 7) {
        snprintf(key, sizeof key, "key%05d", i);
        CHECK(has_value(db, key, "v"));
    }
    ToondbStats st;
    memset(&st, 0, sizeof st);
    st.struct_size = sizeof st;
    OK(toondb_stats(db, &st, err));
    CHECK(st.tables >= 1 && st.hash_index_checked == 0);
    OK(toondb_close(db, err));
    toondb_db_free(db);

    o.hash_index = 1;
    OK(toondb_open(path, &o, &db, err));
    OK(toondb_compact(db, err));
    for (int i = 0; i < 500; i += 7) {
        snprintf(key, sizeof key, "key%05d", i);
        CHECK(has_value(db, key, "v"));
    }
    CHECK(has_value(db, "key99999", NULL));
    OK(toondb_stats(db, &st, err));
    CHECK(st.hash_index_checked >= 72 && st.hash_index_useful <= st.hash_index_checked);
    OK(toondb_close(db, err));
    toondb_db_free(db);
    free(path);
}

/* dynamic_level_bytes: the default sizes levels from the bottom, so a
 * compact() writes level 6; 0 keeps the static targets (level 1 for data
 * this small); 2 is refused. */
static void test_dynamic_level_bytes_option(void) {
    ToondbOptions o;
    toondb_options_init(&o);
    CHECK(o.dynamic_level_bytes < 0); /* the engine's default */
    const int settings[3] = {-1, 1, 0};
    const int deepest[3] = {6, 6, 1};
    for (int s = 0; s < 3; s++) {
        char name[32];
        snprintf(name, sizeof name, "dynlevels%d", s);
        char *path = dir_for(name);
        o.dynamic_level_bytes = settings[s];
        ToondbDb *db = NULL;
        OK(toondb_open(path, &o, &db, err));
        char key[32];
        for (int i = 0; i < 300; i++) {
            snprintf(key, sizeof key, "key%05d", i);
            OK(toondb_put(db, K(key), K("v"), 0, err));
        }
        OK(toondb_compact(db, err));
        ToondbStats st;
        memset(&st, 0, sizeof st);
        st.struct_size = sizeof st;
        OK(toondb_stats(db, &st, err));
        CHECK(st.level_count == 7);
        for (uint64_t l = 0; l < st.level_count; l++) {
            CHECK((st.level_tables[l] > 0) == (l == (uint64_t)deepest[s]));
        }
        CHECK(has_value(db, "key00299", "v"));
        OK(toondb_close(db, err));
        toondb_db_free(db);
        free(path);
    }
    o.dynamic_level_bytes = 2;
    char *path = dir_for("dynlevels-bad");
    ToondbDb *db = NULL;
    EXPECT_CODE(TOONDB_INVALID_ARGUMENT, toondb_open(path, &o, &db, err));
    free(path);
}

static void test_put_get_delete(void) {
    ToondbDb *db = open_db("crud");
    OK(toondb_put(db, K("users/1"), K("Alice"), 0, err));
    OK(toondb_put(db, K("empty"), (const uint8_t *)"", 0, 1, err));
    CHECK(has_value(db, "users/1", "Alice"));
    CHECK(has_value(db, "empty", ""));
    CHECK(has_value(db, "nope", NULL));

    /* get_into: too small, then exact, then a miss. */
    uint8_t buf[8];
    size_t n = 0;
    bool found = false;
    OK(toondb_get_into(db, K("users/1"), buf, 2, &n, &found, err));
    CHECK(found && n == 5 && memcmp(buf, "Al", 2) == 0);
    OK(toondb_get_into(db, K("users/1"), buf, sizeof buf, &n, &found, err));
    CHECK(found && n == 5 && memcmp(buf, "Alice", 5) == 0);
    OK(toondb_get_into(db, K("nope"), buf, sizeof buf, &n, &found, err));
    CHECK(!found && n == 0);
    OK(toondb_get_into(db, K("users/1"), NULL, 0, &n, NULL, err));
    CHECK(n == 5);
    EXPECT_CODE(TOONDB_INVALID_ARGUMENT,
                toondb_get_into(db, K("users/1"), NULL, 4, &n, &found, err));
    EXPECT_CODE(TOONDB_INVALID_ARGUMENT,
                toondb_get_into(db, K("users/1"), buf, 4, NULL, &found, err));

    OK(toondb_delete(db, K("users/1"), TOONDB_SYNC_DEFAULT, err));
    CHECK(has_value(db, "users/1", NULL));
    OK(toondb_delete(db, K("never-there"), 0, err));

    /* A range delete: [r/b, r/d) goes, its ends stay. */
    OK(toondb_put(db, K("r/a"), K("1"), 0, err));
    OK(toondb_put(db, K("r/b"), K("2"), 0, err));
    OK(toondb_put(db, K("r/c"), K("3"), 0, err));
    OK(toondb_put(db, K("r/d"), K("4"), 0, err));
    OK(toondb_delete_range(db, K("r/b"), K("r/d"), TOONDB_SYNC_DEFAULT, err));
    CHECK(has_value(db, "r/a", "1"));
    CHECK(has_value(db, "r/b", NULL));
    CHECK(has_value(db, "r/c", NULL));
    CHECK(has_value(db, "r/d", "4"));
    EXPECT_CODE(TOONDB_INVALID_ARGUMENT, toondb_delete_range(db, K("r/d"), K("r/b"), 0, err));
    EXPECT_CODE(TOONDB_INVALID_ARGUMENT, toondb_delete_range(db, NULL, 3, K("r/z"), 0, err));

    /* Bad arguments. */
    uint8_t *v = NULL;
    EXPECT_CODE(TOONDB_INVALID_ARGUMENT, toondb_get(db, NULL, 3, &v, &n, &found, err));
    EXPECT_CODE(TOONDB_INVALID_ARGUMENT, toondb_get(db, K("a"), NULL, &n, &found, err));
    EXPECT_CODE(TOONDB_INVALID_ARGUMENT, toondb_put(db, NULL, 1, K("v"), 0, err));
    EXPECT_CODE(TOONDB_INVALID_ARGUMENT, toondb_put(db, K("k"), NULL, 2, 0, err));
    EXPECT_CODE(TOONDB_INVALID_ARGUMENT, toondb_put(db, NULL, 0, K("v"), 0, err)); /* empty key */
    EXPECT_CODE(TOONDB_INVALID_ARGUMENT, toondb_delete(db, NULL, 5, 0, err));
    /* A key over the 64 KiB limit. */
    size_t big = 70 * 1024;
    uint8_t *huge = calloc(big, 1);
    EXPECT_CODE(TOONDB_INVALID_ARGUMENT, toondb_put(db, huge, big, K("v"), 0, err));
    free(huge);
    OK(toondb_close(db, err));
    toondb_db_free(db);
}

/* toondb_get_buf and toondb_get_many: values, absent keys, buffers too
 * small (nothing copied, the needed length returned), bad arguments. */
static void test_get_buf_and_get_many(void) {
    ToondbDb *db = open_db("getbuf");
    OK(toondb_put(db, K("a"), K("apple"), 0, err));
    OK(toondb_put(db, K("b"), K(""), 0, err));
    OK(toondb_put(db, K("c"), K("cherry"), 0, err));

    uint8_t buf[8];
    memset(buf, '#', sizeof buf);
    CHECK(toondb_get_buf(db, K("a"), buf, sizeof buf, NULL) == 5);
    CHECK(memcmp(buf, "apple", 5) == 0);
    CHECK(toondb_get_buf(db, K("b"), buf, sizeof buf, NULL) == 0);
    CHECK(toondb_get_buf(db, K("zz"), buf, sizeof buf, NULL) == TOONDB_ABSENT);
    memset(buf, '#', sizeof buf);
    CHECK(toondb_get_buf(db, K("c"), buf, 3, NULL) == 6); /* too small */
    CHECK(buf[0] == '#');                                  /* nothing copied */
    CHECK(toondb_get_buf(db, K("c"), NULL, 0, NULL) == 6);
    EXPECT_LEN_CODE(TOONDB_INVALID_ARGUMENT, toondb_get_buf(db, K("c"), NULL, 4, err));
    EXPECT_LEN_CODE(TOONDB_INVALID_ARGUMENT, toondb_get_buf(db, NULL, 0, buf, 8, err));
    /* Without an error object the code is still in the result. */
    CHECK(toondb_get_buf(db, NULL, 0, buf, 8, NULL) == -1 - TOONDB_INVALID_ARGUMENT);

    const char *keys = "azbc";
    uint32_t key_lens[] = {1, 1, 1, 1};
    int64_t lens[4] = {0, 0, 0, 0};
    size_t needed = 0;
    uint8_t out[32];
    OK(toondb_get_many(db, (const uint8_t *)keys, key_lens, 4, out, sizeof out, lens,
                       &needed, err));
    CHECK(lens[0] == 5 && lens[1] == TOONDB_ABSENT && lens[2] == 0 && lens[3] == 6);
    CHECK(needed == 11 && memcmp(out, "applecherry", 11) == 0);
    /* Too small: the lengths and `needed`, no bytes. */
    memset(out, '#', sizeof out);
    OK(toondb_get_many(db, (const uint8_t *)keys, key_lens, 4, out, 4, lens, &needed, err));
    CHECK(needed == 11 && lens[3] == 6 && out[0] == '#');
    OK(toondb_get_many(db, NULL, NULL, 0, NULL, 0, NULL, &needed, err));
    CHECK(needed == 0);
    /* A bad key fails the whole call; NULL arrays and out-pointers too. */
    uint32_t bad_lens[] = {1, 0};
    EXPECT_CODE(TOONDB_INVALID_ARGUMENT,
                toondb_get_many(db, (const uint8_t *)"a", bad_lens, 2, out, sizeof out, lens,
                                &needed, err));
    EXPECT_CODE(TOONDB_INVALID_ARGUMENT,
                toondb_get_many(db, (const uint8_t *)keys, NULL, 4, out, sizeof out, lens,
                                &needed, err));
    EXPECT_CODE(TOONDB_INVALID_ARGUMENT,
                toondb_get_many(db, (const uint8_t *)keys, key_lens, 4, out, sizeof out, NULL,
                                &needed, err));
    EXPECT_CODE(TOONDB_INVALID_ARGUMENT,
                toondb_get_many(db, (const uint8_t *)keys, key_lens, 4, out, sizeof out, lens,
                                NULL, err));
    EXPECT_CODE(TOONDB_INVALID_ARGUMENT,
                toondb_get_many(db, (const uint8_t *)keys, key_lens, 4, NULL, 8, lens,
                                &needed, err));
    EXPECT_CODE(TOONDB_INVALID_ARGUMENT,
                toondb_get_many(db, NULL, key_lens, 4, out, sizeof out, lens, &needed, err));
    OK(toondb_close(db, err));
    toondb_db_free(db);
}

static void test_batches(void) {
    ToondbDb *db = open_db("batch");
    ToondbBatch *b = toondb_batch_new();
    CHECK(b != NULL && toondb_batch_count(b) == 0);
    OK(toondb_batch_put(b, K("a"), K("1"), err));
    OK(toondb_batch_put(b, K("b"), K("2"), err));
    OK(toondb_batch_delete(b, K("b"), err));
    CHECK(toondb_batch_count(b) == 3);
    EXPECT_CODE(TOONDB_INVALID_ARGUMENT, toondb_batch_put(b, NULL, 1, K("x"), err));
    EXPECT_CODE(TOONDB_INVALID_ARGUMENT, toondb_batch_delete(b, NULL, 0, err));
    OK(toondb_write(db, b, TOONDB_SYNC_DEFAULT, err));
    CHECK(toondb_batch_count(b) == 0); /* emptied by the write */
    CHECK(has_value(db, "a", "1"));
    CHECK(has_value(db, "b", NULL));
    OK(toondb_batch_put(b, K("c"), K("3"), err));
    toondb_batch_clear(b);
    CHECK(toondb_batch_count(b) == 0);
    OK(toondb_write(db, b, 1, err)); /* empty batch is fine */
    toondb_batch_free(b);
    EXPECT_CODE(TOONDB_INVALID_ARGUMENT, toondb_write(db, NULL, 0, err));

    /* Flat batches: put x=10, delete a, put y="" */
    uint8_t kinds[3] = {1, 0, 1};
    uint32_t lens[6] = {1, 2, 1, 0, 1, 0};
    const char *data = "x10ay";
    OK(toondb_write_flat(db, kinds, lens, 3, (const uint8_t *)data, 5, 0, err));
    CHECK(has_value(db, "x", "10"));
    CHECK(has_value(db, "a", NULL));
    CHECK(has_value(db, "y", ""));
    uint8_t bad_kind[1] = {7};
    uint32_t one[2] = {1, 1};
    EXPECT_CODE(TOONDB_INVALID_ARGUMENT,
                toondb_write_flat(db, bad_kind, one, 1, K("zz"), 0, err));
    uint32_t long_lens[2] = {1, 9};
    EXPECT_CODE(TOONDB_INVALID_ARGUMENT,
                toondb_write_flat(db, kinds, long_lens, 1, K("zz"), 0, err));
    EXPECT_CODE(TOONDB_INVALID_ARGUMENT,
                toondb_write_flat(db, kinds, one, 1, K("zzz"), 0, err)); /* data too long */
    EXPECT_CODE(TOONDB_INVALID_ARGUMENT,
                toondb_write_flat(db, kinds, NULL, 1, K("zz"), 0, err));
    OK(toondb_write_flat(db, NULL, NULL, 0, NULL, 0, 0, err));
    /* A failed flat batch applied nothing. */
    CHECK(has_value(db, "z", NULL));
    OK(toondb_close(db, err));
    toondb_db_free(db);
}

/* Collects an iterator's keys into `out` ("k1,k2,"); returns the count. */
static int collect(ToondbIter *it, char *out, size_t cap) {
    int count = 0;
    out[0] = '\0';
    for (;;) {
        bool valid = false;
        const uint8_t *k = NULL, *v = NULL;
        size_t kn = 0, vn = 0;
        ToondbError *e = NULL;
        int32_t rc = toondb_iter_next(it, &valid, &k, &kn, &v, &vn, &e);
        CHECK(rc == TOONDB_OK);
        toondb_error_free(e);
        if (rc != TOONDB_OK || !valid)
            break;
        size_t at = strlen(out);
        if (at + kn + 2 < cap) {
            memcpy(out + at, k, kn);
            out[at + kn] = ',';
            out[at + kn + 1] = '\0';
        }
        count++;
    }
    return count;
}

static ToondbScanOptions scan_none(void) {
    ToondbScanOptions s;
    memset(&s, 0, sizeof s);
    return s;
}

static void test_iterators(void) {
    ToondbDb *db = open_db("iter");
    const char *keys[] = {"a", "users/1", "users/2", "users/3", "users0", "z"};
    for (int i = 0; i < 6; i++)
        OK(toondb_put(db, K(keys[i]), K("v"), 0, err));
    char got[256];
    ToondbIter *it = NULL;

    OK(toondb_iter(db, NULL, &it, err));
    CHECK(collect(it, got, sizeof got) == 6);
    CHECK(strcmp(got, "a,users/1,users/2,users/3,users0,z,") == 0);
    toondb_iter_free(it);

    ToondbScanOptions s = scan_none();
    s.prefix = (const uint8_t *)"users/";
    s.prefix_len = 6;
    s.reverse = true;
    OK(toondb_iter(db, &s, &it, err));
    collect(it, got, sizeof got);
    CHECK(strcmp(got, "users/3,users/2,users/1,") == 0);
    toondb_iter_free(it);

    /* prefix combined with gt and limit */
    s = scan_none();
    s.prefix = (const uint8_t *)"users/";
    s.prefix_len = 6;
    s.gt = (const uint8_t *)"users/1";
    s.gt_len = 7;
    s.limit = 1;
    OK(toondb_iter(db, &s, &it, err));
    collect(it, got, sizeof got);
    CHECK(strcmp(got, "users/2,") == 0);
    toondb_iter_free(it);

    /* gte/lt range, seek forward, values may be skipped */
    s = scan_none();
    s.gte = (const uint8_t *)"b";
    s.gte_len = 1;
    s.lt = (const uint8_t *)"z";
    s.lt_len = 1;
    OK(toondb_iter(db, &s, &it, err));
    OK(toondb_iter_seek(it, K("users/2"), err));
    bool valid = false;
    const uint8_t *k = NULL;
    size_t kn = 0;
    OK(toondb_iter_next(it, &valid, &k, &kn, NULL, NULL, err));
    CHECK(valid && kn == 7 && memcmp(k, "users/2", 7) == 0);
    OK(toondb_iter_seek(it, K("a"), err)); /* clamped to the lower bound */
    collect(it, got, sizeof got);
    CHECK(strcmp(got, "users/1,users/2,users/3,users0,") == 0);
    EXPECT_CODE(TOONDB_INVALID_ARGUMENT,
                toondb_iter_next(it, NULL, &k, &kn, NULL, NULL, err));
    EXPECT_CODE(TOONDB_INVALID_ARGUMENT, toondb_iter_seek(it, NULL, 2, err));
    OK(toondb_iter_close(it, err));
    OK(toondb_iter_close(it, err));
    EXPECT_CODE(TOONDB_CLOSED, toondb_iter_next(it, &valid, &k, &kn, NULL, NULL, err));
    EXPECT_CODE(TOONDB_CLOSED, toondb_iter_seek(it, K("a"), err));
    toondb_iter_free(it);

    /* close lets go of the iterator's snapshot at once, before the free */
    ToondbStats st;
    st.struct_size = sizeof st;
    OK(toondb_stats(db, &st, err));
    uint64_t live_before = st.live_snapshots;
    OK(toondb_iter(db, NULL, &it, err));
    OK(toondb_stats(db, &st, err));
    CHECK(st.live_snapshots > live_before);
    OK(toondb_iter_close(it, err));
    OK(toondb_stats(db, &st, err));
    CHECK(st.live_snapshots == live_before);
    toondb_iter_free(it);

    /* reverse seek */
    s = scan_none();
    s.reverse = true;
    OK(toondb_iter(db, &s, &it, err));
    OK(toondb_iter_seek(it, K("users/25"), err));
    collect(it, got, sizeof got);
    CHECK(strcmp(got, "users/2,users/1,a,") == 0);
    toondb_iter_free(it);

    /* an iterator reads the snapshot taken when it was made */
    OK(toondb_iter(db, NULL, &it, err));
    OK(toondb_put(db, K("b-late"), K("v"), 0, err));
    CHECK(collect(it, got, sizeof got) == 6);
    toondb_iter_free(it);

    s = scan_none();
    s.gt = (const uint8_t *)"a";
    s.gt_len = 1;
    s.gte = (const uint8_t *)"a";
    s.gte_len = 1;
    it = NULL;
    EXPECT_CODE(TOONDB_INVALID_ARGUMENT, toondb_iter(db, &s, &it, err));
    CHECK(it == NULL);
    EXPECT_CODE(TOONDB_INVALID_ARGUMENT, toondb_iter(db, NULL, NULL, err));
    OK(toondb_close(db, err));
    toondb_db_free(db);
}

static void test_transactions(void) {
    ToondbDb *db = open_db("txn");
    OK(toondb_put(db, K("acct/a"), K("100"), 0, err));
    ToondbTxn *t = NULL;
    OK(toondb_txn_begin(db, TOONDB_ISOLATION_SNAPSHOT, TOONDB_SYNC_DEFAULT, &t, err));
    OK(toondb_txn_put(t, K("acct/a"), K("90"), err));
    OK(toondb_txn_put(t, K("acct/b"), K("10"), err));
    OK(toondb_txn_delete(t, K("acct/c"), err));
    uint8_t *v = NULL;
    size_t n = 0;
    bool found = false;
    OK(toondb_txn_get(t, K("acct/a"), &v, &n, &found, err));
    CHECK(found && n == 2 && memcmp(v, "90", 2) == 0);
    toondb_buffer_free(v, n);
    uint8_t tbuf[4];
    CHECK(toondb_txn_get_buf(t, K("acct/a"), tbuf, sizeof tbuf, NULL) == 2);
    CHECK(memcmp(tbuf, "90", 2) == 0);
    CHECK(toondb_txn_get_buf(t, K("acct/c"), tbuf, sizeof tbuf, NULL) == TOONDB_ABSENT);
    CHECK(has_value(db, "acct/a", "100")); /* not committed yet */

    ToondbIter *it = NULL;
    ToondbScanOptions s = scan_none();
    s.prefix = (const uint8_t *)"acct/";
    s.prefix_len = 5;
    OK(toondb_txn_iter(t, &s, &it, err));
    char got[128];
    collect(it, got, sizeof got);
    CHECK(strcmp(got, "acct/a,acct/b,") == 0); /* sees its own writes */
    toondb_iter_free(it);

    uint64_t ts = 0;
    OK(toondb_txn_commit(t, &ts, err));
    CHECK(ts > 0);
    CHECK(has_value(db, "acct/a", "90") && has_value(db, "acct/b", "10"));
    /* Finished: every call fails with CLOSED. */
    EXPECT_CODE(TOONDB_CLOSED, toondb_txn_put(t, K("x"), K("y"), err));
    EXPECT_CODE(TOONDB_CLOSED, toondb_txn_get(t, K("x"), &v, &n, &found, err));
    EXPECT_LEN_CODE(TOONDB_CLOSED, toondb_txn_get_buf(t, K("x"), tbuf, sizeof tbuf, err));
    EXPECT_CODE(TOONDB_CLOSED, toondb_txn_commit(t, NULL, err));
    EXPECT_CODE(TOONDB_CLOSED, toondb_txn_rollback(t, err));
    EXPECT_CODE(TOONDB_CLOSED, toondb_txn_iter(t, NULL, &it, err));
    toondb_txn_free(t);

    /* First committer wins. */
    ToondbTxn *t1 = NULL, *t2 = NULL;
    OK(toondb_txn_begin(db, TOONDB_ISOLATION_SNAPSHOT, 0, &t1, err));
    OK(toondb_txn_begin(db, TOONDB_ISOLATION_SNAPSHOT, 0, &t2, err));
    OK(toondb_txn_put(t1, K("acct/a"), K("1"), err));
    OK(toondb_txn_put(t2, K("acct/a"), K("2"), err));
    OK(toondb_txn_commit(t1, NULL, err));
    EXPECT_CODE(TOONDB_CONFLICT, toondb_txn_commit(t2, NULL, err));
    CHECK(has_value(db, "acct/a", "1"));
    toondb_txn_free(t1);
    toondb_txn_free(t2);

    /* Serializable: a read key written by another commit conflicts. */
    OK(toondb_txn_begin(db, TOONDB_ISOLATION_SERIALIZABLE, 1, &t1, err));
    OK(toondb_txn_get(t1, K("acct/b"), &v, &n, NULL, err));
    toondb_buffer_free(v, n);
    OK(toondb_put(db, K("acct/b"), K("11"), 0, err));
    OK(toondb_txn_put(t1, K("acct/z"), K("1"), err));
    EXPECT_CODE(TOONDB_CONFLICT, toondb_txn_commit(t1, NULL, err));
    toondb_txn_free(t1);

    /* Rollback discards; freeing an active transaction rolls it back. */
    OK(toondb_txn_begin(db, TOONDB_ISOLATION_SNAPSHOT, -1, &t1, err));
    OK(toondb_txn_put(t1, K("gone"), K("1"), err));
    OK(toondb_txn_rollback(t1, err));
    toondb_txn_free(t1);
    OK(toondb_txn_begin(db, TOONDB_ISOLATION_SNAPSHOT, -1, &t1, err));
    OK(toondb_txn_put(t1, K("gone"), K("1"), err));
    toondb_txn_free(t1);
    CHECK(has_value(db, "gone", NULL));

    EXPECT_CODE(TOONDB_INVALID_ARGUMENT, toondb_txn_begin(db, 5, -1, &t1, err));
    EXPECT_CODE(TOONDB_INVALID_ARGUMENT, toondb_txn_begin(db, 0, -1, NULL, err));
    OK(toondb_close(db, err));
    toondb_db_free(db);
}

static void test_snapshots(void) {
    ToondbDb *db = open_db("snap");
    OK(toondb_put(db, K("k"), K("old"), 0, err));
    ToondbSnapshot *snap = NULL;
    OK(toondb_snapshot(db, &snap, err));
    OK(toondb_put(db, K("k"), K("new"), 0, err));
    OK(toondb_put(db, K("k2"), K("x"), 0, err));
    uint8_t *v = NULL;
    size_t n = 0;
    bool found = false;
    OK(toondb_snapshot_get(snap, K("k"), &v, &n, &found, err));
    CHECK(found && n == 3 && memcmp(v, "old", 3) == 0);
    toondb_buffer_free(v, n);
    OK(toondb_snapshot_get(snap, K("k2"), &v, &n, &found, err));
    CHECK(!found && v == NULL);
    uint8_t sbuf[4];
    CHECK(toondb_snapshot_get_buf(snap, K("k"), sbuf, sizeof sbuf, NULL) == 3);
    CHECK(memcmp(sbuf, "old", 3) == 0);
    CHECK(toondb_snapshot_get_buf(snap, K("k2"), sbuf, sizeof sbuf, NULL) == TOONDB_ABSENT);
    ToondbIter *it = NULL;
    OK(toondb_snapshot_iter(snap, NULL, &it, err));
    OK(toondb_snapshot_release(snap, err));
    OK(toondb_snapshot_release(snap, err));
    char got[64];
    CHECK(collect(it, got, sizeof got) == 1); /* the scan outlives release */
    toondb_iter_free(it);
    EXPECT_CODE(TOONDB_CLOSED, toondb_snapshot_get(snap, K("k"), &v, &n, &found, err));
    EXPECT_LEN_CODE(TOONDB_CLOSED, toondb_snapshot_get_buf(snap, K("k"), sbuf, sizeof sbuf, err));
    EXPECT_CODE(TOONDB_CLOSED, toondb_snapshot_iter(snap, NULL, &it, err));
    toondb_snapshot_free(snap);
    EXPECT_CODE(TOONDB_INVALID_ARGUMENT, toondb_snapshot(db, NULL, err));
    OK(toondb_close(db, err));
    toondb_db_free(db);
}

static void test_flush_compact_stats(void) {
    char *path = dir_for("maint");
    ToondbOptions o;
    toondb_options_init(&o);
    o.memtable_size = 64 * 1024;
    o.compression = 2;
    ToondbDb *db = NULL;
    OK(toondb_open(path, &o, &db, err));
    char key[32], val[64];
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 500; i++) {
            snprintf(key, sizeof key, "key%05d", i);
            snprintf(val, sizeof val, "value-%d-%d-padding-padding", round, i);
            OK(toondb_put(db, K(key), K(val), 0, err));
        }
        OK(toondb_flush(db, err));
    }
    ToondbStats st;
    memset(&st, 0, sizeof st);
    st.struct_size = sizeof st;
    OK(toondb_stats(db, &st, err));
    CHECK(st.commits >= 1500 && st.flushes >= 3 && st.tables >= 1);
    CHECK(st.level_count >= 1 && st.struct_size == sizeof st);
    OK(toondb_compact_range(db, K("key00100"), K("key00200"), err));
    OK(toondb_compact_range(db, NULL, 0, NULL, 0, err));
    OK(toondb_compact(db, err));
    OK(toondb_stats(db, &st, err));
    CHECK(st.compactions + st.trivial_moves >= 1);
    /* Background work ends: the two fields a caller waits on read 0. */
    for (int i = 0; i < 2000 && (st.maintenance_busy || st.pending_wal_syncs || st.immutable_memtables); i++) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
        OK(toondb_stats(db, &st, err));
    }
    CHECK(st.maintenance_busy == 0 && st.pending_wal_syncs == 0);
    /* The active memtable's point index: 8 bytes per 64 of memtable_size. */
    CHECK(st.memtable_index_bytes >= 64 * 8 && st.memtable_index_bytes % 512 == 0);
    CHECK(has_value(db, "key00042", "value-2-42-padding-padding"));
    /* A caller compiled against a shorter struct gets only its part. */
    uint64_t small[3] = {2 * sizeof(uint64_t), 0, 0xdeadbeef};
    OK(toondb_stats(db, (ToondbStats *)small, err));
    CHECK(small[1] == st.visible_ts && small[2] == 0xdeadbeef);
    EXPECT_CODE(TOONDB_INVALID_ARGUMENT, toondb_stats(db, NULL, err));
    st.struct_size = 0;
    EXPECT_CODE(TOONDB_INVALID_ARGUMENT, toondb_stats(db, &st, err));
    OK(toondb_close(db, err));
    toondb_db_free(db);
    free(path);
}

/* Past the default 4 MiB WAL size limit the live segment is checkpointed
 * into a table in the background without a flush; the flush removes it. */
static void test_checkpoint_stats(void) {
    char *path = dir_for("checkpoint");
    ToondbOptions o;
    toondb_options_init(&o);
    ToondbDb *db = NULL;
    OK(toondb_open(path, &o, &db, err));
    char key[32];
    static uint8_t val[1000];
    memset(val, 'c', sizeof val);
    for (int i = 0; i < 6000; i++) {
        snprintf(key, sizeof key, "key%06d", i);
        OK(toondb_put(db, K(key), val, sizeof val, 0, err));
    }
    ToondbStats st;
    memset(&st, 0, sizeof st);
    st.struct_size = sizeof st;
    /* The checkpoint runs on the maintenance thread: wait for it (bounded). */
    for (int tries = 0; tries < 3000; tries++) {
        OK(toondb_stats(db, &st, err));
        if (st.checkpoints >= 1) break;
        struct timespec ms10 = {0, 10 * 1000 * 1000};
        nanosleep(&ms10, NULL);
    }
    CHECK(st.checkpoints >= 1 && st.checkpoint_tables == st.checkpoints);
    CHECK(st.checkpoint_bytes_written > 0 && st.checkpoint_errors == 0 && st.flushes == 0);
    OK(toondb_flush(db, err));
    OK(toondb_stats(db, &st, err));
    CHECK(st.checkpoint_tables == 0 && st.flushes == 1);
    uint8_t *got = NULL;
    size_t n = 0;
    bool found = false;
    OK(toondb_get(db, K("key004321"), &got, &n, &found, err));
    CHECK(found && n == sizeof val && memcmp(got, val, n) == 0);
    toondb_buffer_free(got, n);
    OK(toondb_close(db, err));
    toondb_db_free(db);
    free(path);
}

static void test_null_handles(void) {
    uint8_t *v = NULL;
    size_t n = 0;
    bool b = false;
    const uint8_t *k = NULL;
    ToondbTxn *t = NULL;
    ToondbSnapshot *s = NULL;
    ToondbIter *it = NULL;
    ToondbStats st;
    st.struct_size = sizeof st;
    const int32_t E = TOONDB_INVALID_ARGUMENT;
    EXPECT_CODE(E, toondb_close(NULL, err));
    EXPECT_CODE(E, toondb_get(NULL, K("k"), &v, &n, &b, err));
    EXPECT_CODE(E, toondb_get_into(NULL, K("k"), NULL, 0, &n, &b, err));
    EXPECT_LEN_CODE(E, toondb_get_buf(NULL, K("k"), NULL, 0, err));
    EXPECT_LEN_CODE(E, toondb_txn_get_buf(NULL, K("k"), NULL, 0, err));
    EXPECT_LEN_CODE(E, toondb_snapshot_get_buf(NULL, K("k"), NULL, 0, err));
    int64_t one_len = 0;
    uint32_t one_key = 1;
    EXPECT_CODE(E, toondb_get_many(NULL, (const uint8_t *)"k", &one_key, 1, NULL, 0, &one_len, &n, err));
    EXPECT_CODE(E, toondb_put(NULL, K("k"), K("v"), 0, err));
    EXPECT_CODE(E, toondb_delete(NULL, K("k"), 0, err));
    EXPECT_CODE(E, toondb_write(NULL, NULL, 0, err));
    EXPECT_CODE(E, toondb_write_flat(NULL, NULL, NULL, 0, NULL, 0, 0, err));
    EXPECT_CODE(E, toondb_flush(NULL, err));
    EXPECT_CODE(E, toondb_compact(NULL, err));
    EXPECT_CODE(E, toondb_compact_range(NULL, NULL, 0, NULL, 0, err));
    EXPECT_CODE(E, toondb_stats(NULL, &st, err));
    EXPECT_CODE(E, toondb_batch_put(NULL, K("k"), K("v"), err));
    EXPECT_CODE(E, toondb_batch_delete(NULL, K("k"), err));
    CHECK(toondb_batch_count(NULL) == 0);
    toondb_batch_clear(NULL);
    EXPECT_CODE(E, toondb_txn_begin(NULL, 0, -1, &t, err));
    EXPECT_CODE(E, toondb_txn_get(NULL, K("k"), &v, &n, &b, err));
    EXPECT_CODE(E, toondb_txn_put(NULL, K("k"), K("v"), err));
    EXPECT_CODE(E, toondb_txn_delete(NULL, K("k"), err));
    EXPECT_CODE(E, toondb_txn_commit(NULL, NULL, err));
    EXPECT_CODE(E, toondb_txn_rollback(NULL, err));
    EXPECT_CODE(E, toondb_txn_iter(NULL, NULL, &it, err));
    EXPECT_CODE(E, toondb_snapshot(NULL, &s, err));
    EXPECT_CODE(E, toondb_snapshot_get(NULL, K("k"), &v, &n, &b, err));
    EXPECT_CODE(E, toondb_snapshot_iter(NULL, NULL, &it, err));
    EXPECT_CODE(E, toondb_snapshot_release(NULL, err));
    EXPECT_CODE(E, toondb_iter(NULL, NULL, &it, err));
    EXPECT_CODE(E, toondb_iter_next(NULL, &b, &k, &n, NULL, NULL, err));
    EXPECT_CODE(E, toondb_iter_seek(NULL, K("k"), err));
    EXPECT_CODE(E, toondb_iter_close(NULL, err));
    /* Every free accepts NULL. */
    toondb_db_free(NULL);
    toondb_txn_free(NULL);
    toondb_snapshot_free(NULL);
    toondb_iter_free(NULL);
    toondb_batch_free(NULL);
    toondb_buffer_free(NULL, 0);
    toondb_error_free(NULL);
}

static void test_use_after_close(void) {
    ToondbDb *db = open_db("closed");
    OK(toondb_put(db, K("k"), K("v"), 0, err));
    ToondbTxn *t = NULL;
    ToondbSnapshot *snap = NULL;
    ToondbIter *it = NULL;
    OK(toondb_txn_begin(db, 0, -1, &t, err));
    OK(toondb_txn_put(t, K("t"), K("1"), err));
    OK(toondb_snapshot(db, &snap, err));
    OK(toondb_iter(db, NULL, &it, err));
    OK(toondb_close(db, err));
    OK(toondb_close(db, err)); /* twice is a no-op */

    uint8_t *v = NULL;
    size_t n = 0;
    bool b = false;
    const uint8_t *k = NULL;
    ToondbStats st;
    st.struct_size = sizeof st;
    ToondbTxn *t2 = NULL;
    ToondbSnapshot *s2 = NULL;
    ToondbIter *i2 = NULL;
    const int32_t C = TOONDB_CLOSED;
    EXPECT_CODE(C, toondb_get(db, K("k"), &v, &n, &b, err));
    EXPECT_CODE(C, toondb_get_into(db, K("k"), NULL, 0, &n, &b, err));
    EXPECT_LEN_CODE(C, toondb_get_buf(db, K("k"), NULL, 0, err));
    int64_t one_len = 0;
    uint32_t one_key = 1;
    EXPECT_CODE(C, toondb_get_many(db, (const uint8_t *)"k", &one_key, 1, NULL, 0, &one_len,
                                   &n, err));
    EXPECT_CODE(C, toondb_put(db, K("k"), K("v"), 0, err));
    EXPECT_CODE(C, toondb_delete(db, K("k"), 0, err));
    ToondbBatch *batch = toondb_batch_new();
    OK(toondb_batch_put(batch, K("k"), K("v"), err));
    EXPECT_CODE(C, toondb_write(db, batch, 0, err));
    toondb_batch_free(batch);
    EXPECT_CODE(C, toondb_write_flat(db, NULL, NULL, 0, NULL, 0, 0, err));
    EXPECT_CODE(C, toondb_flush(db, err));
    EXPECT_CODE(C, toondb_compact(db, err));
    EXPECT_CODE(C, toondb_stats(db, &st, err));
    EXPECT_CODE(C, toondb_txn_begin(db, 0, -1, &t2, err));
    EXPECT_CODE(C, toondb_snapshot(db, &s2, err));
    EXPECT_CODE(C, toondb_iter(db, NULL, &i2, err));
    CHECK(t2 == NULL && s2 == NULL && i2 == NULL);
    /* Handles made before the close report it too. */
    EXPECT_CODE(C, toondb_txn_put(t, K("t"), K("2"), err));
    EXPECT_CODE(C, toondb_txn_commit(t, NULL, err));
    EXPECT_CODE(C, toondb_snapshot_get(snap, K("k"), &v, &n, &b, err));
    EXPECT_LEN_CODE(C, toondb_snapshot_get_buf(snap, K("k"), NULL, 0, err));
    EXPECT_LEN_CODE(C, toondb_txn_get_buf(t, K("t"), NULL, 0, err));
    EXPECT_CODE(C, toondb_iter_next(it, &b, &k, &n, NULL, NULL, err));
    /* Free the database first: the others stay safe to free. */
    toondb_db_free(db);
    toondb_iter_free(it);
    toondb_snapshot_free(snap);
    toondb_txn_free(t);

    /* The committed write before close survived, the transaction did not. */
    db = open_db("closed");
    CHECK(has_value(db, "k", "v") && has_value(db, "t", NULL));
    toondb_db_free(db);
}

/* Threads: concurrent increments of one counter in transactions, retried
 * on conflict, plus private keys; nothing is lost. */
#define THREADS 4
#define INCREMENTS 50
static ToondbDb *shared_db;

static void *worker(void *arg) {
    long id = (long)arg;
    char key[32];
    for (int i = 0; i < INCREMENTS; i++) {
        for (;;) {
            ToondbTxn *t = NULL;
            if (toondb_txn_begin(shared_db, 0, 0, &t, NULL) != TOONDB_OK)
                return (void *)1;
            uint8_t buf[16];
            size_t n = 0;
            uint8_t *v = NULL;
            bool found = false;
            toondb_txn_get(t, K("counter"), &v, &n, &found, NULL);
            long c = 0;
            if (found && n < sizeof buf) {
                memcpy(buf, v, n);
                buf[n] = 0;
                c = atol((char *)buf);
            }
            toondb_buffer_free(v, n);
            char next[32];
            snprintf(next, sizeof next, "%ld", c + 1);
            snprintf(key, sizeof key, "t%ld/%d", id, i);
            toondb_txn_put(t, K("counter"), K(next), NULL);
            toondb_txn_put(t, K(key), K("1"), NULL);
            int32_t rc = toondb_txn_commit(t, NULL, NULL);
            toondb_txn_free(t);
            if (rc == TOONDB_OK)
                break;
            if (rc != TOONDB_CONFLICT)
                return (void *)1;
        }
    }
    return NULL;
}

static void test_threads(void) {
    shared_db = open_db("threads");
    pthread_t th[THREADS];
    for (long i = 0; i < THREADS; i++)
        CHECK(pthread_create(&th[i], NULL, worker, (void *)i) == 0);
    for (int i = 0; i < THREADS; i++) {
        void *r = NULL;
        pthread_join(th[i], &r);
        CHECK(r == NULL);
    }
    char want[16];
    snprintf(want, sizeof want, "%d", THREADS * INCREMENTS);
    CHECK(has_value(shared_db, "counter", want));
    ToondbIter *it = NULL;
    ToondbScanOptions s = scan_none();
    s.prefix = (const uint8_t *)"t";
    s.prefix_len = 1;
    OK(toondb_iter(shared_db, &s, &it, err));
    char got[8192];
    CHECK(collect(it, got, sizeof got) == THREADS * INCREMENTS);
    toondb_iter_free(it);
    OK(toondb_close(shared_db, err));
    toondb_db_free(shared_db);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s <scratch-dir>\n", argv[0]);
        return 2;
    }
    scratch = argv[1];
    struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        {"version_and_codes", test_version_and_codes},
        {"panic_is_caught", test_panic_is_caught},
        {"open_options_and_errors", test_open_options_and_errors},
        {"hash_index_option", test_hash_index_option},
        {"dynamic_level_bytes_option", test_dynamic_level_bytes_option},
        {"put_get_delete", test_put_get_delete},
        {"get_buf_and_get_many", test_get_buf_and_get_many},
        {"batches", test_batches},
        {"iterators", test_iterators},
        {"transactions", test_transactions},
        {"snapshots", test_snapshots},
        {"flush_compact_stats", test_flush_compact_stats},
        {"checkpoint_stats", test_checkpoint_stats},
        {"null_handles", test_null_handles},
        {"use_after_close", test_use_after_close},
        {"threads", test_threads},
    };
    int n = (int)(sizeof tests / sizeof tests[0]);
    for (int i = 0; i < n; i++) {
        int before = failures;
        tests[i].fn();
        printf("%s %s\n", failures == before ? "ok  " : "FAIL", tests[i].name);
    }
    printf("%d tests, %d checks, %d failed checks\n", n, checks, failures);
    return failures == 0 ? 0 : 1;
}
