"""Durable state over an injected file system: A/B checkpoint slots and a
write-ahead ledger (SR-23, SR-25, SR-26). Runs under MicroPython.

Design (a departure from the design's "prescription slots" worth stating): a slot
holds a *checkpoint*, the whole durable controller state (``snapshot.py``: the
prescription and configuration, plans, settled-dose history and window sums,
reservoir and refill history, latched alarms, patient-bolus lockouts, seen
command ids), and the ledger holds every runner record since (``trace.py``
format). Boot recovery loads the newest valid checkpoint and *replays* the
ledger through the same ``Runner`` code that wrote it, so recovery cannot drift
from the live controller: there is no second implementation of any dosing rule.

Files (paths relative to the file system's root):
  ``slot_a``, ``slot_b``  checkpoints; written as ``slot.tmp``, closed, renamed
                          over the older slot (never deleted first)
  ``ledger/NNNNNNNNNN``   ledger segments, numbered in write order (a boot always
                          starts a new one, so nothing is appended after a torn line)
  ``hours``, ``hours.1``  per-hour stroke totals folded from dropped segments
  ``archive/NNNNNNNNNN``  dropped segments' lines kept for export when ``archive``
                          > 0: appended to files of about ``ARCHIVE_FILE_BYTES``,
                          the newest ``archive`` files kept; never read by recovery
                          (a power cut between an append and the segment's removal
                          can archive lines twice: readers skip repeated seqs)

Ledger line: ``<seq> <rtc_ms> <trace record> <crc32>``: ``seq`` counts from 1
without gaps, ``rtc_ms`` is the wall clock (UTC ms, -1 when unknown), the trace
record carries the therapy-clock time ``t``, and the CRC-32 (8 hex digits) covers
everything before it. Every field is range-checked before packing (SR-1).

Durability (SR-26): ``sync()`` flushes the open segment; the runner calls it
before the motor moves (the stroke intent is durable first) and at the end of
every input (a command's result is durable before it is answered). Nothing else
syncs, so a command and its result become durable together. A segment rotates at
a sync: a board's inputs are short (the app advances at every wake-up, and a
test-clock step an hour at a time), which keeps segments small enough to read
whole at recovery. Outcomes may
be lost with the power: a stroke without one counts as delivered after a reset.
A segment is rotated at ``SEGMENT_BYTES`` so a synced append never rewrites
more than one small file; after each checkpoint, segments older than the *older*
slot are folded into hour totals and removed, so either slot can be recovered.

Bound on the stored bytes: three checkpoints (two slots and the temporary; a
checkpoint is largest at the highest stroke rate, whose 24 h of stroke entries it
holds: about 42 KB at the worst case of the drug library) + the ledger since the
older checkpoint (at most ``2 * CHECKPOINT_BYTES`` plus two segments, about 33 KB)
+ ``2 * HOURS_BYTES`` of hour totals: about 190 KB of the Pico's 1.4 MiB at the
worst case (``benchmarks/flash_wear.py`` prints the figures).
"""

import binascii
import json

from itb import snapshot
from itb.trace import INPUT_KINDS, MAX_RECORD_CHARS, decode

TYPE_CHECKING = False  # MicroPython has no typing; guards checker-only lines

SLOTS = ("slot_a", "slot_b")
TMP = "slot.tmp"
LEDGER = "ledger"
ARCHIVE = "archive"
ARCHIVE_FILE_BYTES = 32768
HOURS = "hours"
SEGMENT_BYTES = 480  # below littlefs' inline size: a sync is a metadata commit
CHECKPOINT_BYTES = 16384  # ledger bytes between checkpoints
HOURS_BYTES = 16384
MAX_LINE = MAX_RECORD_CHARS
MAGIC = "ITBSLOT1"
SEQ_MAX = (1 << 62) - 1
DAY_MS = 86400000
HOUR_MS = 3600000
HEARTBEAT_MS = 15 * 60000  # SR-23
PLAUSIBLE_OUTAGE_MS = 30 * DAY_MS  # SR-23: a longer RTC gap is "unknown"
# SR-23 (reading): an RTC reads whole seconds and the board re-syncs its stamps when
# they drift 1.5 s off it (app.py), so a gap this far below zero is a short outage
# seen through that resolution, not a clock set back (found by the attacker: a 5 s
# reset after 10 days of crystal drift was taken as "unknown" and halved the basal)
RTC_SLACK_MS = 3000
NOT_DURABLE = ("power_cut",)  # a real power cut writes nothing


