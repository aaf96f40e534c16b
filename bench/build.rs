//! Links ENet (the C library, Debian's `libenet-dev`) when pkg-config finds
//! it and sets `cfg(have_enet)`; otherwise the suite runs without ENet and
//! says how to add it.
fn main() {
    println!("cargo::rustc-check-cfg=cfg(have_enet)");
    println!("cargo::rerun-if-env-changed=PKG_CONFIG_PATH");
    match pkg_config::Config::new().atleast_version("1.3").probe("libenet") {
        Ok(_) => println!("cargo::rustc-cfg=have_enet"),
        Err(e) => println!(
            "cargo::warning=ENet not found ({e}); the benchmark skips it: apt-get install libenet-dev"
        ),
    }
}
