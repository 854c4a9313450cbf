#!/usr/bin/env python3
"""Turns the results of scripts/bench.sh into bench/RESULTS.md, bench/chart.svg and the table
between the `bench:begin` and `bench:end` markers in README.md."""

import html
import json
import platform
import re
import statistics
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CRITERION = ROOT / "target" / "criterion"
RESULTS = ROOT / "target" / "bench-results"

# (criterion directory, label, what it is)
THREE_HANDLERS = [
    ("direct_calls", "direct calls", "three `#[inline(never)]` functions called by name: the floor"),
    ("vec_fn_loop", "`Vec<fn>` loop", "a hand-written table of function pointers"),
    ("signals_notify", "**`signals_core::notify`**", "this library"),
    ("signals_notify_all", "**`signals_core::notify_all`**", "this library, every handler runs"),
    ("naive_registry", "naive registry", "`HashMap<TypeId, Vec<Box<dyn Fn(&dyn Any, &mut Ctx)>>>`"),
    ("signals2", "signals2 0.3", "boost-style signal/slot; `emit` locks and clones an `Arc`"),
    ("bevy_observers", "bevy_ecs 0.20 observers", "`World::trigger`, observers with `ResMut`"),
    ("mod_events", "mod-events 1.1", "`dispatch`: `TypeId` map behind an `RwLock`, metrics, `catch_unwind`"),
]


def estimate_ns(group: str, bench: str) -> float:
    """The median across rounds of criterion's median estimate, in nanoseconds."""
    rounds = sorted((CRITERION / group / bench).glob("round*/estimates.json"))
    if not rounds:
        raise SystemExit(f"no results for {group}/{bench}: run scripts/bench.sh")
    medians = [json.loads(r.read_text())["median"]["point_estimate"] for r in rounds]
    return statistics.median(medians)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    rustc = subprocess.run(["rustc", "-V"], capture_output=True, text=True).stdout.strip()
    cores = len([l for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("processor")])
    return f"{cpu}, {cores} cores, {platform.system()} {platform.release()}; {rustc}"


def check(ok: bool) -> str:
    return "met" if ok else "**missed**"


