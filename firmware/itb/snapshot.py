"""The controller's durable state as plain data, and back (SR-25, SR-26).

``save(ctrl)`` returns ``[[name, value], ...]``: ints, ASCII strings, None, lists
and dicts with string keys only, so it survives a JSON round trip unchanged.
``load(items, audit)`` builds a controller from it that behaves exactly like the
saved one (the store's recovery test compares both, field by field, and then the
traces they produce). Everything of ``Controller.__init__`` is either here or in
``VOLATILE``; a test fails when a new attribute is in neither. A checkpoint is
taken while the controller runs, so it keeps the prepared command and the session
too: ``reboot`` is what drops them (SR-15, SR-17).
"""

from itb.alarms import Alarms
from itb.controller import Controller
from itb.drugs import DeviceConfig
from itb.fluidpath import FluidPath
from itb.limits import BasalHistory, WindowLog
from itb.reservoir import Reservoir
from itb.scheduler import Accumulator, Overlay

FORMAT = 2  # 2: long lists in parts (format 1, without parts, still loads)
SEEN_PER_ITEM = 1  # one result per line: a line is at most one (5 KB) result
# lists that grow with the stroke rate: saved empty in their object's item and then in
# items ``["+object.field", values]`` of LIST_PER_ITEM values, in order (at 1900
# strokes a day the 24 h window was one 26 KB line, which a fragmented heap could not
# allocate: found by the attacker). An older firmware refuses format 2 (SR-25) rather
# than load an empty window.
LONG = {"window": ("t", "m")}
LIST_PER_ITEM = 128
# plain-data attributes of the controller
PLAIN = ("state", "rx", "program", "plan", "last_now", "stroke_seq", "pending",
         "last_stroke_ms", "hold_until", "no_increase_until", "interrupt_ms",
         "outage_slack_ms", "fault", "last_good_ms", "fault_marked", "stop_reason",
         "mri_checked", "min_rate_nl", "pb_times", "utc_offset_min", "wall_delta",
         "pre_maintenance", "heartbeat_ms", "filled_pg", "delivered_pg", "aspirated_pg",
         "rx_gen", "prepare_seq", "id_floor", "session_until", "prepared")
# attributes holding an object of plain-data attributes, and how to make an empty one
OBJECTS = (("acc", lambda: Accumulator(1, 1)), ("path", lambda: FluidPath(0)),
           ("res", lambda: Reservoir(0)), ("window", WindowLog),
           ("history", BasalHistory), ("alarms", lambda: Alarms(0)))
# handled on their own: cfg (its fields), overlays (a list of objects), seen/seen_order,
# calibration (the bench measurement: commands after a checkpoint depend on it, found
# by the attacker; absent from older checkpoints: none under way)
SPECIAL = ("cfg", "overlays", "seen", "seen_order", "calibration")
# not state: the audit sink, a flag set only inside a projection, events drained
# before every call returns
VOLATILE = ("store", "projecting", "_pending_events")


def save(ctrl):
    """The durable state of ``ctrl`` as ``[[name, value], ...]`` (values shared with
    ``ctrl``: serialise them before changing it)."""
    items = [["format", FORMAT], ["cfg", ctrl.cfg.as_dict()]]
    for name in PLAIN:
        items.append([name, getattr(ctrl, name)])
    for name, _make in OBJECTS:
        obj = getattr(ctrl, name)
        if name == "window":
            obj = obj.copy()  # drops the pruned head
        d = {}
        for key in obj.__dict__:
            d[key] = obj.__dict__[key]
        items.append([name, d])
        for field in LONG.get(name, ()):
            values = d[field]
            d[field] = []
            for i in range(0, len(values), LIST_PER_ITEM):
                items.append(["+" + name + "." + field, values[i:i + LIST_PER_ITEM]])
    items.append(["overlays", [[o.source, o.next_ms, o.remaining, o.interval_ms]
                               for o in ctrl.overlays]])
    items.append(["calibration", ctrl.calibration])
    # command ids are ints: kept as [id, result] pairs, oldest first, in items of
    # SEEN_PER_ITEM pairs (the store writes one item per line: a board serialises
    # one short line at a time instead of one long one, which a fragmented heap
    # may not have room for)
    order = ctrl.seen_order
    for i in range(0, len(order), SEEN_PER_ITEM):
        items.append(["seen", [[cid, ctrl.seen[cid]] for cid in order[i:i + SEEN_PER_ITEM]]])
    if not order:
        items.append(["seen", []])
    return items


def load(items, audit=None):
    """A controller from ``save()`` output; raises ValueError if ``items`` is not
    a complete snapshot of this format (nothing is half-built: the caller gets a
    controller or an exception)."""
    data = {}
    seen = []
    parts = {}  # "object.field" -> the values of its "+" items, in order
    for pair in items:
        if type(pair) is not list or len(pair) != 2 or type(pair[0]) is not str:
            raise ValueError("snapshot item is not a [name, value] pair")
        if pair[0][:1] == "+":
            if type(pair[1]) is not list:
                raise ValueError("snapshot part %s has the wrong shape" % pair[0])
            parts[pair[0][1:]] = parts.get(pair[0][1:], []) + pair[1]
        elif pair[0] == "seen":  # possibly in several items, in order
            if type(pair[1]) is not list:
                raise ValueError("snapshot field seen has the wrong shape")
            seen += pair[1]
            data["seen"] = seen
        else:
            data[pair[0]] = pair[1]
    if data.get("format") not in (1, FORMAT):
        raise ValueError("snapshot format %r is not 1 or %d" % (data.get("format"), FORMAT))
    need = ("cfg", "overlays", "seen") + PLAIN + tuple(o[0] for o in OBJECTS)
    for name in need:
        if name not in data:
            raise ValueError("snapshot lacks " + name)
    cfg = DeviceConfig(data["cfg"])
    ctrl = Controller(cfg, audit)
    for name in PLAIN:
        setattr(ctrl, name, data[name])
    for name, make in OBJECTS:
        obj = make()
        fields = data[name]
        if type(fields) is not dict or sorted(fields) != sorted(obj.__dict__):
            raise ValueError("snapshot field %s has the wrong shape" % name)
        for key in fields:
            setattr(obj, key, fields[key])
        for field in LONG.get(name, ()):
            got = parts.pop(name + "." + field, [])
            whole = fields[field]
            if type(whole) is not list or (whole and got):
                raise ValueError("snapshot field %s.%s is not one list" % (name, field))
            setattr(obj, field, whole + got)
        setattr(ctrl, name, obj)
    if parts:
        raise ValueError("snapshot parts of no field: %s" % ", ".join(sorted(parts)))
    ctrl.overlays = [Overlay(o[0], o[1], o[2], o[3]) for o in data["overlays"]]
    cal = data.get("calibration", [0, 0, 0])
    if type(cal) is not list or len(cal) != 3 or [type(v) for v in cal] != [int, int, int]:
        raise ValueError("snapshot field calibration has the wrong shape")
    ctrl.calibration = cal
    ctrl.seen = {}
    ctrl.seen_order = []
    for cid, res in data["seen"]:
        ctrl.seen[cid] = res
        ctrl.seen_order.append(cid)
    return ctrl
