"""What ``edge doctor`` reports: one :class:`Finding` per check (ok, warn or fail, with its
fix), and :func:`render`, the report a person reads.

>>> print(render([ok("disk", "900 MB free"), fail("clock", "never set", "connect NTP")]), end="")
ok    disk    900 MB free
FAIL  clock   never set
              fix: connect NTP
<BLANKLINE>
2 checks: 1 failed, 0 warning(s)
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class Finding:
    check: str
    status: Status
    detail: str
    """What was found, in a sentence or two."""
    fix: str = ""
    """What to do about it; always set for a failure."""


def ok(check: str, detail: str) -> Finding:
    return Finding(check, Status.OK, detail)


def warn(check: str, detail: str, fix: str = "") -> Finding:
    return Finding(check, Status.WARN, detail, fix)


def fail(check: str, detail: str, fix: str) -> Finding:
    return Finding(check, Status.FAIL, detail, fix)


def render(findings: list[Finding]) -> str:
    """The report a person reads: one block per finding, failures with their fix."""
    marks = {Status.OK: "ok  ", Status.WARN: "WARN", Status.FAIL: "FAIL"}
    lines = []
    for f in findings:
        lines.append(f"{marks[f.status]}  {f.check:<7} {f.detail}")
        if f.fix and f.status is not Status.OK:
            lines.append(f"      {'':<7} fix: {f.fix}")
    failed = sum(f.status is Status.FAIL for f in findings)
    warned = sum(f.status is Status.WARN for f in findings)
    lines.append("")
    lines.append(f"{len(findings)} checks: {failed} failed, {warned} warning(s)"
                 + ("" if failed else "; the service can run"))
    return "\n".join(lines) + "\n"
