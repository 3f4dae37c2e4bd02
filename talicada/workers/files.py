"""Where the local platform keeps a session's files.

    <work_dir>/<session>/storage/<storage uuid>/<data uuid>/<file>   staged data (verified only)
    <work_dir>/<session>/scratch/<data uuid>/.<file>.<hex>.partial   a download in progress
    <work_dir>/<session>/mounts/<mount path>/<file> (hard link)      what the task sees
    <work_dir>/<session>/output/stdout, stderr                        kept output
    <work_dir>/<session>/pid                                          the running task
    <work_dir>/<session>/launched                                     the task was started
    <work_dir>/<session>/exit                                         its exit status (durable)
    <work_dir>/<session>/report                                       its final report (durable)
    <work_dir>/<session>/reported                                     the broker took the report
    <work_dir>/<session>/ended                                        the task ended
    <work_dir>/<session>/released                                     release has begun

Workers of one platform share this directory (one host, or a shared file
system), which is how ``release`` can stop a task that ``launch`` started.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class SessionFiles:
    """The file layout of one session on the local platform."""

    root: Path

    @classmethod
    def of(cls, work_dir: str | Path, session: str) -> SessionFiles:
        """The layout of ``session`` under ``work_dir``."""
        return cls(Path(work_dir).resolve() / session)

    def storage(self, storage: str) -> Path:
        """Directory of one storage resource."""
        return self.root / "storage" / storage

    def data(self, storage: str, data: str) -> Path:
        """Directory one data item is staged into."""
        return self.storage(storage) / data

    def scratch(self, data: str) -> Path:
        """Where one data item is downloaded until verified: outside every data
        directory, so no mount ever shows a partial file."""
        return self.root / "scratch" / data

    def mount(self, path: str) -> Path:
        """The local directory standing for mount ``path`` (e.g. ``/inputs/``)."""
        parts = [part for part in Path(path).parts if part not in ("/", "..", ".")]
        return self.root.joinpath("mounts", *parts)

    @property
    def output(self) -> Path:
        """Directory of the executable's stdout and stderr."""
        return self.root / "output"

    @property
    def pid(self) -> Path:
        """File holding the process id of the running task."""
        return self.root / "pid"

    @property
    def launched(self) -> Path:
        """Marker: the task was started (once per session, whatever the redeliveries)."""
        return self.root / "launched"

    @property
    def exit_status(self) -> Path:
        """The task's exit status, written durably by the process that waited for it
        (:mod:`talicada.workers.tasks`), so a launcher started later can read it."""
        return self.root / "exit"

    @property
    def report(self) -> Path:
        """The task's final report, written durably before it is sent."""
        return self.root / "report"

    @property
    def reported(self) -> Path:
        """Marker: the broker took the final report (or refused it for good)."""
        return self.root / "reported"

    @property
    def ended(self) -> Path:
        """Marker: the task ended and its end was (or is being) reported."""
        return self.root / "ended"

    @property
    def released(self) -> Path:
        """Marker: release has begun, so a stopped task was stopped on purpose."""
        return self.root / "released"
