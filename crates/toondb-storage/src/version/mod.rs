//! The manifest: which table files are live, plus the WAL checkpoint.
//!
//! The state ([`ManifestState`]) changes only through [`VersionEdit`]s. Each
//! edit is appended to a log file `MANIFEST-{number:06}` and synced before it
//! takes effect in memory; the file `CURRENT` names the live manifest. On
//! open, [`Manifest::load`] replays the named manifest; the database then
//! starts a fresh manifest with [`Manifest::create`], which snapshots the
//! whole state into one edit and switches `CURRENT` atomically.
//!
//! The byte format is specified in docs/format-manifest.md.

mod edit;
mod manifest;
mod state;

pub use edit::{TableMeta, VersionEdit};
pub use manifest::{parse_manifest_name, Manifest};
// Part of the module's API, not (yet) used outside it.
#[allow(unused_imports)]
pub use manifest::{manifest_file_name, CURRENT_FILE_NAME, CURRENT_TMP_FILE_NAME};
pub use state::ManifestState;
