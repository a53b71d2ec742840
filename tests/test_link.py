"""The host link against the virtual board: the real firmware (app.py on
board/virtual.py) in the MicroPython unix port, over the launcher's relay.

What issue 6 asks to see in CI: the board starts under MicroPython, keys are
provisioned, a therapy is programmed with two-phase confirmation (SR-15), a
replayed clinician frame is refused, and a timed-out-then-retried bolus is
delivered once (SR-26), also across a power cut."""

import json
import os
import stat
from pathlib import Path

import pytest
from itb import manifest
from itb import protocol as pr
from itb import runner as rn

from host_tools import export as ex
from host_tools import itbctl, link, toolchain
from host_tools.fixtures import start_therapy
from host_tools.vboard import VirtualBoard

HOUR = 3_600_000


def setup_therapy(board, dose_ng=400_000):
    return start_therapy(board, dose_ng)


def step(board, ms):
    return board.call("test_clock", {"mode": "stepped", "advance_ms": ms}, role="service")


def strokes_by_source(board):
    records, _res = board.export()
    out = {}
    for _seq, _rtc, rec in records:
        if rec["k"] == "stroke":
            out[rec["src"]] = out.get(rec["src"], 0) + 1
    return out


class LossyPort:
    """A pyserial port whose next ``drop`` board->host reads are lost (the board's
    answer never arrives: the host times out)."""

    def __init__(self, inner):
        self.inner = inner
        self.drop = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def read(self, n):
        data = self.inner.read(n)
        if self.drop and data:
            if b"\x00" in data:
                self.drop -= 1
            return b""
        return data


@pytest.mark.sr("SR-15")
def test_program_two_phase_and_the_trace_replays(board):
    """Keys provisioned, refill/prime/program through prepare + confirm; the
    exported ledger, as a trace, replays byte for byte in CPython (the board ran
    the same controller code)."""
    info = board.hello()
    assert info["roles"] == ["clinician", "patient", "service"] and info["build"] == "dev"
    # the manifest hash is the deployed image's (the cross-compiled files)
    image = str(toolchain.firmware_image())
    assert info["fw"] == manifest.digest(image, os.listdir, os.path.isdir, os.path.getsize)
    res = setup_therapy(board)
    assert res["ok"] and res["command"] == "program"
    st = board.status()
    assert st["state"] == "RUNNING" and st["daily_dose_ng"] == 400_000
    step(board, 6 * HOUR)
    st = board.status()
    assert st["strokes"] == 400 * 6 // 24 // 4  # 4 ug strokes at 2000 ug/mL
    records, result = board.export()
    lines = ex.to_trace(records, result["cfg"])
    assert rn.replay(lines) == lines


@pytest.mark.sr("SR-15")
def test_a_therapy_change_without_confirm_changes_nothing(board):
    setup_therapy(board)
    prep = board.call("prepare", {"command": "set_daily_dose", "args": {"daily_dose_ng": 450_000}})
    assert prep["ok"] and prep["effect"]["daily_dose_ng"] == 450_000
    assert board.status()["daily_dose_ng"] == 400_000
    with pytest.raises(link.Refused) as e:
        board.call("set_daily_dose", {"daily_dose_ng": 450_000})
    assert e.value.reason == "NEEDS_CONFIRM"
    with pytest.raises(link.Refused) as e:
        board.call("confirm", {"hash": prep["hash"] ^ 1})
    assert e.value.reason == "HASH_MISMATCH"
    assert board.status()["daily_dose_ng"] == 400_000


@pytest.mark.sr("SR-14")
def test_a_replayed_clinician_frame_is_refused_and_changes_nothing(board):
    """The same authentic frame twice: the second is REPLAYED; after a new hello
    the old frame is cross-session (WRONG_SESSION); neither reaches the controller."""
    setup_therapy(board)
    board.hello()
    key = board.keys["clinician"]
    nonce = board.info["nonce"]
    board.counter += 1
    frame = pr.command(key, "clinician", nonce, board.counter, board.new_id(),
                       board._board_now() + 10_000, "prepare",
                       {"command": "bolus", "args": {"dose_ng": 20_000, "duration_ms": HOUR}})
    answers = []
    for _ in range(2):
        board._send(frame)
        answers.append(pr.response(board._receive(_deadline()), key, "clinician", nonce,
                                   board.counter)["res"])
    assert answers[0]["ok"] == 1 and "hash" in answers[0]
    assert answers[1]["ok"] == 0 and answers[1]["reason"] == "REPLAYED"
    before = board.status()
    board.hello()
    board._send(frame)
    late = board._receive(_deadline())
    res = pr.response(late, key, "clinician", nonce, pr.parse_body(frame[2:-16])["c"])["res"]
    assert res["reason"] == "WRONG_SESSION"
    after = board.status()
    assert after["board"]["refused"] == {"REPLAYED": 1, "WRONG_SESSION": 1}
    for k in ("state", "daily_dose_ng", "strokes", "window_ng", "program"):
        assert before[k] == after[k]