class StoreError(Exception):
    """The file system failed or holds nothing usable (with the reason)."""


def crc_hex(data):
    return "%08x" % (binascii.crc32(data) & 0xFFFFFFFF)


def pack_line(seq, rtc_ms, line):
    """One ledger line (bytes, with newline); ValueError if a field is out of range."""
    if type(seq) is not int or seq < 1 or seq > SEQ_MAX:
        raise ValueError("ledger seq out of range")
    if type(rtc_ms) is not int or rtc_ms < -1 or rtc_ms > SEQ_MAX:
        raise ValueError("ledger rtc_ms out of range")
    if type(line) is not str or not line or len(line) > MAX_LINE or "\n" in line:
        raise ValueError("ledger record must be one line of 1..%d characters" % MAX_LINE)
    for ch in line:
        if ord(ch) < 32 or ord(ch) > 126:
            raise ValueError("ledger record is not printable ASCII")
    body = ("%d %d %s" % (seq, rtc_ms, line)).encode()
    return body + b" " + crc_hex(body).encode() + b"\n"


def unpack_line(raw):
    """``(seq, rtc_ms, record)`` of one ledger line (bytes, without newline), or
    None if it is torn, corrupt or not a trace record."""
    try:
        i = raw.rindex(b" ")
        body = raw[:i]
        if raw[i + 1:] != crc_hex(body).encode():
            return None
        text = body.decode()
        a = text.index(" ")
        b = text.index(" ", a + 1)
        seq = int(text[:a])
        rtc = int(text[a + 1:b])
        rec = decode(text[b + 1:])
    except (ValueError, UnicodeError):
        return None
    if seq < 1 or seq > SEQ_MAX or rtc < -1:
        return None
    return seq, rtc, rec


def outage_bounds(last_rtc_ms, rtc_now_ms):
    """SR-23: ``(lower_ms, upper_ms)`` of the time elapsed since the last durable
    record, from the wall clock at that record and now (-1/None: unknown). Lower
    is 0 and upper None ("unknown = long") when either is unknown or the
    difference is negative beyond ``RTC_SLACK_MS`` or longer than 30 days; within
    that slack below zero it is ``(0, RTC_SLACK_MS)``."""
    if last_rtc_ms is None or last_rtc_ms < 0 or rtc_now_ms is None:
        return 0, None
    d = rtc_now_ms - last_rtc_ms
    if -RTC_SLACK_MS <= d < 0:
        return 0, RTC_SLACK_MS
    if d < 0 or d > PLAUSIBLE_OUTAGE_MS:
        return 0, None
    return d, d


def _read_lines(fs, path):
    """The lines of a small file (a ledger segment, the hour totals)."""
    f = fs.open(path, "rb")
    try:
        data = f.read()
    finally:
        f.close()
    return data.split(b"\n")


def _lines(fs, path, chunk=512):
    """Yield the lines of a file (bytes, without newline; the last one may be
    empty or torn) reading ``chunk`` bytes at a time: a checkpoint is never held
    whole in memory (small heap)."""
    f = fs.open(path, "rb")
    try:
        rest = b""
        while True:
            data = f.read(chunk)
            if not data:
                break
            rest += data
            parts = rest.split(b"\n")
            rest = parts.pop()
            for raw in parts:
                yield raw
        yield rest
    finally:
        f.close()


