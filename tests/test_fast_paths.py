"""The firmware's hot-path shortcuts (taken on every stroke, for the simulator's
speed and the board's CPU) give exactly what the general code gives: the fluid
path's steady-state push and peek, the trace encoder's key-order cache, the
continuous program's daily dose."""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from itb import fluidpath, therapy, trace

CONCS = st.sampled_from([0, 500, 1000, 2000])


def _general(monkeypatch):
    monkeypatch.setattr(fluidpath.FluidPath, "_steady", lambda self, v, c: False)


@given(dead=st.integers(0, 3000), ops=st.lists(
    st.tuples(st.sampled_from(["push", "push", "push", "fill"]), st.integers(1, 1500), CONCS),
    max_size=40))
def test_fluid_path_shortcut_equals_the_general_push(dead, ops):
    """Invariant (SR-21): for any dead volume (band 0 included) and any sequence of
    strokes and fills, the steady-state shortcut returns the same (mass, hi, lo) and
    leaves the same segments and band memory as the general FIFO push; ``peek``
    returns what ``push`` will and changes nothing."""
    fast, slow = fluidpath.FluidPath(dead, 500), fluidpath.FluidPath(dead, 500)
    with pytest.MonkeyPatch.context() as mp:
        for op, vol, c in ops:
            if op == "fill":
                fast.fill(c)
                slow.fill(c)
                continue
            before = (fast.copy().segs, fast.copy().passed)
            peeked = fast.peek(vol, c)
            assert (fast.segs, fast.passed) == before
            got = fast.push(vol, c)
            _general(mp)
            want = slow.push(vol, c)
            mp.undo()
            assert got == want == peeked
            assert (fast.segs, fast.passed) == (slow.segs, slow.passed)
            # the band memory holds at most the band volume, however long the run
            assert sum(v for v, _c in fast.passed) <= fast.band_nl


def test_fluid_path_shortcut_is_taken_in_steady_state(monkeypatch):
    p = fluidpath.FluidPath(3, 500)  # a band of 0 nL
    assert p._steady(2, 500) and p.push(2, 500) == (1000, 500, 500) and p.passed == []
    q = fluidpath.FluidPath(374_000, 2000)
    for _ in range(100):  # 200 uL: more than the 74.8 uL band
        q.push(2000, 2000)
    assert q.passed == [[q.band_nl, 2000]]
    assert q._steady(2000, 2000) and not q._steady(2000, 500) and not q._steady(400_000, 2000)


RECORDS = st.recursive(
    st.one_of(st.integers(-10**12, 10**12), st.text(max_size=8), st.none(), st.booleans()),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.one_of(st.text(max_size=6), st.integers(0, 3), st.booleans()), inner,
                        max_size=5)),
    max_leaves=12)


@given(recs=st.lists(RECORDS, max_size=8))
def test_trace_key_order_cache_changes_no_byte(recs):
    """Invariant (trace determinism, SR-1): with the key-order cache on, every
    record (non-string keys, ``1`` next to ``True`` included) encodes to the same
    text as with it off, also when the same shapes come again."""
    try:
        trace.cache_key_order(0)
        want = [trace.encode(r) for r in recs]
        trace.cache_key_order(4)  # small, so the bound is reached too
        assert [trace.encode(r) for r in recs + recs] == want + want
    finally:
        trace.cache_key_order(0)
    assert trace.encode({1: 1}) == '{"1":1}' and trace.encode({True: 1}) == '{"True":1}'


def test_trace_cache_keeps_only_string_keyed_shapes():
    try:
        trace.cache_key_order(8)
        trace.encode({True: 1})
        trace.encode({"a": 1, "b": {"c": 2}})
        assert set(trace._ORDER) == {("a", "b"), ("c",)}
        assert trace.encode({1: 2}) == '{"1":2}'
    finally:
        trace.cache_key_order(0)
    assert trace._ORDER is None


@given(steps=st.lists(st.tuples(st.integers(1, 1439), st.integers(0, 10**7)), max_size=4),
       first=st.integers(0, 10**7))
def test_daily_dose_shortcut_equals_the_integral(steps, first):
    """A continuous program's daily dose is its one rate, as the integral over the
    day gives (rounded up and down alike)."""
    prog = [[0, first]] + sorted({s: [s, d] for s, d in steps}.values())
    whole = therapy._mass_x1440(prog)
    assert therapy.daily_dose_up(prog) == -(-whole // 1440)
    assert therapy.daily_dose_down(prog) == whole // 1440
