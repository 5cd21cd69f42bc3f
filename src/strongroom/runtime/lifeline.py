"""Parent-death watches: the processes ``strongroom serve`` starts die with it, however it dies.

A clean-shutdown hook does not run on ``kill -9``; these watches do not need
it. ``serve`` holds the write end of a pipe (:class:`Lifeline`) and passes the
read end to its key agent; each child also asks the kernel for a signal when
its parent dies (Linux ``prctl(PR_SET_PDEATHSIG)``) and polls its parent's pid
as a portable backstop (a re-parented child sees another ``getppid()``)::

    line = Lifeline()                              # in serve, before starting children
    Popen([...], pass_fds=(line.child_fd,), env={..., **line.child_env()})
    line.close_child_end()

    # in the child (the agent), first thing:
    watch_parent(expected_ppid, on_orphan, signum=signal.SIGTERM, lifeline_fd=fd)

``on_orphan`` runs once, on a watch thread, whichever watch fires first.
The write end is close-on-exec, so no other child of ``serve`` holds it open.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import sys
import threading
from collections.abc import Callable

__all__ = ["LIFELINE_ENV", "OWNER_ENV", "Lifeline", "set_parent_death_signal", "watch_parent"]

#: The environment variable naming the read end of the lifeline pipe in a child.
LIFELINE_ENV = "STRONGROOM_LIFELINE_FD"
#: The environment variable naming the pid of the ``serve`` process that owns a child.
OWNER_ENV = "STRONGROOM_SERVE_PID"
_PR_SET_PDEATHSIG = 1
_POLL_S = 0.2


class Lifeline:
    """A pipe whose write end only the owner holds: its EOF tells children the owner is gone."""

    def __init__(self) -> None:
        self.child_fd, self._write_fd = os.pipe()  # both close-on-exec (PEP 446)

    def child_env(self) -> dict[str, str]:
        """What a child needs to watch this lifeline (pass ``child_fd`` in ``pass_fds``)."""
        return {LIFELINE_ENV: str(self.child_fd), OWNER_ENV: str(os.getpid())}

    def close_child_end(self) -> None:
        """Close the owner's copy of the read end once the children have theirs."""
        with contextlib.suppress(OSError):
            os.close(self.child_fd)


def set_parent_death_signal(signum: int) -> bool:
    """Ask the kernel to send ``signum`` when the parent dies (Linux); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return int(libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def watch_parent(expected_ppid: int, on_orphan: Callable[[], None], *,
                 signum: int | None = signal.SIGKILL, lifeline_fd: int | None = None) -> None:
    """Call ``on_orphan`` once the process ``expected_ppid`` is no longer our parent.

    ``signum`` (when not None) is also asked of the kernel for the parent's
    death; ``lifeline_fd`` is a pipe end whose EOF means the same. When the
    parent is already gone, ``on_orphan`` runs before this returns.
    """
    fired = threading.Event()

    def fire(why: str) -> None:
        if not fired.is_set():
            fired.set()
            sys.stderr.write(f"strongroom: {why}; stopping\n")
            on_orphan()

    if signum is not None:
        set_parent_death_signal(signum)
    if os.getppid() != expected_ppid:  # died before the signal was armed
        fire(f"parent {expected_ppid} is gone")
        return

    def poll() -> None:
        while not fired.wait(_POLL_S):
            if os.getppid() != expected_ppid:
                fire(f"parent {expected_ppid} is gone")

    threading.Thread(target=poll, name="parent-watch", daemon=True).start()
    if lifeline_fd is not None:
        def read() -> None:
            with contextlib.suppress(OSError):
                while os.read(lifeline_fd, 64):
                    pass
            fire("the lifeline to strongroom serve closed")

        threading.Thread(target=read, name="lifeline-watch", daemon=True).start()
