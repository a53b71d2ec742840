"""``itbctl deploy`` (host_tools/deploy.py): the .mpy ABI read from the real
mpy-cross, the flash image, the plan, a whole deploy against a fake Pico (its flash
a folder; the board scripts run in the MicroPython unix port on it), and the
refusals: an incompatible board before anything is copied, a RUNNING pump on the
virtual board (deploy never stops therapy)."""

import io
import json
import os
import shutil
import subprocess
import sys

import pytest

from host_tools import deploy, itbctl, link, toolchain
from host_tools.fixtures import start_therapy

PORT = "/dev/ttyFAKE0"
RP2040_MPY = 6 | 3 << 8 | 4 << 10  # 4870: what MicroPython 1.29 reports on a Pico
RP2350_MPY = 6 | 3 << 8 | 7 << 10  # 7942: on a Pico 2 (Arm)
OLD_MPY = 6 | 2 << 8 | 4 << 10  # MicroPython 1.22 on a Pico
SERVICE = {"service": b"s" * 32}


def no_sleep(_s):
    pass


class FakePico:
    """A Pico as deploy sees it. Its flash is the folder ``flash``; ``runner`` plays
    mpremote (refused while the app runs: it disables Ctrl-C), running the board
    scripts in the MicroPython unix port on that folder; ``open_board`` plays the
    app's protocol (``hello``, ``maintenance``), answering only while the app runs
    (main.py there, no /maintenance). ``drop``: a file the copy silently loses;
    ``lose_answer``: the answer to ``maintenance`` is lost to the reset."""

    def __init__(self, flash, state="STOPPED", mpy=RP2040_MPY, upy="1.29.0", drop=None,
                 lose_answer=False):
        self.flash = flash
        self.lose_answer = lose_answer
        self.state = state
        self.mpy = mpy
        self.upy = upy
        self.drop = drop
        self.calls = []  # mpremote arguments after "connect PORT"
        self.events = []  # ("protocol", name) and ("mpremote", first word) in order
        self.boot()

    def boot(self):
        self.app = (self.flash / "main.py").exists() and not (self.flash / "maintenance").exists()

    # ------------------------------------------------------------------ protocol
    def open_board(self, port, timeout):
        assert port == PORT
        return FakeLink(self)  # the port opens; only an app answers hello

    # ------------------------------------------------------------------ mpremote
    def runner(self, argv, timeout):
        # "resume": never a soft reset, which would stop the MAINTENANCE alarm timer
        assert argv[:6] == [sys.executable, "-m", "mpremote", "connect", PORT, "resume"]
        args = argv[6:]
        self.calls.append(args)
        self.events.append(("mpremote", args[0]))
        if self.app:
            return subprocess.CompletedProcess(argv, 1, "", "could not enter raw repl")
        out = []
        command = []
        for word in args + ["+"]:
            if word != "+":
                command.append(word)
                continue
            ok, text = self.command(command)
            out.append(text)
            if not ok:
                return subprocess.CompletedProcess(argv, 1, "".join(out), "mpremote: error")
            command = []
        return subprocess.CompletedProcess(argv, 0, "".join(out), "")

    def command(self, words):
        if words[0] == "exec":
            return self.exec(words[1])
        if words[0] == "reset":
            self.boot()
            return True, ""
        assert words[0] == "fs", words
        if words[1] == "touch":
            (self.flash / words[2][1:]).touch()
            return True, ""
        if words[1] == "rmdir":
            for path in words[2:]:
                try:
                    (self.flash / path[1:]).rmdir()
                except OSError as e:
                    return False, f"rmdir: {e}\n"
            return True, ""
        if words[1] == "rm":
            for path in words[2:]:
                target = self.flash / path[1:]
                if not target.is_file():
                    return False, f"rm: no such file {path}\n"
                target.unlink()
            return True, ""
        assert words[1] == "cp" and len(words) == 4 and words[3].startswith(":"), words
        target = self.flash / words[3][1:]
        if not target.parent.is_dir():
            return False, f"cp: no folder for {words[3]}\n"
        if words[3][1:] != self.drop:
            shutil.copyfile(words[2], target)
        return True, ""

    def exec(self, script):
        assert script.startswith(deploy.ROOT_LINE)
        text = script.replace(deploy.ROOT_LINE, f'R = "{self.flash}"\n', 1)
        proc = subprocess.run([toolchain.need("micropython"), "-c", text], capture_output=True,
                              text=True, timeout=60, env={"MICROPYPATH": str(self.flash)},
                              check=False)
        if proc.returncode:
            return False, proc.stdout + proc.stderr
        if script == deploy.PROBE:  # the unix port's own ABI and id are not a Pico's
            facts = deploy.script_answer(proc.stdout)
            facts.update(mpy=self.mpy, upy=self.upy, dev="e66141040396592b",
                         machine="Raspberry Pi Pico with RP2040")
            return True, deploy.MARK + json.dumps(facts) + "\n"
        return True, proc.stdout


