//! Errors carry a stable kind (mapped 1:1 to the `TOONDB_*` codes of the Node
//! binding) and a human-readable context string.

use std::fmt;
use std::io;

/// What went wrong, in a form callers can match on. The binding maps each
/// kind to a stable `err.code`, so variants are only ever added, never renamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The caller passed something the engine cannot accept.
    InvalidArgument,
    /// The database (or this handle, transaction or snapshot) is closed.
    Closed,
    /// A file failed its checksum or structural checks.
    Corruption,
    /// Another process holds the database directory.
    Locked,
    /// The operating system reported an I/O failure.
    Io,
    /// A transaction lost a write-write (or read-write) race.
    Conflict,
    /// A lookup that must find something did not.
    NotFound,
    /// A bug: an invariant broke or a thread panicked.
    Internal,
}

impl ErrorKind {
    /// The stable code the Node binding exposes as `err.code`.
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::InvalidArgument => "TOONDB_INVALID_ARGUMENT",
            ErrorKind::Closed => "TOONDB_CLOSED",
            ErrorKind::Corruption => "TOONDB_CORRUPTION",
            ErrorKind::Locked => "TOONDB_LOCKED",
            ErrorKind::Io => "TOONDB_IO",
            ErrorKind::Conflict => "TOONDB_CONFLICT",
            ErrorKind::NotFound => "TOONDB_NOT_FOUND",
            ErrorKind::Internal => "TOONDB_INTERNAL",
        }
    }
}

/// The engine's error type: a kind plus the context needed to act on it.
#[derive(Debug, Clone)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }

    pub fn corruption(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Corruption, message)
    }

    pub fn closed() -> Self {
        Self::new(ErrorKind::Closed, "database is closed")
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// Wraps an OS error with what the engine was doing when it happened.
    pub fn io(err: io::Error, context: impl fmt::Display) -> Self {
        Self::new(ErrorKind::Io, format!("{context}: {err}"))
    }

    /// Prefixes more context while keeping the kind.
    pub fn context(self, context: impl fmt::Display) -> Self {
        Error {
            kind: self.kind,
            message: format!("{context}: {}", self.message),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.code(), self.message)
    }
}

impl std::error::Error for Error {}

/// Adds context to an `io::Result` in one call: `file.read(..).ctx("reading WAL")?`.
pub trait IoResultExt<T> {
    fn ctx(self, context: impl fmt::Display) -> Result<T>;
}

impl<T> IoResultExt<T> for io::Result<T> {
    fn ctx(self, context: impl fmt::Display) -> Result<T> {
        self.map_err(|e| Error::io(e, context))
    }
}