def read_slot(fs, name, load=1):
    """``(gen, seq, items)`` of a checkpoint slot (``items`` None unless ``load``),
    or None if it is missing, torn or corrupt (any CRC or shape error)."""
    gen = seq = -1
    items = [] if load else None
    crc = 0
    n = 0
    end = None
    try:
        for raw in _lines(fs, name):
            if end is not None:
                if raw:
                    return None  # bytes after the END line
                continue
            if raw.startswith(b"END "):
                end = raw.decode().split(" ")
                continue
            crc = binascii.crc32(raw + b"\n", crc)
            if n == 0:
                head = raw.decode().split(" ")
                if len(head) != 3 or head[0] != MAGIC:
                    return None
                gen = int(head[1])
                seq = int(head[2])
            elif items is not None:  # load
                items.append(json.loads(raw))
            n += 1
        if end is None or len(end) != 3 or int(end[1]) != n - 1:
            return None
        if end[2] != "%08x" % (crc & 0xFFFFFFFF):
            return None
    except (OSError, ValueError, UnicodeError, IndexError):
        return None
    if gen < 1 or seq < 0:
        return None
    return gen, seq, items


class Recovery:
    """What boot recovery found: ``slot`` (name used or None), ``gen``, ``seq`` (of
    the checkpoint), ``replayed`` (ledger records), ``last_seq`` (the largest on
    disk: new records go above it), ``last_t`` and ``last_rtc_ms`` (therapy and
    wall time of the last durable record; -1: RTC unknown), ``damaged`` (records
    after a gap, or with no checkpoint to replay them on), ``salvaged`` (how many
    of those were counted, ``Controller.salvage``), ``newest_rx`` (newest
    prescription generation anywhere in storage: [gen, ng_day, conc] or None),
    ``newest_gen``/``newest_slot`` (newest valid slot), ``problems`` (text)."""

    def __init__(self):
        self.slot = None
        self.gen = 0
        self.seq = 0
        self.replayed = 0
        self.last_seq = 0
        self.last_t = 0
        self.last_rtc_ms = -1
        self.damaged = 0
        self.newest_rx: "list | None" = None
        self.newest_gen = 0  # of the newest valid slot, and its name
        self.newest_slot = None
        self.salvaged = 0  # records after a gap, counted but not replayed
        self.problems = []


