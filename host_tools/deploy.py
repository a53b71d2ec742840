"""``itbctl deploy``: put the firmware on a Pico (RP2040) or Pico 2 (RP2350) with
``mpremote``, through a MAINTENANCE boot (SR-27), and prove what it runs.

What goes on the flash (``build``): ``/main.py`` as source (MicroPython runs it at
boot), every other firmware file cross-compiled to ``.mpy`` with the repository's
layout (``/app.mpy``, ``/itb/*.mpy``, ``/board/*.mpy``), without
``board/virtual.py`` (the unix port's adapter). ``/data`` (store, keys, boot
counter) is never touched; every other ``.py``/``.mpy`` the new build does not have
is removed, so old code (a ``/boot.py``, an ``app.py`` beside ``app.mpy``) cannot
shadow the new one. The manifest hash (``itb.manifest``) of the build folder is
what the board reports as ``fw`` in ``hello`` once the copy is complete.

The steps (``plan`` lists them; ``itbctl deploy --dry-run`` prints them):

1. ``hello`` over the protocol (short timeout): firmware hash, device id, state,
   MicroPython version (``upy``) and ``.mpy`` ABI (``mpy``). A RUNNING or MIN_RATE
   pump is refused: deploy never stops therapy (the clinician stops it first).
   No answer: a blank board (MicroPython only) or a MAINTENANCE boot, whose REPL
   is free: the same facts come from a probe script run with ``mpremote exec``.
2. ABI check (``check_abi``) against the local mpy-cross, then the build.
3. ``maintenance`` (service role, single-phase) unless the board is already in a
   MAINTENANCE boot: the Pico writes ``/maintenance`` and resets into a
   MAINTENANCE boot (no dosing, no watchdog, HIGH alarm, REPL free).
4. Wait for the REPL (the probe, retried), ``fs touch :maintenance`` (a blank
   board gets the flag too: a half-copied firmware never boots), list the code
   files, remove the stale ones, make the folders, copy every file.
5. Verify: ``itb.manifest`` run on the board over its flash must equal the
   build's hash (else the board stays in MAINTENANCE); record the deploy (one
   JSON line); ``fs rm :maintenance``; ``reset``; ``hello`` must report the new
   ``fw``.

The .mpy ABI
------------
A ``.mpy`` file starts with ``M``, the version, a byte ``arch << 2 | sub-version``
and the small-int bits; MicroPython reports what it imports as
``sys.implementation._mpy`` = version | sub-version << 8 | arch << 10 (the
``MPY_FILE_HEADER_INT`` of ``py/persistentcode.h``). A bytecode-only file carries
arch 0 (byte 2 is 0 whatever ``-march``): ``mpy_abi`` compiles a tiny
``@micropython.native`` function with each ``-march`` to read the arch codes.
Verified with mpy-cross 1.29.0 (``mpy v6.3``): x64 2, armv6m 4, armv7m 5,
armv7emsp 7, rv32imc 11 (also x86 1, armv6 3, armv7em 6, armv7emdp 8, xtensa 9,
xtensawin 10, debug 13), and the unix port's ``_mpy`` 2822 = 6 | 3 << 8 | 2 << 10
decodes to the x64 code of that table.

The board values follow from MicroPython's sources (``ports/rp2/mpconfigport.h``
enables ``MICROPY_EMIT_THUMB`` on Arm and ``MICROPY_EMIT_RV32`` on RISC-V;
``py/persistentcode.h`` picks the arch from the compiler's macros); no board was
at hand to read them (``mpremote exec "import sys; print(sys.implementation._mpy)"``
on one confirms):

- RP2040 (Pico): Cortex-M0+, thumb without thumb-2: arch armv6m (4),
  ``_mpy`` 4870.
- RP2350 in Arm mode (Pico 2): Cortex-M33 built by the pico-sdk with
  ``-march=armv8-m.main+fp+dsp -mfloat-abi=softfp``, so ``__thumb2__`` and a
  single-precision ``__ARM_FP``: armv7emsp (7), ``_mpy`` 7942. (MicroPython
  freezes its own modules there with ``-march=armv7m``, which an armv7emsp board
  also loads: it takes armv6m up to its own arch.)
- RP2350 in RISC-V mode: rv32imc (11), ``_mpy`` 12038.

A board is refused unless its version and sub-version equal the compiler's (the
loader itself only insists on the sub-version for native code; refusing on both
is the simple rule). The firmware has no native code, so the ``.mpy`` bytes, and
the manifest hash, are the same for every ``-march``; the board's arch is still
passed, so native code added later is built for the board it runs on.

Errors: ``DeployError`` (``status`` 1: a failed check, nothing or not everything
was changed; 3: refused, nothing was changed), ``MpremoteError`` (a
``link.LinkError``: mpremote failed or the board has no REPL), ``link.Refused``
(the board refused ``maintenance``), ``toolchain.ToolError`` (mpy-cross).
"""

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections import namedtuple
from datetime import UTC, datetime
from pathlib import Path

