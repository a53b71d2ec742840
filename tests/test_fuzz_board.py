"""Fuzzing the virtual board (the real firmware in MicroPython) through its serial
port: random bytes, random frames with a good CRC, and, most important,
authentic frames (valid CRC, valid HMAC, this session, fresh counter, live
expiry) whose contents are mutated: wrong types, out-of-range and huge integers,
missing and extra fields, deep nesting, oversize, unknown names, bad UTF-8.

Invariants (issue 6; SR-14: bad input changes nothing): the board never crashes
or resets (same boot id, no launcher restart), answers every authentic frame
within the timeout with a refusal carrying a reason, keeps its therapy state
exactly as it was, and its heap stays bounded. Counts are printed
to the test log. ``ITB_FUZZ_SCALE`` multiplies the numbers of cases (nightly)."""

import json
import os
import random
import time

import pytest
from itb import commands as cmds
from itb import protocol as pr

from host_tools import link
from host_tools.fixtures import start_therapy
from host_tools.testkit.machine import CONFIG
from host_tools.vboard import VirtualBoard

SCALE = int(os.environ.get("ITB_FUZZ_SCALE", "1"))
THERAPY = ("state", "daily_dose_ng", "program", "plan", "caps_ng", "reservoir_nl",
           "concentration_ug_per_ml", "strokes", "window_ng", "alarms")
WEIRD = [None, True, False, -1, 0, 1, 2**31, 2**63, 10**400, -10**400, 1.5, float("inf"),
         "", "x" * 300, "\u00e9\u20ac", [], [1, 2], {}, {"a": 1}, [[[[[[[[1]]]]]]]]]


def _json(obj):
    try:
        return json.dumps(obj, separators=(",", ":"), allow_nan=True).encode()
    except (ValueError, OverflowError):
        return b'{"x":1}'


def mutated_body(rng, nonce, counter, exp):
    """A command body that must be refused, and what was done to it."""
    name = rng.choice(sorted(cmds.COMMANDS) + sorted(cmds.board_table()))
    msg = {"s": nonce, "c": counter, "exp": exp, "id": rng.randint(1, 2**31 - 1),
           "name": name, "args": {}}
    for spec in cmds.params(name):
        msg["args"][spec["name"]] = spec["default"] if spec["default"] is not None else 1
    how = rng.randrange(10)
    if how == 0:  # a wrong type or odd value for one argument
        if msg["args"]:
            msg["args"][rng.choice(sorted(msg["args"]))] = rng.choice(WEIRD)
        else:
            msg["args"]["bogus"] = 1
    elif how == 1:  # out of range for its spec
        specs = [s for s in cmds.params(name) if s["kind"] == cmds.INT]
        if specs:
            s = rng.choice(specs)
            msg["args"][s["name"]] = rng.choice([s["lo"] - 1, s["hi"] + 1, -(2**70), 2**70])
        else:
            msg["args"] = rng.choice(WEIRD[:12])
    elif how == 2:  # a missing message field
        del msg[rng.choice(["id", "name", "exp", "c", "s"])]
    elif how == 3:  # an extra field
        msg[rng.choice(["role", "zz", "args2", "t"])] = rng.choice(WEIRD)
    elif how == 4:  # deep nesting
        depth = rng.randint(7, 400)
        return b'{"s":"%s","c":%d,"exp":%d,"id":1,"name":"status","args":' % (
            nonce.encode(), counter, exp) + b"[" * depth + b"]" * depth + b"}", "deep"
    elif how == 5:  # oversize
        msg["args"] = {"pad": "y" * rng.randint(1800, 2100)}
    elif how == 6:  # an unknown name
        msg["name"] = rng.choice(["", "x" * 40, "hello", "__init__", "_do_program", "status "])
    elif how == 7:  # bad UTF-8 or not JSON at all
        return rng.choice([b"\xff\xfe{", b'{"s":"' + nonce.encode() + b'\xc3"}', b"[]", b"1",
                           b"{" * 3, b"null"]), "not json"
    elif how == 8:  # message-layer fields of the wrong type
        msg[rng.choice(["c", "exp", "id"])] = rng.choice([str(counter), 1.0, None, [counter]])
    else:  # a prepare wrapping a mutated command
        inner = rng.choice(sorted(n for n in cmds.COMMANDS if cmds.is_two_phase(n)))
        msg["name"] = "prepare"
        msg["args"] = {"command": inner, "args": {"bogus": rng.choice(WEIRD)}}
    return _json(msg), f"mutation {how}"


