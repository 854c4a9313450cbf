//! Generates the benchmarks' many signals and handlers into `OUT_DIR`:
//! - `fan.rs`: signals with 1, 10 and 100 handlers, and the same handlers as `Vec<fn>` tables;
//! - `scale.rs`: 1,000 signal types with 5 handlers each, as in a large application.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    let out_dir = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    write(&Path::new(&out_dir).join("fan.rs"), &fan(&[1, 10, 100]));
    write(&Path::new(&out_dir).join("scale.rs"), &scale(1_000, 5));
    println!("cargo::rerun-if-changed=build.rs");
}

fn write(path: &Path, code: &str) {
    std::fs::write(path, code).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// A signal `Fan{n}` per count, with `n` handlers and a `fan{n}_table()` of the same functions.
fn fan(counts: &[usize]) -> String {
    let mut code = String::new();
    for &n in counts {
        signal(&mut code, &format!("Fan{n}"));
        let mut table = String::new();
        for h in 0..n {
            handler(&mut code, &format!("Fan{n}"), &format!("fan{n}_h{h}"), 0);
            let _ = write!(table, "fan{n}_h{h}, ");
        }
        let _ = writeln!(
            code,
            "fn fan{n}_table() -> Vec<fn(&Fan{n}, &mut Counters)> {{ vec![{table}] }}"
        );
    }
    code
}

/// `signals` signal types `S{i}`, each with `handlers` handlers, and `notify_each` that
/// notifies every one of them once.
fn scale(signals: usize, handlers: usize) -> String {
    let mut code = String::new();
    let mut notify_each = String::new();
    for i in 0..signals {
        let name = format!("S{i:04}");
        signal(&mut code, &name);
        for h in 0..handlers {
            handler(&mut code, &name, &format!("s{i:04}_h{h}"), h as i32);
        }
        let _ = writeln!(
            notify_each,
            "    signals_core::notify(&{name} {{ amount: 1 }}, counters).unwrap();"
        );
    }
    let _ = writeln!(
        code,
        "/// Notifies each of the {signals} signals once.\n\
         pub fn notify_each(counters: &mut Counters) {{\n{notify_each}}}"
    );
    code
}

fn signal(code: &mut String, name: &str) {
    let _ = writeln!(
        code,
        "\
         #[derive(signals_core::Signal)]\n\
         #[signal(context = Counters)]\n\
         struct {name} {{ amount: u64 }}"
    );
}

fn handler(code: &mut String, signal: &str, name: &str, priority: i32) {
    let _ = writeln!(
        code,
        "#[signals_core::on({signal}, priority = {priority})]\n\
         fn {name}(sig: &{signal}, counters: &mut Counters) {{\n\
         \x20   counters.total = counters.total.wrapping_add(sig.amount);\n\
         }}"
    );
}