class FakeLink:
    """The app's side of the protocol on a FakePico."""

    def __init__(self, pico):
        self.pico = pico
        self.keys = {}

    def hello(self):
        p = self.pico
        if not p.app:
            raise link.LinkError("no hello answer")
        return {"v": 1, "fw": toolchain.source_digest(p.flash), "dev": "e66141040396592b",
                "state": p.state, "upy": p.upy, "mpy": p.mpy, "build": "release"}

    def call(self, name, args=None, role=None):
        assert name == "maintenance" and role == "service" and "service" in self.keys
        self.pico.events.append(("protocol", name))
        if self.pico.state in ("RUNNING", "MIN_RATE"):
            raise link.Refused({"ok": 0, "reason": "WRONG_STATE", "message": "dosing"})
        (self.pico.flash / "maintenance").write_text("deploy\n")
        self.pico.boot()  # the board resets into a MAINTENANCE boot
        if self.pico.lose_answer:
            raise link.LinkError("maintenance: no authentic answer")
        return {"ok": 1}

    def close(self):
        pass


@pytest.fixture(scope="module")
def firmware_src(tmp_path_factory):
    """The firmware folder, with a stand-in main.py if the checkout has none yet."""
    if (toolchain.FIRMWARE / deploy.ENTRY).exists():
        return toolchain.FIRMWARE
    src = tmp_path_factory.mktemp("fw") / "firmware"
    shutil.copytree(toolchain.FIRMWARE, src, ignore=shutil.ignore_patterns("__pycache__"))
    (src / deploy.ENTRY).write_text("from board import rp2\nrp2.main()\n")
    return src


OLD_FILES = {"main.py": "print('old')\n", "app.mpy": "old", "app.py": "old source shadows",
             "boot.py": "old boot", "itb/gone.mpy": "old", "board/virtual.py": "unix only",
             "README.txt": "not code"}
DATA_FILES = {"data/slot_a": "A", "data/keys": "K", "data/boots": "B",
              "data/ledger/0000000001": "L"}


def old_flash(root, files=OLD_FILES):
    for rel, text in {**files, **DATA_FILES}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def deployer(pico, src, tmp_path, said):
    return deploy.Deployer(PORT, keys_for=lambda dev: SERVICE, runner=pico.runner,
                           open_board=pico.open_board, say=said.append, sleep=no_sleep,
                           src=src, record=tmp_path / "deploys.jsonl")


def kinds(calls):
    """Each mpremote run by what it did."""
    names = {deploy.PROBE: "probe", deploy.LIST: "list", deploy.DIGEST: "digest"}
    out = []
    for args in calls:
        if args[0] == "exec":
            out.append(names.get(args[1], "mkdir"))
        elif args[0] == "fs":
            out.append(f"{args[1]} {args[2]}" if args[1] != "cp" else "cp")
        else:
            out.append(args[0])
    return out


