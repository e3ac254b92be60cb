//! The native `Database` class. index.js wraps it with the promise API.

use std::ops::Bound;
use std::sync::Arc;

use napi::bindgen_prelude::{AsyncTask, Buffer, BufferSlice, Function};
use std::ptr;

use napi::{sys, Env, Task};
use toondb_storage::{
    Compression, Database, Isolation, Options, TransactionOptions, WriteBatch, WriteOptions,
};

use crate::completion::{Completions, Settled};
use crate::convert::{as_bytes, Bytes};
use crate::errors::{from_napi, guard_ref, invalid_argument, to_js, Result};
use crate::iterator::{scan_options, NativeIterator, Parts, ScanArgs};
use crate::transaction::{copy_into, NativeSnapshot, NativeTransaction};
use crate::values::{JsValueOut, OwnedValue};

/// Options accepted by `Database.open` (documented in index.d.ts).
#[napi(object)]
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    pub sync: Option<bool>,
    pub memtable_size: Option<f64>,
    pub wal_size_limit: Option<f64>,
    pub create_if_missing: Option<bool>,
    pub error_if_exists: Option<bool>,
    pub block_size: Option<f64>,
    pub max_immutable_memtables: Option<f64>,
    /// "none" (default), "lz4" or "zstd".
    pub compression: Option<String>,
    pub bloom_bits_per_key: Option<f64>,
    pub hash_index: Option<bool>,
    pub auto_compaction: Option<bool>,
    pub dynamic_level_bytes: Option<bool>,
    pub target_file_size: Option<f64>,
    pub level_base_bytes: Option<f64>,
    pub l0_compaction_trigger: Option<f64>,
    pub l0_slowdown_writes: Option<f64>,
    pub l0_stop_writes: Option<f64>,
    pub cache_size: Option<f64>,
    pub max_open_files: Option<f64>,
    /// Bytes from which table values are returned zero-copy; Infinity: never.
    pub zero_copy_threshold: Option<f64>,
}

fn positive(name: &str, v: Option<f64>, min: f64, max: f64) -> Result<Option<usize>> {
    match v {
        None => Ok(None),
        Some(x) if x.is_finite() && x.fract() == 0.0 && (min..=max).contains(&x) => {
            Ok(Some(x as usize))
        }
        Some(x) => Err(invalid_argument(format!(
            "{name} must be a whole number from {min} to {max}, got {x}"
        ))),
    }
}

fn engine_options(o: Option<OpenOptions>) -> Result<Options> {
    let o = o.unwrap_or_default();
    let mut options = Options::default();
    if let Some(v) = o.sync {
        options.sync = v;
    }
    if let Some(v) = o.create_if_missing {
        options.create_if_missing = v;
    }
    if let Some(v) = o.error_if_exists {
        options.error_if_exists = v;
    }
    if let Some(v) = positive("memtableSize", o.memtable_size, 4096.0, (1u64 << 40) as f64)? {
        options.memtable_size = v;
    }
    if let Some(v) = positive("blockSize", o.block_size, 256.0, (1u64 << 24) as f64)? {
        options.block_size = v;
    }
    if let Some(v) = positive(
        "maxImmutableMemtables",
        o.max_immutable_memtables,
        1.0,
        64.0,
    )? {
        options.max_immutable_memtables = v;
    }
    if let Some(c) = o.compression.as_deref() {
        options.compression = match c {
            "none" => Compression::None,
            "lz4" => Compression::Lz4,
            "zstd" => Compression::Zstd,
            other => {
                return Err(invalid_argument(format!(
                    "compression must be 'none', 'lz4' or 'zstd', got {other:?}"
                )))
            }
        };
    }
    // 2 ** 50 or more (Infinity included) turns the limit off (index.d.ts).
    let wal_off = (1u64 << 50) as f64;
    match o.wal_size_limit {
        Some(x) if x >= wal_off => options.wal_size_limit = u64::MAX,
        x => {
            if let Some(v) = positive("walSizeLimit", x, 4096.0, wal_off)? {
                options.wal_size_limit = v as u64;
            }
        }
    }
    if let Some(v) = positive("bloomBitsPerKey", o.bloom_bits_per_key, 0.0, 32.0)? {
        options.bloom_bits_per_key = v as u32;
    }
    if let Some(v) = o.hash_index {
        options.hash_index = v;
    }
    if let Some(v) = o.auto_compaction {
        options.auto_compaction = v;
    }
    if let Some(v) = o.dynamic_level_bytes {
        options.dynamic_level_bytes = v;
    }
    let big = (1u64 << 50) as f64;
    if let Some(v) = positive("targetFileSize", o.target_file_size, 4096.0, big)? {
        options.target_file_size = v as u64;
    }
    if let Some(v) = positive("levelBaseBytes", o.level_base_bytes, 4096.0, big)? {
        options.level_base_bytes = v as u64;
    }
    if let Some(v) = positive("l0CompactionTrigger", o.l0_compaction_trigger, 1.0, 1000.0)? {
        options.l0_compaction_trigger = v;
    }
    if let Some(v) = positive("l0SlowdownWrites", o.l0_slowdown_writes, 1.0, 1000.0)? {
        options.l0_slowdown_writes = v;
    }
    if let Some(v) = positive("l0StopWrites", o.l0_stop_writes, 1.0, 1000.0)? {
        options.l0_stop_writes = v;
    }
    if let Some(v) = positive("cacheSize", o.cache_size, 0.0, big)? {
        options.cache_size = v;
    }
    if let Some(v) = positive("maxOpenFiles", o.max_open_files, 0.0, 1_000_000.0)? {
        options.max_open_files = v;
    }
    match o.zero_copy_threshold {
        Some(f64::INFINITY) => options.zero_copy_threshold = usize::MAX,
        v => {
            if let Some(v) = positive("zeroCopyThreshold", v, 0.0, 4_294_967_296.0)? {
                options.zero_copy_threshold = v;
            }
        }
    }
    Ok(options)
}

