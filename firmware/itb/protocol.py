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


def _crc_table():
    table = []
    for i in range(256):
        crc = i << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
        table.append(crc)
    return table


_CRC_TABLE = _crc_table()  # 256 ints: one lookup per byte instead of eight shifts


def crc16_ccitt(data, crc=0xFFFF):
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final xor) of
    ``data`` (bytes); check value ``crc16_ccitt(b"123456789") == 0x29B1``."""
    table = _CRC_TABLE
    for b in data:
        crc = ((crc << 8) & 0xFF00) ^ table[(crc >> 8) ^ b]
    return crc


def cobs_encode(data):
    """Consistent Overhead Byte Stuffing: ``data`` (bytes) without any 0x00; the
    result is one byte longer per 254 bytes of input (at least one)."""
    data = bytes(data)
    out = bytearray()
    i = 0
    n = len(data)
    while True:
        # one run of non-zero bytes up to the next zero (or the end): full blocks of
        # 254 carry code 255 (no zero implied), the rest carries its length + 1
        j = data.find(b"\x00", i)
        end = n if j < 0 else j
        while end - i >= 254:
            out.append(255)
            out += data[i:i + 254]
            i += 254
        out.append(end - i + 1)
        out += data[i:end]
        if j < 0:
            return bytes(out)
        i = end + 1


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
        i = 0
        n = len(data)
        while i < n:
            j = data.find(b"\x00", i)
            end = n if j < 0 else j
            if not self.skipping:
                self.buf += data[i:end]
                if len(self.buf) > MAX_FRAME:
                    self.dropped["too_long"] += 1
                    self.buf = bytearray()
                    self.skipping = True
            if j < 0:
                break
            if self.skipping:
                self.skipping = False
            elif self.buf:
                try:
                    out.append(unpack(bytes(self.buf)))
                    self.frames += 1
                except FrameError as e:
                    self.dropped[e.reason] += 1
            self.buf = bytearray()
            i = j + 1
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


# ---------------------------------------------------------------------- messages
# A payload is ``kind (1 byte) | role (1 byte) | body (JSON, UTF-8) [| tag (16 bytes)]``.
# Kinds with a tag (COMMAND, RESPONSE, PROVISIONED) carry HMAC-SHA256 truncated to
# TAG_BYTES over every byte before the tag, under the role's key.
VERSION = 1
TAG_BYTES = 16  # HMAC-SHA256 truncated to 128 bits (RFC 4231 case 5; >= 16, issue 6)
NONCE_BYTES = 16
KEY_BYTES = 32
HELLO = 1  # host -> board: {} (no tag): starts a new session
HELLO_REPLY = 2  # board -> host: version, manifest, device, boot, nonce, t (no tag)
COMMAND = 3  # host -> board, tagged
RESPONSE = 4  # board -> host, tagged with the command's role key
REFUSAL = 5  # board -> host (no tag): a frame that could not be authenticated
PROVISION = 6  # host -> board (no tag): keys; accepted only while provisioning
PROVISIONED = 7  # board -> host, tagged with the new clinician key
DATA = 8  # board -> host, tagged: one part of a long answer (JSON header, newline, bytes)
HELLO_AUTH = 9  # board -> host, tagged: HELLO_REPLY under the key of the hello's role
KINDS = (HELLO, HELLO_REPLY, COMMAND, RESPONSE, REFUSAL, PROVISION, PROVISIONED, DATA,
         HELLO_AUTH)
TAGGED = (COMMAND, RESPONSE, PROVISIONED, DATA, HELLO_AUTH)
ROLE_CODES = ("", "clinician", "patient", "service")  # index = role byte; 0: none
MAX_DEPTH = 6  # nesting of JSON lists/objects in a body (flex steps need 3)
MAX_TTL_MS = 60000  # a command's expiry may lie at most this far ahead (board clock)
COUNTER_MAX = (1 << 62) - 1


class MessageError(ValueError):
    """A payload that is not a well-formed message: ``reason`` (BAD_MESSAGE,
    BAD_TAG, ...) and ``message``."""

    def __init__(self, reason, message):
        super().__init__(message)
        self.reason = reason
        self.message = message


def seal(kind, role, body, key=None):
    """The payload for message ``kind`` from ``role`` (name or "") carrying ``body``
    (bytes: the JSON text); tagged with ``key`` when ``kind`` is in TAGGED.
    Raises ValueError when it would not fit in a frame."""
    head = bytes((kind, ROLE_CODES.index(role)))
    payload = head + body
    if kind in TAGGED:
        payload += hmac_sha256(key, payload)[:TAG_BYTES]
    if len(payload) > MAX_PAYLOAD:
        raise ValueError("message of %d bytes over the %d-byte cap" % (len(payload), MAX_PAYLOAD))
    return payload


def opened(payload):
    """``(kind, role, body)`` of a payload, the tag not yet checked (``check_tag``).
    Raises MessageError(BAD_MESSAGE) for an unknown kind or role or a tagged kind
    too short to hold its tag."""
    if len(payload) < 2 or payload[0] not in KINDS or payload[1] >= len(ROLE_CODES):
        raise MessageError("BAD_MESSAGE", "unknown message kind or role")
    kind = payload[0]
    end = len(payload)
    if kind in TAGGED:
        end -= TAG_BYTES
        if end < 2:
            raise MessageError("BAD_MESSAGE", "message too short for its tag")
    return kind, ROLE_CODES[payload[1]], payload[2:end]


def check_tag(payload, key):
    """True if the tagged ``payload`` carries the right tag under ``key``."""
    if key is None:
        return False
    body = payload[:-TAG_BYTES]
    return same_tag(hmac_sha256(key, body)[:TAG_BYTES], payload[-TAG_BYTES:])


def parse_body(body):
    """The JSON object in ``body`` (bytes); MessageError(BAD_MESSAGE) for anything
    else: not JSON, not an object, nesting deeper than MAX_DEPTH (checked before
    parsing: a deep body must not exhaust the board's stack or heap), bytes above
    0x7F or a ``\\u`` escape (every command is ASCII; MicroPython and CPython decode
    non-BMP escapes differently, which made a board's trace fail to replay)."""
    import json

    depth = 0
    quoted = False
    escaped = False
    for b in body:
        if b >= 0x80:
            raise MessageError("BAD_MESSAGE", "non-ASCII bytes in a body")
        if quoted:
            if escaped:
                escaped = False
                if b == 0x75:  # \uXXXX: MicroPython and CPython decode surrogates apart
                    raise MessageError("BAD_MESSAGE", "\\u escapes are not accepted")
            elif b == 0x5C:  # backslash
                escaped = True
            elif b == 0x22:
                quoted = False
        elif b == 0x22:
            quoted = True
        elif b == 0x5B or b == 0x7B:  # [ {
            depth += 1
            if depth > MAX_DEPTH:
                raise MessageError("BAD_MESSAGE", "nesting deeper than %d" % MAX_DEPTH)
        elif b == 0x5D or b == 0x7D:
            depth -= 1
    try:
        obj = json.loads(bytes(body).decode())
    except (ValueError, UnicodeError, MemoryError, RuntimeError) as e:
        raise MessageError("BAD_MESSAGE", "body is not JSON: %s" % type(e).__name__)
    if type(obj) is not dict:
        raise MessageError("BAD_MESSAGE", "body must be a JSON object")
    return obj


def dumps(obj):
    """Compact JSON bytes of ``obj`` (ints, strings, lists, dicts, None)."""
    import json

    return json.dumps(obj, separators=(",", ":")).encode()


def _int_field(msg, key, lo, hi):
    v = msg.get(key)
    if type(v) is not int or v < lo or v > hi:
        raise MessageError("BAD_MESSAGE", "%s must be an integer %d..%d" % (key, lo, hi))
    return v


class Gate:
    """The board's side of the message layer: one session at a time, keys per
    role. Sans-IO: payloads and the board's therapy time in, decisions out.

    ``hello(nonce, now)`` starts a session (a new nonce from the board's random
    source; every earlier session's frames become cross-session) and returns the
    reply payload. ``accept(payload, now)`` checks a COMMAND payload and returns
    ``(role, counter, msg)`` with ``msg`` the parsed body (``id``, ``name``,
    ``args``); a frame refused before or after authentication raises ``Refused``
    (see there). ``respond(role, counter, result, now)`` seals the answer.

    Order of checks (cheapest and least trusting first): kind and role byte, a
    key for the role, the tag (constant time), then the body: JSON of bounded
    depth, the session nonce, the counter (strictly increasing in the session:
    equal is REPLAYED, lower REORDERED), the expiry (not past, at most
    MAX_TTL_MS ahead). Nothing of a frame is used before its tag holds, and the
    counter advances only for a frame that passes every check."""

    def __init__(self, keys, info):
        """``keys``: role -> key bytes (roles without one cannot send commands);
        ``info``: the constant hello fields (``fw``, ``dev``, ``boot``, ...)."""
        self.keys = keys
        self.info = info
        self.nonce = None  # hex text of the current session's nonce
        self.counter = -1

    def hello(self, nonce, now, extra=None, request=b""):
        """Start a session with ``nonce`` (bytes). ``request``: the HELLO payload.
        Its role byte names a role whose key the host holds and its body may carry
        the host's challenge ``{"hn": up to 64 hex digits}``: the reply is then a
        HELLO_AUTH tagged with that role's key and echoing ``hn`` (a host with keys
        trusts no unauthenticated or replayed hello: ``last_id`` and the nonce come
        from the board). Otherwise an untagged HELLO_REPLY (provisioning)."""
        import binascii

        self.nonce = binascii.hexlify(nonce).decode()
        self.counter = -1
        reply = {"v": VERSION, "nonce": self.nonce, "t": now,
                 "roles": [r for r in ROLE_CODES[1:] if self.keys.get(r)]}
        for k in self.info:
            reply[k] = self.info[k]
        if extra:
            for k in extra:
                reply[k] = extra[k]
        role = ROLE_CODES[request[1]] if len(request) > 1 and request[1] < len(ROLE_CODES) else ""
        hn = None
        if len(request) > 2:
            try:
                hn = parse_body(request[2:]).get("hn")
            except MessageError:
                hn = None
        if role and self.keys.get(role) and type(hn) is str and 0 < len(hn) <= 64:
            reply["hn"] = hn
            return seal(HELLO_AUTH, role, dumps(reply), self.keys[role])
        return seal(HELLO_REPLY, "", dumps(reply))

    def accept(self, payload, now):
        try:
            kind, role, body = opened(payload)
        except MessageError as e:
            raise Refused(e.reason, e.message, None)
        if kind != COMMAND:
            raise Refused("BAD_MESSAGE", "expected a command", None)
        key = self.keys.get(role)
        if not key:
            raise Refused("NO_KEY", "no key is provisioned for role %s" % (role or "none"), None)
        if not check_tag(payload, key):
            raise Refused("BAD_TAG", "authentication failed", None)
        # authentic from here: refusals are answered under the role's key
        try:
            msg = parse_body(body)
        except MessageError as e:
            raise Refused(e.reason, e.message, role)
        counter = msg.get("c")
        if type(counter) is not int or counter < 0 or counter > COUNTER_MAX:
            raise Refused("BAD_MESSAGE", "c must be an integer 0..2^62-1", role)
        if self.nonce is None or msg.get("s") != self.nonce:
            raise Refused("WRONG_SESSION", "not this session's nonce: send hello", role, counter,
                          msg.get("s") if type(msg.get("s")) is str else None)
        if counter == self.counter:
            raise Refused("REPLAYED", "counter %d was already used" % counter, role, counter)
        if counter < self.counter:
            raise Refused("REORDERED", "counter %d is below the last (%d)"
                          % (counter, self.counter), role, counter)
        try:
            exp = _int_field(msg, "exp", 0, COUNTER_MAX)
            if type(msg.get("name")) is not str:
                raise MessageError("BAD_MESSAGE", "name must be a string")
            if type(msg.get("args", {})) is not dict:
                raise MessageError("BAD_MESSAGE", "args must be an object")
            _int_field(msg, "id", 1, 0x7FFFFFFF)
            for k in msg:
                if k not in ("s", "c", "exp", "id", "name", "args"):
                    raise MessageError("BAD_MESSAGE", "unknown field %s" % k[:32])
        except MessageError as e:
            raise Refused(e.reason, e.message, role, counter)
        if exp < now:
            raise Refused("EXPIRED", "expired %d ms ago (board time %d)" % (now - exp, now),
                          role, counter)
        if exp > now + MAX_TTL_MS:
            raise Refused("BAD_EXPIRY", "expiry more than %d ms ahead" % MAX_TTL_MS,
                          role, counter)
        self.counter = counter
        return role, counter, msg

    def respond(self, role, counter, result, now, extra=None, session=None):
        """The RESPONSE payload: ``{"s", "c", "t", "res"}`` (plus ``extra``) under
        ``role``'s key; the host checks ``s`` and ``c`` against its request
        (``session``: the request's nonce when it is not the current one)."""
        body = {"s": session or self.nonce, "c": counter, "t": now, "res": result}
        if extra:
            for k in extra:
                body[k] = extra[k]
        return seal(RESPONSE, role, dumps(body), self.keys[role])

    def refusal(self, refused, now):
        """The answer to a refused frame: a RESPONSE under the role's key when the
        frame was authentic, else an untagged REFUSAL (the host cannot trust it and
        treats it as "not applied, ask again")."""
        res = {"ok": 0, "reason": refused.reason, "message": refused.message}
        if refused.role is not None and refused.counter is not None:
            return self.respond(refused.role, refused.counter, res, now, None, refused.session)
        return seal(REFUSAL, "", dumps(res))


class Refused(Exception):
    """A command frame refused by the message layer: ``reason``, ``message``,
    ``role`` (None: not authenticated) and ``counter`` (None: unknown)."""

    def __init__(self, reason, message, role, counter=None, session=None):
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.role = role
        self.counter = counter
        self.session = session


def command(key, role, nonce, counter, cid, exp, name, args):
    """The host's COMMAND payload (see ``Gate.accept`` for the fields)."""
    return seal(COMMAND, role, dumps({"s": nonce, "c": counter, "exp": exp, "id": cid,
                                      "name": name, "args": args}), key)


def response(payload, key, role, nonce, counter):
    """The host's check of a board answer to its command ``counter``: returns the
    body (``res`` and the rest) of an authentic RESPONSE for this request, raises
    MessageError: BAD_TAG (forged or corrupted), WRONG_RESPONSE (another request's
    or session's answer), or the reason of an untagged REFUSAL (not applied)."""
    kind, got_role, body = opened(payload)
    if kind == REFUSAL:
        msg = parse_body(body)
        raise MessageError(str(msg.get("reason")), str(msg.get("message")))
    if kind != RESPONSE or got_role != role:
        raise MessageError("WRONG_RESPONSE", "not a response for role %s" % role)
    if not check_tag(payload, key):
        raise MessageError("BAD_TAG", "response failed authentication")
    msg = parse_body(body)
    if msg.get("s") != nonce or msg.get("c") != counter:
        raise MessageError("WRONG_RESPONSE", "response for another request")
    return msg


def data_part(key, role, nonce, counter, part, data):
    """One DATA payload of a long answer to command ``counter``: the header
    ``{"s", "c", "part"}``, a newline, then ``data`` (raw bytes) under ``role``'s
    key. Parts are numbered from 0; the RESPONSE that ends the answer says how
    many there were."""
    return seal(DATA, role, dumps({"s": nonce, "c": counter, "part": part}) + b"\n" + data, key)


def data_of(payload, key, role, nonce, counter, part):
    """The host's check of a DATA payload: its bytes if it is the authentic part
    ``part`` of the answer to ``counter``; MessageError (BAD_TAG, WRONG_RESPONSE)."""
    kind, got_role, body = opened(payload)
    if kind != DATA or got_role != role:
        raise MessageError("WRONG_RESPONSE", "expected part %d of a long answer" % part)
    if not check_tag(payload, key):
        raise MessageError("BAD_TAG", "data failed authentication")
    i = body.find(b"\n")
    head = parse_body(body[:i]) if i > 0 else None
    if head is None or head.get("s") != nonce or head.get("c") != counter \
            or head.get("part") != part:
        raise MessageError("WRONG_RESPONSE", "data for another request or out of order")
    return body[i + 1:]


def keys_from(body):
    """The keys of a PROVISION body ``{"keys": {role: 64 hex digits}}`` as
    ``{role: 32 bytes}``; every role must be there. MessageError(BAD_KEYS)."""
    import binascii

    msg = parse_body(body)
    keys = msg.get("keys")
    if type(keys) is not dict or len(msg) != 1:
        raise MessageError("BAD_KEYS", "expected {\"keys\": {role: hex}}")
    out = {}
    for role in ROLE_CODES[1:]:
        v = keys.get(role)
        if type(v) is not str or len(v) != 2 * KEY_BYTES:
            raise MessageError("BAD_KEYS", "%s key must be %d hex digits" % (role, 2 * KEY_BYTES))
        try:
            out[role] = binascii.unhexlify(v)
        except ValueError:
            raise MessageError("BAD_KEYS", "%s key is not hex" % role)
    if len(keys) != len(out):
        raise MessageError("BAD_KEYS", "unknown role in keys")
    values = [out[r] for r in ROLE_CODES[1:]]
    for i in range(len(values)):
        if values[i] == bytes((values[i][0],)) * KEY_BYTES:
            raise MessageError("BAD_KEYS", "%s key is one byte repeated" % ROLE_CODES[i + 1])
        if values[i] in values[:i]:
            raise MessageError("BAD_KEYS", "roles must have different keys")
    return out
