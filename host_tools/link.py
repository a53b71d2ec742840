"""The host's side of the serial protocol (``docs/protocol.md``), over pyserial.

``Board`` is the Python API for a board (real or virtual): open a port or a
pyserial URL, ``hello()``, then ``call(name, args)`` for any command of the schema,
``change(name, args, confirm)`` for two-phase therapy changes (SR-15), and
``export()`` for the ledger. The wire format and every check come from the
firmware's own ``itb.protocol`` (imported, not re-implemented).

Retries (SR-26): a command that gets no authentic answer within ``timeout`` is
sent again, up to ``retries`` times with a growing delay, under the **same
command id** in a new frame (a new counter; after a reset, a new session). The
board answers an id it has seen with the recorded result, so a retried bolus is
delivered once. A recorded result carries the CRC of the command it answers
(``itb.controller.command_crc``): one for another command that used the same id
(another host) is never taken as ours, and ours is sent again under a new id.
Errors: ``LinkError`` (no answer, a forged or foreign answer, a port that cannot
be opened), ``Refused`` (the board refused: reason, message).
"""

import os
import stat
import time

import serial
import serial.tools.list_ports
from itb import commands as cmds
from itb import protocol as pr
from itb import store as durable
from itb.controller import command_crc

PICO_USB_IDS = {(0x2E8A, 0x0005): "Raspberry Pi Pico (MicroPython)",
                (0x2E8A, 0x000A): "Raspberry Pi Pico (C SDK)",
                (0x2E8A, 0x0003): "Raspberry Pi RP2040 boot ROM",
                (0x2E8A, 0x000F): "Raspberry Pi RP2350 boot ROM"}
TTL_MS = 10_000  # a command's lifetime on the board's clock
DEFAULT_TIMEOUT = 2.0
UNRECORDED = ("status", "log")  # commands the board answers without remembering the id


class LinkError(RuntimeError):
    """The link failed: no answer, a forged answer, a port that cannot be used."""


class Refused(RuntimeError):
    """The board refused a command: ``reason``, ``message`` and the whole ``result``."""

    def __init__(self, result):
        self.result = result
        self.reason = result.get("reason")
        self.message = result.get("message", "")
        super().__init__(f"{self.reason}: {self.message}")


def ports():
    """Serial ports on this host: ``[(device, description, is_pico)]``."""
    out = []
    for p in sorted(serial.tools.list_ports.comports(), key=lambda p: p.device):
        name = PICO_USB_IDS.get((p.vid, p.pid)) if p.vid is not None else None
        out.append((p.device, name or p.description or "", name is not None))
    return out


def open_port(port, timeout=0.05):
    """A pyserial port for a device path or a URL (``socket://``, ``rfc2217://``,
    ``loop://``). Device paths are opened exclusively with a write timeout."""
    try:
        if "://" in port:
            return serial.serial_for_url(port, baudrate=115200, timeout=timeout,
                                         write_timeout=2)
        return serial.Serial(port, 115200, timeout=timeout, write_timeout=2, exclusive=True)
    except (serial.SerialException, ValueError, OSError) as e:
        raise LinkError(f"cannot open {port}: {e}") from None


# ---------------------------------------------------------------------- keys
def load_keys(path):
    """Role keys from a key file (JSON ``{"device": id, "keys": {role: hex}}``).
    Refused (LinkError) if the file is readable or writable by others (0600)."""
    path = os.fspath(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise LinkError(f"no key file {path}: provision keys first (itbctl keys provision)"
                        ) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise LinkError(f"key file {path} is accessible by others (mode {stat.filemode(mode)}):"
                        f" chmod 600 {path}")
    import json

    with open(path) as f:
        data = json.load(f)
    try:
        return data.get("device"), {r: bytes.fromhex(k) for r, k in data["keys"].items()}
    except (AttributeError, KeyError, ValueError, TypeError):
        raise LinkError(f"key file {path} is not a key file") from None


def write_keys(path, device, keys):
    """Create key file ``path`` with mode 0600 (never over an existing file)."""
    import json

    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"device": device, "keys": {r: k.hex() for r, k in keys.items()}}, f)
        f.write("\n")


def new_keys():
    """Fresh random keys for every role (``secrets``)."""
    import secrets

    return {role: secrets.token_bytes(pr.KEY_BYTES) for role in pr.ROLE_CODES[1:]}