# ---------------------------------------------------------------------- the ABI
def test_mpy_abi_reads_the_arch_codes_from_real_mpy_cross_headers(tmp_path):
    abi = deploy.mpy_abi()
    assert f"mpy v{abi['version']}.{abi['sub']}" in abi["tool"]
    assert abi["archs"] == {"armv6m": 4, "armv7m": 5, "armv7emsp": 7, "rv32imc": 11, "x64": 2}
    assert abi["small_int_bits"] == 31
    # the board side: the unix port's _mpy decodes to the compiler's x64 code
    mp = subprocess.run([toolchain.need("micropython"), "-c",
                         "import sys; print(sys.implementation._mpy)"], capture_output=True,
                        text=True, check=True)
    version, sub, arch = deploy.board_abi(int(mp.stdout))
    assert (version, sub, arch) == (abi["version"], abi["sub"], abi["archs"]["x64"])
    with pytest.raises(deploy.DeployError, match="not a Pico") as e:  # no REPL to copy to
        deploy.check_abi(abi, int(mp.stdout))
    assert e.value.status == deploy.EXIT_REFUSED
    assert deploy.check_abi(abi, RP2040_MPY, "1.29.0") == "armv6m"
    assert deploy.check_abi(abi, RP2350_MPY, "1.29.0") == "armv7emsp"
    # a bytecode-only file carries no arch nor sub-version, whatever -march says
    src = tmp_path / "b.py"
    src.write_text("def f(x):\n    return x\n")
    out = tmp_path / "b.mpy"
    subprocess.run([toolchain.need("mpy-cross"), "-march=armv6m", "-o", str(out), str(src)],
                   check=True)
    assert deploy.mpy_header(out.read_bytes()) == (abi["version"], 0, 0, 31)  # byte 2 is 0
    with pytest.raises(ValueError):
        deploy.mpy_header(b"#!/u")


def test_an_unknown_architecture_or_another_version_is_refused_with_what_to_install():
    abi = deploy.mpy_abi()
    with pytest.raises(deploy.DeployError) as e:
        deploy.check_abi(abi, OLD_MPY, "1.22.2")
    assert e.value.status == deploy.EXIT_FAILED
    assert "MicroPython 1.29.x" in str(e.value) and "needs a MicroPython update" in str(e.value)
    with pytest.raises(deploy.DeployError, match="native architecture 9"):
        deploy.check_abi(abi, 6 | 3 << 8 | 9 << 10)  # xtensa: not a Pico


def test_an_incompatible_board_is_refused_before_anything_is_copied(firmware_src, tmp_path):
    flash = old_flash(tmp_path / "flash")
    before = {p: p.read_bytes() for p in flash.rglob("*") if p.is_file()}
    said = []
    pico = FakePico(flash, mpy=OLD_MPY, upy="1.22.2")  # the app answers hello
    with pytest.raises(deploy.DeployError) as e:
        deployer(pico, firmware_src, tmp_path, said).run()
    assert e.value.status == deploy.EXIT_FAILED and "v6.2" in str(e.value)
    assert pico.events == []  # no maintenance, no mpremote
    blank = FakePico(tmp_path / "blank", mpy=OLD_MPY, upy="1.22.2")
    blank.flash.mkdir()
    with pytest.raises(deploy.DeployError):
        deployer(blank, firmware_src, tmp_path, said).run()
    assert kinds(blank.calls) == ["probe"]  # read the REPL only
    assert {p: p.read_bytes() for p in flash.rglob("*") if p.is_file()} == before
    assert not (tmp_path / "deploys.jsonl").exists()


