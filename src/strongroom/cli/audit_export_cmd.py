"""``strongroom audit export`` and ``strongroom alerts export``: the log, streamed to a SIEM.

Both write one JSON line per audit entry, OCSF events (``--format ocsf``) or
strongroom's own lines (``--format jsonl``), to standard output or appended to
``-o FILE``; ``alerts export`` writes only the alert entries (``alert.raise``,
``alert.ack``, as OCSF Detection Findings). Every line carries the entry's
index and leaf hash; ``--cursor FILE`` makes the export resumable (the cursor
is replaced atomically after each written batch) and refuses a log rewritten
since; ``--follow`` keeps polling until interrupted (Ctrl-C or SIGTERM end it
after the batch in hand). The logic is :mod:`strongroom.audit.export`, the
OCSF mapping :mod:`strongroom.audit.ocsf`; docs/operations.md ("SIEM export").

On the vault host it reads the database only (no keys, a sealed vault is
fine). With ``STRONGROOM_URL`` set it reads pages of entries' exact bytes from
the server (``GET /v1/audit/entries``, an auditor's or officer's identity) and
believes none of them unchecked: :class:`strongroom.audit.pages.VerifiedPages`
verifies each page against the pinned log key (``STRONGROOM_LOG_KEY``, else
pinned on first use) and exports only what a signed checkpoint covers.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING, Annotated

import typer

from strongroom.errors import InvalidInput, StorageError

if TYPE_CHECKING:
    from strongroom.audit.ocsf import ExportedEntry

__all__ = ["register"]

FormatOpt = Annotated[str, typer.Option("--format", help="ocsf (OCSF events) or jsonl")]
FollowOpt = Annotated[bool, typer.Option("--follow", "-f",
                                         help="keep polling for new entries until interrupted")]
FromOpt = Annotated[int | None, typer.Option("--from", min=0,
                                             help="first index (default 0; not with a cursor "
                                                  "that exists)")]
CursorOpt = Annotated[Path | None, typer.Option("--cursor",
                                                help="resume from, and keep, this cursor file")]
OutOpt = Annotated[Path | None, typer.Option("--out", "-o",
                                             help="append the lines to FILE (default: stdout)")]
IntervalOpt = Annotated[float, typer.Option("--interval", min=0.05,
                                            help="seconds between polls with --follow")]


class SignalStop:
    """What SIGTERM and SIGINT set to stop the export between batches: a flag, no lock.

    Python runs a handler on the main thread between two bytecodes, also inside
    another handler: a handler calling ``threading.Event.set`` there waits forever
    on the lock the first one holds, as the key agent once did (d660935). The
    handler only sets the flag; :meth:`wait` polls it.
    """

    #: Longest a following export sleeps before it looks at the flag again.
    POLL_S = 0.05

    def __init__(self) -> None:
        self.signalled = False

    def handler(self, signum: int, frame: FrameType | None) -> None:
        self.signalled = True

    def is_set(self) -> bool:
        return self.signalled

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep up to ``timeout`` seconds (None: until signalled); whether it was signalled."""
        end = None if timeout is None else time.monotonic() + timeout
        while not self.signalled:
            left = self.POLL_S if end is None else min(self.POLL_S, end - time.monotonic())
            if left <= 0:
                break
            time.sleep(left)
        return self.signalled


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[SignalStop]:
    """A :class:`SignalStop` that SIGTERM and SIGINT set while the block runs."""
    stop = SignalStop()
    previous = {s: signal.signal(s, stop.handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextlib.contextmanager
def _sink(out: Path | None) -> Iterator[IO[str]]:
    """Standard output, or ``out`` opened for appending (created 0600)."""
    if out is None or str(out) == "-":
        yield sys.stdout
        return
    if out.is_symlink():
        raise InvalidInput("the output path is a symbolic link", obj=str(out),
                           remedy="name the file itself")
    from strongroom.datadir import open_private_append

    try:
        fd = open_private_append(out)
    except OSError as exc:
        raise InvalidInput(f"cannot open the output file ({exc.strerror})", obj=str(out),
                           remedy="check the path and its permissions") from exc
    with os.fdopen(fd, "a", encoding="utf-8") as stream:
        yield stream


def _writer(stream: IO[str], fmt: str, origin: str, *, per_line: bool
            ) -> Callable[[Sequence[ExportedEntry]], None]:
    """Writes a batch, flushed (per line when following) and fsync'd when it is a file."""
    from strongroom import __version__
    from strongroom.audit.export import export_line

    is_file = stream is not sys.stdout and stat.S_ISREG(os.fstat(stream.fileno()).st_mode)

    def write(batch: Sequence[ExportedEntry]) -> None:
        try:
            for entry in batch:
                stream.write(export_line(entry, fmt, origin=origin, product_version=__version__)
                             + "\n")
                if per_line:
                    stream.flush()
            stream.flush()
            if is_file:
                os.fsync(stream.fileno())
        except OSError as exc:
            raise StorageError(f"cannot write the export ({exc.strerror})",
                               obj=getattr(stream, "name", "output")) from exc

    return write


def _export(fmt: str, follow: bool, start: int | None, cursor_path: Path | None,
            out: Path | None, interval: float, alerts_only: bool) -> None:
    from strongroom.audit.export import FORMATS, ExportCursor, run_export
    from strongroom.cli.placement import service
    from strongroom.monitor.alerts import ALERT_ACTIONS

    if fmt not in FORMATS:
        raise InvalidInput(f"unknown export format {fmt!r}", obj="--format",
                           remedy=f"use one of {', '.join(FORMATS)}")
    saved = ExportCursor.load(cursor_path) if cursor_path is not None else None
    if saved is not None and start is not None:
        raise InvalidInput("give --from or an existing --cursor, not both", obj=str(cursor_path),
                           remedy="drop --from to resume from the cursor, or name a new cursor "
                                  "file to start at --from")
    with service() as svc, svc.audit_source() as source:
        if saved is not None:
            source.check_resume(saved)
        cursor = saved or source.cursor_at(start or 0)
        on_batch = None if cursor_path is None else (lambda c: c.save(cursor_path))
        if on_batch is not None and saved is None:
            on_batch(cursor)  # the starting point, so an interrupted first batch resumes there
        with _stop_on_signals() as stop, _sink(out) as stream:
            run_export(source, cursor, _writer(stream, fmt, source.origin, per_line=follow),
                       on_batch=on_batch, follow=follow, interval_s=interval, stop=stop,
                       actions=ALERT_ACTIONS if alerts_only else None)


def _command(alerts_only: bool, doc: str) -> Callable[..., None]:
    """The ``export`` command of a group (``alerts_only``: only the alert entries)."""

    def export(
        fmt: FormatOpt = "ocsf",
        follow: FollowOpt = False,
        start: FromOpt = None,
        cursor: CursorOpt = None,
        out: OutOpt = None,
        interval: IntervalOpt = 1.0,
    ) -> None:
        _export(fmt, follow, start, cursor, out, interval, alerts_only)

    export.__doc__ = doc
    return export


def register(app: typer.Typer) -> None:
    """Add ``export`` to the ``audit`` and ``alerts`` groups (registered by their modules)."""
    from strongroom.cli.audit_cmd import audit_app
    from strongroom.cli.monitor_cmd import alerts_app

    audit_app.command("export")(_command(
        False, "Stream every audit entry, in order, with its index and leaf hash (for a SIEM)."))
    alerts_app.command("export")(_command(
        True, "Stream the alerts (raised, acknowledged) from the audit log, as OCSF "
        "Detection Findings."))