class Store:
    """The durable store on file system ``fs`` (see ``fs.py``).

    Use ``Store.create(fs, controller)`` once on an empty file system, then
    ``store.recover(...)`` at every boot; a ``Runner`` given the store as its
    ``journal`` keeps it up to date."""

    def __init__(self, fs):
        self.fs = fs
        self.seq = 0  # last ledger seq written
        self.gen = 0  # generation of the newest checkpoint
        self.cp_seq = [0, 0]  # ledger seq of the newest and the older checkpoint
        self.slot = 1  # index of the slot holding the newest checkpoint
        self.rx_gen = 0  # prescription generation at the newest checkpoint
        self.since_cp = 0  # ledger bytes since the newest checkpoint
        self.seg = None  # open segment file
        self.seg_no = 1  # number of the next segment
        self.seg_bytes = 0
        self.dirty = 0
        self.synced_t = 0  # therapy time of the last sync
        self.archive = 0  # archive files kept for export (0: no archive)

    # ------------------------------------------------------------------ create
    @classmethod
    def create(cls, fs, controller):
        """Lay out an empty store holding ``controller``'s state as checkpoint 1.
        Raises StoreError if the file system holds anything of a store (a boot
        must recover it, never format over it, SR-25); leftovers of a first boot
        that lost power before anything was durable are cleared."""
        if holds_store(fs):
            raise StoreError("file system already holds a store: recover it")
        names = fs.listdir("")
        if LEDGER in names:
            for seg in fs.listdir(LEDGER):
                fs.remove(LEDGER + "/" + seg)  # empty: nothing was ever durable
        else:
            fs.mkdir(LEDGER)
        store = cls(fs)
        store.checkpoint(controller)
        return store

    # ------------------------------------------------------------------ ledger
    def _segments(self):
        names = [n for n in self.fs.listdir(LEDGER) if len(n) == 10 and n.isdigit()]
        names.sort()
        return names

    def write(self, rec, line, wall_delta=None):
        """Append one runner record (``rec`` and its encoded ``line``), stamped with
        the wall clock (``wall_delta``: UTC ms minus therapy ms, None: unknown);
        not durable until ``sync()``."""
        if rec["k"] in NOT_DURABLE or (rec["k"] == "outcome" and rec["res"] == "power_cut"):
            return
        rtc = -1 if wall_delta is None else rec["t"] + wall_delta
        data = pack_line(self.seq + 1, rtc if rtc >= 0 else -1, line)
        if self.seg is None:
            self.seg = self.fs.open(LEDGER + "/%010d" % self.seg_no, "ab")
            self.seg_no += 1
            self.seg_bytes = 0
        self.seg.write(data)
        self.seq += 1
        self.seg_bytes += len(data)
        self.since_cp += len(data)
        self.dirty = 1

    def sync(self):
        """Make every written record durable (flush = littlefs sync)."""
        if self.dirty:
            if TYPE_CHECKING:  # only append sets dirty, and it opens a segment first
                assert self.seg is not None
            self.seg.flush()
            self.dirty = 0
        if self.seg is not None and self.seg_bytes >= SEGMENT_BYTES:
            self.seg.close()
            self.seg = None

    def close(self):
        """Close the open segment (a power cut may have failed it already)."""
        f, self.seg = self.seg, None
        if f is not None:
            try:
                f.close()
            except OSError:
                pass  # the data was synced or is lost either way

    def commit(self, controller, answer=1):
        """End of one runner input: sync when it is answered (``answer``: a command,
        an input from the board) or the last sync is ``HEARTBEAT_MS`` old (SR-23),
        then write a checkpoint when the ledger has grown by ``CHECKPOINT_BYTES``
        or the prescription generation changed. A plain wake-up is not synced by
        itself: its records (a stroke's outcome) become durable with the next
        stroke intent or heartbeat, and a lost outcome counts as delivered."""
        if answer or controller.last_now - self.synced_t >= HEARTBEAT_MS:
            self.synced_t = controller.last_now
            self.sync()
        if self.since_cp >= CHECKPOINT_BYTES or controller.rx_gen != self.rx_gen:
            self.checkpoint(controller)

    # ------------------------------------------------------------------ slots
    def checkpoint(self, controller):
        """Write ``controller``'s state into the older slot (temp, close, rename),
        then drop ledger segments no slot needs any more."""
        self.sync()
        gen = self.gen + 1
        target = SLOTS[1 - self.slot]
        f = self.fs.open(TMP, "wb")
        crc = 0
        n = 0
        try:
            head = ("%s %d %d\n" % (MAGIC, gen, self.seq)).encode()
            crc = binascii.crc32(head, crc)
            f.write(head)
            n += 1
            for item in snapshot.save(controller):
                data = json.dumps(item).encode() + b"\n"  # one line at a time: small heap
                crc = binascii.crc32(data, crc)
                f.write(data)
                n += 1
            f.write(("END %d %08x\n" % (n - 1, crc & 0xFFFFFFFF)).encode())
        finally:
            f.close()
        self.fs.rename(TMP, target)
        self.gen = gen
        self.slot = 1 - self.slot
        self.cp_seq = [self.seq, self.cp_seq[0]]
        self.rx_gen = controller.rx_gen
        self.since_cp = 0
        self._drop_segments()

    def _drop_segments(self):
        # A segment is dropped when a later one starts at or before the older
        # checkpoint: then both checkpoints hold all of its records. A segment with
        # no readable record (created, then the power failed) proves nothing and
        # does not stop the ones before it from going.
        keep_after = self.cp_seq[1]
        segs = self._segments()
        firsts = [_first_seq(self.fs, LEDGER + "/" + name) for name in segs]
        nxt = None  # first seq of the nearest later segment that has one
        droppable = [0] * len(segs)
        for i in range(len(segs) - 1, -1, -1):
            if nxt is not None and nxt - 1 <= keep_after:
                droppable[i] = 1
            if firsts[i] is not None:
                nxt = firsts[i]
        paths = [LEDGER + "/" + segs[i] for i in range(len(segs)) if droppable[i]]
        if paths:
            self._fold(paths)
            if self.archive:
                self._archive(paths)
            for path in paths:
                self.fs.remove(path)

    def _archive(self, paths):
        # append each segment's bytes to the newest archive file, starting a new one
        # whenever it holds ARCHIVE_FILE_BYTES, then keep the newest ``archive`` files
        if ARCHIVE not in self.fs.listdir(""):
            self.fs.mkdir(ARCHIVE)
        files = self._archive_files()
        size = ARCHIVE_FILE_BYTES
        if files:
            size = 0
            for raw in _lines(self.fs, ARCHIVE + "/" + files[-1]):
                size += len(raw) + 1
        for path in paths:
            if size >= ARCHIVE_FILE_BYTES:
                files.append("%010d" % (int(files[-1]) + 1 if files else 1))
                size = 0
            f = self.fs.open(ARCHIVE + "/" + files[-1], "ab")
            src = self.fs.open(path, "rb")
            try:
                while True:
                    data = src.read(512)
                    if not data:
                        break
                    f.write(data)
                    size += len(data)
            finally:
                src.close()
                f.close()
        for name in files[:max(0, len(files) - self.archive)]:
            self.fs.remove(ARCHIVE + "/" + name)

    def _archive_files(self):
        names = [n for n in self.fs.listdir(ARCHIVE) if len(n) == 10 and n.isdigit()]
        names.sort()
        return names

    def export_files(self):
        """Paths of every file holding ledger lines, oldest first: the archive,
        then the live segments (their lines are ``pack_line`` format; a torn
        last line after a power cut fails its CRC)."""
        out = []
        names = self.fs.listdir("")
        for d in (ARCHIVE, LEDGER):
            if d in names:
                segs = [n for n in self.fs.listdir(d) if len(n) == 10 and n.isdigit()]
                segs.sort()
                out += [d + "/" + n for n in segs]
        return out

    def _fold(self, paths):
        # per-hour totals of the strokes in the segments about to be removed, one
        # line per hour per checkpoint (an audit summary, never used for dosing: a
        # power cut between fold and remove can count those segments twice)
        totals = {}
        for path in paths:
            for raw in _read_lines(self.fs, path):
                got = unpack_line(raw) if raw else None
                if got is not None and got[2]["k"] == "stroke":
                    r = got[2]
                    h = r["t"] // HOUR_MS
                    tot = totals.setdefault(h, [0, 0, 0])
                    tot[0] += 1
                    tot[1] += r["nl"]
                    tot[2] += r["ng_hi"]
        if not totals:
            return
        out = b""
        for h in sorted(totals):
            body = ("H %d %d %d %d" % (h, totals[h][0], totals[h][1], totals[h][2])).encode()
            out += body + b" " + crc_hex(body).encode() + b"\n"
        names = self.fs.listdir("")
        size = 0
        if HOURS in names:
            size = sum(len(raw) + 1 for raw in _lines(self.fs, HOURS))  # a piece at a time
        if size >= HOURS_BYTES:
            self.fs.rename(HOURS, HOURS + ".1")
        f = self.fs.open(HOURS, "ab")
        try:
            f.write(out)
        finally:
            f.close()

    def hour_totals(self):
        """``[[hour, strokes, nl, ng_hi], ...]`` folded so far, oldest first (bad
        lines skipped)."""
        out = []
        names = self.fs.listdir("")
        for name in (HOURS + ".1", HOURS):
            if name not in names:
                continue
            for raw in _lines(self.fs, name):
                i = raw.rfind(b" ")
                if i > 0 and raw[i + 1:] == crc_hex(raw[:i]).encode():
                    out.append([int(x) for x in raw[:i].decode().split(" ")[1:]])
        return out

    # ------------------------------------------------------------------ recovery
    def slots(self):
        """Valid checkpoints ``[(gen, seq, name), ...]``, newest first (checked
        whole, CRC included, without keeping their contents)."""
        found = []
        for name in SLOTS:
            got = read_slot(self.fs, name, 0)
            if got is not None:
                found.append((got[0], got[1], name))
        found.sort(key=_gen_key, reverse=True)
        return found

    def records(self):
        """Yield every ledger line in file order: ``(seq, rtc_ms, record)``, or
        None for a torn or corrupt line."""
        if LEDGER not in self.fs.listdir(""):
            return
        for seg in self._segments():
            for raw in _read_lines(self.fs, LEDGER + "/" + seg):
                if raw:
                    yield unpack_line(raw)

    def scan(self):
        """The slots: ``(info, slots)`` with the newest valid slot and the corrupt
        ones (``problems``) filled in."""
        info = Recovery()
        slots = self.slots()
        names = self.fs.listdir("")
        for name in SLOTS:
            if name in names and name not in [x[2] for x in slots]:
                info.problems.append("slot %s is corrupt" % name)
        if slots:
            info.newest_gen, info.newest_slot = slots[0][0], slots[0][2]
        return info, slots

    def rebuild(self, board):
        """Rebuild the controller from storage: ``(runner, info, storage)``, the
        runner powered off (``recover`` powers it on).

        The newest valid checkpoint is loaded and every later ledger record is
        replayed through a ``Runner`` (the same code that wrote it). ``storage``
        is None, or what ``Controller.reboot`` must handle (SR-25): a newer
        prescription generation in storage than the one recovered (rollback) or
        no readable checkpoint (corrupt)."""
        from itb.controller import Controller
        from itb.runner import JournalReplayer, Runner

        try:
            info, slots = self.scan()
        except OSError as e:
            raise StoreError("cannot read the store: %s" % e)
        storage = None
        ctrl = None
        for gen, seq, name in slots:
            got = read_slot(self.fs, name)
            if got is None:  # pragma: no cover - it was valid a moment ago
                continue
            try:
                ctrl = snapshot.load(got[2])
            except (ValueError, TypeError, KeyError, IndexError) as e:
                info.problems.append("slot %s does not load: %s" % (name, e))
                continue
            info.slot, info.gen, info.seq = name, gen, seq
            break
        if ctrl is None:
            info.problems.append("no valid checkpoint")
            storage = {"kind": "corrupt"}
            ctrl = Controller()
        runner = Runner(ctrl, board)
        rep = JournalReplayer(runner)
        expected = info.seq + 1
        last_t = ctrl.last_now
        # SR-23: the wall clock at the last durable record (the checkpoint's own
        # time when no record follows it), -1 when unknown there
        last_rtc = -1 if ctrl.wall_delta is None else ctrl.last_now + ctrl.wall_delta
        top = info.seq  # the largest seq on disk: new records go above it
        tail = []
        for got in self.records() if storage is None else ():
            if got is None or got[0] != expected:
                continue  # torn or corrupt, older (in the checkpoint) or after a gap
            seq, rtc, rec = got
            try:
                rep.feed(rec)
            except Exception as e:  # a record the code cannot replay: damage
                info.problems.append("ledger seq %d does not replay: %s" % (seq, e))
                break
            expected = seq + 1
            info.replayed += 1
            last_t = max(last_t, rec["t"])
            last_rtc = rtc
            if rec["k"] == "stroke":
                tail.append(rec)  # intents whose causing input is not yet read
            elif rec["k"] in INPUT_KINDS:
                tail = []
            if rec["k"] == "rtc" and rec["utc_ms"] is not None:
                last_rtc = rec["utc_ms"]  # stamped before the controller took it
                # (an invalid one is followed by the CLOCK_INVALID record, unstamped)
        try:
            rep.finish()
        except Exception as e:  # outcomes that do not fit: the intents still count
            info.problems.append("ledger tail does not replay: %s" % e)
            info.damaged = 1
            runner.powered = False
            runner.board = board
            for rec in tail:
                ctrl.salvage(rec)  # SR-26: their intents were durable
        # Every record once more: the newest prescription generation anywhere
        # (SR-25), the largest seq, and the records past the replayed ones (after a
        # gap, or with no checkpoint to replay them on), which cannot be replayed
        # but what they prove still holds
        for got in self.records():
            if got is None:
                continue
            seq, rtc, rec = got
            top = max(top, seq)
            if rec["k"] == "rx" and (info.newest_rx is None or rec["gen"] > info.newest_rx[0]):
                info.newest_rx = [rec["gen"], rec["ng_day"], rec["conc"]]
            if seq >= expected and (storage is not None or seq > info.seq):
                info.damaged = 1
                ctrl.salvage(rec)  # SR-26
                info.salvaged += 1
                last_t = max(last_t, rec["t"])
                last_rtc = rtc
        if storage is not None:
            observed = _observed_basal(self.records())
            if observed is not None:
                storage["ng_day"], storage["conc"] = observed
            if info.newest_rx is not None:
                storage["gen"] = info.newest_rx[0]
        info.last_seq = top
        info.last_t = max(last_t, ctrl.last_now)
        info.last_rtc_ms = last_rtc
        if storage is None and info.newest_rx is not None and info.newest_rx[0] > ctrl.rx_gen:
            storage = {"kind": "rollback", "gen": info.newest_rx[0],
                       "ng_day": info.newest_rx[1], "conc": info.newest_rx[2]}
        if storage is None and info.damaged:
            storage = {"kind": "gap"}
        if info.damaged:
            info.problems.append("ledger damaged: %d record(s) after a gap counted, not"
                                 " replayed" % info.salvaged)
        return runner, info, storage

    def recover(self, board, trace=None, rtc_now_ms=None, boot_loop=0, clock=None):
        """Boot: ``rebuild``, then power the runner on with the outage bounds;
        returns ``(runner, info)`` with the runner powered on, driving ``board``,
        writing to ``trace`` and to this store. Elapsed time across the outage is
        bounded by the wall clock at the last record and ``rtc_now_ms`` (None: RTC
        invalid), SR-23. A checkpoint is written at once. ``clock``: ``(now_ms,
        upper_ms)`` measured by a caller that knows the outage (simulator, tests)
        instead of the RTC bounds; ``now_ms`` below the last recovered time is
        raised to it. Raises StoreError only when the file system cannot be read."""
        runner, info, storage = self.rebuild(board)
        # continue after the last good record, in a new segment, with a checkpoint
        names = self.fs.listdir("")
        if LEDGER not in names:
            self.fs.mkdir(LEDGER)
        segs = self._segments()
        self.seg_no = int(segs[-1]) + 1 if segs else 1
        self.seq = info.last_seq
        self.gen = info.newest_gen
        self.slot = 0 if info.newest_slot == SLOTS[0] else 1
        self.cp_seq = [info.seq, info.seq]
        self.rx_gen = -1  # forces the checkpoint after power_on
        if clock is None:
            lower, upper = outage_bounds(info.last_rtc_ms, rtc_now_ms)
            now = info.last_t + lower
        else:
            now, upper = max(clock[0], info.last_t), clock[1]
        runner.trace = trace
        runner.journal = self
        runner.power_on(now, upper, boot_loop, storage)
        if clock is None and upper is not None:
            runner.set_rtc(runner.now, rtc_now_ms)  # a plausible RTC: keep stamping
        return runner, info


