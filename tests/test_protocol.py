"""The protocol (firmware/itb/protocol.py, docs/protocol.md, issue 6).

Frame layer and HMAC: published test vectors, round trips, the table CRC, the
find-based COBS encoder and deframer against byte-by-byte references, and a
deframer that drops and counts every bad frame and never hands one on.

Message layer: a host (``command``/``response``) and a board ``Gate`` joined in
memory (``Pair``, like h11's ConnectionPair): hello, accepted commands, and every
refusal kind (replayed, reordered, expired, bad expiry, forged, cross-session,
wrong role key, no key, malformed) refused with its reason, the gate's state
unchanged, and answered under the role's key only when the frame was authentic.
Everything again in the MicroPython unix port, cross-compiled as deployed."""

import hashlib
import hmac
import os
import subprocess

import pytest
from helpers import compile_firmware, tool
from hypothesis import given
from hypothesis import strategies as st
from itb import protocol as pr

# RFC 4231 section 4: (key, data, HMAC-SHA-256; case 5 is truncated to 128 bits)
RFC4231 = [
    (b"\x0b" * 20, b"Hi There",
     "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
    (b"Jefe", b"what do ya want for nothing?",
     "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
    (b"\xaa" * 20, b"\xdd" * 50,
     "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"),
    (bytes(range(1, 26)), b"\xcd" * 50,
     "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"),
    (b"\x0c" * 20, b"Test With Truncation", "a3b6167473100ee06e0c796c2955552b"),
    (b"\xaa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First",
     "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"),
    (b"\xaa" * 131, b"This is a test using a larger than block-size key and a larger than "
     b"block-size data. The key needs to be hashed before being used by the HMAC algorithm.",
     "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"),
]

# COBS (Cheshire and Baker 1999; the examples usually quoted with it)
COBS = [
    (b"\x00", b"\x01\x01"),
    (b"\x00\x00", b"\x01\x01\x01"),
    (b"\x11\x22\x00\x33", b"\x03\x11\x22\x02\x33"),
    (b"\x11\x22\x33\x44", b"\x05\x11\x22\x33\x44"),
    (b"\x11\x00\x00\x00", b"\x02\x11\x01\x01\x01"),
    (bytes(range(1, 255)), b"\xff" + bytes(range(1, 255)) + b"\x01"),
    (bytes(range(0, 255)), b"\x01\xff" + bytes(range(1, 255)) + b"\x01"),
    (bytes(range(1, 256)), b"\xff" + bytes(range(1, 255)) + b"\x02\xff"),
]


@pytest.mark.parametrize("key, data, tag", RFC4231)
def test_hmac_sha256_rfc4231(key, data, tag):
    got = pr.hmac_sha256(key, data).hex()
    assert got[: len(tag)] == tag
    assert got == hmac.new(key, data, hashlib.sha256).hexdigest()


@given(key=st.binary(max_size=200), msg=st.binary(max_size=300))
def test_hmac_equals_the_standard_library(key, msg):
    """Invariant: HMAC over hashlib.sha256 equals CPython's hmac for any key length
    (shorter than, equal to and longer than the 64-byte block) and any message."""
    assert pr.hmac_sha256(key, msg) == hmac.new(key, msg, hashlib.sha256).digest()


def test_same_tag():
    assert pr.same_tag(b"abc", b"abc") and not pr.same_tag(b"abc", b"abd")
    assert not pr.same_tag(b"abc", b"ab")


def test_crc16_ccitt_check_value():
    assert pr.crc16_ccitt(b"123456789") == 0x29B1  # CRC-16/CCITT-FALSE catalogue check
    assert pr.crc16_ccitt(b"") == 0xFFFF


@pytest.mark.parametrize("raw, encoded", COBS)
def test_cobs_vectors(raw, encoded):
    assert pr.cobs_encode(raw) == encoded
    assert pr.cobs_decode(encoded) == raw


@given(st.binary(max_size=1200))
def test_cobs_round_trip(data):
    """Invariant: COBS output has no zero byte, at most one extra byte per 254 (plus
    one), and decodes to the input."""
    enc = pr.cobs_encode(data)
    assert 0 not in enc and len(enc) <= len(data) + len(data) // 254 + 1
    assert pr.cobs_decode(enc) == data


@pytest.mark.parametrize("bad", [b"\x00", b"\x05\x11\x22", b"\x03\x11\x00", b"\x02"[:0] + b"\x09"])
def test_cobs_rejects_what_no_encoder_makes(bad):
    with pytest.raises(pr.FrameError) as e:
        pr.cobs_decode(bad)
    assert e.value.reason == "bad_cobs"


@given(payloads=st.lists(st.binary(max_size=300), max_size=6), cut=st.integers(1, 50))
def test_frames_survive_any_split(payloads, cut):
    """Invariant: packed frames fed in pieces of any size come out whole and in
    order, and nothing is dropped."""
    wire = b"".join(pr.pack(p) for p in payloads)
    d = pr.Deframer()
    got = []
    for i in range(0, len(wire), cut):
        got += d.feed(wire[i:i + cut])
    assert got == payloads and d.frames == len(payloads)
    assert sum(d.dropped.values()) == 0


@given(noise=st.binary(max_size=3000))
def test_noise_never_becomes_a_frame_by_accident_of_the_code(noise):
    """Invariant: arbitrary bytes never raise; every delimited chunk is either a
    good frame (its CRC holds) or dropped and counted; memory stays bounded."""
    d = pr.Deframer()
    got = d.feed(noise)
    chunks = [c for c in noise.split(b"\x00")[:-1] if c]
    assert len(got) + sum(d.dropped.values()) >= len([c for c in chunks
                                                      if len(c) <= pr.MAX_FRAME])
    for p in got:
        assert pr.unpack(pr.pack(p)[:-1]) == p
    assert len(d.buf) <= pr.MAX_FRAME


def test_each_bad_frame_is_dropped_with_its_reason():
    good = pr.pack(b"hello")
    flipped = bytearray(good)
    flipped[2] ^= 0x01  # a payload byte: the CRC no longer holds
    d = pr.Deframer()
    got = d.feed(bytes(flipped) + b"\x01\x00" + b"\x05\x11\x00" + b"\x07" * (pr.MAX_FRAME + 5)
                 + b"\x00" + good)
    assert got == [b"hello"]
    assert d.dropped == {"bad_cobs": 1, "short": 1, "bad_crc": 1, "too_long": 1}
    with pytest.raises(ValueError):
        pr.pack(b"x" * (pr.MAX_PAYLOAD + 1))
    with pytest.raises(pr.FrameError) as e:
        pr.unpack(pr.cobs_encode(b"y" * (pr.MAX_PAYLOAD + 1) + b"\x00\x00"))
    assert e.value.reason == "too_long"
    with pytest.raises(pr.FrameError) as e:
        pr.unpack(b"\x01" * (pr.MAX_FRAME + 1))
    assert e.value.reason == "too_long"
    # zeros cost one byte each: a frame within MAX_FRAME can still carry too much
    with pytest.raises(pr.FrameError) as e:
        pr.unpack(pr.cobs_encode(bytes(pr.MAX_FRAME - 1)))
    assert e.value.reason == "too_long"


MP_SCRIPT = r"""
import itb.protocol as pr
import ubinascii
for line in open("vectors.txt"):
    kind, a, b, c = line.split()
    a = ubinascii.unhexlify(a)
    b = ubinascii.unhexlify(b)
    if kind == "hmac":
        print(ubinascii.hexlify(pr.hmac_sha256(a, b)).decode())
    elif kind == "cobs":
        print(ubinascii.hexlify(pr.cobs_encode(a)).decode(), pr.cobs_decode(pr.cobs_encode(a)) == a)
    else:
        d = pr.Deframer()
        print(len(d.feed(pr.pack(a) + b)), pr.crc16_ccitt(a), sorted(d.dropped.items()))
"""


def test_the_same_results_in_micropython(tmp_path):
    """The frame layer and HMAC give the same bytes in the MicroPython unix port
    (cross-compiled as deployed): the RFC 4231 vectors, COBS, CRC, the deframer."""
    mpy = tmp_path / "mpy"
    compile_firmware(mpy)
    rows, want = [], []
    for key, data, _tag in RFC4231:
        rows.append(f"hmac {key.hex()} {data.hex()} -")
        want.append(hmac.new(key, data, hashlib.sha256).hexdigest())
    for raw, enc in COBS:
        rows.append(f"cobs {raw.hex()} 00 -")
        want.append(f"{enc.hex()} True")
    for payload, extra in ((b"123456789", b"\x01\x00\x07\x00"), (b"\x00" * 300, b"")):
        rows.append(f"frame {payload.hex()} {extra.hex() or '00'} -")
        d = pr.Deframer()
        n = len(d.feed(pr.pack(payload) + (extra or b"\x00")))
        want.append(f"{n} {pr.crc16_ccitt(payload)} {sorted(d.dropped.items())}")
    (tmp_path / "vectors.txt").write_text("\n".join(rows) + "\n")
    (tmp_path / "run.py").write_text(MP_SCRIPT)
    proc = subprocess.run([tool("micropython"), "-X", "heapsize=192K", "run.py"], cwd=tmp_path,
                          env=dict(os.environ, MICROPYPATH=str(mpy)), capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines() == want