from itb import manifest

from host_tools import link, pinmap, toolchain

EXIT_FAILED = 1
EXIT_REFUSED = 3
EXIT_USAGE = 64

ARCHS = ("armv6m", "armv7m", "armv7emsp", "rv32imc", "x64")  # -march values read by mpy_abi
PICO_ARCHS = ("armv6m", "armv7emsp", "rv32imc")  # RP2040, RP2350 Arm, RP2350 RISC-V
BOARD_NAMES = {"armv6m": "RP2040 (Pico)", "armv7emsp": "RP2350 Arm (Pico 2)",
               "rv32imc": "RP2350 RISC-V (Pico 2)", "armv7m": "Cortex-M3",
               "x64": "unix port (virtual board)"}
DEFAULT_ARCH = "armv6m"  # a dry run without a hello: the RP2040 (the bytes do not differ)
EXCLUDED = ("board/virtual.py",)  # the unix port's adapter
ENTRY = "main.py"  # copied as source: MicroPython runs /main.py at boot
DATA = "data"  # the board's store, keys and boot counter: never touched
FLAG = "maintenance"  # /maintenance: the board boots into MAINTENANCE while it exists
DOSING = ("RUNNING", "MIN_RATE")
MARK = "ITB-JSON "  # the line a board script answers on (the MAINTENANCE banner says "ITB ")

HELLO_TIMEOUT = 1.0  # s per hello attempt (a blank board answers nothing)
HELLO_TRIES = 3  # a booting app gets a few seconds to answer before the REPL is tried
RESET_WAIT_S = 3.0  # the board resets 1.5 s after answering maintenance, then USB re-enumerates
REPL_TRIES = 10
BOOT_TRIES = 20  # hello attempts after the final reset (store recovery takes a while)
EXEC_TIMEOUT = 60
PROBE_TIMEOUT = 10  # s per REPL probe: a board in a MAINTENANCE boot answers at once
COPY_TIMEOUT = 600

Step = namedtuple("Step", "kind text argv")
Step.__doc__ = """One deploy step: ``kind`` (which handler runs it), ``text`` for people,
``argv`` the mpremote command line (None: a protocol or local step)."""