# ---------------------------------------------------------------------- the build
def test_the_build_is_main_py_as_source_and_mpy_for_the_rest(firmware_src, tmp_path):
    files, digest = deploy.build(tmp_path / "b", "armv6m", firmware_src)
    assert "main.py" in files and (tmp_path / "b/main.py").read_bytes() == (
        firmware_src / "main.py").read_bytes()
    assert not [f for f in files if "virtual" in f]
    assert {"app.mpy", "itb/manifest.mpy", "board/rp2.mpy", "board/ticks.mpy"} <= set(files)
    for f in files:
        if f != "main.py":
            assert f.endswith(".mpy") and (tmp_path / "b" / f).read_bytes()[:2] == b"M\x06"
    assert digest == toolchain.source_digest(tmp_path / "b")
    # no native code: the same bytes (and hash) for the Pico 2
    assert deploy.build(tmp_path / "c", "armv7emsp", firmware_src) == (files, digest)
    with pytest.raises(deploy.DeployError, match="not empty"):
        deploy.build(tmp_path / "c", "armv6m", firmware_src)


def test_a_stale_pins_py_is_never_deployed(tmp_path):
    """Found by the attacker: the build shipped whatever pins.py was there."""
    root = tmp_path / "repo"
    shutil.copytree(toolchain.FIRMWARE, root / "firmware",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(toolchain.FIRMWARE.parent / "hardware", root / "hardware")
    pins = root / "firmware" / "board" / "pins.py"
    pins.write_text(pins.read_text().replace("STEP = 2", "STEP = 3"))
    with pytest.raises(deploy.DeployError, match="pins.py is stale"):
        deploy.build(tmp_path / "b", "armv6m", root / "firmware")
    assert not (tmp_path / "b").exists()


def test_stale_files_never_include_data_and_folders_come_parents_first():
    remote = ["main.py", "app.py", "boot.py", "data/keys.py", "data", "/lib/x.mpy",
              "itb/units.mpy", "notes.txt"]
    assert deploy.stale_files(remote, ["main.py", "itb/units.mpy"]) == [
        "app.py", "boot.py", "lib/x.mpy"]
    assert deploy.folders(["a/b/c.mpy", "itb/x.mpy", "main.py"]) == ["a", "itb", "a/b"]


# ---------------------------------------------------------------------- the plan
def test_a_dry_run_lists_every_step_and_runs_nothing(firmware_src, tmp_path):
    pico = FakePico(old_flash(tmp_path / "flash"))
    said = []
    steps = deployer(pico, firmware_src, tmp_path, said).run(dry_run=True)
    assert pico.events == [] and pico.calls == []
    assert [s.kind for s in steps] == ["maintenance", "repl", "flag", "list", "remove", "mkdir",
                                       "copy", "verify", "record", "leave", "reset", "hello"]
    text = "\n".join(said)
    for line in ("fs touch :maintenance", "exec <probe script>", "fs cp ", "fs rm :maintenance",
                 f"connect {PORT} resume reset", "manifest on the board must give"):
        assert line in text
    assert "nothing was changed" in text
    blank = FakePico(tmp_path / "blank")
    blank.flash.mkdir()
    steps = deployer(blank, firmware_src, tmp_path, said).run(dry_run=True)
    assert blank.calls == [] and steps[0].kind == "repl"  # no app: no maintenance command


# ---------------------------------------------------------------------- deploys
@pytest.mark.sr("SR-27")
def test_a_whole_deploy_removes_stale_code_keeps_data_and_leaves_maintenance_last(
        firmware_src, tmp_path):
    flash = old_flash(tmp_path / "flash")
    data_before = {p: p.read_bytes() for p in (flash / "data").rglob("*") if p.is_file()}
    old_fw = toolchain.source_digest(flash)
    pico = FakePico(flash)
    said = []
    record = deployer(pico, firmware_src, tmp_path, said).run()
    assert pico.events[0] == ("protocol", "maintenance")  # over the protocol, first
    assert kinds(pico.calls) == ["probe", "touch :maintenance", "list", "rm :app.py", "mkdir",
                                 "cp", "digest", "rm :maintenance", "reset"]
    assert pico.calls[3] == ["fs", "rm", ":app.py", ":board/virtual.py", ":boot.py",
                             ":itb/gone.mpy"]
    assert not any(":data" in w for args in pico.calls for w in args)
    assert {p: p.read_bytes() for p in (flash / "data").rglob("*") if p.is_file()} == data_before
    assert (flash / "README.txt").exists() and not (flash / "maintenance").exists()
    files, digest = deploy.build(tmp_path / "b", "armv6m", firmware_src)
    assert deploy.manifest.files(str(flash), os.listdir, os.path.isdir) == files
    assert toolchain.source_digest(flash) == digest == record["new_fw"]
    assert pico.app and FakeLink(pico).hello()["fw"] == digest  # the new firmware answers
    line = json.loads((tmp_path / "deploys.jsonl").read_text().splitlines()[-1])
    assert line == record and line["old_fw"] == old_fw and line["device"] == "e66141040396592b"
    assert line["mpy_cross"].startswith("MicroPython v") and line["arch"] == "armv6m"
    assert f"deployed: board e66141040396592b runs fw {digest[:12]}" in said[-1]


def test_an_old_package_folder_that_would_shadow_a_module_is_removed(firmware_src, tmp_path):
    """Found by the attacker: an old layout's ``app/`` folder survived a verified deploy
    (the manifest ignores empty folders) and shadowed ``app.mpy``: the board could not
    boot. Folders the build does not need are removed after their code files."""
    flash = old_flash(tmp_path / "flash", {"app/__init__.py": "old", "app/core.py": "old",
                                           "old/deep/x.mpy": "old"})
    pico = FakePico(flash)
    deployer(pico, firmware_src, tmp_path, []).run()
    assert not (flash / "app").exists() and not (flash / "old").exists()
    rm = [args for args in pico.calls if args[:2] == ["fs", "rm"] and len(args) > 3][0]
    assert rm[rm.index("rmdir") - 2:] == ["+", "fs", "rmdir", ":old/deep", "+", "fs", "rmdir",
                                          ":app", "+", "fs", "rmdir", ":old"]
    assert deploy.stale_dirs(["app", "data", "data/ledger", "itb", "old", "old/deep"],
                             ["itb/x.mpy", "main.py"]) == ["old/deep", "app", "old"]


def test_a_folder_holding_other_files_stops_the_deploy_in_maintenance(firmware_src, tmp_path):
    flash = old_flash(tmp_path / "flash", {"app/__init__.py": "old", "app/notes.txt": "keep"})
    pico = FakePico(flash)
    with pytest.raises(link.LinkError):
        deployer(pico, firmware_src, tmp_path, []).run()
    assert (flash / "maintenance").exists() and (flash / "app" / "notes.txt").exists()


def test_a_code_file_under_data_neither_goes_nor_fails_the_verification(firmware_src,
                                                                        tmp_path):
    """Found by the attacker: a ``.py`` under /data counted in the on-board digest, so
    every deploy failed verification (the board stuck in MAINTENANCE)."""
    flash = old_flash(tmp_path / "flash")
    (flash / "data" / "bench_notes.py").write_text("# notes\n")
    record = deployer(FakePico(flash), firmware_src, tmp_path, []).run()
    assert (flash / "data" / "bench_notes.py").exists()
    assert record["new_fw"] == toolchain.source_digest(flash)


def test_a_file_where_the_store_folder_belongs_stops_the_deploy(firmware_src, tmp_path):
    """Found by the attacker (round 2): with a file /data every boot fails, and the
    deploy did not notice. It stops before copying anything (and removes nothing)."""
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "data").write_text("not a folder")
    pico = FakePico(flash)
    with pytest.raises(deploy.DeployError, match="is a file"):
        deployer(pico, firmware_src, tmp_path, []).run()
    assert kinds(pico.calls) == ["probe"] and (flash / "data").read_text() == "not a folder"