# ---------------------------------------------------------------------- board
class Board:
    """A connected board. ``port``: device path or pyserial URL; ``keys``: role ->
    key bytes (None: only ``hello`` and ``provision`` work). ``timeout``: seconds
    to wait for each answer; ``retries``: resends of one command (same id)."""

    def __init__(self, port, keys=None, timeout=DEFAULT_TIMEOUT, retries=3):
        self.port = port
        self.keys = keys or {}
        self.timeout = timeout
        self.retries = retries
        self.ser = open_port(port) if isinstance(port, str) else port
        self.deframer = pr.Deframer()
        self.inbox = []
        self.info = None
        self.counter = 0
        self.next_id = None
        self.board_t = 0
        self.host_t = 0.0

    def close(self):
        self.ser.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------ wire
    def _send(self, payload):
        try:
            self.ser.write(b"\x00" + pr.pack(payload))  # a leading 0x00 resynchronises
            self.ser.flush()
        except (serial.SerialException, OSError) as e:
            raise LinkError(f"write to {self.port} failed: {e}") from None

    def _receive(self, deadline):
        """The next good frame's payload, or None at the deadline."""
        while not self.inbox:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                data = self.ser.read(max(1, self.ser.in_waiting or 1))
            except (serial.SerialException, OSError) as e:
                raise LinkError(f"read from {self.port} failed: {e}") from None
            if data:
                self.inbox += self.deframer.feed(data)
        return self.inbox.pop(0)

    # ------------------------------------------------------------------ session
    def hello(self):
        """Start a session: the board's hello fields (``v``, ``fw``, ``dev``,
        ``boot``, ``nonce``, ``t``, ``last_id``, ...). With keys, the hello names a
        role and carries a fresh challenge; only an answer tagged with that role's
        key and echoing the challenge is taken (a keyless peer cannot feed the host a
        false ``last_id`` or nonce, nor replay an old hello)."""
        import secrets

        role = next((r for r in cmds.ROLES if r in self.keys), "")
        challenge = secrets.token_hex(16)
        body = pr.dumps({"hn": challenge}) if role else b"{}"
        for _attempt in range(self.retries + 1):
            self.inbox = []
            self._send(pr.seal(pr.HELLO, role, body))
            deadline = time.monotonic() + self.timeout
            while True:
                payload = self._receive(deadline)
                if payload is None:
                    break
                try:
                    kind, got_role, reply = pr.opened(payload)
                    if kind not in (pr.HELLO_REPLY, pr.HELLO_AUTH):
                        continue  # a late answer to an earlier request
                    info = pr.parse_body(reply)
                except pr.MessageError:
                    continue
                if role and not (kind == pr.HELLO_AUTH and got_role == role
                                 and pr.check_tag(payload, self.keys[role])
                                 and info.get("hn") == challenge):
                    if kind == pr.HELLO_REPLY and role not in info.get("roles", [role]):
                        raise LinkError(f"the board has no {role} key: provision keys, or"
                                        " use the key file of this board")
                    continue  # forged, replayed or under another key: not ours
                if info.get("v") != pr.VERSION:
                    raise LinkError(f"board speaks protocol {info.get('v')}, this host"
                                    f" {pr.VERSION}")
                self.info = info
                self.counter = 0
                self.board_t = info["t"]
                self.host_t = time.monotonic()
                last = info.get("last_id", 0)
                if self.next_id is None or self.next_id <= last:
                    self.next_id = last + 1
                return info
        raise LinkError(f"no {'authenticated ' if role else ''}hello answer from {self.port}"
                        " (is a board there, running the firmware? are these its keys?)")

    def _factor(self):
        """Board milliseconds per host millisecond (0: the board's clock is stepped)."""
        clock = self.info.get("clock")
        if clock == "stepped":
            return 0
        return self.info.get("factor", 1) if clock == "accelerated" else 1

    def _board_now(self):
        return self.board_t + int((time.monotonic() - self.host_t) * 1000 * self._factor())

    def _expiry(self):
        # TTL_MS of host time, in board time; the board accepts at most MAX_TTL_MS
        # ahead (an accelerated clock leaves a command little real time to arrive)
        return self._board_now() + min(pr.MAX_TTL_MS, TTL_MS * max(1, self._factor()))

    def new_id(self):
        """A fresh command id (above every id the board remembers)."""
        if self.info is None:
            self.hello()
        cid = self.next_id
        self.next_id += 1
        return cid

    # ------------------------------------------------------------------ commands
    def call(self, name, args=None, role=None, cid=None, check=True, on_part=None,
             any_name=False, retries=None):
        """Send command ``name`` with ``args`` as ``role`` (default: the first
        role of the schema's list that has a key) and return the board's result
        (a dict). ``cid``: the command id (a retry of a request reuses it; default
        a new one). Raises Refused when ``check`` and the result is a refusal;
        LinkError when no authentic answer comes after every retry.
        ``on_part(bytes)`` receives the DATA parts of a long answer (``log``).
        ``any_name``: send a name the schema does not know (tests of the board);
        ``retries``: this call's resends (default: the board's)."""
        if not any_name and name not in cmds.COMMANDS and name not in cmds.board_table():
            raise ValueError(f"unknown command {name!r}; known: {', '.join(_all_names())}")
        role = role or self.default_role(name)
        key = self.keys.get(role)
        if key is None:
            raise LinkError(f"no {role} key: load the key file (itbctl --keys FILE) or"
                            " provision keys")
        if self.info is None:
            self.hello()
        own_id = cid is None
        if own_id:
            # the board remembers no status or log id: they take the next id without
            # using it up (a host polling status for days would otherwise run its ids
            # ID_STEP_MAX past the board's; found by the attacker)
            cid = self.next_id if name in UNRECORDED else self.new_id()
        delay = 0.05
        last_error = None
        tries = self.retries if retries is None else retries
        for attempt in range(tries + 1):
            if attempt:
                time.sleep(delay)
                delay *= 2
            self.counter += 1
            counter = self.counter
            exp = self._expiry()
            self._send(pr.command(key, role, self.info["nonce"], counter, cid, exp, name,
                                  args or {}))
            try:
                res = self._answer(key, role, counter, on_part)
            except pr.MessageError as e:
                last_error = f"{e.reason}: {e.message}"
                if e.reason in ("BAD_TAG", "NO_KEY"):
                    last_error += " (are these the keys provisioned on this board?)"
                self.hello_quiet()  # the board may have reset: a new session
                continue
            if res is None:
                last_error = "no answer"
                self.hello_quiet()
                continue
            if res.get("reason") in ("WRONG_SESSION", "EXPIRED", "REPLAYED", "REORDERED",
                                     "BAD_EXPIRY") and res.get("id", 0) == 0:
                last_error = f"{res['reason']}: {res.get('message')}"
                self.hello()
                continue  # not applied (refused before the controller): same id is safe
            if res.get("replayed") and res.get("command_crc") != command_crc(
                    {"name": name, "role": role, "args": args or {}}):
                # the id was used before for another command (another host, or ids
                # lost): this one was not applied; never report that result as ours,
                # send it again under a new id (safe: the board has not seen it)
                self.next_id = max(self.next_id, cid + 1)
                cid = self.new_id()
                last_error = f"command id collision with an earlier {res.get('name')}"
                continue
            if res.get("reason") == "ID_JUMP" and own_id:
                # our ids ran ahead of the board's (it was reset to an older store, or
                # another host): the refusal applied nothing; take the board's next id
                self.next_id = None
                self.hello()
                cid = self.new_id()
                last_error = f"ID_JUMP: {res.get('message')}"
                continue
            if name == "test_clock" and res.get("ok"):  # the board's clock changed pace
                self.info["clock"] = res.get("mode")
                self.info["factor"] = (args or {}).get("factor", 1)
            if check and not res.get("ok"):
                raise Refused(res)
            return res
        raise LinkError(f"{name}: no authentic answer from {self.port} after"
                        f" {tries + 1} attempts ({last_error})")

    def hello_quiet(self):
        try:
            self.hello()
        except LinkError:
            pass  # the next attempt will say so

    def _answer(self, key, role, counter, on_part):
        """The board's authentic answer to ``counter`` (None at the deadline). An
        untagged REFUSAL cannot be matched to a request (it may answer noise or an
        earlier frame): it is noted and raised only if nothing authentic comes."""
        deadline = time.monotonic() + self.timeout
        part = 0
        long_parts = []
        refusal = None
        while True:
            payload = self._receive(deadline)
            if payload is None:
                if refusal is not None:
                    raise refusal
                return None
            kind = payload[0] if payload else 0
            if kind == pr.DATA:
                try:
                    data = pr.data_of(payload, key, role, self.info["nonce"], counter, part)
                except pr.MessageError:
                    continue
                part += 1
                deadline = time.monotonic() + self.timeout
                long_parts.append(data)
                if on_part is not None:
                    on_part(data)
                continue
            try:
                msg = pr.response(payload, key, role, self.info["nonce"], counter)
            except pr.MessageError as e:
                if kind == pr.REFUSAL:
                    refusal = e
                continue  # a forged, foreign or late answer: not ours
            self.board_t = msg.get("t", self.board_t)
            self.host_t = time.monotonic()
            res = msg["res"]
            if res.get("parts", part) != part:
                raise pr.MessageError("WRONG_RESPONSE", f"{part} of {res['parts']} parts came")
            if res.get("long") == 1:  # a result longer than a frame came in the parts
                return pr.parse_body(b"".join(long_parts))
            return res

    def default_role(self, name):
        if name not in cmds.COMMANDS and name not in cmds.board_table():
            return cmds.CLINICIAN
        allowed = cmds.roles(name)
        for role in allowed:
            if role in self.keys:
                return role
        return allowed[0]

    def change(self, name, args, confirm=None, role=None):
        """A two-phase therapy change (SR-15): ``prepare``, show the effect to
        ``confirm(result) -> bool`` (None: confirm at once), then ``confirm`` with
        the hash. Returns the confirm result; raises Refused (either phase) or
        ``Declined`` if ``confirm`` said no (nothing was applied)."""
        prep = self.call("prepare", {"command": name, "args": args}, role=role or
                         self.default_role(name))
        if confirm is not None and not confirm(prep):
            raise Declined(prep)
        return self.call("confirm", {"hash": prep["hash"]}, role=role or self.default_role(name))

    def provision(self, keys):
        """Send ``keys`` (role -> 32 bytes) while the board's provisioning button is
        held; returns the board's answer (checked with the new clinician key)."""
        body = pr.dumps({"keys": {r: k.hex() for r, k in keys.items()}})
        self._send(pr.seal(pr.PROVISION, "", body))
        deadline = time.monotonic() + self.timeout
        while True:
            payload = self._receive(deadline)
            if payload is None:
                raise LinkError("no answer to provisioning")
            kind, _role, body = pr.opened(payload)
            if kind == pr.REFUSAL:
                raise Refused(pr.parse_body(body))
            if kind == pr.PROVISIONED:
                if not pr.check_tag(payload, keys["clinician"]):
                    raise LinkError("provisioning answer failed authentication")
                self.keys = dict(keys)
                self.hello()  # provisioning ended the board's session
                return pr.parse_body(body)

    # ------------------------------------------------------------------ helpers
    def status(self, role=None):
        return self.call("status", role=role)["status"]

    def export(self, role=None):
        """The ledger the board holds: ``(records, result)`` with ``records`` a list
        of ``(seq, rtc_ms, record)`` checked line by line (``itb.store.unpack_line``:
        CRC and ranges; torn lines are skipped) and ``result`` the board's answer
        (``cfg``: the device configuration)."""
        chunks = []
        res = self.call("log", {"from_seq": 0}, role=role, on_part=chunks.append)
        return ledger_records(b"".join(chunks)), res


def ledger_records(data, after=0):
    """``(seq, rtc_ms, record)`` of every good ledger line in ``data`` with a seq
    above ``after`` and above every earlier line's (torn lines and lines archived
    twice by a power cut are skipped; ``itb.store.unpack_line`` checks each)."""
    records = []
    last = after
    for raw in data.split(b"\n"):
        got = durable.unpack_line(raw) if raw else None
        if got is not None and got[0] > last:
            records.append(got)
            last = got[0]
    return records


class Declined(RuntimeError):
    """The user did not confirm a prepared change (nothing was applied)."""

    def __init__(self, prepared):
        super().__init__("not confirmed: nothing was changed")
        self.prepared = prepared


def _all_names():
    return sorted(set(cmds.COMMANDS) | set(cmds.board_table()))