class DeployError(RuntimeError):
    """A deploy that stopped: ``status`` is itbctl's exit status (1 failed check,
    3 refused: nothing changed, 64 usage)."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


class MpremoteError(link.LinkError):
    """mpremote failed (exit status, no REPL, an answer without the script's line)."""


# ---------------------------------------------------------------------- the .mpy ABI
def mpy_header(data):
    """``(version, sub_version, arch, small_int_bits)`` from the first 4 bytes of a
    .mpy file; ValueError if it is not one."""
    if len(data) < 4 or data[0] != ord("M"):
        raise ValueError("not a .mpy file (no 'M' header)")
    return data[1], data[2] & 3, data[2] >> 2, data[3]


def board_abi(mpy):
    """``(version, sub_version, arch)`` from a board's ``sys.implementation._mpy``
    (an int: version in bits 0-7, sub-version in 8-9, arch from bit 10)."""
    return mpy & 0xFF, (mpy >> 8) & 3, mpy >> 10


def mpy_abi(archs=ARCHS):
    """The local mpy-cross's ABI: ``{"version": 6, "sub": 3, "small_int_bits": 31,
    "archs": {"armv6m": 4, ...}, "tool": "MicroPython v1.29.0 ...; mpy-cross
    emitting mpy v6.3"}``, each arch code read from the header of a tiny native
    function compiled with that ``-march``. ToolError if mpy-cross is missing,
    refuses an arch or its headers disagree."""
    mpy_cross = toolchain.need("mpy-cross")
    tool = _run_tool([mpy_cross, "--version"]).strip()
    found = {"tool": tool, "archs": {}}
    with tempfile.TemporaryDirectory(prefix="itb-abi-") as tmp:
        src = Path(tmp) / "probe.py"
        src.write_text("@micropython.native\ndef f(x):\n    return x\n")
        for arch in archs:
            out = Path(tmp) / f"{arch}.mpy"
            _run_tool([mpy_cross, "-march=" + arch, "-o", str(out), str(src)])
            version, sub, code, bits = mpy_header(out.read_bytes()[:4])
            if found.setdefault("version", version) != version or found.setdefault(
                    "sub", sub) != sub:
                raise toolchain.ToolError(f"mpy-cross headers disagree at -march={arch}")
            found["small_int_bits"] = bits
            found["archs"][arch] = code
    return found


def _run_tool(cmd):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode:
        raise toolchain.ToolError(f"{' '.join(cmd)} failed: {proc.stdout}{proc.stderr}")
    return proc.stdout


def micropython_release(tool):
    """``"1.29"`` from mpy-cross's version line (``MicroPython v1.29.0 on ...``), or
    the whole line if it does not say."""
    words = tool.split()
    if len(words) > 1 and words[0] == "MicroPython" and words[1].startswith("v"):
        return ".".join(words[1][1:].split(".")[:2])
    return tool


def check_abi(local, mpy, upy=None):
    """The ``-march`` to build for a board reporting ``sys.implementation._mpy`` =
    ``mpy`` (int) and MicroPython ``upy`` (``"1.29.0"``); ``local`` is ``mpy_abi()``.
    DeployError (status 1) if the board cannot import this compiler's files, saying
    which MicroPython or mpy-cross to install."""
    version, sub, arch = board_abi(mpy)
    release = micropython_release(local["tool"])
    if (version, sub) != (local["version"], local["sub"]):
        board = f"MicroPython {upy}" if upy else "the board's MicroPython"
        mine = ".".join(upy.split(".")[:2]) if upy else "<its version>"
        raise DeployError(EXIT_FAILED, (
            f"{board} imports .mpy v{version}.{sub}; this mpy-cross ({local['tool']}) writes"
            f" v{local['version']}.{local['sub']}: nothing was changed. Flash MicroPython"
            f" {release}.x on the board (README: Running on a Pico; the project pins"
            f" mpy-cross {release}, so a board on {mine} needs a MicroPython update)"))
    names = {code: name for name, code in local["archs"].items()}
    if arch not in names:
        known = ", ".join(f"{n} ({c})" for n, c in sorted(local["archs"].items()))
        raise DeployError(EXIT_FAILED, f"the board's native architecture {arch} is none of"
                          f" {known}: not a Pico or Pico 2? nothing was changed")
    if names[arch] not in PICO_ARCHS:
        # a virtual board (the unix port) runs this checkout's firmware already and
        # has no REPL to copy through (found by the new-user trial: a 10-minute wait)
        hint = (" (a virtual board runs the firmware of this checkout: restart it with"
                " itbsim board)" if names[arch] == "x64" else "")
        raise DeployError(EXIT_REFUSED, f"the board is {BOARD_NAMES.get(names[arch])}, not a"
                          f" Pico: nothing was changed{hint}")
    return names[arch]


# ---------------------------------------------------------------------- the build
def build(dst, arch, src=toolchain.FIRMWARE):
    """Lay out the flash image in the empty or new folder ``dst``: ``main.py`` as
    source, every other ``.py`` of ``src`` (but ``EXCLUDED``) as ``.mpy`` compiled
    for ``arch`` (``-march``; None: portable bytecode). Returns ``(files, digest)``:
    the flash-relative paths (sorted, ``"itb/units.mpy"``) and the manifest hash.
    DeployError if ``src`` has no main.py or ``dst`` is not empty; ToolError if
    mpy-cross refuses a file."""
    src, dst = Path(src), Path(dst)
    if not (src / ENTRY).is_file():
        raise DeployError(EXIT_FAILED, f"{src / ENTRY} is missing: the board would not"
                          " start the firmware")
    if dst.exists() and any(dst.iterdir()):
        raise DeployError(EXIT_FAILED, f"build folder {dst} is not empty")
    if (src.parent / pinmap.PINS_TOML).is_file():  # a checkout: pins.py must be current
        problems = pinmap.check_firmware(src.parent)
        if problems:
            raise DeployError(EXIT_FAILED, "the pin map is not ready for the firmware"
                              " (python -m host_tools.pinmap --check):\n  "
                              + "\n  ".join(problems))
    sources = [p for p in sorted(src.rglob("*.py"))
               if p.relative_to(src).as_posix() not in EXCLUDED + (ENTRY,)]
    toolchain.compile_firmware(dst, src, sources, arch)
    shutil.copyfile(src / ENTRY, dst / ENTRY)
    files = manifest.files(str(dst), os.listdir, os.path.isdir)
    return files, toolchain.source_digest(dst)


def stale_files(remote, files):
    """The code files of ``remote`` (flash-relative paths listed on the board) that
    the build's ``files`` do not have, sorted. Nothing under ``data/`` is ever
    stale, whatever the listing says."""
    keep = set(files)
    out = []
    for path in remote:
        path = path.lstrip("/")
        if path in keep or path == DATA or path.startswith(DATA + "/"):
            continue
        if path.endswith(manifest.SUFFIXES):
            out.append(path)
    return sorted(out)


def stale_dirs(remote_dirs, files):
    """The folders of ``remote_dirs`` (flash-relative) the build's ``files`` do not
    need, deepest first (removed after the stale files: an old package folder would
    shadow a module of the same name, found by the attacker). Never ``data``."""
    keep = set(folders(files))
    out = [d.strip("/") for d in remote_dirs]
    out = [d for d in out if d not in keep and d != DATA and not d.startswith(DATA + "/")]
    return sorted(out, key=lambda d: (-d.count("/"), d))


def folders(files):
    """The folders ``files`` need on the flash, parents first (``["board", "itb"]``)."""
    out = set()
    for path in files:
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            out.add("/".join(parts[:i]))
    return sorted(out, key=lambda d: (d.count("/"), d))


# ---------------------------------------------------------------------- board scripts
# Run with ``mpremote exec`` on the board (MicroPython); each prints one line
# ``ITB-JSON <json>``. ``R`` is the flash root ("" on a board; the tests run the same
# scripts in the unix port on a folder by replacing that first line).
ROOT_LINE = 'R = ""\n'

PROBE = ROOT_LINE + """import os, sys, json
def has(p):
    try:
        os.stat(R + p)
        return 1
    except OSError:
        return 0
def isfile(p):
    try:
        return 0 if os.stat(R + p)[0] & 0x4000 else 1
    except OSError:
        return 0
i = sys.implementation
try:
    import machine
    dev = "".join(["%02x" % b for b in machine.unique_id()])
except Exception:
    dev = None
print("ITB-JSON", json.dumps({"mpy": getattr(i, "_mpy", 0), "dev": dev,
      "upy": "%d.%d.%d" % (i.version[0], i.version[1], i.version[2]),
      "machine": getattr(i, "_machine", ""), "flag": has("/maintenance"),
      "app": has("/main.py"), "data_file": isfile("/data")}))
"""

LIST = ROOT_LINE + """import os, json
def walk(d, out, dirs):
    for e in os.ilistdir((R + d) or "/"):
        p = d + "/" + e[0]
        if e[1] & 0x4000:
            if p != "/data":
                dirs.append(p[1:])
                walk(p, out, dirs)
        elif p.endswith(".py") or p.endswith(".mpy"):
            out.append(p[1:])
files, dirs = [], []
walk("", files, dirs)
print("ITB-JSON", json.dumps({"files": files, "dirs": dirs}))
"""

DIGEST = ROOT_LINE + """import os, json
from itb import manifest
def ls(p):
    return os.listdir(p.rstrip("/") or "/")
print("ITB-JSON", json.dumps(manifest.digest(R, ls, lambda p: os.stat(p)[0] & 0x4000 != 0,
                                        lambda p: os.stat(p)[6])))
"""


def mkdir_script(dirs):
    """A board script making the folders ``dirs`` (parents first) where missing."""
    return ROOT_LINE + f"""import os
for d in {tuple(dirs)!r}:
    try:
        os.mkdir(R + "/" + d)
    except OSError:
        pass
print("ITB-JSON", 1)
"""


SCRIPT_NAMES = {PROBE: "probe", LIST: "list", DIGEST: "digest"}


def script_answer(text):
    """The JSON value of the ``ITB`` line a board script printed (MpremoteError if
    there is none: the script did not run to its end)."""
    for line in text.splitlines():
        if line.startswith(MARK):
            try:
                return json.loads(line[len(MARK):])
            except ValueError:
                break
    raise MpremoteError(f"the board script gave no answer: {text.strip()[-300:]!r}")


# ---------------------------------------------------------------------- the plan
def mpremote(port, *args):
    """The argv of ``python -m mpremote connect PORT resume ARGS...`` (this Python's).
    ``resume``: no soft reset on entering the raw REPL, which would stop the
    MAINTENANCE boot's alarm timer (SR-27: annunciated until a normal boot)."""
    return [sys.executable, "-m", "mpremote", "connect", port, "resume", *args]


def remove_argv(port, stale, dirs=()):
    """``fs rm`` of the flash-relative paths ``stale``, then ``fs rmdir`` of the
    folders ``dirs`` in order (one mpremote run; a folder still holding other files
    makes it fail: the board stays in MAINTENANCE)."""
    args = ["fs", "rm", *[":" + p for p in stale]] if stale else []
    for d in dirs:
        args += (["+"] if args else []) + ["fs", "rmdir", ":" + d]
    return mpremote(port, *args)


def copy_argv(port, build_dir, files):
    """One mpremote run copying every file to its own flash path (``fs cp`` chained
    with ``+``; a file identical on the board is skipped by mpremote's hash check)."""
    args = []
    for path in files:
        args += ["+"] if args else []
        args += ["fs", "cp", str(Path(build_dir) / path), ":" + path]
    return mpremote(port, *args)


def plan(port, build_dir, files, digest, enter=True, probe=True):
    """The deploy steps in order (``Step``) for the build ``files`` in ``build_dir``
    with manifest ``digest``: ``enter`` sends ``maintenance`` first (False: the
    board is already in a MAINTENANCE boot or has no app); ``probe`` waits for the
    REPL and reads its ABI (False: already read). The files to remove are known
    once the board's are listed: the plan shows a placeholder."""
    short = digest[:12]
    steps = []
    if enter:
        steps.append(Step("maintenance", "enter MAINTENANCE: `maintenance` (service role) over"
                          " the protocol; the board resets into a MAINTENANCE boot", None))
    if probe:
        steps.append(Step("repl", "wait for the REPL and read the board's .mpy ABI (probe,"
                          " retried)", mpremote(port, "exec", PROBE)))
    dirs = folders(files)
    steps += [
        Step("flag", "mark the deploy: /maintenance (a half-copied firmware never boots)",
             mpremote(port, "fs", "touch", ":" + FLAG)),
        Step("list", "list the code files on the board (all but /data)",
             mpremote(port, "exec", LIST)),
        Step("remove", "remove the code files the new build does not have (found by the"
             " listing)", remove_argv(port, ["<stale files>"])),
        Step("mkdir", f"make the folders {', '.join(dirs)} where missing",
             mpremote(port, "exec", mkdir_script(dirs))),
        Step("copy", f"copy {len(files)} files ({ENTRY} as source, the rest .mpy)",
             copy_argv(port, build_dir, files)),
        Step("verify", f"itb.manifest on the board must give {short}",
             mpremote(port, "exec", DIGEST)),
        Step("record", "record the deploy (one JSON line)", None),
        Step("leave", "remove /maintenance: the next boot runs the new firmware",
             mpremote(port, "fs", "rm", ":" + FLAG)),
        Step("reset", "reset the board", mpremote(port, "reset")),
        Step("hello", f"hello: the board must report fw {short}", None),
    ]
    return steps


def shown(argv):
    """An argv as a shell line, board scripts by name (``<probe script>``), a
    chained copy one ``+`` per line."""
    words = []
    for arg in argv:
        if arg in SCRIPT_NAMES:
            words.append(f"<{SCRIPT_NAMES[arg]} script>")
        elif arg.startswith(ROOT_LINE):
            words.append("<mkdir script>")
        elif arg.startswith(":<"):  # a placeholder: known at run time
            words.append(arg)
        else:
            words.append(shlex.quote(arg))
    return " ".join(words).replace(" + ", " \\\n         + ")


def describe(steps):
    """The plan for people: numbered steps, each with its command line."""
    lines = []
    for n, step in enumerate(steps, 1):
        lines.append(f"{n:2}. {step.text}")
        if step.argv is not None:
            lines.append("      $ " + shown(step.argv))
    return "\n".join(lines)


# ---------------------------------------------------------------------- running it
def run_mpremote(argv, timeout):
    """The default runner: ``argv`` in a subprocess, output captured (text).
    Returns a ``subprocess.CompletedProcess``; TimeoutExpired past ``timeout`` s."""
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def default_record():
    """``$XDG_STATE_HOME/itb-controller/deploys.jsonl`` (``~/.local/state/...``)."""
    root = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(root) / "itb-controller" / "deploys.jsonl"


class Deployer:
    """One deploy to ``port`` (a device path; mpremote reaches the REPL there).

    ``keys_for(device_id) -> {role: key}``: the board's keys (the service key
    enters MAINTENANCE); ``runner(argv, timeout) -> CompletedProcess``: runs
    mpremote (tests pass a fake board); ``open_board(port, timeout)``: a
    ``link.Board``; ``say(text)``: progress; ``sleep(s)``; ``src``: the firmware
    folder; ``record``: the deploy log (default ``default_record()``)."""

    def __init__(self, port, keys_for=None, runner=None, open_board=None, say=print,
                 sleep=time.sleep, src=toolchain.FIRMWARE, record=None):
        self.port = port
        self.keys_for = keys_for
        self.runner = runner or run_mpremote
        self.open_board = open_board or (lambda port, timeout: link.Board(
            port, timeout=timeout, retries=0))
        self.say = say
        self.sleep = sleep
        self.src = src
        self.record_path = Path(record) if record else default_record()
        self.local = None
        self.facts = {}  # what the board said: hello fields or the probe's

    # ------------------------------------------------------------------ the whole
    def run(self, dry_run=False, confirm=None):
        """Deploy (or, with ``dry_run``, only say what would run: a ``hello`` is the
        one thing sent). ``confirm(question) -> bool`` is asked before the board is
        changed (None: no question). Returns the record written (dry run: the
        plan's steps)."""
        self.local = mpy_abi()
        info = self.hello(must_open=True)
        if info is not None:
            self.facts = dict(info)
            self.say(self.hello_text(info))
            refuse_dosing(info)
            if "mpy" not in info:
                raise DeployError(EXIT_FAILED, "the board's firmware does not report its .mpy"
                                  " ABI in hello: enter MAINTENANCE (itbctl maintenance, or"
                                  " hold ACK + PROVISION at power-on) and deploy again")
        elif dry_run:
            self.say(f"no hello answer on {self.port}: a blank board or a MAINTENANCE boot"
                     " (its ABI is read from the REPL when the deploy runs)")
        else:
            self.facts = self.probe(tries=1)
        arch = (check_abi(self.local, self.facts["mpy"], self.facts.get("upy"))
                if "mpy" in self.facts else DEFAULT_ARCH)
        self.note_release()
        with tempfile.TemporaryDirectory(prefix="itb-deploy-") as tmp:
            build_dir = Path(tmp) / "flash"
            files, digest = build(build_dir, arch, self.src)
            self.say(f"build: {len(files)} files for {arch} ({BOARD_NAMES.get(arch, arch)}),"
                     f" manifest {digest}")
            enter = info is not None and info.get("state") != "MAINTENANCE"
            probed = info is None and not dry_run  # the REPL answered already
            steps = plan(self.port, build_dir, files, digest, enter, probe=not probed)
            self.say(describe(steps))
            keys = self.service_keys(info, dry_run) if enter else None
            if dry_run:
                self.say("dry run: nothing was changed (the build folder is temporary;"
                         " board scripts: host_tools/deploy.py)")
                return steps
            question = (f"Replace the firmware of board {self.facts.get('dev') or '?'} with"
                        f" {digest[:12]}? It does not dose until the deploy ends.")
            if confirm is not None and not confirm(question):
                raise link.Declined({})
            ctx = {"arch": arch, "files": files, "digest": digest, "build": build_dir,
                   "info": info, "keys": keys}
            for step in steps:
                self.say(f"-> {step.text}")
                getattr(self, "_" + step.kind)(step, ctx)
            return ctx["record"]

    def hello_text(self, info):
        return (f"board {info.get('dev')}: state {info.get('state')}, fw"
                f" {str(info.get('fw'))[:12]}, MicroPython {info.get('upy', '?')},"
                f" mpy {info.get('mpy', '?')}")

    def note_release(self):
        upy = self.facts.get("upy")
        mine = micropython_release(self.local["tool"])
        if upy and ".".join(upy.split(".")[:2]) != mine:
            self.say(f"note: the board runs MicroPython {upy}, mpy-cross is {mine}"
                     f" (the same .mpy ABI v{self.local['version']}.{self.local['sub']})")

    # ------------------------------------------------------------------ protocol
    def hello(self, tries=HELLO_TRIES, must_open=False):
        """The board's hello fields, or None when no app answers (``tries`` attempts
        of ``HELLO_TIMEOUT`` s). ``must_open``: a port that never opens is a
        LinkError (no board there), not a blank board."""
        error = None  # why the port did not open, while it never did
        for attempt in range(tries):
            if attempt:
                self.sleep(1.0)
            try:
                board = self.open_board(self.port, HELLO_TIMEOUT)
                error = False
            except link.LinkError as e:
                error = e if error is not False else False
                continue  # the port is not there (yet): a board resetting
            try:
                return board.hello()
            except link.LinkError:
                continue
            finally:
                board.close()
        if must_open and error:
            raise link.LinkError(f"{error} (no board on {self.port}?)")
        return None

    def service_keys(self, info, dry_run=False):
        """The board's keys (``keys_for``), checked for a service key before anything
        changes. DeployError (64), or what ``keys_for`` raises (a ValueError such
        as itbctl's UsageError, a LinkError); a dry run only says so."""
        try:
            if self.keys_for is None:
                raise DeployError(EXIT_USAGE, "entering MAINTENANCE needs the board's keys")
            keys = self.keys_for(info.get("dev"))
            if "service" not in keys:
                raise DeployError(EXIT_USAGE, f"the key file of board {info.get('dev')} has"
                                  " no service key")
            return keys
        except (DeployError, ValueError, link.LinkError) as e:
            if not dry_run:
                raise
            self.say(f"note: step 1 would fail: {e}")
            return None

    def enter_maintenance(self, keys):
        """Send ``maintenance`` as the service role (SR-27), with the link's retries
        (the same command id, SR-26). link.Refused if the board refuses (it refuses
        while dosing, like ``refuse_dosing``); LinkError without an answer."""
        board = self.open_board(self.port, link.DEFAULT_TIMEOUT)
        try:
            board.keys = keys
            board.retries = 3
            board.hello()
            board.call("maintenance", role="service")
        finally:
            board.close()

    # ------------------------------------------------------------------ mpremote
    def mpremote(self, argv, what, timeout=EXEC_TIMEOUT):
        """Run one mpremote command; its stdout. MpremoteError on failure."""
        try:
            proc = self.runner(argv, timeout)
        except subprocess.TimeoutExpired:
            raise MpremoteError(f"mpremote ({what}) took more than {timeout} s on"
                                f" {self.port}") from None
        except OSError as e:
            raise MpremoteError(f"cannot run mpremote ({what}): {e}") from None
        if proc.returncode:
            text = (proc.stderr or "") + (proc.stdout or "")
            raise MpremoteError(f"mpremote ({what}) failed on {self.port} (exit"
                                f" {proc.returncode}): {text.strip()[-400:]}")
        return proc.stdout or ""

    def exec_script(self, script, what, timeout=EXEC_TIMEOUT):
        """Run a board script (``mpremote exec``); the JSON value it answered."""
        return script_answer(self.mpremote(mpremote(self.port, "exec", script), what, timeout))

    def probe(self, tries):
        """The probe's facts (``mpy``, ``upy``, ``dev``, ``machine``, ``flag``,
        ``app``) from the REPL, trying ``tries`` times a second apart.
        MpremoteError when no REPL answers."""
        last = None
        for attempt in range(tries):
            if attempt:
                self.say(f"   no REPL yet (try {attempt + 1} of {tries})")
                self.sleep(1.0)
            try:
                facts = self.exec_script(PROBE, "probe", PROBE_TIMEOUT)
                break
            except MpremoteError as e:
                last = e
        else:
            raise MpremoteError(f"no REPL on {self.port} ({last}): is the board connected?"
                                " A board running the app must answer hello; to recover one"
                                " that does not, hold ACK + PROVISION at power-on (MAINTENANCE"
                                " boot)")
        if facts.get("data_file"):
            # the store needs the folder /data: with a file there every boot fails
            # (found by the attacker); deploy never removes anything under /data
            raise DeployError(EXIT_FAILED, "/data on the board is a file, not the store's"
                              " folder: the firmware could not boot. Look at it and remove"
                              f" it by hand ({sys.executable} -m mpremote connect"
                              f" {self.port} resume fs rm :data), then deploy again")
        kind = ("in a MAINTENANCE boot" if facts.get("flag") else
                "with firmware but no app answering (a MAINTENANCE boot by ACK + PROVISION,"
                " or an app that does not start)" if facts.get("app") else
                "blank (MicroPython only)")
        self.say(f"REPL on {self.port}: {facts.get('machine')}, MicroPython"
                 f" {facts.get('upy')}, mpy {facts.get('mpy')}; the board is {kind}")
        return facts

    # ------------------------------------------------------------------ the steps
    def _maintenance(self, step, ctx):
        try:
            self.enter_maintenance(ctx["keys"])
        except link.LinkError as e:
            # the answer may be lost to the reset it announces: the REPL tells (a board
            # running the app has Ctrl-C off, so the probe cannot reach it)
            self.say(f"   no answer to maintenance ({e}): looking for the REPL")
        self.sleep(RESET_WAIT_S)

    def _repl(self, step, ctx):
        try:
            facts = self.probe(REPL_TRIES)
        except MpremoteError as e:
            if ctx["keys"] is None:  # no maintenance was sent: nothing changed
                raise
            raise MpremoteError(f"{e}. The board was sent MAINTENANCE: it does not dose"
                                " until a deploy ends (deploy again)") from None
        if check_abi(self.local, facts["mpy"], facts.get("upy")) != ctx["arch"]:
            raise DeployError(EXIT_FAILED, "the board's REPL reports another architecture"
                              f" than its hello ({facts['mpy']}): nothing was copied; the"
                              " board is in MAINTENANCE (deploy again)")
        self.facts.setdefault("dev", facts.get("dev"))

    def _flag(self, step, ctx):
        self.mpremote(step.argv, "mark MAINTENANCE")

    def _list(self, step, ctx):
        remote = self.exec_script(LIST, "list")
        ctx["stale"] = stale_files(remote["files"], ctx["files"])
        ctx["stale_dirs"] = stale_dirs(remote["dirs"], ctx["files"])

    def _remove(self, step, ctx):
        if not ctx["stale"] and not ctx["stale_dirs"]:
            self.say("   no stale code files or folders")
            return
        self.say("   " + " ".join(ctx["stale"] + [d + "/" for d in ctx["stale_dirs"]]))
        self.mpremote(remove_argv(self.port, ctx["stale"], ctx["stale_dirs"]),
                      "remove stale files and folders")

    def _mkdir(self, step, ctx):
        self.mpremote(step.argv, "make folders")

    def _copy(self, step, ctx):
        self.mpremote(step.argv, "copy", COPY_TIMEOUT)

    def _verify(self, step, ctx):
        got = self.exec_script(DIGEST, "verify")
        if got != ctx["digest"]:
            raise DeployError(EXIT_FAILED, f"the board's flash gives manifest {got}, the build"
                              f" {ctx['digest']}: the copy is incomplete. The board stays in"
                              " MAINTENANCE (not dosing); deploy again")

    def _record(self, step, ctx):
        record = {"time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                  "port": self.port, "device": self.facts.get("dev"),
                  "old_fw": self.facts.get("fw"), "new_fw": ctx["digest"],
                  "files": len(ctx["files"]), "arch": ctx["arch"],
                  "upy": self.facts.get("upy"), "mpy_cross": self.local["tool"]}
        path = self.record_path
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(path, "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
        ctx["record"] = record
        self.say(f"   recorded in {path}")

    def _leave(self, step, ctx):
        self.mpremote(step.argv, "leave MAINTENANCE")

    def _reset(self, step, ctx):
        self.mpremote(step.argv, "reset")

    def _hello(self, step, ctx):
        info = self.hello(BOOT_TRIES)
        if info is None:
            raise DeployError(EXIT_FAILED, f"the firmware was copied and verified, but no"
                              f" hello came after the reset: see the board's error with"
                              f" {sys.executable} -m mpremote connect {self.port} repl")
        if info.get("fw") != ctx["digest"]:
            raise DeployError(EXIT_FAILED, f"the board reports fw {info.get('fw')}, the build"
                              f" is {ctx['digest']}")
        self.say(f"deployed: board {info.get('dev')} runs fw {ctx['digest'][:12]} (was"
                 f" {str(self.facts.get('fw'))[:12]}), state {info.get('state')}")


def refuse_dosing(info):
    """DeployError (status 3) if hello says the pump is delivering: deploy never
    stops therapy."""
    if info.get("state") in DOSING:
        raise DeployError(EXIT_REFUSED, f"the pump is {info['state']}: deploy never stops"
                          " therapy. The clinician stops it first (itbctl stop --reason"
                          " procedure|mri|other, with a plan for the withdrawal risk), then"
                          " deploy; nothing was changed")
