"""The ledger archive of the durable store (firmware/itb/store.py): with
``store.archive = N`` > 0 the lines of the ledger segments a checkpoint drops are
appended to files ``archive/NNNNNNNNNN`` (a new file once the newest holds
``ARCHIVE_FILE_BYTES``), the newest N files kept, and ``export_files()`` lists
the archive then the live segments, oldest first (the board's ``log`` export).
Recovery never reads the archive (SR-25, SR-26)."""

import json

import pytest
from itb import store as st
from itb.fs import MemoryFS

from host_tools.testkit import workload as wl
from host_tools.testkit.machine import plain_state


def _harness(archive):
    """A store with ``archive`` archive files on a fresh MemoryFS, booted."""
    fs = MemoryFS()
    h = wl.Harness(fs)
    h.runner.journal.archive = archive
    return fs, h


def _drive(h, until, check=None, step=wl.HOUR):
    """Run the scripted week (the events not yet run) to ``until``, calling
    ``check(h)`` every ``step``."""
    t = h.now
    while True:
        done = getattr(h, "events_done", 0)
        while done < len(wl.WEEK) and wl.WEEK[done][0] <= t:
            at, fn = wl.WEEK[done]
            h.run_to(at)
            fn(h)
            done = h.events_done = done + 1
        h.run_to(t)
        if check is not None:
            check(h)
        if t >= until:
            return
        t = min(t + step, until)


def _after_every_checkpoint(store, check):
    """Call ``check()`` after each checkpoint ``store`` writes (segments are
    dropped only there)."""
    checkpoint = store.checkpoint

    def checked(controller):
        checkpoint(controller)
        check()

    store.checkpoint = checked


def _read(fs, path):
    f = fs.open(path, "rb")
    try:
        return f.read()
    finally:
        f.close()


def exported(fs, store):
    """Every ledger line of ``export_files()`` in order: ``(seq, rtc_ms, record)``."""
    out = []
    for path in store.export_files():
        for raw in _read(fs, path).split(b"\n"):
            if raw:
                got = st.unpack_line(raw)
                assert got is not None, (path, raw)
                out.append(got)
    return out


def _segments(fs, d):
    return sorted(n for n in fs.listdir(d)) if d in fs.listdir("") else []


def _check_export(fs, store, n, file_bytes=st.ARCHIVE_FILE_BYTES):
    """The archive holds the newest ``n`` files, numbered without a gap, every one
    but the newest full (``file_bytes`` or more); the export is consecutive: from
    seq 1 while no file was removed, else from the first record of the oldest file
    kept; nothing is both archived and live. Returns how many files were made."""
    archived = _segments(fs, st.ARCHIVE)
    made = int(archived[-1]) if archived else 0
    assert archived == ["%010d" % i for i in range(max(1, made - n + 1), made + 1)]
    for name in archived[:-1]:
        assert len(_read(fs, st.ARCHIVE + "/" + name)) >= file_bytes
    live = _segments(fs, st.LEDGER)
    assert store.export_files() == ([st.ARCHIVE + "/" + a for a in archived]
                                    + [st.LEDGER + "/" + s for s in live])
    seqs = [got[0] for got in exported(fs, store)]
    assert seqs, "no ledger lines"
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "a gap or a repeat"
    assert seqs[-1] <= store.seq
    if made <= n:
        assert seqs[0] == 1
    else:
        first = st.unpack_line(_read(fs, st.ARCHIVE + "/" + archived[0]).split(b"\n")[0])
        assert seqs[0] == first[0] > 1
    return made


def test_without_an_archive_dropped_segments_are_removed():
    fs, h = _harness(0)
    _drive(h, wl.WEEK_END, step=wl.DAY)
    store = h.runner.journal
    assert st.ARCHIVE not in fs.listdir("")
    assert not [p for p in fs.durable if p.startswith(st.ARCHIVE)]
    live = _segments(fs, st.LEDGER)
    assert int(live[0]) > 1  # segments were dropped
    assert store.export_files() == [st.LEDGER + "/" + s for s in live]
    seqs = [got[0] for got in exported(fs, store)]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))) and seqs[0] > 1


def test_an_empty_store_exports_nothing():
    assert st.Store(MemoryFS()).export_files() == []