def _deadline():
    import time

    return time.monotonic() + 5


@pytest.mark.sr("SR-26")
def test_a_timed_out_then_retried_bolus_is_delivered_once(board):
    """The confirm's answer is lost; the host times out and sends the command again
    under the same id: the board answers with the recorded result and the bolus
    strokes run once."""
    setup_therapy(board)
    lossy = LossyPort(board.ser)
    board.ser = lossy
    board.timeout = 0.5
    prep = board.call("prepare", {"command": "bolus", "args": {"dose_ng": 40_000,
                                                               "duration_ms": HOUR}})
    lossy.drop = 1
    res = board.call("confirm", {"hash": prep["hash"]})
    assert res["ok"] == 1 and res.get("replayed") == 1
    board.timeout = 5
    step(board, 2 * HOUR)
    assert strokes_by_source(board)["bolus"] == prep["effect"]["bolus_strokes"]


@pytest.mark.sr("SR-26")
def test_a_bolus_retried_across_a_power_cut_is_delivered_once(board, virtual_board):
    """The answer is lost and the board loses power before the host retries: the
    retry (new session, same id) gets the result recorded before the cut."""
    setup_therapy(board)
    prep = board.call("prepare", {"command": "bolus", "args": {"dose_ng": 40_000,
                                                               "duration_ms": HOUR}})
    cid = board.new_id()
    lossy = LossyPort(board.ser)
    board.ser = lossy
    board.timeout = 0.3
    board.retries = 0
    lossy.drop = 1
    with pytest.raises(link.LinkError):
        board.call("confirm", {"hash": prep["hash"]}, cid=cid)
    virtual_board.power_cut()
    board.timeout = 5
    board.retries = 3
    board.hello()
    res = board.call("confirm", {"hash": prep["hash"]}, cid=cid)
    assert res["ok"] == 1 and res.get("replayed") == 1
    board.call("test_clock", {"mode": "stepped"}, role="service")
    step(board, 2 * HOUR)
    # the bolus was interrupted by the reset (never resumed), and never given twice
    assert strokes_by_source(board).get("bolus", 0) <= prep["effect"]["bolus_strokes"]
    records, result = board.export()
    lines = ex.to_trace(records, result["cfg"])
    assert any(json.loads(x)["k"] == "power_on" for x in lines)
    assert rn.replay(lines) == lines


@pytest.mark.sr("SR-14")
def test_roles_are_enforced(board):
    setup_therapy(board)
    with pytest.raises(link.Refused) as e:
        board.call("prepare", {"command": "set_daily_dose", "args": {"daily_dose_ng": 450_000}},
                   role="patient")
    assert e.value.reason == "WRONG_ROLE"
    with pytest.raises(link.Refused) as e:
        board.call("test_clock", {"mode": "real"}, role="clinician")
    assert e.value.reason == "WRONG_ROLE"
    with pytest.raises(link.Refused) as e:
        board.call("maintenance", role="clinician")
    assert e.value.reason == "WRONG_ROLE"
    assert board.status(role="patient")["state"] == "RUNNING"


def test_keys_are_accepted_only_while_provisioning_and_never_sent_back(tmp_path):
    with VirtualBoard(tmp_path / "b", provision=False) as vb:
        b = link.Board(vb.url, timeout=5)
        info = b.hello()
        assert info["provisioning"] == 0 and info["roles"] == []
        with pytest.raises(link.Refused) as e:
            b.provision(link.new_keys())
        assert e.value.reason == "NOT_PROVISIONING"
        with pytest.raises(link.LinkError):
            b.call("status", role="clinician")
        b.close()
    with VirtualBoard(tmp_path / "b", provision=True) as vb:
        b = link.Board(vb.url, timeout=5)
        keys = link.new_keys()
        b.provision(keys)
        seen = json.dumps(b.hello()) + json.dumps(b.status())
        records, _ = b.export()
        seen += json.dumps(records)
        for key in keys.values():
            assert key.hex() not in seen
        b.close()
    ledger = b"".join(p.read_bytes() for p in (tmp_path / "b" / "fs").rglob("*")
                      if p.is_file() and p.name != "keys")
    for key in keys.values():
        assert key.hex().encode() not in ledger


def test_release_build_has_no_test_clock(tmp_path):
    with VirtualBoard(tmp_path / "b", provision=True, dev=False) as vb:
        b = link.Board(vb.url, timeout=5)
        b.provision(link.new_keys())
        assert b.hello()["build"] == "release"
        for name, args in (("test_clock", {"mode": "stepped"}), ("inject", {"fault": "stall"})):
            with pytest.raises(link.Refused) as e:
                b.call(name, args, role="service")
            assert e.value.reason == "NOT_DEV_BUILD"
        b.close()


