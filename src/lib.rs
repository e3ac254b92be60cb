//! Node.js binding for toondb-storage (in progress).
