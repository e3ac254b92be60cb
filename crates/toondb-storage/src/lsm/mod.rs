//! The current shape of the LSM tree: which table files are live and at
//! which level ([`Levels`]), and the handle that owns one table file's
//! lifetime ([`TableFile`]).

mod levels;
mod table_file;

pub(crate) use levels::{Levels, NUM_LEVELS};
pub(crate) use table_file::TableFile;
