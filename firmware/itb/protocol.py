"""The serial protocol's frame layer and its authentication primitive (runs in
MicroPython; the host imports it). The wire format is in ``docs/protocol.md``.

A frame on the wire is ``COBS(payload + CRC) 0x00``: the payload (at most
``MAX_PAYLOAD`` bytes) followed by its CRC-16/CCITT-FALSE (big-endian), COBS-encoded
so that 0x00 appears only as the delimiter. ``pack(payload)`` makes one;
``Deframer.feed(data)`` takes bytes as they arrive and returns the payloads of the
good frames, dropping and counting every bad one (bad COBS, short, bad CRC, too
long): a frame that fails any check is never handed on, never half-used.

``hmac_sha256(key, msg)`` is HMAC (RFC 2104) over ``hashlib.sha256`` (MicroPython has
no ``hmac`` module); ``same_tag(a, b)`` compares tags in time independent of where
they differ. The message layer (hello, sessions, counters, roles) builds on these
(issue 6, next).

Errors: ``FrameError(reason)``, reason one of ``FRAME_ERRORS``.
"""

import hashlib

MAX_PAYLOAD = 2048  # bytes: a command or a result record with its authentication
# COBS adds one byte per 254 and the CRC two: the longest frame between delimiters
MAX_FRAME = MAX_PAYLOAD + 2 + (MAX_PAYLOAD + 2) // 254 + 1
FRAME_ERRORS = ("bad_cobs", "short", "bad_crc", "too_long")


class FrameError(ValueError):
    """A frame that fails a check; ``reason`` in ``FRAME_ERRORS``."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


def crc16_ccitt(data, crc=0xFFFF):
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final xor) of
    ``data`` (bytes); check value ``crc16_ccitt(b"123456789") == 0x29B1``."""
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def cobs_encode(data):
    """Consistent Overhead Byte Stuffing: ``data`` (bytes) without any 0x00; the
    result is one byte longer per 254 bytes of input (at least one)."""
    out = bytearray()
    block = bytearray()
    for b in data:
        if b:
            block.append(b)
            if len(block) == 254:
                out.append(255)
                out += block
                block = bytearray()
        else:
            out.append(len(block) + 1)
            out += block
            block = bytearray()
    out.append(len(block) + 1)
    out += block
    return bytes(out)


def cobs_decode(data):
    """Inverse of ``cobs_encode``; raises FrameError("bad_cobs") for input that no
    encoding produces (a zero byte, a block running past the end)."""
    out = bytearray()
    i = 0
    n = len(data)
    while i < n:
        code = data[i]
        if code == 0 or i + code > n:  # a zero, or a block running past the end
            raise FrameError("bad_cobs")
        block = data[i + 1:i + code]
        if 0 in block:
            raise FrameError("bad_cobs")
        out += block
        i += code
        if code < 255 and i < n:
            out.append(0)
    return bytes(out)


def pack(payload):
    """One frame for ``payload`` (bytes, at most MAX_PAYLOAD), delimiter included.
    Raises ValueError for a payload over the cap (nothing is sent)."""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError("payload over %d bytes" % MAX_PAYLOAD)
    crc = crc16_ccitt(payload)
    return cobs_encode(bytes(payload) + bytes((crc >> 8, crc & 0xFF))) + b"\x00"


def unpack(frame):
    """The payload of one frame (without its delimiter); raises FrameError."""
    if len(frame) > MAX_FRAME:
        raise FrameError("too_long")
    body = cobs_decode(frame)
    if len(body) < 2:
        raise FrameError("short")
    payload = body[:-2]
    if len(payload) > MAX_PAYLOAD:
        raise FrameError("too_long")
    if crc16_ccitt(payload) != (body[-2] << 8 | body[-1]):
        raise FrameError("bad_crc")
    return payload


class Deframer:
    """Splits a byte stream at 0x00 delimiters. ``feed(data)`` returns the good
    payloads completed by ``data``; ``dropped`` counts bad frames by reason and
    ``frames`` the good ones. Bytes past ``MAX_FRAME`` without a delimiter are
    thrown away up to the next one (one ``too_long``): memory stays bounded."""

    def __init__(self):
        self.buf = bytearray()
        self.skipping = False
        self.frames = 0
        self.dropped = {}
        for reason in FRAME_ERRORS:
            self.dropped[reason] = 0

    def feed(self, data):
        out = []
        for b in data:
            if b == 0:
                if self.skipping:
                    self.skipping = False
                elif self.buf:
                    try:
                        out.append(unpack(bytes(self.buf)))
                        self.frames += 1
                    except FrameError as e:
                        self.dropped[e.reason] += 1
                self.buf = bytearray()
            elif not self.skipping:
                self.buf.append(b)
                if len(self.buf) > MAX_FRAME:
                    self.dropped["too_long"] += 1
                    self.buf = bytearray()
                    self.skipping = True
        return out


def hmac_sha256(key, msg):
    """HMAC-SHA256 (RFC 2104) of ``msg`` under ``key`` (bytes): 32 bytes."""
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = bytes(key) + bytes(64 - len(key))
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
    inner.update(msg)
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))
    outer.update(inner.digest())
    return outer.digest()


def same_tag(a, b):
    """True if tags ``a`` and ``b`` (bytes) are equal, in time independent of where
    they differ (a forger learns nothing from the answer time)."""
    if len(a) != len(b):
        return False
    diff = 0
    for x, y in zip(a, b):
        diff |= x ^ y
    return diff == 0