def test_a_board_script_answer_is_its_own_line_not_the_banner():
    """Found by the attacker: the MAINTENANCE banner starts "ITB " like the answers did."""
    banner = "ITB MAINTENANCE: not dosing. Deploy with itbctl deploy\n"
    assert deploy.script_answer(banner + deploy.MARK + '{"a": 1}\n') == {"a": 1}
    for text in (banner, deploy.MARK + "{not json\n"):
        with pytest.raises(deploy.MpremoteError):
            deploy.script_answer(text)


def test_a_blank_board_gets_the_flag_before_any_copy(firmware_src, tmp_path):
    (tmp_path / "flash").mkdir()
    pico = FakePico(tmp_path / "flash", mpy=RP2350_MPY)
    said = []
    record = deployer(pico, firmware_src, tmp_path, said).run()
    assert ("protocol", "maintenance") not in pico.events
    assert kinds(pico.calls) == ["probe", "touch :maintenance", "list", "mkdir", "cp", "digest",
                                 "rm :maintenance", "reset"]
    assert record["arch"] == "armv7emsp" and record["old_fw"] is None
    assert any("blank (MicroPython only)" in s for s in said)


@pytest.mark.sr("SR-27")
def test_a_maintenance_answer_lost_to_the_reset_is_found_in_the_repl(firmware_src, tmp_path):
    pico = FakePico(old_flash(tmp_path / "flash"), lose_answer=True)
    said = []
    record = deployer(pico, firmware_src, tmp_path, said).run()
    assert record["new_fw"] == toolchain.source_digest(pico.flash)
    assert any("no answer to maintenance" in s for s in said)
    assert any("in a MAINTENANCE boot" in s for s in said)


