"""``strongroom people enroll`` refuses a small-order or non-canonical Ed25519 key (SQLite, PostgreSQL).

Through the installed command on a real unsealed vault: a ``.pub`` holding one
of the 8 small-order points (under which OpenSSL accepts a forged signature for
any message) or a non-canonical encoding of one exits 2 with a message naming
the file, the key's id and the remedy, and stores no enrollment and no audit
entry. A normal key still enrolls.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from strongroom.crypto import bech32
from strongroom.crypto.dsse import key_id
from strongroom.keys.identity import PUBLIC_HRP, Identity
from weak_keys import NONCANONICAL_SMALL, SMALL_ORDER

from cli_fixtures import Run, unseal_home
from testsupport import need_service, pg_schema


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def vault(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[Run, Path]]:
    tmp = tmp_path_factory.mktemp("weak-keys")
    if request.param == "sqlite":
        run, _ = unseal_home(tmp / "home", None)
        try:
            yield run, tmp
        finally:
            run("seal", ok=False)
        return
    with pg_schema(need_service("STRONGROOM_TEST_PG_URL", "PostgreSQL")) as url:
        run, _ = unseal_home(tmp / "home", url)
        try:
            yield run, tmp
        finally:
            run("seal", ok=False)


def _enrollments(run: Run) -> int:
    return len(run("people", "ls", "--json").stdout.split('"key_id"')) - 1


def _audit_lines(run: Run) -> int:
    return len(run("audit", "tail", "-n", "1000").stdout.splitlines())


def test_enrolling_weak_keys_exits_2_and_stores_nothing(vault: tuple[Run, Path]) -> None:
    run, tmp = vault
    people, entries = _enrollments(run), _audit_lines(run)
    for hexkey in [*SMALL_ORDER, *NONCANONICAL_SMALL]:
        raw = bytes.fromhex(hexkey)
        pub = tmp / f"mallory-{hexkey[:4]}-{hexkey[-2:]}.pub"
        pub.write_text(f"# name: mallory\n{bech32.encode(PUBLIC_HRP, raw)}\n")
        out = run("people", "enroll", "mallory", "--key", pub, "--role", "approvers",
                  "--vetting-expires", "2099-01-01", ok=False)
        assert out.returncode == 2, out.stdout + out.stderr
        text = " ".join((out.stdout + out.stderr).split())  # rich wraps long lines
        assert str(pub.name) in text, text
        assert f"Ed25519 public key {key_id(Ed25519PublicKey.from_public_bytes(raw))} is " \
               "refused" in text, text
        assert ("small order" in text) or ("non-canonical" in text), text
        assert "keys new-identity" in text, text
    assert _enrollments(run) == people
    assert _audit_lines(run) == entries


def test_a_normal_key_still_enrolls(vault: tuple[Run, Path]) -> None:
    run, tmp = vault
    ident = Identity.generate("dora")
    (tmp / "dora.pub").write_text(ident.public.to_text())
    run("people", "enroll", "dora", "--key", tmp / "dora.pub", "--role", "approvers",
        "--vetting-expires", "2099-01-01")
    assert ident.public.key_id in run("people", "ls", "--json").stdout
