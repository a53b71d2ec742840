"""Firmware stays in the MicroPython subset (DESIGN principle 3) and in integer arithmetic (SR-1).

Checks every file under firmware/ with the real toolchain (mpy-cross, the MicroPython unix
port) and with an AST scan of firmware/itb/ for constructs that compile but misbehave on the
RP2040 (floats, true division, CPython-only modules).
"""

import ast
import os
import subprocess
from pathlib import Path

import pytest
from helpers import compile_firmware, tool

from host_tools.toolchain import FIRMWARE as FIRMWARE_DIR  # or ITB_FIRMWARE_DIR's copy

ITB_DIR = FIRMWARE_DIR / "itb"

FIRMWARE_FILES = sorted(FIRMWARE_DIR.rglob("*.py"))
ITB_FILES = sorted(ITB_DIR.rglob("*.py"))

FORBIDDEN_MODULES = frozenset(
    {
        "dataclasses",
        "typing",
        "enum",
        "abc",
        "fractions",
        "decimal",
        "datetime",
        "functools",
        "itertools",
        "bisect",
        "time",
        "machine",
        "serial",
    }
)


def _rel(path: Path) -> str:
    return str(path.relative_to(FIRMWARE_DIR.parent))


@pytest.mark.parametrize("path", FIRMWARE_FILES, ids=_rel)
def test_firmware_compiles_with_mpy_cross(path: Path, tmp_path: Path) -> None:
    """DESIGN principle 3: every firmware file compiles with MicroPython's own compiler
    (mpy-cross -march=armv6m, the RP2040), so no CPython-only syntax reaches the board."""
    mpy_cross = tool("mpy-cross")
    out = tmp_path / (path.stem + ".mpy")
    proc = subprocess.run(
        [mpy_cross, "-march=armv6m", "-o", str(out), str(path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, f"mpy-cross rejected {_rel(path)}:\n{proc.stdout}{proc.stderr}"
    assert out.is_file()


def _subset_violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    problems: list[str] = []

    def report(node: ast.AST, what: str) -> None:
        problems.append(f"{_rel(path)}:{getattr(node, 'lineno', '?')}: {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, (float, complex)):
            report(node, f"float/complex literal {node.value!r}")
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            report(node, "true division '/' (use '//' with explicit rounding)")
        elif isinstance(node, ast.AugAssign) and isinstance(node.op, ast.Div):
            report(node, "true division '/=' (use '//=' with explicit rounding)")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "float"
        ):
            report(node, "float() call")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in FORBIDDEN_MODULES:
                    report(node, f"import of {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module and node.module.split(".")[0] in FORBIDDEN_MODULES:
                report(node, f"import from {node.module}")
        elif isinstance(node, ast.Match):
            report(node, "match statement")
    return sorted(problems, key=lambda p: int(p.split(":")[1]) if p.split(":")[1].isdigit() else 0)


@pytest.mark.sr("SR-1")
@pytest.mark.parametrize("path", ITB_FILES, ids=_rel)
def test_itb_uses_integer_subset(path: Path) -> None:
    """SR-1 (integer arithmetic, range-checked doses) and DESIGN principle 3 (MicroPython
    subset): no float literal, no true division, no float() call, no match statement, and no
    import of CPython-only or hardware modules (dataclasses, typing, enum, abc, fractions,
    decimal, datetime, functools, itertools, bisect, time, machine, serial) in firmware/itb/."""
    problems = _subset_violations(path)
    assert not problems, "MicroPython/integer subset violations:\n" + "\n".join(problems)


def _itb_module_names() -> list[str]:
    names = []
    for path in ITB_FILES:
        parts = path.relative_to(FIRMWARE_DIR).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join(parts))
    return sorted(set(names))


def test_itb_imports_under_micropython(tmp_path: Path) -> None:
    """DESIGN principle 3: every module of the itb package, cross-compiled to .mpy as it is
    deployed, imports under the real MicroPython unix port with a 192 KiB heap. Prints the heap
    used after import (64-bit build: a regression figure, not the Pico's budget)."""
    micropython = tool("micropython")
    compile_firmware(tmp_path, ITB_FILES)
    modules = _itb_module_names()
    assert "itb" in modules, "firmware/itb/__init__.py is missing"
    script = (
        "import gc\ngc.collect()\nbase = gc.mem_alloc()\n"
        + "".join(f"import {name}\n" for name in modules)
        + "gc.collect()\nprint('OK', gc.mem_alloc() - base)\n"
    )
    env = dict(os.environ, MICROPYPATH=str(tmp_path))
    proc = subprocess.run(
        [micropython, "-X", "heapsize=192K", "-c", script],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        cwd=str(FIRMWARE_DIR.parent),
        timeout=60,
    )
    assert proc.returncode == 0, (
        f"MicroPython failed importing {modules}:\n{proc.stdout}{proc.stderr}"
    )
    assert "OK" in proc.stdout
    print("heap after importing itb (unix port, 64-bit):", proc.stdout.split()[-1], "bytes")
