//! The checked-in header is exactly what the pinned cbindgen generates from
//! this crate: `P2PCORE_BLESS=1 cargo test -p p2pcore-ffi --test header`
//! rewrites it after a change to the API.

use std::path::Path;

#[test]
fn header_matches_the_crate() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_crate(dir)
        .with_config(config)
        .generate()
        .expect("cbindgen could not generate the header")
        .write(&mut generated);
    let path = dir.join("include/p2pcore.h");
    if std::env::var_os("P2PCORE_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("write the header");
        return;
    }
    let on_disk = std::fs::read(&path).unwrap_or_default();
    assert!(
        on_disk == generated,
        "{} is out of date with the crate: run `P2PCORE_BLESS=1 cargo test -p p2pcore-ffi --test header` \
         and commit the result",
        path.display()
    );
}

#[test]
fn header_version_is_the_crate_version() {
    let header =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("include/p2pcore.h")).unwrap();
    let line = format!("#define P2P_VERSION \"{}\"", env!("CARGO_PKG_VERSION"));
    assert!(header.contains(&line), "the header lacks `{line}`: update after_includes in ffi/cbindgen.toml");
}