def svg_chart(rows: list[tuple[str, float]], title: str) -> str:
    width, bar_h, gap, label_w, top = 760, 22, 8, 220, 40
    scale = (width - label_w - 90) / max(ns for _, ns in rows)
    height = top + len(rows) * (bar_h + gap) + 30
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'font-family="sans-serif" font-size="13">',
             f'<rect width="{width}" height="{height}" fill="white"/>',
             f'<text x="10" y="24" font-size="15" font-weight="bold">{title}</text>']
    for i, (label, ns) in enumerate(rows):
        y = top + i * (bar_h + gap)
        ours = "signals_core" in label
        color = "#d9480f" if ours else "#5c7cfa"
        parts.append(f'<text x="{label_w - 8}" y="{y + 16}" text-anchor="end">{html.escape(label)}</text>')
        parts.append(f'<rect x="{label_w}" y="{y}" width="{max(ns * scale, 1):.1f}" '
                     f'height="{bar_h}" fill="{color}"/>')
        parts.append(f'<text x="{label_w + ns * scale + 6:.1f}" y="{y + 16}">{ns:.1f} ns</text>')
    parts.append(f'<text x="{label_w}" y="{height - 8}" fill="#555">time per notify, '
                 f'3 handlers (lower is better)</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main() -> None:
    three = {key: estimate_ns("three_handlers", key) for key, _, _ in THREE_HANDLERS}
    notify = three["signals_notify"]
    fan = {n: (estimate_ns("handler_count", f"signals_notify_{n}"),
               estimate_ns("handler_count", f"vec_fn_loop_{n}")) for n in (1, 10, 100)}
    fan[3] = (notify, three["vec_fn_loop"])
    big = estimate_ns("scale_signals_notify_1000_signals", ".")
    scale = json.loads((RESULTS / "scale.json").read_text())
    compile_ = json.loads((RESULTS / "compile.json").read_text())
    plain, fast, gen = compile_["plain-gen"], compile_["plain-static-gen"], compile_["signals-gen"]

    table = ["| dispatcher | ns per notify | vs `notify` | what it is |", "| --- | ---: | ---: | --- |"]
    for key, label, what in THREE_HANDLERS:
        table.append(f"| {label} | {three[key]:.2f} | {three[key] / notify:.2f}× | {what} |")

    per_handler = ["| handlers | `notify` ns | `Vec<fn>` ns | `notify` ns per handler |",
                   "| ---: | ---: | ---: | ---: |"]
    for n in sorted(fan):
        ours, vec = fan[n]
        per_handler.append(f"| {n} | {ours:.1f} | {vec:.1f} | {ours / n:.2f} |")

    async_rows = [
        ("direct_awaits", "three direct `.await`s of `#[inline(never)] async fn`s"),
        ("signals_notify_async", "`notify_async`, three `async fn` handlers"),
        ("signals_notify_async_sync_handlers", "`notify_async`, three sync handlers"),
    ]
    async_ns = {key: estimate_ns("async_three_handlers", key) for key, _ in async_rows}
    async_table = ["| dispatch | ns per notify | vs direct `.await`s |", "| --- | ---: | ---: |"]
    for key, label in async_rows:
        ratio = async_ns[key] / async_ns["direct_awaits"]
        async_table.append(f"| {label} | {async_ns[key]:.1f} | {ratio:.1f}× |")

    first_ms = scale["first_notify_1000_signals_ns"] / 1e6
    build_ratio = gen["build_seconds"] / plain["build_seconds"]
    size_ratio = gen["binary_bytes"] / plain["binary_bytes"]
    fast_build_ratio = gen["build_seconds"] / fast["build_seconds"]
    fast_size_ratio = gen["binary_bytes"] / fast["binary_bytes"]
    targets = [
        ("`notify` ≤ 1.1× the `Vec<fn>` loop", f"{notify / three['vec_fn_loop']:.2f}×",
         check(notify <= 1.1 * three["vec_fn_loop"])),
        ("`notify` ≤ 1.6× direct calls", f"{notify / three['direct_calls']:.2f}×",
         check(notify <= 1.6 * three["direct_calls"])),
        ("≥ 3× faster than the naive registry", f"{three['naive_registry'] / notify:.1f}×",
         check(three["naive_registry"] >= 3 * notify)),
        ("≥ 10× faster than bevy_ecs observers", f"{three['bevy_observers'] / notify:.1f}×",
         check(three["bevy_observers"] >= 10 * notify)),
        ("flat in program size (1,000 signals, 5,000 handlers)", f"{big:.2f} ns vs {notify:.2f} ns",
         check(big <= 1.1 * notify)),
        ("build ≤ 4× plain functions (`Vec<fn>` tables built in `main`)",
         f"{gen['build_seconds']:.1f} s vs {plain['build_seconds']:.1f} s = {build_ratio:.2f}×",
         check(build_ratio <= 4)),
        ("binary ≤ 2× plain functions (`Vec<fn>` tables built in `main`)",
         f"{gen['binary_bytes'] / 1e6:.2f} MB vs {plain['binary_bytes'] / 1e6:.2f} MB = {size_ratio:.2f}× "
         f"(stripped: {gen['stripped_bytes'] / plain['stripped_bytes']:.2f}×)",
         check(size_ratio <= 2)),
        ("build ≤ 3× plain functions (fast baseline: `static` tables)",
         f"{gen['build_seconds']:.1f} s vs {fast['build_seconds']:.1f} s = {fast_build_ratio:.2f}×",
         check(fast_build_ratio <= 3)),
        ("binary ≤ 3× plain functions (fast baseline: `static` tables), unstripped",
         f"{gen['binary_bytes'] / 1e6:.2f} MB vs {fast['binary_bytes'] / 1e6:.2f} MB = {fast_size_ratio:.2f}× "
         f"(stripped: {gen['stripped_bytes'] / fast['stripped_bytes']:.2f}×)",
         check(fast_size_ratio <= 3)),
        ("first notify of all 1,000 signal types ≤ 5 ms", f"{first_ms:.2f} ms", check(first_ms <= 5)),
    ]
    target_table = ["| target | measured | |", "| --- | --- | --- |"]
    target_table += [f"| {t} | {m} | {c} |" for t, m, c in targets]

    startup = (f"Process start to exit: {scale['startup_5000_handlers_ns'] / 1e6:.2f} ms for the "
               f"program with 5,000 handlers, {scale['startup_baseline_ns'] / 1e6:.2f} ms for an "
               f"empty Rust program (medians of {scale['runs']} runs).")
    fast_passes = {p["pass"]: p["seconds"] for p in compile_["plain_static_time_passes"]}
    passes = "\n".join(
        f"| {p['pass']} | {p['seconds']:.2f} | "
        + (f"{fast_passes[p['pass']]:.2f} |" if p["pass"] in fast_passes else "|")
        for p in compile_["signals_time_passes"])
    crates = [
        ("plain functions, `static` tables of `fn` pointers (fast baseline)", fast),
        ("plain functions, `Vec<fn>` tables built in one large `main`", plain),
        ("`#[derive(Signal)]` and `#[on]`", gen),
    ]
    compile_table = ["| crate | build | vs fast | binary | vs fast | stripped | vs fast |",
                     "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for label, crate in crates:
        compile_table.append(
            f"| {label} | {crate['build_seconds']:.1f} s | {crate['build_seconds'] / fast['build_seconds']:.2f}× "
            f"| {crate['binary_bytes'] / 1e6:.2f} MB | {crate['binary_bytes'] / fast['binary_bytes']:.2f}× "
            f"| {crate['stripped_bytes'] / 1e6:.2f} MB | {crate['stripped_bytes'] / fast['stripped_bytes']:.2f}× |")
    sections = [".text", ".strtab", ".symtab", ".rela.dyn", ".rodata", ".eh_frame", ".eh_frame_hdr",
                ".gcc_except_table", ".data.rel.ro", "linkme_SIGNALS_CORE_0_1_HANDLERS",
                "linkme_SIGNALS_CORE_0_1_SIGNALS"]
    section_table = ["| section | fast baseline | `Vec<fn>` baseline | signals |", "| --- | ---: | ---: | ---: |"]
    for section in sections:
        sizes = [crate["sections"].get(section, 0) / 1e3 for _, crate in crates]
        section_table.append(f"| `{section}` | " + " | ".join(f"{kb:.0f} kB" for kb in sizes) + " |")

    def summary(chart: str) -> str:
        return "\n".join([
            f"Measured on {machine()}.",
            "",
            f"![notify with three handlers, next to the alternatives]({chart})",
            "",
            *table,
            "",
            *target_table,
        ])
    results = "\n".join([
        "# Benchmark results",
        "",
        "Generated by `scripts/bench.sh`; do not edit by hand.",
        "",
        summary("chart.svg"),
        "",
        "## Cost per handler",
        "",
        *per_handler,
        "",
        "## Async",
        "",
        "Each driven to completion by the same minimal executor (a no-op waker); the handlers",
        "never wait, so this is the cost of the dispatch alone:",
        "",
        *async_table,
        "",
        "## A large program",
        "",
        f"`notify` of the same 3-handler signal inside a program with 1,000 signal types and "
        f"5,000 handlers: {big:.2f} ns (in the small benchmark program: {notify:.2f} ns).",
        "",
        f"First notify of all 1,000 signal types in a fresh process, which builds the index: "
        f"{first_ms:.3f} ms (median of {scale['runs']} processes).",
        "",
        startup,
        "",
        "## Compile time and binary size",
        "",
        f"1,000 signals × 5 handlers, clean release build of that crate alone, median of "
        f"{compile_['rounds']} interleaved builds (`scripts/compile_bench.py`; 1-minute load "
        f"average {compile_['load_average_1min'][0]:.1f} to {compile_['load_average_1min'][1]:.1f} "
        f"during the builds). Two baselines with the same types and 5,000 distinct handler functions: "
        f"`static` arrays of function pointers, run by one small function per signal (the fast "
        f"baseline), and `Vec<fn>` tables built at run time in one large `main`, which rustc is "
        f"slow to optimise:",
        "",
        *compile_table,
        "",
        "Where the bytes go (section sizes, unstripped):",
        "",
        *section_table,
        "",
        "Where the time goes (rustc `-Z time-passes`, slowest passes of the signals crate; nested "
        "passes count inside their parents):",
        "",
        "| pass | signals, seconds | fast baseline, seconds |",
        "| --- | ---: | ---: |",
        passes,
        "",
    ])
    (ROOT / "bench").mkdir(exist_ok=True)
    (ROOT / "bench" / "RESULTS.md").write_text(results)
    chart_rows = [(re.sub(r"[*`]", "", label), three[key]) for key, label, _ in THREE_HANDLERS]
    (ROOT / "bench" / "chart.svg").write_text(svg_chart(chart_rows, "notify with 3 handlers"))

    readme = ROOT / "README.md"
    text = readme.read_text()
    begin, end = "<!-- bench:begin -->", "<!-- bench:end -->"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        readme.write_text(f"{head}{begin}\n{summary('bench/chart.svg')}\n{end}{tail}")
    print(results)


if __name__ == "__main__":
    main()