def holds_store(fs):
    """True if ``fs`` holds anything a store wrote that could matter: a slot (even
    a corrupt one), hour totals, or a ledger segment with any bytes. A file system
    with only an empty ledger directory or segment (a first boot cut before its
    first checkpoint) holds nothing."""
    names = fs.listdir("")
    for name in SLOTS + (HOURS, HOURS + ".1"):
        if name in names:
            return True
    if LEDGER in names:
        for seg in fs.listdir(LEDGER):
            if _read_lines(fs, LEDGER + "/" + seg) != [b""]:
                return True
    return False


def boot(fs, board, config=None, trace=None, rtc_now_ms=None, boot_loop=0, archive=0):
    """Start the controller on file system ``fs``: recover the store it holds, or
    create one (with a fresh controller for ``config``) on a file system holding
    no store at all (``holds_store``). Never formats over a store it cannot
    read: that recovers with STORAGE_CORRUPT.

    ``board``: the motor (``stroke(n, volume_nl, now)``); ``trace``: optional sink
    of runner trace lines; ``rtc_now_ms``: the battery-backed RTC now (UTC ms),
    None when it is invalid (SR-23: the outage then counts as unknown, i.e. long);
    a plausible RTC is also handed to the controller (``set_rtc``) so the ledger
    stamps wall time. ``boot_loop``: the board's boot-loop verdict (SR-27).
    ``archive``: archive files (``ARCHIVE_FILE_BYTES`` each) of ledger lines to
    keep for export once checkpoints no longer need them (0: none).
    Returns ``(runner, info)``: ``info`` is None when the store was created, else
    the ``Recovery`` (see its fields). Send later inputs at ``runner.now`` or
    after (the last recovered time plus the outage's lower bound)."""
    from itb.controller import Controller
    from itb.runner import Runner
    from itb.trace import encode

    if not holds_store(fs):
        ctrl = Controller(config)
        store = Store.create(fs, ctrl)
        store.archive = archive
        if trace is not None:
            trace(encode({"k": "config", "t": 0, "cfg": config or {}}))
        runner = Runner(ctrl, board, trace, store)
        if rtc_now_ms is not None:
            runner.set_rtc(0, rtc_now_ms)  # the ledger's RTC stamps start here
        return runner, None
    store = Store(fs)
    store.archive = archive
    return store.recover(board, trace, rtc_now_ms, boot_loop)