fn decode_flat(kinds: &[u8], lens: &[u32], data: &[u8]) -> Result<WriteBatch> {
    if lens.len() != kinds.len() * 2 {
        return Err(invalid_argument(
            "writeFlat: lens must hold two entries per operation",
        ));
    }
    let mut batch = WriteBatch::with_capacity(data.len() + kinds.len() * 4);
    let mut rest = data;
    let mut take = |n: u32| -> Result<&[u8]> {
        let n = n as usize;
        if n > rest.len() {
            return Err(invalid_argument("writeFlat: lengths run past the data"));
        }
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Ok(head)
    };
    for (i, kind) in kinds.iter().enumerate() {
        let key = take(lens[2 * i])?;
        let result = match kind {
            1 => batch.put(key, take(lens[2 * i + 1])?),
            0 => batch.delete(key),
            // A range delete: the "key" is its start, the "value" its end.
            2 => batch.delete_range(key, take(lens[2 * i + 1])?),
            _ => return Err(invalid_argument("writeFlat: unknown operation kind")),
        };
        result.map_err(to_js)?;
    }
    Ok(batch)
}

/// Counters and sizes returned by `db.stats()` (documented in index.d.ts).
#[napi(object)]
#[derive(Debug, Clone)]
pub struct DatabaseStats {
    pub visible_ts: f64,
    pub memtable_bytes: f64,
    pub immutable_memtables: f64,
    pub memtable_index_bytes: f64,
    pub tables: f64,
    pub table_bytes: f64,
    pub table_bytes_read: f64,
    pub commits: f64,
    pub commit_groups: f64,
    pub wal_bytes_written: f64,
    pub wal_syncs: f64,
    pub write_slowdowns: f64,
    pub write_stalls: f64,
    pub write_stall_micros: f64,
    pub flushes: f64,
    pub flush_bytes_written: f64,
    pub checkpoints: f64,
    pub checkpoint_bytes_written: f64,
    pub checkpoint_errors: f64,
    pub checkpoint_tables: f64,
    pub recovered_records: f64,
    pub recovered_segments: f64,
    pub recovered_bytes: f64,
    pub dropped_tail_bytes: f64,
    pub dropped_tail_reason: Option<String>,
    pub background_error: Option<String>,
    pub conflicts: f64,
    pub range_tombstones: f64,
    pub range_del_tree_nodes: f64,
    pub live_snapshots: f64,
    pub oldest_snapshot_ts: Option<f64>,
    pub levels: Vec<LevelStats>,
    pub pending_compaction_bytes: f64,
    pub maintenance_busy: bool,
    pub pending_wal_syncs: f64,
    pub compactions: f64,
    pub trivial_moves: f64,
    pub compaction_errors: f64,
    pub compaction_error: Option<String>,
    pub compaction_bytes_read: f64,
    pub compaction_bytes_written: f64,
    pub live_bytes_estimate: f64,
    pub write_amplification: f64,
    pub space_amplification: f64,
    pub data_blocks_read: f64,
    pub bloom_checked: f64,
    pub bloom_useful: f64,
    pub hash_index_checked: f64,
    pub hash_index_useful: f64,
    pub block_cache_hits: f64,
    pub block_cache_misses: f64,
    pub block_cache_evictions: f64,
    pub block_cache_bytes: f64,
    pub block_cache_capacity: f64,
    pub block_cache_entries: f64,
    pub block_cache_meta_bytes: f64,
    pub block_cache_meta_overflow_bytes: f64,
    pub open_tables: f64,
    pub table_cache_hits: f64,
    pub table_cache_misses: f64,
}

