"""Traceability: print the table safety rule -> code -> tests, and fail when a
rule of ``docs/SAFETY_RULES.md`` has no test (SAFETY_RULES.md preamble, DESIGN
"Testing").

A test names the rules it checks with the marker ``@pytest.mark.sr("SR-8", ...)``
(on the test, its class or its module's ``pytestmark``) or in its name
(``test_sr8_...``). Code names the rule it enforces in a comment or docstring
(``SR-8``); the code column lists the ``firmware/`` files that do. Tests are found
by pytest's own collection, so parametrized cases count once per function.

    python -m host_tools.testkit.traceability            # table; exit 1 on a gap
    python -m host_tools.testkit.traceability --markdown  # the same as Markdown
    pytest --sr SR-19                                      # run one rule's tests

"tests naming rules" counts test functions (a parametrized test once); exit
status 0, 1 when a rule has no test or a test names an unknown rule, 2 when the
rules document or the tests cannot be read.
"""

import argparse
import contextlib
import os
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RULES_FILE = ROOT / "docs" / "SAFETY_RULES.md"
RULE_LINE = re.compile(r"^- \*\*(SR-\d+)\*\*\s+(.*)$")
NAME_RULE = re.compile(r"(?:^|_)sr(\d+)(?=_|$)")
CODE_RULE = re.compile(r"\bSR-(\d+)\b")


def load_rules(path=RULES_FILE):
    """``{rule: summary}`` in document order from the ``- **SR-n**`` lines.

    Raises ValueError when there are none, when the numbers do not run 1..N, or
    when the text names a rule (``SR-n`` anywhere) that has no such line: a rule
    written in another format must not drop out of the check silently."""
    text = Path(path).read_text(encoding="utf-8")
    rules = {}
    for line in text.splitlines():
        m = RULE_LINE.match(line)
        if m:
            summary = m.group(2).split(". ")[0].strip()
            rules[m.group(1)] = summary[:70] + ("..." if len(summary) > 70 else "")
    if not rules:
        raise ValueError("%s: no '- **SR-n**' rule lines found" % path)
    numbers = [int(r[3:]) for r in rules]
    if numbers != list(range(1, len(numbers) + 1)):
        raise ValueError("%s: rule lines must number SR-1..SR-%d in order, found %s"
                         % (path, len(numbers), ", ".join(rules)))
    orphans = sorted(set("SR-" + n for n in CODE_RULE.findall(text)) - set(rules),
                     key=lambda r: int(r[3:]))
    if orphans:
        raise ValueError("%s: %s named but not defined by a '- **SR-n** text' line"
                         % (path, ", ".join(orphans)))
    return rules


def rules_of(item):
    """The rules a collected pytest item names: ``sr`` markers (test, class or
    module) and ``sr<n>`` words in the test's name. Also used by ``--sr``
    (tests/conftest.py), so selection and the table agree."""
    rules = set()
    for mark in item.iter_markers("sr"):
        rules.update(mark.args)
    rules.update("SR-%s" % n for n in NAME_RULE.findall(_function_name(item).lower()))
    return rules


def _never_runs(item):
    """A test that is skipped or not run by its markers checks nothing: it does not
    count (a skip decided inside the test body cannot be seen here)."""
    if item.get_closest_marker("skip") is not None:
        return True
    for mark in item.iter_markers("skipif"):
        if mark.args and mark.args[0] is True:
            return True
    for mark in item.iter_markers("xfail"):
        if mark.kwargs.get("run", True) is False or not mark.args or mark.args[0] is True:
            return True
    return False


def _function_name(item):
    return getattr(item, "originalname", None) or item.name.split("[")[0]


class _Collector:
    def __init__(self):
        self.tests = {}  # test function id -> set of rules

    def pytest_collection_finish(self, session):
        for item in session.items:
            if _never_runs(item):
                continue
            parts = [item.nodeid.split("::")[0]]
            if item.cls is not None:
                parts.append(item.cls.__name__)
            parts.append(_function_name(item))
            self.tests.setdefault("::".join(parts), set()).update(rules_of(item))


def collect_tests(args=("tests",)):
    """``{test id: set of rules}`` from pytest's collection of ``args`` (its own
    output is discarded). Raises RuntimeError if collection fails."""
    c = _Collector()
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        code = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", "--no-cov", *args],
                           plugins=[c])
    if code not in (0, 5):
        raise RuntimeError("pytest could not collect %s (exit %d); run pytest --collect-only"
                           " to see why" % (" ".join(args), code))
    return c.tests


def code_files(root=ROOT / "firmware"):
    """``{rule: sorted firmware files naming it}``."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        for n in set(CODE_RULE.findall(path.read_text(encoding="utf-8"))):
            out.setdefault("SR-" + n, []).append(str(path.relative_to(root)))
    return out


def table(rules, tests, code):
    """Rows ``(rule, summary, code files, test ids)`` and the problems found."""
    by_rule = {r: [] for r in rules}
    problems = []
    for test, named in sorted(tests.items()):
        for r in sorted(named):
            if r in by_rule:
                by_rule[r].append(test)
            else:
                problems.append("%s names %s, which SAFETY_RULES.md does not define" % (test, r))
    rows = []
    for r, summary in rules.items():
        rows.append((r, summary, code.get(r, []), by_rule[r]))
        if not by_rule[r]:
            problems.append("%s has no test" % r)
    return rows, problems


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python -m host_tools.testkit.traceability",
        description="Print the table safety rule -> code -> tests; exit 1 when a rule has "
        "no test or a test names a rule that does not exist.")
    ap.add_argument("--rules", default=str(RULES_FILE), help="the rules document")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table")
    ap.add_argument("-v", "--verbose", action="store_true", help="list every test per rule")
    ap.add_argument("paths", nargs="*", default=["tests"], help="test paths to collect")
    args = ap.parse_args(argv)
    try:
        rules = load_rules(args.rules)
        tests = collect_tests(args.paths)
    except (OSError, ValueError, RuntimeError) as e:
        print("traceability: %s" % e, file=sys.stderr)
        return 2
    rows, problems = table(rules, tests, code_files())
    if args.markdown:
        print("| rule | summary | code (firmware/) | tests |")
        print("|---|---|---|---|")
        for r, summary, files, ts in rows:
            names = ", ".join(t.split("::", 1)[1] for t in ts)
            print("| %s | %s | %s | %d: %s |" % (r, summary.replace("|", "/"), ", ".join(files),
                                                len(ts), names))
    else:
        for r, summary, files, ts in rows:
            print("%-6s %4d test(s)  code: %s" % (r, len(ts), ", ".join(files) or "-"))
            print("       %s" % summary)
            shown = ts if args.verbose else ts[:3]
            for t in shown:
                print("         %s" % t)
            if len(ts) > len(shown):
                print("         ... and %d more (-v)" % (len(ts) - len(shown)))
    print("traceability: %d rules, %d tests naming rules, %d problem(s)"
          % (len(rows), sum(1 for t in tests.values() if t), len(problems)))
    for p in problems:
        print("  PROBLEM: " + p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
