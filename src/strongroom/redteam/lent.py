"""What an operator lends a live red-team run beyond its own identity: officers, a host shell.

:class:`LentOfficers` (``--officer-identity``, repeatable): security officers
pinned in the deployment's keyring. They sign directory statements over the
API (``POST /v1/statements``; each officer posts its own signature of the same
statement, the server merges them): the insider's enrollment re-issued with
lapsed vetting, the attacked model's label re-issued with the insider on its
break-glass list. Every such change is undone after the scenario that made it
(:meth:`LentOfficers.restore`): the statement as it was, re-issued with the
next serial, so the directory ends as it began; break-glass the insider took
is reviewed by each lent officer (``justified``: a red-team exercise).

:class:`HostShell` (``--host-home DIR``): a shell on a serving host, with the
deployment's data directory and environment (the database the host's settings
name, its key agent's socket). What it reads and writes is the host's own.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from strongroom.errors import InvalidInput

if TYPE_CHECKING:
    from strongroom.keys.identity import Identity
    from strongroom.server.client import Client
    from strongroom.store.db import Store
    from strongroom.vault.vault import Vault

__all__ = ["HostShell", "LentOfficers"]


@dataclass
class LentOfficers:
    """Officers the operator lends: (enrolled name, identity, a client signing as them)."""

    officers: tuple[tuple[str, Identity, Client], ...]
    #: Directory changes to undo: (kind, subject, the statement as it was).
    changed: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    #: Break-glass statements taken during the scenario, reviewed when it ends.
    taken: list[str] = field(default_factory=list)
    #: Who reviews them: enrolled people lent to the run (the approvers), else the officers.
    reviewers: tuple[tuple[str, Identity, Client], ...] = ()

    def _current(self, kind: str, subject: str) -> dict[str, Any]:
        """The stored ``kind`` statement about ``subject`` with the highest serial (payload)."""
        from strongroom.access import statements

        _, client = self.officers[0][1:]
        rows = client.get("/v1/statements", params={"kind": kind, "subject": subject})
        payloads = [statements.unverified_payload(str(r["envelope"])) for r in rows]
        if not payloads:
            raise InvalidInput(
                f"the deployment holds no {kind} of {subject}",
                obj=subject,
                remedy="enroll the red-team identity and label the model first",
            )
        return max(payloads, key=lambda p: int(p.get("serial", 0)))

    def _publish(self, kind: str, statement: Any) -> None:
        """Each lent officer signs ``statement`` and posts it (the server merges signatures)."""
        for _, ident, client in self.officers:
            client.post(
                "/v1/statements",
                {"kind": kind, "envelope": statement.sign(ident.private_key, pq=ident.mldsa_key)},
            )

    def reenroll(self, key_id: str, *, vetting: str) -> None:
        """Re-issue ``key_id``'s enrollment with vetting status ``vetting`` (next serial)."""
        from dataclasses import replace

        from strongroom.access.directory import Enrollment, Vetting

        was = self._current("enrollment", key_id)
        e = Enrollment.from_statement(was)
        now = int(time.time())
        self._publish(
            "enrollment",
            replace(
                e,
                vetting=Vetting(vetting, e.vetting.granted, e.vetting.expires, e.vetting.flags),
                serial=e.serial + 1,
                issued=now,
            ),
        )
        self.changed.append(("enrollment", key_id, was))

    def list_break_glass(self, resource: str, name: str) -> None:
        """Re-issue ``resource``'s label with ``name`` on its break-glass list (next serial)."""
        from dataclasses import replace

        from strongroom.access.directory import ResourceLabel

        was = self._current("label", resource)
        lab = ResourceLabel.from_statement(was)
        self._publish(
            "label",
            replace(
                lab,
                break_glass=tuple(sorted({*lab.break_glass, name})),
                serial=lab.serial + 1,
                issued=int(time.time()),
            ),
        )
        self.changed.append(("label", resource, was))

    def restore(self) -> list[str]:
        """Undo every change: each statement as it was, with the serial after the newest;
        review each break-glass taken. What was done, for the report."""
        from dataclasses import replace

        from strongroom.access.breakglass import review
        from strongroom.access.directory import Enrollment, ResourceLabel

        done: list[str] = []
        for kind, subject, was in reversed(self.changed):
            serial = int(self._current(kind, subject)["serial"]) + 1
            now = int(time.time())
            if kind == "enrollment":
                self._publish(
                    kind, replace(Enrollment.from_statement(was), serial=serial, issued=now)
                )
            else:
                self._publish(
                    kind, replace(ResourceLabel.from_statement(was), serial=serial, issued=now)
                )
            done.append(f"{kind} of {subject[:24]} restored (serial {serial})")
        self.changed.clear()
        from strongroom.access import statements
        from strongroom.errors import StrongroomError

        taken, self.taken = self.taken, []
        for env in taken:
            bg = statements.payload_digest(env)
            for name, ident, client in self.reviewers or self.officers:
                try:
                    client.post(
                        f"/v1/access/break-glass/{bg}/reviews",
                        {
                            "envelope": review(
                                ident.private_key,
                                name,
                                env,
                                "justified",
                                now=time.time(),
                                note="red-team exercise",
                            )
                        },
                    )
                    done.append(f"break-glass {bg[:16]} reviewed by {name}")
                except StrongroomError as exc:  # left for the deployment's own review
                    done.append(f"break-glass {bg[:16]} not reviewed by {name}: {exc.message}")
        return done

    def close(self) -> None:
        """Close the officers' clients."""
        for _, _, c in self.officers:
            with contextlib.suppress(Exception):
                c.close()


@dataclass
class HostShell:
    """A shell on a serving host: its data directory ``home`` and the host's environment."""

    home: Path
    _store: Store | None = None

    @classmethod
    def at(cls, where: str | Path) -> HostShell:
        """The host whose data directory is ``where`` (it must hold a vault)."""
        home = Path(where).expanduser()
        if not home.is_dir():
            raise InvalidInput(
                "the host's data directory is not a directory",
                obj=str(home),
                remedy="pass the serving host's STRONGROOM_HOME (--host-home)",
            )
        return cls(home.absolute())

    def settings(self) -> Any:
        """The host's settings: its data directory, the rest from its environment."""
        from strongroom.settings import Settings

        return Settings(home=self.home)

    def store(self) -> Store:
        """The deployment's database, opened as a process on the host opens it."""
        from strongroom.store.db import Store

        if self._store is None:
            self._store = Store.open(self.settings().resolved_database_url)
        return self._store

    def vault(self, identity: Identity) -> Vault:
        """The host's vault on its own key agent, acting as ``identity`` (``backup create``)."""
        from strongroom.runtime.services import open_vault

        return open_vault(self.settings(), identity=identity)

    def close(self) -> None:
        """Close the database connection opened on the host."""
        if self._store is not None:
            self._store.close()
            self._store = None
