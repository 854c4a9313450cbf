#!/usr/bin/env python3
"""Builds tests/wasm-smoke for wasm32-wasip1, runs it under wasmtime and checks its output.

The program declares signals and has handlers in two modules (priorities, an `after`
constraint); on wasm, signals-core registers them through constructors. Its output must equal
tests/wasm-smoke/expected.txt exactly, as it does natively (`cargo test -p signals-wasm-smoke`).

Needs the wasm32-wasip1 target (`rustup target add wasm32-wasip1`) and the `wasmtime` package
(`python3 -m pip install wasmtime`). Usage: scripts/wasm_smoke.py [path/to/signals-wasm-smoke.wasm]
(without a path it builds the program with cargo first). Exits non-zero on any mismatch.
"""

import difflib
import json
import pathlib
import subprocess
import sys
import tempfile

import wasmtime

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXPECTED = ROOT / "tests" / "wasm-smoke" / "expected.txt"
PACKAGE = "signals-wasm-smoke"
TARGET = "wasm32-wasip1"


def build() -> pathlib.Path:
    """Builds the smoke program for wasm32-wasip1; returns the path of its `.wasm`."""
    command = ["cargo", "build", "-p", PACKAGE, "--target", TARGET, "--message-format=json"]
    print("$", " ".join(command), flush=True)
    output = subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True).stdout
    for line in output.splitlines():
        message = json.loads(line)
        if message.get("reason") == "compiler-artifact" and message.get("executable"):
            if message["target"]["name"] == PACKAGE:
                return pathlib.Path(message["executable"])
    sys.exit(f"cargo built no executable for {PACKAGE}")


def run(wasm: pathlib.Path) -> str:
    """Runs the WASI program's `_start` with wasmtime; returns what it wrote to stdout."""
    engine = wasmtime.Engine()
    store = wasmtime.Store(engine)
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    with tempfile.TemporaryDirectory() as scratch:
        stdout = pathlib.Path(scratch) / "stdout"
        wasi = wasmtime.WasiConfig()
        wasi.argv = [wasm.name]
        wasi.stdout_file = str(stdout)
        wasi.inherit_stderr()
        store.set_wasi(wasi)
        instance = linker.instantiate(store, wasmtime.Module.from_file(engine, str(wasm)))
        try:
            instance.exports(store)["_start"](store)
        except wasmtime.ExitTrap as exit_trap:
            if exit_trap.code != 0:
                sys.exit(f"{wasm.name} exited with status {exit_trap.code}")
        return stdout.read_text()


def main() -> None:
    wasm = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else build()
    print(f"running {wasm} under wasmtime", flush=True)
    actual = run(wasm)
    sys.stdout.write(actual)
    expected = EXPECTED.read_text()
    if actual != expected:
        diff = difflib.unified_diff(
            expected.splitlines(keepends=True),
            actual.splitlines(keepends=True),
            fromfile=str(EXPECTED.relative_to(ROOT)),
            tofile=f"{wasm.name} under wasmtime",
        )
        sys.stdout.writelines(diff)
        sys.exit("wasm smoke test failed: the output differs from expected.txt")
    print("wasm smoke test passed: same order as expected.txt")


if __name__ == "__main__":
    main()
