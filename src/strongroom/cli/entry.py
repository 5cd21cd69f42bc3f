"""The ``strongroom`` console script: a fast path for the file commands, Typer for the rest.

Loading the Typer app (Typer, Rich, pydantic and every command group) costs
several times the interpreter's own start-up, which is most of the time of
``strongroom --version`` or of encrypting a small file. So :func:`main` first
looks at the command line itself: ``--version`` alone, and ``encrypt``,
``decrypt`` and ``keygen`` with options it reads exactly as Click would, run
here without loading Typer, calling the same functions the Typer commands call
(:mod:`strongroom.cli.age_files`). Anything else — ``--help``, an option it
does not know, a missing value, a value starting with ``-``, ``--``, extra
arguments, shell completion — goes to :func:`strongroom.cli.main.main`, so
help and usage errors come from one place and read the same.

The options here must stay in step with :mod:`strongroom.cli.age_cmd`;
``tests/cli/test_entry.py`` parses the same argument vectors both ways and
compares what each would call, and runs both processes on the same vectors.
"""

from __future__ import annotations

import errno
import os
import sys

# Only what `strongroom --version` needs is imported here: not even typing or pathlib.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

__all__ = ["COMMANDS", "fast_call", "main", "print_error"]


class _Spec:
    """A command the fast path runs: its options and what each parameter holds."""

    def __init__(self, options: dict[str, str], multiple: set[str], paths: set[str],
                 positional: str | None, switches: dict[str, str] | None = None) -> None:
        self.options = options  # flag -> parameter name
        self.multiple = multiple  # repeatable options: a list, or None when not given
        self.paths = paths  # parameters Typer gives as pathlib.Path (the others as str)
        self.positional = positional  # the one optional argument, if any
        self.switches = switches or {}  # boolean flag -> parameter name (False unless given)
        self.params = sorted(set(options.values()) | set(self.switches.values())
                             | ({positional} if positional else set()))


_OUTPUT = {"--output": "output", "-o": "output"}

#: The commands the fast path runs, as :mod:`strongroom.cli.age_cmd` declares them.
COMMANDS: dict[str, _Spec] = {
    "encrypt": _Spec({"--recipient": "recipient", "-r": "recipient", **_OUTPUT},
                     {"recipient"}, {"output", "input_path"}, "input_path",
                     {"--passphrase": "passphrase", "-p": "passphrase",
                      "--armor": "armor", "-a": "armor"}),
    "decrypt": _Spec({"--identity": "identity", "-i": "identity", **_OUTPUT},
                     {"identity"}, {"identity", "output", "input_path"}, "input_path"),
    "keygen": _Spec(dict(_OUTPUT), set(), {"output"}, None, {"--pq": "pq"}),
}


def _parse(spec: _Spec, args: Sequence[str]) -> dict[str, Any] | None:
    """The keyword arguments Click would pass for ``args``, or None where it is left to Click."""
    from pathlib import Path

    values: dict[str, list[str]] = {}
    switched: set[str] = set()
    positional: list[str] = []
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        if arg == "-" or not arg.startswith("-"):
            positional.append(arg)
            continue
        if arg.startswith("--"):
            flag, eq, value = arg.partition("=")
            given = bool(eq)
        else:
            flag, value = arg[:2], arg[2:]
            given = bool(value)
        switch = spec.switches.get(flag)
        if switch is not None:
            if given:
                return None  # -pa, --armor=x: Click's to read
            switched.add(switch)
            continue
        name = spec.options.get(flag)
        if name is None:
            return None  # --help, --, an unknown option: Click's to answer
        if not given:
            if not rest:
                return None  # a missing value: Click's usage error
            value = rest.pop(0)
        if not value or (value.startswith("-") and value != "-"):
            return None  # empty, or looks like an option: leave the edge cases to Click
        values.setdefault(name, []).append(value)
    if len(positional) > (1 if spec.positional else 0):
        return None  # extra arguments: Click's usage error
    if spec.positional and positional:
        values[spec.positional] = positional
    out: dict[str, Any] = {}
    for name in spec.params:
        if name in spec.switches.values():
            out[name] = name in switched
            continue
        got: list[Any] | None = values.get(name)
        if got is not None and name in spec.paths:
            got = [Path(v) for v in got]
        # Click keeps every value of a repeatable option, the last of any other.
        out[name] = got if got is None or name in spec.multiple else got[-1]
    return out


def fast_call(argv: Sequence[str]) -> tuple[Callable[..., None], dict[str, Any]] | None:
    """The function and keyword arguments ``strongroom ARGV`` runs on the fast path, if any."""
    if not argv or os.environ.get("_STRONGROOM_COMPLETE"):
        return None
    if list(argv) == ["--version"]:
        return _print_version, {}
    spec = COMMANDS.get(argv[0])
    if spec is None:
        return None
    kwargs = _parse(spec, argv[1:])
    if kwargs is None:
        return None
    from strongroom.cli import age_files

    fn: Callable[..., None] = getattr(age_files, argv[0])
    return fn, kwargs


def _print_version() -> None:
    from strongroom import __version__

    print(f"strongroom {__version__}")


def print_error(exc: BaseException) -> None:
    """Print a strongroom error to stderr the one way the CLI prints them (no traceback)."""
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True, highlight=False).print(
        f"[bold red]error:[/] {escape(str(exc))}", markup=True, soft_wrap=True)


def main() -> None:
    """Entry point of the ``strongroom`` console script."""
    call = fast_call(sys.argv[1:])
    if call is None:
        from strongroom.cli.main import main as typer_main

        typer_main()
        return
    from strongroom.errors import StrongroomError

    fn, kwargs = call
    # The same outcomes as the Typer path (cli.main.main around Typer's own handling).
    try:
        fn(**kwargs)
    except StrongroomError as exc:
        print_error(exc)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except EOFError:
        sys.stderr.write("\n")
        sys.exit(1)
    except OSError as exc:
        if exc.errno != errno.EPIPE:
            raise
        # The reader went away: exit 1 quietly, without a second error when stdout is flushed.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        sys.exit(1)
