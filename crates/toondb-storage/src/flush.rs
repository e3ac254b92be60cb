//! The maintenance thread: writes sealed memtables to table files, records
//! them in the manifest, and deletes the WAL segments they made obsolete.
//! Leveled compaction (a later stage) runs on this same thread.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use crate::engine::{Engine, LsmState};
use crate::error::{Error, Result};
use crate::memtable::Memtable;
use crate::sstable::{table_file_name, Table, TableBuilder, TableOptions};
use crate::stats::Counters;
use crate::version::{Manifest, TableMeta, VersionEdit};
use crate::wal::parse_segment_name;

/// A manifest is rewritten as a fresh snapshot once its log grows past this.
const MANIFEST_REWRITE_BYTES: u64 = 4 << 20;

pub(crate) struct MaintenanceThread {
    engine: Arc<Engine>,
    manifest: Manifest,
}

impl MaintenanceThread {
    pub fn new(engine: Arc<Engine>, manifest: Manifest) -> Self {
        MaintenanceThread { engine, manifest }
    }

    pub fn run(mut self) {
        while let Some(imm) = self.next_job() {
            let outcome = catch_unwind(AssertUnwindSafe(|| self.flush(&imm)));
            let result = match outcome {
                Ok(r) => r,
                Err(_) => Err(Error::internal("the maintenance thread panicked")),
            };
            match result {
                Ok(()) => {
                    let mut m = self.engine.maintenance.lock();
                    m.flushed_id = m.flushed_id.max(imm.id());
                    self.engine.flush_done.notify_all();
                }
                Err(err) => {
                    // Writes stop (see Engine::bg_error); the sealed memtable
                    // stays readable and its WAL segments stay on disk, so
                    // nothing acknowledged is lost.
                    self.engine.set_bg_error(err.context("flushing a memtable"));
                    return;
                }
            }
        }
    }

    /// Waits for the oldest sealed memtable; `None` at shutdown.
    fn next_job(&self) -> Option<Arc<Memtable>> {
        let mut m = self.engine.maintenance.lock();
        loop {
            if m.shutdown || self.engine.bg_error().is_some() {
                return None;
            }
            if let Some(oldest) = self.engine.state().imms.last() {
                return Some(oldest.clone());
            }
            self.engine.work_ready.wait(&mut m);
        }
    }

    fn flush(&mut self, imm: &Arc<Memtable>) -> Result<()> {
        let engine = &self.engine;
        let built = if imm.is_empty() {
            None
        } else {
            Some(self.write_table(imm)?)
        };
        let mut edit = VersionEdit {
            log_number: Some(imm.sealed_log()),
            last_ts: Some(self.manifest.state().last_ts.max(imm.max_ts())),
            ..VersionEdit::default()
        };
        if let Some((meta, _)) = &built {
            edit.add_tables.push(meta.clone());
        }
        edit.next_file_number = Some(
            engine
                .next_file_number
                .load(std::sync::atomic::Ordering::Relaxed),
        );
        self.manifest.apply(&edit)?;
        engine.install(|s| {
            let mut tables = Vec::with_capacity(s.tables.len() + 1);
            if let Some((_, table)) = &built {
                tables.push(table.clone());
            }
            tables.extend(s.tables.iter().cloned());
            LsmState {
                mem: s.mem.clone(),
                imms: s
                    .imms
                    .iter()
                    .filter(|m| m.id() != imm.id())
                    .cloned()
                    .collect(),
                tables,
            }
        });
        Counters::add(&engine.counters.flushes, 1);
        self.remove_obsolete_wal(imm.sealed_log());
        if self.manifest.file_size() > MANIFEST_REWRITE_BYTES {
            let number = engine.alloc_file_number();
            let state = self.manifest.state().clone();
            self.manifest = Manifest::create(engine.fs.clone(), &engine.dir, number, state)?;
        }
        Ok(())
    }

    fn write_table(&self, imm: &Memtable) -> Result<(TableMeta, Arc<Table>)> {
        let engine = &self.engine;
        let number = engine.alloc_file_number();
        let path = engine.dir.join(table_file_name(number));
        let result = (|| {
            let options = TableOptions {
                block_size: engine.options.block_size,
                compression: engine.options.compression,
                bloom_bits_per_key: engine.options.bloom_bits_per_key,
            };
            let mut builder = TableBuilder::with_options(engine.fs.create(&path)?, options);
            for entry in imm.iter() {
                let v = entry.key();
                builder.add(v.user_key(), v.ts, v.kind, v.value())?;
            }
            let summary = builder.finish()?;
            engine.fs.sync_dir(&engine.dir)?;
            let table = Table::open(number, engine.fs.map(&path)?)?;
            Ok((summary, table))
        })();
        let (summary, table) = match result {
            Ok(done) => done,
            Err(e) => {
                // The file is not in the manifest; it would only be garbage.
                let _ = engine.fs.remove(&path);
                return Err(e);
            }
        };
        Counters::add(&engine.counters.flush_bytes_written, summary.file_size);
        let meta = TableMeta {
            number,
            level: 0,
            file_size: summary.file_size,
            entries: summary.entries,
            smallest: summary.smallest,
            largest: summary.largest,
            min_ts: summary.min_ts,
            max_ts: summary.max_ts,
        };
        Ok((meta, Arc::new(table)))
    }

    /// WAL segments below the manifest's log number hold only data that is
    /// now in table files. Failing to delete one wastes space but loses
    /// nothing (replay skips segments below the log number).
    fn remove_obsolete_wal(&self, log_number: u64) {
        let engine = &self.engine;
        let Ok(names) = engine.fs.list(&engine.dir) else {
            return;
        };
        for name in names {
            if parse_segment_name(&name).is_some_and(|n| n < log_number) {
                let _ = engine.fs.remove(&engine.dir.join(&name));
            }
        }
    }
}