@pytest.mark.sr("SR-27")
def test_an_incomplete_copy_stays_in_maintenance(firmware_src, tmp_path):
    pico = FakePico(old_flash(tmp_path / "flash"), drop="itb/units.mpy")
    with pytest.raises(deploy.DeployError) as e:
        deployer(pico, firmware_src, tmp_path, []).run()
    assert e.value.status == deploy.EXIT_FAILED and "incomplete" in str(e.value)
    assert kinds(pico.calls)[-1] == "digest"  # no rm :maintenance, no reset
    assert (pico.flash / "maintenance").exists()
    pico.boot()
    assert not pico.app  # a power cycle boots into MAINTENANCE again, not the half copy


# ---------------------------------------------------------------------- on the virtual board
@pytest.mark.sr("SR-27")
def test_a_running_pump_is_refused_and_nothing_runs(board, virtual_board, tmp_path):
    start_therapy(board)
    keys = dict(board.keys)
    board.close()
    calls = []
    d = deploy.Deployer(virtual_board.url, keys_for=lambda dev: keys,
                        runner=lambda argv, timeout: calls.append(argv), say=lambda t: None,
                        sleep=no_sleep, record=tmp_path / "r.jsonl")
    with pytest.raises(deploy.DeployError) as e:
        d.run()
    assert e.value.status == deploy.EXIT_REFUSED and "stops it first" in str(e.value)
    assert calls == []
    with link.Board(virtual_board.url, keys=keys, timeout=5) as b:
        assert b.status()["state"] == "RUNNING"


@pytest.mark.sr("SR-27")
def test_maintenance_is_entered_through_the_protocol(board, virtual_board, firmware_src,
                                                     tmp_path):
    """The virtual board has no REPL: a FakePico plays it (and loses a file, so the
    deploy stops at the verification and the board stays in MAINTENANCE)."""
    keys = dict(board.keys)
    board.close()
    (tmp_path / "flash").mkdir()
    repl = FakePico(tmp_path / "flash", mpy=RP2040_MPY, drop="app.mpy")
    d = deploy.Deployer(virtual_board.url, keys_for=lambda dev: keys,
                        runner=lambda argv, t: repl.runner(argv[:4] + [PORT] + argv[5:], t),
                        open_board=as_pico,
                        say=lambda t: None, sleep=no_sleep, src=firmware_src,
                        record=tmp_path / "r.jsonl")
    with pytest.raises(deploy.DeployError, match="incomplete"):
        d.run()
    assert kinds(repl.calls)[0] == "probe"
    with link.Board(virtual_board.url, keys=keys, timeout=5) as b:
        assert b.status()["state"] == "MAINTENANCE"


