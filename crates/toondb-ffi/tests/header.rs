//! The checked-in include/toondb.h must be what cbindgen generates from the
//! sources now. Regenerate with
//! `TOONDB_UPDATE_HEADER=1 cargo test -p toondb-ffi --test header`.

use std::path::PathBuf;

#[test]
fn header_is_up_to_date() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_crate(&dir)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header")
        .write(&mut generated);
    let generated = String::from_utf8(generated).expect("header is UTF-8");
    let path = dir.join("include/toondb.h");
    if std::env::var_os("TOONDB_UPDATE_HEADER").is_some() {
        std::fs::write(&path, &generated).expect("writing include/toondb.h");
        return;
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "include/toondb.h is stale: run `TOONDB_UPDATE_HEADER=1 cargo test -p toondb-ffi --test header` and commit it"
    );
}