/// One level of the LSM tree in `db.stats().levels` (level 0 first).
#[napi(object)]
#[derive(Debug, Clone)]
pub struct LevelStats {
    pub tables: f64,
    pub bytes: f64,
    pub compacted_in: f64,
    pub compaction_bytes_written: f64,
}

#[napi]
pub struct NativeDatabase {
    pub(crate) db: Arc<Database>,
    completions: Arc<Completions>,
}

pub struct OpenTask {
    path: String,
    options: Options,
    completions: Option<Arc<Completions>>,
}

impl Task for OpenTask {
    type Output = Database;
    type JsValue = NativeDatabase;

    fn compute(&mut self) -> napi::Result<Database> {
        let (path, options) = (self.path.clone(), self.options.clone());
        guard_ref(move || Database::open_with(&path, options)).map_err(status_error)
    }

    fn resolve(&mut self, _env: Env, db: Database) -> napi::Result<NativeDatabase> {
        let completions = self
            .completions
            .take()
            .ok_or_else(|| napi::Error::from_reason("open resolved twice"))?;
        Ok(NativeDatabase {
            db: Arc::new(db),
            completions,
        })
    }
}

/// AsyncTask requires `napi::Error<Status>`; the code travels in the reason
/// as "CODE: message" and index.js splits it back out.
fn status_error(e: napi::Error<String>) -> napi::Error {
    napi::Error::new(
        napi::Status::GenericFailure,
        format!("{}: {}", e.status, e.reason),
    )
}

/// Point reads that may wait for the device, run on the libuv pool.
pub struct ReadTask {
    db: Arc<Database>,
    keys: Vec<Vec<u8>>,
    /// Resolve with an array (`getMany`) rather than one value.
    many: bool,
}

impl Task for ReadTask {
    type Output = Vec<Option<OwnedValue>>;
    type JsValue = ReadOut;

    fn compute(&mut self) -> napi::Result<Self::Output> {
        let how = crate::values::value_read(false);
        let mut out = Vec::with_capacity(self.keys.len());
        guard_ref(|| {
            self.db
                .get_many_values(&self.keys, how, |_, v| out.push(v.map(OwnedValue::of)))
        })
        .map_err(status_error)?;
        Ok(out)
    }

    fn resolve(&mut self, _env: Env, values: Self::Output) -> napi::Result<ReadOut> {
        Ok(ReadOut {
            values,
            many: self.many,
        })
    }
}

/// A `ReadTask`'s result: made into Buffers on the JS thread.
pub struct ReadOut {
    values: Vec<Option<OwnedValue>>,
    many: bool,
}

impl napi::bindgen_prelude::TypeName for ReadOut {
    fn type_name() -> &'static str {
        "Buffer | null"
    }

    fn value_type() -> napi::ValueType {
        napi::ValueType::Unknown
    }
}

impl napi::bindgen_prelude::ToNapiValue for ReadOut {
    unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> napi::Result<sys::napi_value> {
        let mut values = val.values.into_iter().map(JsValueOut);
        if !val.many {
            let one = values.next().unwrap_or(JsValueOut(None));
            // SAFETY: napi-rs converts results on the JS thread.
            return unsafe { JsValueOut::to_napi_value(env, one) };
        }
        // SAFETY: napi-rs converts results on the JS thread.
        unsafe { Vec::<JsValueOut>::to_napi_value(env, values.collect()) }
    }
}

