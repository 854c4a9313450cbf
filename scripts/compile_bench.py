#!/usr/bin/env python3
"""Compile time and binary size of 1,000 signals x 5 handlers, with signals and by hand.

Generates two crates under target/compile-bench/:
  signals-gen: 1,000 `#[derive(Signal)]` types, 5,000 `#[on]` handlers, a main that notifies each;
  plain-gen:   the same types and 5,000 plain functions in hand-built `Vec<fn>` tables.
Builds each once to compile dependencies, then times a clean release build of the crate alone,
and records the binary's size. Then asks rustc where the time goes in the signals crate
(`-Z time-passes` through RUSTC_BOOTSTRAP=1) and keeps `cargo build --timings`' report.
Writes target/bench-results/compile.json.
"""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

SIGNALS = 1_000
HANDLERS = 5
ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "target" / "compile-bench"
TARGET = WORK / "target"
RESULTS = ROOT / "target" / "bench-results"


def body(i: int, h: int) -> str:
    """A handler body of its own, so that the linker cannot fold identical functions together
    (in a real program no two handlers do the same thing)."""
    return f"ctx.total = ctx.total.wrapping_add(sig.amount ^ {i * HANDLERS + h});"


def expected_total() -> int:
    return sum(1 ^ n for n in range(SIGNALS * HANDLERS))


def signals_crate() -> str:
    lines = ["use signals_core::{notify, on, Signal};", "", "#[derive(Default)]",
             "pub struct Ctx { pub total: u64 }", ""]
    calls = []
    for i in range(SIGNALS):
        lines += [f"#[derive(Signal)]", f"#[signal(context = Ctx)]",
                  f"pub struct S{i:04} {{ pub amount: u64 }}"]
        for h in range(HANDLERS):
            lines += [f"#[on(S{i:04}, priority = {h})]",
                      f"fn s{i:04}_h{h}(sig: &S{i:04}, ctx: &mut Ctx) {{ {body(i, h)} }}"]
        calls.append(f"    notify(&S{i:04} {{ amount: 1 }}, &mut ctx).unwrap();")
    lines += ["", "fn main() {", "    let mut ctx = Ctx::default();", *calls,
              f"    assert_eq!(ctx.total, {expected_total()});", "}"]
    return "\n".join(lines) + "\n"


def plain_crate() -> str:
    lines = ["#[derive(Default)]", "pub struct Ctx { pub total: u64 }", ""]
    fields, inits, calls = [], [], []
    for i in range(SIGNALS):
        lines.append(f"pub struct S{i:04} {{ pub amount: u64 }}")
        for h in range(HANDLERS):
            lines.append(f"fn s{i:04}_h{h}(sig: &S{i:04}, ctx: &mut Ctx) {{ {body(i, h)} }}")
        fields.append(f"    s{i:04}: Vec<fn(&S{i:04}, &mut Ctx)>,")
        handlers = ", ".join(f"s{i:04}_h{h}" for h in reversed(range(HANDLERS)))
        inits.append(f"        s{i:04}: vec![{handlers}],")
        calls.append(f"    for handler in &tables.s{i:04} {{ handler(&S{i:04} {{ amount: 1 }}, &mut ctx); }}")
    lines += ["", "struct Tables {", *fields, "}", "", "fn main() {", "    let tables = Tables {",
              *inits, "    };", "    let mut ctx = Ctx::default();", *calls,
              f"    assert_eq!(ctx.total, {expected_total()});", "}"]
    return "\n".join(lines) + "\n"


def write_crate(name: str, source: str, dependencies: str) -> Path:
    crate = WORK / name
    (crate / "src").mkdir(parents=True, exist_ok=True)
    (crate / "Cargo.toml").write_text(
        f'[package]\nname = "{name}"\nversion = "0.0.0"\nedition = "2021"\npublish = false\n\n'
        f"[dependencies]\n{dependencies}\n[workspace]\n")
    (crate / "src" / "main.rs").write_text(source)
    return crate


def cargo(crate: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "CARGO_TARGET_DIR": str(TARGET), **(env or {})}
    command, *rest = args
    manifest = ["--manifest-path", str(crate / "Cargo.toml")]
    return subprocess.run(["cargo", command, *manifest, *rest],
                          env=full_env, check=True, capture_output=True, text=True)


def clean_build_seconds(crate: Path, name: str) -> float:
    cargo(crate, "build", "--release")  # dependencies
    cargo(crate, "clean", "--release", "-p", name)
    start = time.perf_counter()
    cargo(crate, "build", "--release", "--timings")
    return time.perf_counter() - start


def time_passes(crate: Path, name: str, top: int = 8) -> list[dict]:
    """The slowest rustc passes of a clean build of `crate`, outermost passes only."""
    cargo(crate, "clean", "--release", "-p", name)
    done = cargo(crate, "rustc", "--release", "--", "-Z", "time-passes",
                 env={"RUSTC_BOOTSTRAP": "1"})
    passes = []
    for line in done.stderr.splitlines():
        match = re.match(r"time:\s+([\d.]+);.*?\s(\S+)$", line)
        if match and match.group(2) != "total":
            passes.append({"pass": match.group(2), "seconds": float(match.group(1))})
    passes.sort(key=lambda p: p["seconds"], reverse=True)
    return passes[:top]


def main() -> None:
    core = ROOT / "signals-core"
    signals = write_crate("signals-gen", signals_crate(), f'signals-core = {{ path = "{core}" }}\n')
    plain = write_crate("plain-gen", plain_crate(), "")
    results = {"signals": SIGNALS, "handlers_per_signal": HANDLERS}
    for name, crate in [("plain-gen", plain), ("signals-gen", signals)]:
        seconds = clean_build_seconds(crate, name)
        binary = TARGET / "release" / name
        size = binary.stat().st_size
        stripped = WORK / f"{name}.stripped"
        subprocess.run(["strip", "-o", str(stripped), str(binary)], check=True)
        results[name] = {"build_seconds": round(seconds, 2), "binary_bytes": size,
                         "stripped_bytes": stripped.stat().st_size}
        print(f"{name}: clean release build {seconds:.1f} s, binary {size / 1e6:.2f} MB "
              f"({stripped.stat().st_size / 1e6:.2f} MB stripped)", flush=True)
        run = subprocess.run([str(TARGET / "release" / name)], check=True)
        assert run.returncode == 0
    results["signals_time_passes"] = time_passes(signals, "signals-gen")
    for p in results["signals_time_passes"]:
        print(f"  {p['seconds']:7.3f} s  {p['pass']}")
    timings = sorted((TARGET / "cargo-timings").glob("cargo-timing-*.html"))
    if timings:
        results["cargo_timings_report"] = str(timings[-1].relative_to(ROOT))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "compile.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
