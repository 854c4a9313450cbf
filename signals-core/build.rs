//! Chooses the registration backend: linker sections (linkme) where linkme supports the target,
//! constructors (inventory) elsewhere or when the `backend-inventory` feature asks for it.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(signals_inventory)");
    println!("cargo::rerun-if-changed=build.rs");
    // The targets linkme's distributed slices work on (linkme-impl's `declaration.rs`).
    const LINKME_OS: &[&str] = &[
        "none", "linux", "macos", "ios", "tvos", "android", "fuchsia", "illumos", "freebsd",
        "openbsd", "psp", "windows", "uefi",
    ];
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let forced = std::env::var_os("CARGO_FEATURE_BACKEND_INVENTORY").is_some();
    if forced || !LINKME_OS.contains(&os.as_str()) {
        println!("cargo::rustc-cfg=signals_inventory");
    }
}
