//! Errors carry a stable kind (mapped 1:1 to the `TOONDB_*` codes of the Node
//! binding) and a human-readable context string.

use std::fmt;
use std::io;

/// What went wrong, in a form callers can match on. Each kind has two stable
/// identities, defined here once for every binding: a name (`code()`, the
/// Node `err.code` and Python `ToondbError.code`) and a number
/// (`numeric_code()`, the C ABI's return value). Variants are only ever
/// added, never renamed or renumbered; match with a wildcard arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[repr(i32)]
pub enum ErrorKind {
    /// The caller passed something the engine cannot accept.
    InvalidArgument = 1,
    /// The database (or this handle, transaction or snapshot) is closed.
    Closed = 2,
    /// A file failed its checksum or structural checks.
    Corruption = 3,
    /// Another process holds the database directory.
    Locked = 4,
    /// The operating system reported an I/O failure.
    Io = 5,
    /// A transaction lost a write-write (or read-write) race.
    Conflict = 6,
    /// A lookup that must find something did not.
    NotFound = 7,
    /// A bug: an invariant broke or a thread panicked.
    Internal = 8,
}

impl ErrorKind {
    /// Every kind, in numeric order.
    pub const ALL: [ErrorKind; 8] = [
        ErrorKind::InvalidArgument,
        ErrorKind::Closed,
        ErrorKind::Corruption,
        ErrorKind::Locked,
        ErrorKind::Io,
        ErrorKind::Conflict,
        ErrorKind::NotFound,
        ErrorKind::Internal,
    ];

    /// The stable number of this kind (never 0, which the C ABI uses for
    /// success).
    pub const fn numeric_code(self) -> i32 {
        self as i32
    }

    /// The kind with this stable number, if any.
    pub fn from_numeric_code(code: i32) -> Option<ErrorKind> {
        Self::ALL.into_iter().find(|k| k.numeric_code() == code)
    }

    /// The stable name: the Node binding's `err.code`, the Python binding's
    /// `ToondbError.code`, and the C ABI's `toondb_code_name`.
    pub fn code(self) -> &'static str {
        // The names are ASCII literals, so this never falls back.
        self.code_c().to_str().unwrap_or("TOONDB_INTERNAL")
    }

    /// `code()` NUL-terminated, for the C ABI (the one list of names).
    pub const fn code_c(self) -> &'static std::ffi::CStr {
        match self {
            ErrorKind::InvalidArgument => c"TOONDB_INVALID_ARGUMENT",
            ErrorKind::Closed => c"TOONDB_CLOSED",
            ErrorKind::Corruption => c"TOONDB_CORRUPTION",
            ErrorKind::Locked => c"TOONDB_LOCKED",
            ErrorKind::Io => c"TOONDB_IO",
            ErrorKind::Conflict => c"TOONDB_CONFLICT",
            ErrorKind::NotFound => c"TOONDB_NOT_FOUND",
            ErrorKind::Internal => c"TOONDB_INTERNAL",
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

#[cfg(test)]
mod tests {
    use super::ErrorKind;

    #[test]
    fn numeric_codes_are_stable_and_round_trip() {
        let expected = [
            (1, "TOONDB_INVALID_ARGUMENT"),
            (2, "TOONDB_CLOSED"),
            (3, "TOONDB_CORRUPTION"),
            (4, "TOONDB_LOCKED"),
            (5, "TOONDB_IO"),
            (6, "TOONDB_CONFLICT"),
            (7, "TOONDB_NOT_FOUND"),
            (8, "TOONDB_INTERNAL"),
        ];
        for (kind, (n, name)) in ErrorKind::ALL.into_iter().zip(expected) {
            assert_eq!(kind.numeric_code(), n);
            assert_eq!(kind.code(), name);
            assert_eq!(ErrorKind::from_numeric_code(n), Some(kind));
        }
        assert_eq!(ErrorKind::from_numeric_code(0), None);
        assert_eq!(ErrorKind::from_numeric_code(9), None);
    }
}
