//! Reads the resolved versions of the peers from this package's own
//! `Cargo.lock` so the program can print them in its results.

use std::{env, fs, path::Path};

/// Packages whose exact version the program reports, and the env var each goes to.
const PACKAGES: &[(&str, &str)] = &[
    ("graphile_worker", "PEER_VERSION_GRAPHILE_WORKER"),
    ("apalis", "PEER_VERSION_APALIS"),
    ("apalis-postgres", "PEER_VERSION_APALIS_POSTGRES"),
    ("sqlx", "PEER_VERSION_SQLX"),
];

fn main() {
    let lock = Path::new(&env::var("CARGO_MANIFEST_DIR").unwrap()).join("Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock.display());
    let text = fs::read_to_string(&lock).unwrap_or_default();
    for (name, var) in PACKAGES {
        println!("cargo:rustc-env={var}={}", locked_version(&text, name));
    }
}

/// The `version` of the `[[package]]` entry named `name` ("?" if absent).
fn locked_version(lock: &str, name: &str) -> String {
    let wanted = format!("name = \"{name}\"");
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == wanted {
            if let Some(v) = lines
                .next()
                .and_then(|l| l.trim().strip_prefix("version = "))
            {
                return v.trim_matches('"').to_string();
            }
        }
    }
    "?".to_string()
}
