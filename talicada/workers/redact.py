"""What a worker tells a client never shows its own file system or its code.

A report's ``message``, task ``output`` and platform ``logs`` reach the client
as they are. Two things in them are the worker's business only: absolute paths
under its work directory (``/srv/talicada/var/work/<session>/mounts/inputs/a.fits``)
and Python tracebacks (source paths, frames). :class:`Redactor` rewrites both
just before a report leaves the worker:

- a path in the session's mounts becomes the path the session itself used
  (``/inputs/a.fits``), so a client still reads which of its files failed;
- any other path under the work directory becomes ``<work>/...`` relative to it;
- a traceback block becomes its final exception line, which says what failed.

Only these human-readable fields are rewritten: ``outputs`` and ``handle`` are
read back by other workers and must stay real paths.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import msgspec

from talicada.events.report import Report

#: Where a client reads how work under the work directory is named.
WORK = "<work>"

#: A traceback block: its header and the indented frame lines under it.
#: The unindented line that follows (the exception) is kept.
_TRACEBACK = re.compile(r"^Traceback \(most recent call last\):\n(?:[ \t]+.*(?:\n|$))*", re.M)
#: Lines joining chained tracebacks, meaningless once the frames are gone.
_CHAINED = re.compile(
    r"^\n?(?:During handling of the above exception, another exception occurred:"
    r"|The above exception was the direct cause of the following exception:)\n\n?",
    re.M,
)


def without_tracebacks(text: str) -> str:
    """``text`` with each Python traceback reduced to its exception line."""
    if "Traceback (most recent call last):" not in text:
        return text
    return _CHAINED.sub("", _TRACEBACK.sub("", text))


@dataclass(frozen=True, slots=True)
class Redactor:
    """Rewrites report text so it names no path of the worker's work directory.

    ``roots`` are the spellings of the work directory (as configured, absolute,
    and with links resolved: a task reports real paths).
    """

    roots: tuple[str, ...]

    @classmethod
    def for_work_dir(cls, work_dir: str) -> Redactor:
        """The redactor of a worker whose sessions live under ``work_dir``."""
        spellings = {os.path.abspath(work_dir), os.path.realpath(work_dir)}
        # Longest first, so a root inside another (a link target) matches whole.
        roots = sorted((root.rstrip(os.sep) for root in spellings if root != os.sep), key=len)
        return cls(tuple(reversed(roots)))

    def text(self, session: str, text: str) -> str:
        """``text`` without tracebacks or work-directory paths (``session``'s mounts
        shown as the session's own paths)."""
        text = without_tracebacks(text)
        for root in self.roots:
            if root in text:
                text = self._pattern(root).sub(lambda found: _shown(session, found[1]), text)
        return text

    def report(self, session: str, report: Report) -> Report:
        """``report`` with its message, output and logs redacted."""
        changes: dict[str, object] = {}
        if report.message is not None:
            changes["message"] = self.text(session, report.message)
        for name in ("output", "logs"):
            texts: dict[str, str] | None = getattr(report, name)
            if texts is not None:
                changes[name] = {key: self.text(session, value) for key, value in texts.items()}
        return msgspec.structs.replace(report, **changes) if changes else report

    @staticmethod
    def _pattern(root: str) -> re.Pattern[str]:
        # The root itself, then the rest of the path up to whitespace or a quote;
        # not a longer name that merely starts with the root (``/work2``).
        return re.compile(re.escape(root) + r"(?![^\s/'\"])([^\s'\"]*)")


def _shown(session: str, rest: str) -> str:
    """How a path ``<root><rest>`` is shown to ``session``'s client."""
    parts = [part for part in rest.split(os.sep) if part]
    if len(parts) >= 2 and parts[0] == session and parts[1] == "mounts":
        return "/" + "/".join(parts[2:])
    return "/".join([WORK, *parts])
