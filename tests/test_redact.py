"""What a worker reports names no path of its work directory and shows no traceback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from talicada.events.report import Report
from talicada.workers.redact import Redactor, without_tracebacks
from tests.conftest import BrokerFactory
from tests.lifecycle_support import accept_first, checksum_request, wait_for_phase

SESSION = "5f0c2b9e-0000-4000-8000-000000000001"
ROOT = "/srv/talicada/var/work"
TRACEBACK = f"""\
starting
Traceback (most recent call last):
  File "/opt/venv/lib/python3.12/site-packages/talicada/workers/tasks.py", line 211, in _checksum
    digests[key] = _sha256(real)
                   ^^^^^^^^^^^^^
  File "/opt/venv/lib/python3.12/site-packages/talicada/workers/tasks.py", line 165, in _sha256
    fd = os.open(path)
FileNotFoundError: [Errno 2] No such file or directory: '{ROOT}/{SESSION}/mounts/inputs/a.fits'
done
"""


def redactor() -> Redactor:
    return Redactor(roots=(ROOT,))


def test_a_traceback_becomes_its_exception_line_and_the_rest_stays() -> None:
    assert without_tracebacks(TRACEBACK) == (
        "starting\n"
        "FileNotFoundError: [Errno 2] No such file or directory: "
        f"'{ROOT}/{SESSION}/mounts/inputs/a.fits'\n"
        "done\n"
    )


def test_chained_tracebacks_keep_each_exception_line_only() -> None:
    text = (
        "Traceback (most recent call last):\n"
        '  File "/x/a.py", line 1, in f\n'
        "KeyError: 'a'\n"
        "\n"
        "During handling of the above exception, another exception occurred:\n"
        "\n"
        "Traceback (most recent call last):\n"
        '  File "/x/a.py", line 3, in f\n'
        "ValueError: bad a\n"
    )
    assert without_tracebacks(text) == "KeyError: 'a'\nValueError: bad a\n"


def test_text_without_a_traceback_is_unchanged() -> None:
    text = "tasks: checksum failed: cannot read /inputs/a.fits: Permission denied\n"
    assert without_tracebacks(text) == text


def test_a_mount_path_becomes_the_sessions_own_path() -> None:
    text = f"cannot read {ROOT}/{SESSION}/mounts/inputs/a.fits: No such file"
    assert redactor().text(SESSION, text) == "cannot read /inputs/a.fits: No such file"
    assert redactor().text(SESSION, f"'{ROOT}/{SESSION}/mounts/inputs'") == "'/inputs'"


def test_other_work_paths_become_relative_to_the_work_directory() -> None:
    scratch = f"{ROOT}/{SESSION}/scratch/d1/.a.fits.1f.partial"
    assert redactor().text(SESSION, f"gone: {scratch}") == (
        f"gone: <work>/{SESSION}/scratch/d1/.a.fits.1f.partial"
    )
    # Another session's mount is not this session's path.
    other = f"{ROOT}/other/mounts/inputs/a.fits"
    assert redactor().text(SESSION, other) == "<work>/other/mounts/inputs/a.fits"
    assert redactor().text(SESSION, ROOT) == "<work>"


def test_a_path_that_only_starts_like_the_work_directory_is_left_alone() -> None:
    assert redactor().text(SESSION, f"{ROOT}2/x and /etc/passwd") == f"{ROOT}2/x and /etc/passwd"


def test_every_spelling_of_a_relative_work_dir_is_recognised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = tmp_path / "real"
    (real / "work").mkdir(parents=True)
    (tmp_path / "link").symlink_to(real)
    monkeypatch.chdir(tmp_path / "link")
    redact = Redactor.for_work_dir("work")
    for root in (os.path.abspath("work"), os.path.realpath("work")):
        assert redact.text(SESSION, f"{root}/{SESSION}/mounts/in/x") == "/in/x"


def test_a_report_has_its_message_output_and_logs_redacted_and_nothing_else() -> None:
    staged = f"{ROOT}/{SESSION}/storage/s/d/a.fits"
    report = Report(
        delivery="e:c:FAILED",
        event="e",
        component="c",
        phase="FAILED",
        message=f"cannot read {ROOT}/{SESSION}/mounts/inputs/a.fits",
        output={"stdout": "", "stderr": TRACEBACK},
        logs={"platform": f"wrote {staged}"},
        outputs={"file": staged},
    )
    shown = redactor().report(SESSION, report)
    assert shown.message == "cannot read /inputs/a.fits"
    assert shown.output == {
        "stdout": "",
        "stderr": "starting\nFileNotFoundError: [Errno 2] No such file or directory: "
        "'/inputs/a.fits'\ndone\n",
    }
    assert shown.logs == {"platform": f"wrote <work>/{SESSION}/storage/s/d/a.fits"}
    # Other workers read staged paths back from outputs: they stay real.
    assert shown.outputs == {"file": staged}
    assert shown.delivery == report.delivery


async def test_a_failing_checksum_tells_the_client_what_failed_without_worker_paths(
    start_broker: BrokerFactory, file_server: str, tmp_path: Path
) -> None:
    """A checksum of a mounted file that is not there fails; the client reads which
    file (as the session names it), not where the worker keeps it."""
    work = tmp_path / "work"
    broker = await start_broker(work_dir=str(work))
    request = checksum_request(file_server)
    request["executable"]["paths"] = ["/inputs/missing.fits"]
    uuid = await accept_first(broker, request)
    assert await wait_for_phase(broker, uuid, {"COMPLETED", "FAILED"}) == "FAILED"
    log = await (await broker.get(f"/sessions/{uuid}/log")).text()
    assert "/inputs/missing.fits" in log
    assert "No such file or directory" in log
    assert str(work) not in log
    assert "/mounts/" not in log
    assert "Traceback (most recent call last)" not in log
