"""The runner trace format: JSON Lines, one input or output record per line.

Every record is a JSON object with a kind ``k`` and the therapy time ``t`` (ms).
Values are integers, ASCII strings, null, lists and objects: never floats (a
recorded command keeps a peer's true/false as sent, so a replay refuses it too). Keys
are sorted and separators compact, so the same records give the same bytes in
CPython and MicroPython (whose dicts have no stable order).

Inputs (what drives the runner; replaying them reproduces the outputs):
  ``config``      first line: ``{"k": "config", "t": 0, "cfg": {overrides}}``
  ``cmd``         ``{"cmd": {name, id, role, args}}``: a command arrives
  ``advance``     run every wake-up due up to ``t``
  ``outcome``     ``{"n", "res"}``: the motor's report for stroke ``n``
                  (``ok``/``stall``/``occlusion``/``unknown``/``power_cut``)
  ``switch``      ``{"on": 0|1}``: the syringe-empty switch
  ``rtc``         ``{"utc_ms": int|null}``: the wall clock (null: RTC invalid)
  ``battery``     ``{"low": 0|1}``: the board's battery monitor
  ``session_end`` the programming session ended
  ``power_cut``   power fails at ``t``
  ``power_on``    ``{"upper_ms": int|null, "boot_loop": 0|1, "storage"?}``: boot;
                  ``t`` is the last therapy time plus the outage's lower bound
                  (SR-23); ``storage``: what boot recovery found wrong (SR-25)
Outputs:
  ``stroke``      ``{"n", "src", "nl", "ng_hi", "ng_lo"}``: a stroke intent
  ``result``      a command's result (see ``Controller.handle``)
  ``alarm``       ``{"code", "ev": raise|repeat|clear, "pri"}``
  ``basal``       ``{"ng_day", "state"}``: basal daily dose or state changed
  ``rx``          ``{"gen", "ng_day", "conc", "state"}``: a prescription generation
                  was accepted (SR-25)
  ``calibration`` ``{"stroke_nl", "measured_nl", "ci_nl", "strokes"}``: a confirmed
                  ``set_calibration``, handed to the board (``board.calibrate``)
"""

INPUT_KINDS = ("config", "cmd", "advance", "outcome", "switch", "rtc", "battery",
               "session_end", "power_cut", "power_on")
OUTPUT_KINDS = ("stroke", "result", "alarm", "basal", "rx", "calibration")
MAX_RECORD_CHARS = 4096  # the longest record the ledger (store.py) holds


def encode(obj) -> str:
    """Canonical JSON text of ``obj`` (dict/list/int/str/None/bool; any other
    value, e.g. a float from a bad command, as the string of its repr)."""
    t = type(obj)
    if t is dict:
        keys = tuple(obj)
        order = _ORDER.get(keys) if _ORDER is not None else None
        if order is None:
            order = _order(keys)
        out = []
        for prefix, k in order:
            v = obj[k]
            tv = type(v)
            if tv is int:
                out.append(prefix + str(v))
            elif tv is str:
                out.append(prefix + _str(v))
            else:
                out.append(prefix + encode(v))
        return "{" + ",".join(out) + "}"
    if t is list or t is tuple:
        return "[" + ",".join([encode(x) for x in obj]) + "]"
    if t is str:
        return _str(obj)
    if obj is None:
        return "null"
    if t is bool:
        # only a peer's command can hold one; a replay must send the same value
        return "true" if obj else "false"
    if t is int:
        return str(obj)
    # A value a peer sent that no record may hold (a float, say) is written as its
    # text, so the bad command is still traced and refused, never crashes the runner.
    return _str(repr(obj))


# Key order of record shapes already seen (``keys -> [(prefix, key)]``), off by
# default: the simulator turns it on (``cache_key_order``) to write millions of
# records faster; on the board its heap (about 30 KB for the runner's shapes) is
# worth more than the time. Only all-string key tuples are kept: ``(1,) == (True,)``
# would otherwise share an entry whose text differs.
_ORDER = None
_ORDER_MAX = 0


def cache_key_order(max_shapes=64):
    """Remember the key order of up to ``max_shapes`` record shapes (0: off)."""
    global _ORDER, _ORDER_MAX
    _ORDER = {} if max_shapes > 0 else None
    _ORDER_MAX = max_shapes


def _order(keys):
    pairs = [(k if type(k) is str else repr(k), k) for k in keys]
    pairs.sort(key=_first)
    order = [(_str(s) + ":", k) for s, k in pairs]
    plain = 1
    for k in keys:
        if type(k) is not str:
            plain = 0
    if plain and _ORDER is not None and len(_ORDER) < _ORDER_MAX:
        _ORDER[keys] = order
    return order


_STR_CACHE = {}


def _first(pair):
    return pair[0]


def _str(s):
    hit = _STR_CACHE.get(s)
    if hit is not None:
        return hit
    enc = _escape(s)
    if len(s) <= 32 and len(_STR_CACHE) < 256:  # keys and codes repeat on every line
        _STR_CACHE[s] = enc
    return enc


def _escape(s):
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch == '"' or ch == "\\":
            out.append("\\" + ch)
        elif o < 32 or o > 126:
            if o > 0xFFFF:
                o -= 0x10000
                out.append("\\u%04x\\u%04x" % (0xD800 + (o >> 10), 0xDC00 + (o & 0x3FF)))
            else:
                out.append("\\u%04x" % o)
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def decode(line):
    """Parse one trace line; raises ValueError on anything that is not an object
    with a known kind and an integer ``t``."""
    import json

    rec = json.loads(line)
    if type(rec) is not dict or rec.get("k") not in INPUT_KINDS + OUTPUT_KINDS:
        raise ValueError("not a trace record: %r" % (line[:60],))
    if type(rec.get("t")) is not int:
        raise ValueError("trace record without integer t")
    return rec