def test_key_files_are_private(tmp_path):
    path = tmp_path / "keys" / "k.json"
    keys = link.new_keys()
    link.write_keys(path, "dev1", keys)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert link.load_keys(path) == ("dev1", keys)
    with pytest.raises(FileExistsError):
        link.write_keys(path, "dev1", keys)
    os.chmod(path, 0o644)
    with pytest.raises(link.LinkError, match="accessible by others"):
        link.load_keys(path)
    with pytest.raises(link.LinkError, match="no key file"):
        link.load_keys(tmp_path / "missing.json")


def test_bad_frames_are_dropped_and_counted(board):
    board.ser.write(b"\x00\x05\x11\x00" + b"\x07" * 3000 + b"\x00" + pr.pack(b"\x03\x01xx")[:-3]
                    + b"\x00")
    board.ser.flush()
    st = board.status()
    dropped = st["board"]["dropped"]
    assert dropped["bad_cobs"] + dropped["short"] + dropped["bad_crc"] >= 1
    assert dropped["too_long"] == 1


def test_itbctl_end_to_end(virtual_board, tmp_path, capsys):
    """The CLI a clinician or engineer uses: provision, program from TOML with
    --yes, a refusal exits 3 with its reason, a bad unit exits 64 before sending."""
    keys = tmp_path / "keys.json"
    base = ["--port", virtual_board.url, "--keys", str(keys)]
    assert itbctl.main(base + ["keys", "provision"]) == 0
    assert stat.S_IMODE(os.stat(keys).st_mode) == 0o600
    assert itbctl.main(base + ["--yes", "refill", "--aspirated", "0ml", "--volume", "20ml",
                               "--concentration", "2000"]) == 0
    assert itbctl.main(base + ["--yes", "prime", "--contents", "drug"]) == 0
    prog = Path(__file__).resolve().parent.parent / "examples" / "board" / "program.toml"
    assert itbctl.main(base + ["--yes", "program", str(prog)]) == 0
    out = capsys.readouterr().out
    assert "120.0 ug/day = 0.0600 mL/day" in out and "low reservoir in" in out
    assert itbctl.main(base + ["--yes", "set-daily-dose", "--daily-dose", "500ug"]) == 3
    assert "UP_CAP" in capsys.readouterr().err
    assert itbctl.main(base + ["--yes", "set-daily-dose", "--daily-dose", "500"]) == 64
    assert "needs a unit" in capsys.readouterr().err
    assert itbctl.main(base + ["--json", "status"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["state"] == "RUNNING" and st["daily_dose_ng"] == 120_000
    trace = tmp_path / "t.jsonl"
    assert itbctl.main(base + ["log", "export", "--format", "trace", "--out", str(trace)]) == 0
    lines = trace.read_text().splitlines()
    assert rn.replay(lines) == lines
    assert itbctl.main(base + ["time", "sync"]) == 0


class ForgingPort(LossyPort):
    """A keyless man in the middle: every hello answer from the board is replaced by
    an untagged one claiming ``last_id`` 0 (so the host would reuse ids)."""

    def read(self, n):
        data = self.inner.read(n)
        if b"\x00" not in data:
            return data
        out = []
        for payload in pr.Deframer().feed(data):
            if payload[0] in (pr.HELLO_REPLY, pr.HELLO_AUTH):
                info = pr.parse_body(pr.opened(payload)[2])
                info["last_id"] = 0
                payload = pr.seal(pr.HELLO_REPLY, "", pr.dumps(info))
            out.append(pr.pack(payload))
        return b"".join(out)


@pytest.mark.sr("SR-26")
def test_a_host_with_keys_trusts_no_unauthenticated_hello(board):
    """Found by the attacker: a forged hello lowered ``last_id``, the host reused an
    id and reported the old result of another command as its emergency stop. Now
    the host takes only a hello tagged with its key and echoing its challenge."""
    setup_therapy(board)
    board.ser = ForgingPort(board.ser)
    board.timeout, board.retries = 0.3, 1
    with pytest.raises(link.LinkError, match="hello"):
        board.hello()


@pytest.mark.sr("SR-26")
def test_a_reused_id_is_never_reported_as_this_commands_result(board):
    """Found by both attack rounds: a host reusing an id (a forged hello, or two hosts)
    got another command's recorded result as its own, even a prepare of another
    bolus (same name). A recorded result carries its command's CRC: the host takes
    only its own, and sends its command again under a new id."""
    setup_therapy(board)
    ack = board.call("acknowledge", {"code": "all"})
    res = board.call("emergency_stop", cid=ack["id"])
    assert res["name"] == "emergency_stop" and res["id"] != ack["id"]
    assert board.status()["state"] == "EMERGENCY_STOPPED"
    board.call("resume", role="clinician", check=False)  # (two-phase: refused, no matter)
    other = board.call("prepare", {"command": "port_injection", "args": {"dose_ng": 50_000}})
    mine = board.call("prepare", {"command": "port_injection", "args": {"dose_ng": 10_000}},
                      cid=other["id"])
    assert mine["id"] != other["id"] and mine.get("replayed") is None
    assert mine["hash"] != other["hash"]