pub struct BlockingTask<F: FnMut() -> toondb_storage::Result<()> + Send>(pub(crate) F);

impl<F: FnMut() -> toondb_storage::Result<()> + Send> Task for BlockingTask<F> {
    type Output = ();
    type JsValue = ();

    fn compute(&mut self) -> napi::Result<()> {
        guard_ref(&mut self.0).map_err(status_error)
    }

    fn resolve(&mut self, _env: Env, _: ()) -> napi::Result<()> {
        Ok(())
    }
}

pub(crate) type DbTask = BlockingTask<Box<dyn FnMut() -> toondb_storage::Result<()> + Send>>;

/// What `db.backup(dest)` resolves with.
#[napi(object)]
pub struct BackupReport {
    pub ts: f64,
    pub tables_linked: f64,
    pub bytes_linked: f64,
    pub tables_copied: f64,
    pub bytes_copied: f64,
    pub tables_written: f64,
    pub bytes_written: f64,
}

pub struct BackupTask {
    db: Arc<Database>,
    dest: String,
}

impl Task for BackupTask {
    type Output = toondb_storage::BackupReport;
    type JsValue = BackupReport;

    fn compute(&mut self) -> napi::Result<Self::Output> {
        guard_ref(|| self.db.backup(&self.dest)).map_err(status_error)
    }

    fn resolve(&mut self, _env: Env, r: Self::Output) -> napi::Result<BackupReport> {
        Ok(BackupReport {
            ts: r.ts as f64,
            tables_linked: r.tables_linked as f64,
            bytes_linked: r.bytes_linked as f64,
            tables_copied: r.tables_copied as f64,
            bytes_copied: r.bytes_copied as f64,
            tables_written: r.tables_written as f64,
            bytes_written: r.bytes_written as f64,
        })
    }
}

/// What `db.verify()` resolves with.
#[napi(object)]
pub struct VerifyReport {
    pub ok: bool,
    pub tables: f64,
    pub blocks: f64,
    pub table_bytes: f64,
    pub wal_segments: f64,
    pub wal_records: f64,
    pub wal_torn_tail: Option<String>,
    pub problems: Vec<String>,
}

pub struct VerifyTask {
    db: Arc<Database>,
}

impl Task for VerifyTask {
    type Output = toondb_storage::VerifyReport;
    type JsValue = VerifyReport;

    fn compute(&mut self) -> napi::Result<Self::Output> {
        guard_ref(|| self.db.verify()).map_err(status_error)
    }

    fn resolve(&mut self, _env: Env, r: Self::Output) -> napi::Result<VerifyReport> {
        Ok(VerifyReport {
            ok: r.ok(),
            tables: r.tables as f64,
            blocks: r.blocks as f64,
            table_bytes: r.table_bytes as f64,
            wal_segments: r.wal_segments as f64,
            wal_records: r.wal_records as f64,
            wal_torn_tail: r.wal_torn_tail,
            problems: r.problems,
        })
    }
}

#[napi]
impl NativeDatabase {
    /// Opens on the libuv pool (recovery can take a while).
    #[napi(catch_unwind)]
    pub fn open(
        path: String,
        options: Option<OpenOptions>,
        settle: Function<Settled, ()>,
    ) -> Result<AsyncTask<OpenTask>> {
        Ok(AsyncTask::new(OpenTask {
            path,
            options: engine_options(options)?,
            completions: Some(Completions::new(settle)?),
        }))
    }

    #[napi(factory, catch_unwind)]
    pub fn open_sync(
        path: String,
        options: Option<OpenOptions>,
        settle: Function<Settled, ()>,
    ) -> Result<Self> {
        let options = engine_options(options)?;
        let completions = Completions::new(settle)?;
        let db = guard_ref(move || Database::open_with(&path, options))?;
        Ok(NativeDatabase {
            db: Arc::new(db),
            completions,
        })
    }

    /// Copies the value of `key` into `out` and returns its length, or -1
    /// when absent. A length above `out.length` means nothing was copied
    /// and the caller should retry with a larger buffer.
    #[napi(catch_unwind)]
    pub fn get_into(&self, key: Bytes, mut out: BufferSlice) -> Result<i64> {
        self.db
            .get_with(as_bytes(&key), |v| copy_into(v, &mut out))
            .map_err(to_js)
    }