def _observed_basal(records):
    """SR-25, no valid checkpoint: ``(ng_day, conc)`` when the ledger shows basal
    delivery in its last day (the newest basal record is RUNNING at a daily dose
    and a stroke of the newest prescription's concentration followed it within
    24 h of the last record), else None."""
    last = None
    conc = None
    stroke_t = -1
    end = 0
    for got in records:
        if got is None:
            continue
        rec = got[2]
        end = max(end, rec["t"])
        if rec["k"] == "basal":
            last = rec
        elif rec["k"] == "rx":
            conc = rec["conc"]
        elif rec["k"] == "stroke" and rec["src"] == "basal":
            stroke_t = rec["t"]
    if last is None or conc is None or last["state"] != "RUNNING" or last["ng_day"] <= 0:
        return None
    if stroke_t < 0 or stroke_t < end - DAY_MS:
        return None
    return last["ng_day"], conc


def _gen_key(slot):
    return slot[0]


def _first_seq(fs, path):
    """Sequence number of the first valid record of a segment or archive file, or
    None. Reads no further than that record (an archive file is 32 KB)."""
    lines = _lines(fs, path)
    try:
        for raw in lines:
            got = unpack_line(raw) if raw else None
            if got is not None:
                return got[0]
    finally:
        lines.close()  # closes the file now (MicroPython does not finalise generators)
    return None