@pytest.mark.sr("SR-26")
@pytest.mark.parametrize("n, file_bytes", [
    (1, 2000), (2, 2000), (1, st.ARCHIVE_FILE_BYTES), (1000, 2000),
    (3, 2000), (8, 2000), (12, 2000), (3, st.ARCHIVE_FILE_BYTES),
])
def test_the_archive_keeps_the_newest_files_and_the_export_has_no_gap(
        monkeypatch, n, file_bytes):
    """Invariant after every checkpoint and at every hour of the scripted week:
    the archive holds the newest ``n`` files, numbered without a gap, all but the
    newest full; the exported ledger lines are consecutive from seq 1 while no
    file was removed, then from the first record of the oldest file kept (SR-26:
    the write-ahead record stays whole)."""
    monkeypatch.setattr(st, "ARCHIVE_FILE_BYTES", file_bytes)
    fs, h = _harness(n)
    store = h.runner.journal
    seen = []
    _after_every_checkpoint(
        store, lambda: seen.append(_check_export(fs, store, n, file_bytes)))
    _drive(h, wl.WEEK_END, lambda h: _check_export(fs, store, n, file_bytes))
    assert seen == sorted(seen) and seen[0] == 0
    assert seen[-1] >= (2 if file_bytes == st.ARCHIVE_FILE_BYTES else 7)  # files made


@pytest.mark.sr("SR-26")
def test_a_large_archive_exports_the_whole_ledger_from_seq_1():
    fs, h = _harness(100000)
    _drive(h, wl.WEEK_END, step=wl.DAY)
    store = h.runner.journal
    store.sync()
    lines = exported(fs, store)
    assert [got[0] for got in lines] == list(range(1, store.seq + 1))
    # the records are the runner's trace lines (after the config header), in order
    assert len(lines) > 1000
    durable = [json.loads(x) for x in h.lines[1:]]
    assert [got[2] for got in lines] == [r for r in durable if r["k"] not in st.NOT_DURABLE]


def _week_and_cut(archive, until=5 * wl.DAY + 7 * wl.HOUR):
    fs, h = _harness(archive)
    _drive(h, until, step=wl.DAY)
    h.runner.power_cut(h.now)
    fs.power_cut()
    return fs, h


def _recovered(fs, h, archive=0):
    store = st.Store(fs)
    store.archive = archive  # as ``store.boot`` sets it: before the boot checkpoint
    return store.recover(h.board, clock=(h.now + 1000, 1000))


@pytest.mark.sr("SR-25", "SR-26")
def test_recovery_is_unaffected_by_the_archive():
    """The same week with and without an archive writes the same trace, the same
    slots, hour totals and live ledger, and recovers to the same controller with
    the same findings; recovery leaves the archive as it was, except for the
    segments its own checkpoint drops (archived too)."""
    fs0, h0 = _week_and_cut(0)
    fs3, h3 = _week_and_cut(2)  # 2: out of the trimming bug's reach
    assert h3.lines == h0.lines
    assert _segments(fs3, st.ARCHIVE)
    kept = {p: v for p, v in fs3.durable.items() if not p.startswith(st.ARCHIVE + "/")}
    assert kept == fs0.durable
    r0, i0 = _recovered(fs0, h0)
    r3, i3 = _recovered(fs3, h3, 2)
    assert plain_state(r3.ctrl) == plain_state(r0.ctrl)
    assert vars(i3) == vars(i0)
    assert not i3.damaged and i3.replayed > 0
    kept = {p: v for p, v in fs3.durable.items() if not p.startswith(st.ARCHIVE + "/")}
    assert kept == fs0.durable
    _check_export(fs3, r3.journal, 2)


@pytest.mark.sr("SR-26")
@pytest.mark.parametrize("cut", [2 * wl.DAY + 3 * wl.HOUR, 4 * wl.DAY + 150 * wl.MIN])
def test_the_export_stays_consecutive_across_a_reset(monkeypatch, cut):
    """Invariant across a power cut and recovery with the archive set before the
    boot checkpoint (as ``store.boot`` does): sequence numbers continue after the
    last durable record, and the archive and live segments export without a gap
    or a repeat at every checkpoint after it (SR-26)."""
    monkeypatch.setattr(st, "ARCHIVE_FILE_BYTES", 3000)
    fs, h = _week_and_cut(2, cut)
    runner, info = _recovered(fs, h, 2)
    store = runner.journal
    _check_export(fs, store, 2, 3000)
    seen = []
    _after_every_checkpoint(store, lambda: seen.append(_check_export(fs, store, 2, 3000)))
    h.runner, h.now = runner, runner.now
    _drive(h, wl.WEEK_END, lambda h: _check_export(fs, store, 2, 3000), step=6 * wl.HOUR)
    assert len(seen) > 2 and seen[-1] > seen[0]
    assert info.last_seq < store.seq


def test_boot_sets_the_archive_when_creating_and_recovering():
    fs = MemoryFS()
    runner, info = st.boot(fs, wl.Motor(), archive=5)
    assert info is None and runner.journal.archive == 5
    runner.journal.close()
    runner, info = st.boot(fs, wl.Motor(), archive=7)
    assert info is not None and runner.journal.archive == 7
    runner.journal.close()
    runner, info = st.boot(fs, wl.Motor())
    assert runner.journal.archive == 0