    /// An external for the module's raw `readInto(handle, key, out)` (see
    /// `fastget.rs`): the read path without napi-rs's per-call class and
    /// borrow bookkeeping.
    #[napi(ts_return_type = "unknown")]
    pub fn read_handle(&self, env: Env) -> napi::Result<napi::bindgen_prelude::Unknown<'_>> {
        let raw = crate::fastget::create_handle(
            env.raw(),
            crate::fastget::ReadHandle {
                db: self.db.clone(),
            },
        )?;
        // SAFETY: `raw` is a value just created in this env.
        Ok(unsafe { napi::bindgen_prelude::Unknown::from_raw_unchecked(env.raw(), raw) })
    }

    /// The value as a V8-owned copy, or zero-copy (values.rs).
    #[napi(catch_unwind, ts_return_type = "Buffer | null")]
    pub fn get(&self, key: Bytes) -> Result<JsValueOut> {
        let how = crate::values::value_read(false);
        let v = self
            .db
            .get_value(as_bytes(&key), how, |v| v.map(OwnedValue::of))
            .map_err(to_js)?;
        Ok(JsValueOut(v.flatten()))
    }

    /// `get` on the libuv pool, for a read `readIfResident` found would
    /// wait for the device.
    #[napi(ts_return_type = "Promise<Buffer | null>")]
    pub fn get_async(&self, key: Bytes) -> AsyncTask<ReadTask> {
        AsyncTask::new(ReadTask {
            db: self.db.clone(),
            keys: vec![as_bytes(&key).to_vec()],
            many: false,
        })
    }

    /// Values of `keys` from one snapshot (V8-owned copies, or zero-copy).
    /// With `residentOnly`, `null` instead when any read would wait for the
    /// device (index.js then calls `getManyAsync`).
    #[napi(catch_unwind, ts_return_type = "Array<Buffer | null> | null")]
    pub fn get_many(
        &self,
        env: Env,
        keys: Vec<Bytes>,
        resident_only: Option<bool>,
    ) -> Result<napi::bindgen_prelude::Unknown<'_>> {
        let keys: Vec<&[u8]> = keys.iter().map(as_bytes).collect();
        let raw = env.raw();
        let how = crate::values::value_read(resident_only.unwrap_or(false));
        let mut array = ptr::null_mut();
        // SAFETY: plain N-API call on the JS thread.
        unsafe { sys::napi_create_array_with_length(raw, keys.len(), &mut array) };
        let mut failed = None;
        let complete = self
            .db
            .get_many_values(&keys, how, |i, v| {
                // SAFETY: on the JS thread with its env; `array` is live.
                match unsafe { crate::values::value_to_js(raw, v) } {
                    Ok(js) => unsafe {
                        sys::napi_set_element(raw, array, i as u32, js);
                    },
                    Err(e) => failed = Some(e),
                }
            })
            .map_err(to_js)?;
        if let Some(e) = failed {
            return Err(from_napi(e));
        }
        if !complete {
            // SAFETY: plain N-API call.
            unsafe { sys::napi_get_null(raw, &mut array) };
        }
        // SAFETY: `array` is a value just created in this env.
        Ok(unsafe { napi::bindgen_prelude::Unknown::from_raw_unchecked(raw, array) })
    }

    /// `getMany` on the libuv pool.
    #[napi(ts_return_type = "Promise<Array<Buffer | null>>")]
    pub fn get_many_async(&self, keys: Vec<Bytes>) -> AsyncTask<ReadTask> {
        AsyncTask::new(ReadTask {
            db: self.db.clone(),
            keys: keys.iter().map(|k| as_bytes(k).to_vec()).collect(),
            many: true,
        })
    }

    /// An atomic batch, packed by index.js: operation `i` is a put when
    /// `kinds[i]` is 1 (a delete when 0); its key is the next `lens[2i]`
    /// bytes of `data`, followed (puts only) by `lens[2i+1]` value bytes.
    ///
    /// Returns `true` when the write was committed on this thread (a
    /// non-durable write while the engine was idle: no thread hop, settle it
    /// now), `false` when it went to the commit thread and will be settled
    /// through `settle` under `id`.
    #[napi(catch_unwind)]
    pub fn write_flat(
        &self,
        id: u32,
        kinds: &[u8],
        lens: &[u32],
        data: &[u8],
        sync: Option<bool>,
    ) -> Result<bool> {
        let batch = decode_flat(kinds, lens, data)?;
        let options = WriteOptions::with_sync(sync);
        match self.db.try_write_inline(batch, options) {
            Ok(result) => result.map(|_| true).map_err(to_js),
            Err(batch) => {
                self.submit(id, batch, sync);
                Ok(false)
            }
        }
    }

    fn submit(&self, id: u32, batch: WriteBatch, sync: Option<bool>) {
        let options = WriteOptions::with_sync(sync);
        match self.completions.notice_and_callback(id) {
            (Some(notice), done) => self.db.submit_with_notice(batch, options, notice, done),
            (None, done) => self.db.submit(batch, options, done),
        }
    }

    /// Holds the event loop open while writes are pending (see completion.rs).
    #[napi(catch_unwind)]
    pub fn keep_alive(&self, env: Env, active: bool) -> Result<()> {
        self.completions.keep_alive(&env, active)
    }

    /// The `[start, end)` ranges `clear(args)` deletes, flattened
    /// (start, end, start, end, ...): one or two, none for an empty range.
    /// `index.js` queues them as range-delete operations (kind 2).
    #[napi(catch_unwind)]
    pub fn range_delete_spans(&self, args: ScanArgs) -> Result<Vec<Buffer>> {
        let options = scan_options(args)?;
        Ok(
            toondb_storage::range_delete_spans(options.lower, options.upper)
                .into_iter()
                .flat_map(|(s, e)| [Buffer::from(s), Buffer::from(e)])
                .collect(),
        )
    }

    #[napi(catch_unwind)]
    pub fn iterator(&self, args: ScanArgs) -> Result<NativeIterator> {
        let parts = Parts::of(&args);
        let scan = self.db.scan(scan_options(args)?).map_err(to_js)?;
        Ok(NativeIterator::new(scan, parts))
    }

    /// `isolation` is "snapshot" (default) or "serializable".
    #[napi(catch_unwind)]
    pub fn transaction(
        &self,
        isolation: Option<String>,
        sync: Option<bool>,
    ) -> Result<NativeTransaction> {
        let isolation = match isolation.as_deref() {
            None | Some("snapshot") => Isolation::Snapshot,
            Some("serializable") => Isolation::Serializable,
            Some(other) => {
                return Err(invalid_argument(format!(
                    "isolation must be 'snapshot' or 'serializable', got {other:?}"
                )))
            }
        };
        let txn = self
            .db
            .transaction_with(
                TransactionOptions::default()
                    .isolation(isolation)
                    .sync(sync),
            )
            .map_err(to_js)?;
        Ok(NativeTransaction::new(txn, self.completions.clone()))
    }

    #[napi(catch_unwind)]
    pub fn snapshot(&self) -> Result<NativeSnapshot> {
        Ok(NativeSnapshot::new(self.db.snapshot().map_err(to_js)?))
    }

    #[napi(catch_unwind)]
    pub fn flush(&self) -> AsyncTask<DbTask> {
        let db = self.db.clone();
        AsyncTask::new(BlockingTask(Box::new(move || db.flush())))
    }

    /// Compacts the tables holding keys in the range (all of them without
    /// one) down to the bottom level, on the libuv pool.
    #[napi(catch_unwind)]
    pub fn compact(&self, range: Option<ScanArgs>) -> Result<AsyncTask<DbTask>> {
        let (lower, upper) = match range {
            Some(args) => {
                let o = scan_options(args)?;
                (o.lower, o.upper)
            }
            None => (Bound::Unbounded, Bound::Unbounded),
        };
        let db = self.db.clone();
        Ok(AsyncTask::new(BlockingTask(Box::new(move || {
            db.compact_range(lower.clone(), upper.clone())
        }))))
    }

    /// Writes a consistent copy into `dest`, on the libuv pool.
    #[napi(catch_unwind)]
    pub fn backup(&self, dest: String) -> AsyncTask<BackupTask> {
        AsyncTask::new(BackupTask {
            db: self.db.clone(),
            dest,
        })
    }

    /// Checks every table block and WAL record, on the libuv pool.
    #[napi(catch_unwind)]
    pub fn verify(&self) -> AsyncTask<VerifyTask> {
        AsyncTask::new(VerifyTask {
            db: self.db.clone(),
        })
    }

    #[napi(catch_unwind)]
    pub fn close(&self) -> AsyncTask<DbTask> {
        let db = self.db.clone();
        AsyncTask::new(BlockingTask(Box::new(move || db.close())))
    }

    #[napi(catch_unwind)]
    pub fn close_sync(&self) -> Result<()> {
        guard_ref(|| self.db.close())
    }

    #[napi(getter)]
    pub fn is_closed(&self) -> bool {
        self.db.is_closed()
    }

    #[napi(catch_unwind)]
    pub fn stats(&self) -> DatabaseStats {
        let s = self.db.stats();
        let tail = s.recovery.dropped_tail.as_ref();
        DatabaseStats {
            visible_ts: s.visible_ts as f64,
            memtable_bytes: s.memtable_bytes as f64,
            immutable_memtables: s.immutable_memtables as f64,
            memtable_index_bytes: s.memtable_index_bytes as f64,
            tables: s.tables as f64,
            table_bytes: s.table_bytes as f64,
            table_bytes_read: s.table_bytes_read as f64,
            commits: s.commits as f64,
            commit_groups: s.commit_groups as f64,
            wal_bytes_written: s.wal_bytes_written as f64,
            wal_syncs: s.wal_syncs as f64,
            write_slowdowns: s.write_slowdowns as f64,
            write_stalls: s.write_stalls as f64,
            write_stall_micros: s.write_stall_micros as f64,
            flushes: s.flushes as f64,
            flush_bytes_written: s.flush_bytes_written as f64,
            checkpoints: s.checkpoints as f64,
            checkpoint_bytes_written: s.checkpoint_bytes_written as f64,
            checkpoint_errors: s.checkpoint_errors as f64,
            checkpoint_tables: s.checkpoint_tables as f64,
            recovered_records: s.recovery.records as f64,
            recovered_segments: s.recovery.segments as f64,
            recovered_bytes: s.recovery.bytes as f64,
            dropped_tail_bytes: tail.map_or(0.0, |t| t.dropped_bytes as f64),
            dropped_tail_reason: tail.map(|t| t.reason.clone()),
            background_error: s.background_error.clone(),
            conflicts: s.conflicts as f64,
            range_tombstones: s.range_tombstones as f64,
            range_del_tree_nodes: s.range_del_tree_nodes as f64,
            live_snapshots: s.live_snapshots as f64,
            oldest_snapshot_ts: s.oldest_snapshot_ts.map(|t| t as f64),
            levels: s
                .levels
                .iter()
                .map(|l| LevelStats {
                    tables: l.tables as f64,
                    bytes: l.bytes as f64,
                    compacted_in: l.compacted_in as f64,
                    compaction_bytes_written: l.compaction_bytes_written as f64,
                })
                .collect(),
            pending_compaction_bytes: s.pending_compaction_bytes as f64,
            maintenance_busy: s.maintenance_busy,
            pending_wal_syncs: s.pending_wal_syncs as f64,
            compactions: s.compactions as f64,
            trivial_moves: s.trivial_moves as f64,
            compaction_errors: s.compaction_errors as f64,
            compaction_error: s.compaction_error.clone(),
            compaction_bytes_read: s.compaction_bytes_read as f64,
            compaction_bytes_written: s.compaction_bytes_written as f64,
            live_bytes_estimate: s.live_bytes_estimate as f64,
            write_amplification: s.write_amplification(),
            space_amplification: s.space_amplification(),
            data_blocks_read: s.data_blocks_read as f64,
            bloom_checked: s.bloom_checked as f64,
            bloom_useful: s.bloom_useful as f64,
            hash_index_checked: s.hash_index_checked as f64,
            hash_index_useful: s.hash_index_useful as f64,
            block_cache_hits: s.block_cache.hits as f64,
            block_cache_misses: s.block_cache.misses as f64,
            block_cache_evictions: s.block_cache.evictions as f64,
            block_cache_bytes: s.block_cache.bytes as f64,
            block_cache_capacity: s.block_cache.capacity as f64,
            block_cache_entries: s.block_cache.entries as f64,
            block_cache_meta_bytes: s.block_cache.meta_bytes as f64,
            block_cache_meta_overflow_bytes: s.block_cache.meta_overflow_bytes as f64,
            open_tables: s.open_tables as f64,
            table_cache_hits: s.table_cache_hits as f64,
            table_cache_misses: s.table_cache_misses as f64,
        }
    }
}