def as_pico(port, timeout):
    """A link to the virtual board whose hello reports a Pico's .mpy ABI (it is the
    unix port's otherwise, which deploy refuses: it has no REPL)."""
    b = link.Board(port, timeout=timeout, retries=0)
    hello = b.hello

    def pico_hello():
        info = hello()
        info["mpy"] = RP2040_MPY
        return info

    b.hello = pico_hello
    return b


def test_deploy_refuses_a_virtual_board_at_once(board, virtual_board, tmp_path, capsys):
    """Found by the new-user trial: deploy to a virtual board sent MAINTENANCE and then
    waited 10 minutes for a REPL that does not exist. It is refused from hello."""
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir()
    link.write_keys(keys_dir / f"{board.info['dev']}.json", board.info["dev"], board.keys)
    board.close()
    for extra in (["--dry-run"], ["--yes"]):
        assert itbctl.main(["deploy", "--port", virtual_board.url, "--keys", str(keys_dir),
                            "--record", str(tmp_path / "r.jsonl"), *extra]) == 3
        assert "not a Pico" in capsys.readouterr().err
    with link.Board(virtual_board.url, keys=dict(board.keys), timeout=5) as b:
        assert b.status()["state"] == "UNPROGRAMMED"


def test_a_port_with_no_board_is_not_a_blank_board(tmp_path, capsys):
    """Found by the new-user trial: a missing port was reported as a blank board."""
    missing = str(tmp_path / "ttyACM9")
    assert itbctl.main(["deploy", "--port", missing, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "no board on" in err and "blank" not in err


def test_itbctl_deploy_dry_run_and_refusals_before_anything_changes(board, virtual_board,
                                                                     tmp_path, capsys,
                                                                     monkeypatch):
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir()
    link.write_keys(keys_dir / f"{board.info['dev']}.json", board.info["dev"], board.keys)
    board.close()
    calls = []
    monkeypatch.setattr(deploy, "run_mpremote", lambda argv, timeout: calls.append(argv))
    monkeypatch.setattr(deploy, "PICO_ARCHS", deploy.PICO_ARCHS + ("x64",))  # a Pico here
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))  # not a terminal
    url = virtual_board.url
    assert itbctl.main(["deploy", "--port", url]) == itbctl.EXIT_USAGE
    assert "nothing was done" in capsys.readouterr().err
    assert itbctl.main(["deploy", "--port", url, "--dry-run", "--keys", str(keys_dir),
                        "--record", str(tmp_path / "r.jsonl")]) == 0
    out = capsys.readouterr().out
    assert "state UNPROGRAMMED" in out and "fs touch :maintenance" in out
    assert "would fail" not in out  # the service key was found in the folder
    # no key file for this board: refused before the board is changed
    assert itbctl.main(["deploy", "--port", url, "--yes", "--keys", str(tmp_path),
                        "--record", str(tmp_path / "r.jsonl")]) == itbctl.EXIT_USAGE
    assert "no key file" in capsys.readouterr().err
    assert calls == [] and not (tmp_path / "r.jsonl").exists()
    assert itbctl.main(["--port", url, "--keys", str(keys_dir), "--json", "status"]) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "UNPROGRAMMED"
    # --port and --keys also after the command, as deploy takes them (new-user trial),
    # two-word commands included
    assert itbctl.main(["--json", "status", "--port", url, "--keys", str(keys_dir)]) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "UNPROGRAMMED"
    assert itbctl.main(["--json", "--yes", "time", "sync", "--port", url, "--keys",
                        str(keys_dir)]) == 0
    capsys.readouterr()