def test_lowering_the_archive_trims_it_at_the_next_drop(monkeypatch):
    monkeypatch.setattr(st, "ARCHIVE_FILE_BYTES", 1)  # a file per drop
    fs, h = _harness(1000)
    _drive(h, 4 * wl.DAY, step=wl.DAY)
    made = len(_segments(fs, st.ARCHIVE))
    assert made > 4
    h.runner.journal.archive = 2
    _drive(h, 6 * wl.DAY, step=wl.DAY)
    assert _check_export(fs, h.runner.journal, 2, 1) > made
    assert len(_segments(fs, st.ARCHIVE)) == 2


def _segment(fs, number, first_seq, count):
    data = b"".join(st.pack_line(seq, -1, '{"k":"advance","t":%d}' % seq)
                    for seq in range(first_seq, first_seq + count))
    fs.durable[st.LEDGER + "/%010d" % number] = data


def _drops(monkeypatch, archive, drops):
    """A store whose checkpoints drop one 10-record segment ``drops`` times, each
    into a new archive file."""
    monkeypatch.setattr(st, "ARCHIVE_FILE_BYTES", 1)
    fs = MemoryFS()
    fs.mkdir(st.LEDGER)
    for i in range(drops + 1):
        _segment(fs, i + 1, 1 + 10 * i, 10)
    store = st.Store(fs)
    store.archive = archive
    for i in range(1, drops + 1):
        store.cp_seq = [10 * i + 5, 10 * i]  # both checkpoints past segment i
        store._drop_segments()
    assert _segments(fs, st.LEDGER) == ["%010d" % (drops + 1)]
    return fs, store


@pytest.mark.parametrize("archive, drops", [(3, 2), (8, 5), (4, 3), (3, 3)])
def test_trimming_keeps_every_file_while_under_the_limit(monkeypatch, archive, drops):
    """While fewer than ``archive`` files were ever made, every one stays."""
    fs, store = _drops(monkeypatch, archive, drops)
    assert _segments(fs, st.ARCHIVE) == ["%010d" % i for i in range(1, drops + 1)]
    assert [got[0] for got in exported(fs, store)] == list(range(1, 10 * drops + 11))


@pytest.mark.parametrize("archive, drops", [(1, 1), (1, 4), (2, 6), (2, 3), (2, 1)])
def test_trimming_keeps_the_newest_files(monkeypatch, archive, drops):
    fs, store = _drops(monkeypatch, archive, drops)
    kept = list(range(max(1, drops - archive + 1), drops + 1))
    assert _segments(fs, st.ARCHIVE) == ["%010d" % i for i in kept]
    assert store.export_files() == ["archive/%010d" % i for i in kept] + [
        "ledger/%010d" % (drops + 1)]
    assert [got[0] for got in exported(fs, store)] == list(range(10 * kept[0] - 9,
                                                                 10 * drops + 11))


def test_a_drop_appends_to_the_newest_file_until_it_is_full(monkeypatch):
    fs = MemoryFS()
    fs.mkdir(st.LEDGER)
    for i in range(6):
        _segment(fs, i + 1, 1 + 10 * i, 10)
    size = len(fs.durable[st.LEDGER + "/0000000001"])  # the shortest (one-digit seqs)
    store = st.Store(fs)
    store.archive = 100
    # segments per archive file after each drop (the others are a few bytes longer,
    # so // counts them); files of at least 2 * size from drop 3 on
    for i, want in ((1, [1]), (2, [2]), (3, [2, 1]), (4, [2, 2]), (5, [2, 2, 1])):
        if i == 3:
            monkeypatch.setattr(st, "ARCHIVE_FILE_BYTES", 2 * size)
        store.cp_seq = [10 * i + 5, 10 * i]
        store._drop_segments()
        files = _segments(fs, st.ARCHIVE)
        assert [len(_read(fs, st.ARCHIVE + "/" + f)) // size for f in files] == want, i
    assert [got[0] for got in exported(fs, store)] == list(range(1, 61))


class _ArchiveFails(MemoryFS):
    """A file system whose archive files cannot be opened for writing."""

    def open(self, path, mode):
        if path.startswith(st.ARCHIVE + "/") and mode != "rb":
            raise OSError(28, "no space left")
        return super().open(path, mode)


def test_an_archive_that_cannot_be_written_loses_no_ledger_segment():
    fs = _ArchiveFails()
    fs.mkdir(st.LEDGER)
    for i in range(3):
        _segment(fs, i + 1, 1 + 10 * i, 10)
    store = st.Store(fs)
    store.archive = 4
    store.cp_seq = [25, 20]
    with pytest.raises(OSError):
        store._drop_segments()
    assert _segments(fs, st.LEDGER) == ["0000000001", "0000000002", "0000000003"]
    assert [got[0] for got in exported(fs, store)] == list(range(1, 31))
