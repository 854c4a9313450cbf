#!/usr/bin/env python3
"""Compile time and binary size of 1,000 signals x 5 handlers, with signals and by hand.

Generates three crates under target/compile-bench/:
  signals-gen:      1,000 `#[derive(Signal)]` types, 5,000 `#[on]` handlers, a main that
                    notifies each;
  plain-gen:        the same types and 5,000 plain functions in hand-built `Vec<fn>` tables,
                    built at run time inside one large `main` (slow for rustc to optimise);
  plain-static-gen: the same types and functions in `static` arrays of function pointers, with
                    one small function per signal that runs its table: the fast baseline.
Builds each once to compile dependencies, then times clean release builds of each crate alone,
ROUNDS times (`--rounds N`, default 3), interleaved so that a noisy machine disturbs all three
alike, and keeps the median. Records the binaries' sizes, unstripped and stripped. Then asks
rustc where the time goes in the signals crate and in the fast baseline (`-Z time-passes`
through RUSTC_BOOTSTRAP=1) and keeps `cargo build --timings`' report.
Writes target/bench-results/compile.json.
"""

import argparse
import json
import os
import re
import statistics
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


def plain_static_crate() -> str:
    """The fast baseline: what a hand-wired program without a registry looks like. `black_box`
    hides each table's contents from the optimiser, as a link-time table hides them from
    rustc: without it LLVM folds the whole program into one constant and drops the handlers."""
    lines = ["use std::hint::black_box;", "", "#[derive(Default)]",
             "pub struct Ctx { pub total: u64 }", ""]
    calls = []
    for i in range(SIGNALS):
        lines.append(f"pub struct S{i:04} {{ pub amount: u64 }}")
        for h in range(HANDLERS):
            lines.append(f"fn s{i:04}_h{h}(sig: &S{i:04}, ctx: &mut Ctx) {{ {body(i, h)} }}")
        handlers = ", ".join(f"s{i:04}_h{h}" for h in reversed(range(HANDLERS)))
        lines += [f"static S{i:04}_HANDLERS: [fn(&S{i:04}, &mut Ctx); {HANDLERS}] = [{handlers}];",
                  f"fn notify_s{i:04}(sig: &S{i:04}, ctx: &mut Ctx) {{",
                  f"    for handler in black_box(&S{i:04}_HANDLERS) {{ handler(sig, ctx); }}", "}"]
        calls.append(f"    notify_s{i:04}(&S{i:04} {{ amount: 1 }}, &mut ctx);")
    lines += ["", "fn main() {", "    let mut ctx = Ctx::default();", *calls,
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
    cargo(crate, "clean", "--release", "-p", name)
    start = time.perf_counter()
    cargo(crate, "build", "--release", "--timings")
    return time.perf_counter() - start


def section_bytes(binary: Path) -> dict[str, int]:
    """The size of every section of `binary` (`readelf -S`), largest first."""
    out = subprocess.run(["readelf", "-S", "-W", str(binary)], check=True,
                         capture_output=True, text=True).stdout
    sizes = {}
    for line in out.splitlines():
        match = re.match(r"\s*\[\s*\d+\]\s+(\S+)\s+\S+\s+[0-9a-f]+\s+[0-9a-f]+\s+([0-9a-f]+)", line)
        if match:
            sizes[match.group(1)] = int(match.group(2), 16)
    return dict(sorted(sizes.items(), key=lambda item: item[1], reverse=True))


def load_average() -> float:
    return os.getloadavg()[0]


def time_passes(crate: Path, name: str, top: int = 8) -> list[dict]:
    """The slowest rustc passes of a clean build of `crate` (a nested pass also counts in its
    parent's time). Run after the sizes are recorded: this build replaces the binary."""
    cargo(crate, "clean", "--release", "-p", name)
    # RUSTC_BOOTSTRAP=1 also switches rustc to nightly's default v0 symbol mangling, whose longer
    # names make this build's code and binary differ from the stable one timed above; keep legacy.
    done = cargo(crate, "rustc", "--release", "--", "-Z", "time-passes", "-Z", "unstable-options",
                 "-C", "symbol-mangling-version=legacy", env={"RUSTC_BOOTSTRAP": "1"})
    passes = []
    for line in done.stderr.splitlines():
        match = re.match(r"time:\s+([\d.]+);.*?\s(\S+)$", line)
        if match and match.group(2) != "total":
            passes.append({"pass": match.group(2), "seconds": float(match.group(1))})
    passes.sort(key=lambda p: p["seconds"], reverse=True)
    return passes[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=3, help="clean builds per crate (median)")
    rounds = parser.parse_args().rounds
    core = ROOT / "signals-core"
    crates = [
        ("plain-gen", write_crate("plain-gen", plain_crate(), "")),
        ("plain-static-gen", write_crate("plain-static-gen", plain_static_crate(), "")),
        ("signals-gen", write_crate("signals-gen", signals_crate(),
                                    f'signals-core = {{ path = "{core}" }}\n')),
    ]
    for name, crate in crates:
        cargo(crate, "build", "--release")  # dependencies, and a check that it builds
        subprocess.run([str(TARGET / "release" / name)], check=True)
    samples: dict[str, list[float]] = {name: [] for name, _ in crates}
    loads = []
    for round_ in range(rounds):
        for name, crate in crates:
            loads.append(load_average())
            samples[name].append(round(clean_build_seconds(crate, name), 2))
        print(f"round {round_ + 1} of {rounds}: "
              + ", ".join(f"{name} {samples[name][-1]:.1f} s" for name, _ in crates), flush=True)
    results = {"signals": SIGNALS, "handlers_per_signal": HANDLERS, "rounds": rounds,
               "load_average_1min": [round(min(loads), 2), round(max(loads), 2)]}
    for name, _ in crates:
        seconds = statistics.median(samples[name])
        binary = TARGET / "release" / name
        size = binary.stat().st_size
        stripped = WORK / f"{name}.stripped"
        subprocess.run(["strip", "-o", str(stripped), str(binary)], check=True)
        results[name] = {"build_seconds": round(seconds, 2), "build_samples": samples[name],
                         "binary_bytes": size, "stripped_bytes": stripped.stat().st_size,
                         "sections": section_bytes(binary)}
        print(f"{name}: clean release build {seconds:.1f} s (median of {rounds}), binary "
              f"{size / 1e6:.2f} MB ({stripped.stat().st_size / 1e6:.2f} MB stripped)", flush=True)
    signals = results["signals-gen"]
    for baseline in ["plain-gen", "plain-static-gen"]:
        base = results[baseline]
        print(f"signals-gen / {baseline}: build {signals['build_seconds'] / base['build_seconds']:.2f}x, "
              f"binary {signals['binary_bytes'] / base['binary_bytes']:.2f}x "
              f"(stripped {signals['stripped_bytes'] / base['stripped_bytes']:.2f}x)")
    paths = dict(crates)
    for key, name in [("signals_time_passes", "signals-gen"),
                      ("plain_static_time_passes", "plain-static-gen")]:
        results[key] = time_passes(paths[name], name)
        print(f"{name}, slowest rustc passes:")
        for p in results[key]:
            print(f"  {p['seconds']:7.3f} s  {p['pass']}")
    timings = sorted((TARGET / "cargo-timings").glob("cargo-timing-*.html"))
    if timings:
        results["cargo_timings_report"] = str(timings[-1].relative_to(ROOT))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "compile.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
