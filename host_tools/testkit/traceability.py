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
"""

import argparse
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
    """``{rule: summary}`` in document order from the ``- **SR-n**`` lines."""
    rules = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        m = RULE_LINE.match(line)
        if m:
            summary = m.group(2).split(". ")[0].strip()
            rules[m.group(1)] = summary[:70] + ("..." if len(summary) > 70 else "")
    if not rules:
        raise ValueError("%s: no '- **SR-n**' rule lines found" % path)
    return rules


class _Collector:
    def __init__(self):
        self.tests = {}  # test function id -> set of rules

    def pytest_collection_finish(self, session):
        for item in session.items:
            rules = set()
            for mark in item.iter_markers("sr"):
                rules.update(mark.args)
            name = getattr(item, "originalname", None) or item.name.split("[")[0]
            rules.update("SR-%s" % n for n in NAME_RULE.findall(name.lower()))
            key = "%s::%s" % (item.nodeid.split("::")[0], name)
            if item.cls is not None:
                key = "%s::%s::%s" % (item.nodeid.split("::")[0], item.cls.__name__, name)
            self.tests.setdefault(key, set()).update(rules)


def collect_tests(args=("tests",)):
    """``{test id: set of rules}`` from pytest's collection of ``args``."""
    c = _Collector()
    code = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", "--no-cov", *args],
                       plugins=[c])
    if code not in (0, 5):
        raise RuntimeError("pytest collection failed (exit %d)" % code)
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
    rules = load_rules(args.rules)
    tests = collect_tests(args.paths)
    rows, problems = table(rules, tests, code_files())
    if args.markdown:
        print("| rule | summary | code (firmware/) | tests |")
        print("|---|---|---|---|")
        for r, summary, files, ts in rows:
            print("| %s | %s | %s | %d: %s |" % (r, summary.replace("|", "/"), ", ".join(files),
                                                len(ts), ", ".join(t.split("::")[-1] for t in ts)))
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