def _still_invalid(body, nonce, counter, now):
    """True unless ``body`` happens to be a schema-valid command (then it is not sent)."""
    try:
        msg = json.loads(body)
        if sorted(msg) != ["args", "c", "exp", "id", "name", "s"] or msg["s"] != nonce \
                or type(msg["c"]) is not int or type(msg["exp"]) is not int \
                or type(msg["id"]) is not int or not 1 <= msg["id"] < 2**31:
            return True
        cmds.validate(msg["name"], msg.get("args", {}))
        if msg["name"] == "prepare":
            cmds.validate(msg["args"]["command"], msg["args"]["args"])
    except Exception:  # noqa: BLE001 - any failure means invalid, which is what we want
        return True
    return False


@pytest.fixture(scope="module")
def fuzz_board(tmp_path_factory):
    with VirtualBoard(tmp_path_factory.mktemp("fuzz") / "b", provision=True,
                      config=CONFIG) as vb:
        b = link.Board(vb.url, timeout=5)
        b.hello()
        b.provision(link.new_keys())
        start_therapy(b)
        b.call("test_clock", {"mode": "stepped"}, role="service")
        yield vb, b
        b.close()


def _therapy(b):
    st = b.status()
    return {k: st[k] for k in THERAPY}, st["board"]


def test_noise_and_crc_valid_garbage_change_nothing(fuzz_board, capsys):
    vb, b = fuzz_board
    rng = random.Random(6)
    before, board0 = _therapy(b)
    sent = {"noise_bytes": 0, "crc_frames": 0}
    for _ in range(200 * SCALE):
        blob = bytes(rng.randrange(256) for _ in range(rng.randint(1, 600)))
        b.ser.write(blob)
        sent["noise_bytes"] += len(blob)
    for _ in range(300 * SCALE):
        kind = rng.choice([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 200])
        payload = bytes([kind, rng.randrange(5)]) + bytes(rng.randrange(256) for _ in
                                                          range(rng.randint(0, 300)))
        b.ser.write(b"\x00" + pr.pack(payload))
        sent["crc_frames"] += 1
    b.ser.flush()
    time.sleep(0.5)
    b.inbox = []
    b.deframer = pr.Deframer()
    b.hello()
    after, board1 = _therapy(b)
    with capsys.disabled():  # the counts go to the CI log
        print("\nfuzz noise:", sent, "board dropped:", board1["dropped"], "refused:",
              board1["refused"])
    assert after == before
    assert board1["boot"] == board0["boot"] and vb.resets == {"exit": 0, "watchdog": 0,
                                                              "power_cut": 0}


def test_authentic_frames_with_mutated_contents_are_refused(fuzz_board, capsys):
    """Every mutated authentic frame gets an authentic refusal with a reason, in
    time; the therapy state is unchanged; the heap stays bounded."""
    vb, b = fuzz_board
    rng = random.Random(7)
    b.hello()
    before, board0 = _therapy(b)
    reasons = {}
    internal = []
    skipped = 0
    n = 400 * SCALE
    worst = 0.0
    for _ in range(n):
        role = rng.choice(pr.ROLE_CODES[1:])
        b.counter += 1
        exp = b._board_now() + 10_000
        body, _how = mutated_body(rng, b.info["nonce"], b.counter, exp)
        if not _still_invalid(body, b.info["nonce"], b.counter, exp):
            skipped += 1
            continue
        payload = bytes((pr.COMMAND, pr.ROLE_CODES.index(role))) + body
        payload += pr.hmac_sha256(b.keys[role], payload)[:pr.TAG_BYTES]
        if len(payload) > pr.MAX_PAYLOAD:
            reasons["(not sendable: over the frame cap)"] = reasons.get(
                "(not sendable: over the frame cap)", 0) + 1
            continue
        t0 = time.monotonic()
        b._send(payload)
        got = b._receive(time.monotonic() + 5)
        worst = max(worst, time.monotonic() - t0)
        assert got is not None, f"no answer to {body[:200]!r}"
        if got[0] == pr.REFUSAL:  # authentic, but its counter could not be read back
            res = pr.parse_body(got[2:])
        else:
            res = pr.response(got, b.keys[role], role, b.info["nonce"], b.counter)["res"]
        assert res["ok"] == 0 and res["reason"], (body[:200], res)
        reasons[res["reason"]] = reasons.get(res["reason"], 0) + 1
        if res["reason"] == "INTERNAL":
            internal.append((body[:300], res.get("message")))
    after, board1 = _therapy(b)
    with capsys.disabled():
        print(f"\nfuzz authentic: {n} cases, {skipped} valid by chance (not sent), worst"
              f" answer {worst * 1000:.1f} ms, reasons {dict(sorted(reasons.items()))}, heap"
              f" {board0.get('heap')} -> {board1.get('heap')}")
    assert after == before
    assert board1["boot"] == board0["boot"] and vb.resets["exit"] == vb.resets["watchdog"] == 0
    assert not internal, internal[:5]
    if "heap" in board1:
        assert board1["heap"][1] > 64 * 1024  # free heap left (of 512 KB)
