"""Multi-key signoff to run code: k of n code owners sign a release of every module."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from strongroom.errors import ConfigError, IntegrityError
from strongroom.gateway.codesign import (
    add_signature,
    package_root,
    sign_release,
    verify_release,
)
from strongroom.keys.identity import Identity


@pytest.fixture(scope="module")
def owners() -> list[Identity]:
    return [Identity.generate(n) for n in ("alice", "bob", "carol")]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "strongroom"
    shutil.copytree(package_root(), root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def test_two_of_three_owners_sign_the_installed_code(owners: list[Identity]) -> None:
    env = add_signature(sign_release([owners[0]]), owners[2])
    release = verify_release(env, [o.public for o in owners], threshold=2)
    assert release.signers == ("alice", "carol")
    assert "strongroom/gateway/server.py" in release.files
    assert release.entry == "strongroom.gateway.server"


def test_one_signature_is_not_enough(owners: list[Identity]) -> None:
    env = sign_release([owners[0]])
    with pytest.raises(IntegrityError, match="1 trusted key"):
        verify_release(env, [o.public for o in owners], threshold=2)


def test_signatures_of_strangers_do_not_count(owners: list[Identity]) -> None:
    env = sign_release([owners[0], Identity.generate("mallory")])
    with pytest.raises(IntegrityError):
        verify_release(env, [o.public for o in owners], threshold=2)


def test_changed_module_is_named(owners: list[Identity], tree: Path) -> None:
    env = sign_release(owners[:2], tree)
    verify_release(env, [o.public for o in owners], 2, tree)
    target = tree / "gateway" / "defence.py"
    target.write_text(target.read_text() + "\nBACKDOOR = True\n")
    with pytest.raises(IntegrityError, match="changed since the release") as err:
        verify_release(env, [o.public for o in owners], 2, tree)
    assert str(target) in str(err.value)


def test_added_and_missing_modules_are_named(owners: list[Identity], tree: Path) -> None:
    env = sign_release(owners[:2], tree)
    extra = tree / "gateway" / "sneaky.py"
    extra.write_text("x = 1\n")
    with pytest.raises(IntegrityError, match="not in the signed release") as err:
        verify_release(env, [o.public for o in owners], 2, tree)
    assert "sneaky.py" in str(err.value)
    extra.unlink()
    (tree / "gateway" / "memory.py").unlink()
    with pytest.raises(IntegrityError, match="missing") as err:
        verify_release(env, [o.public for o in owners], 2, tree)
    assert "memory.py" in str(err.value)


def test_cosigning_checks_the_code_first(owners: list[Identity], tree: Path) -> None:
    env = sign_release([owners[0]], tree)
    (tree / "errors.py").write_text("# replaced\n")
    with pytest.raises(IntegrityError, match=r"errors\.py"):
        add_signature(env, owners[1], tree)


def test_tampered_payload_is_refused(owners: list[Identity]) -> None:
    env = sign_release(owners[:2])
    forged = env.replace('"payload":"', '"payload":"AAAA', 1)
    with pytest.raises(IntegrityError):
        verify_release(forged, [o.public for o in owners], 2)


def test_bad_threshold_is_a_config_error(owners: list[Identity]) -> None:
    env = sign_release(owners[:2])
    with pytest.raises(ConfigError):
        verify_release(env, [o.public for o in owners], 4)


def test_hybrid_owners_sign_with_both_keys_and_a_stripped_one_is_refused(tree: Path) -> None:
    """A hybrid code owner (keys new-identity --pq) counts only with both signatures; the
    code-owners statement pins its ML-DSA-65 key."""
    import json

    from strongroom.crypto.hybrid_sig import mldsa_key_id
    from strongroom.gateway.owners import CodeOwners

    hybrid, classical = Identity.generate("hana", pq=True), Identity.generate("hugo")
    pinned = CodeOwners.from_statement(
        CodeOwners((hybrid.public, classical.public), 2, 1, 1).to_statement()).owners
    assert pinned[0].mldsa_bytes == hybrid.public.mldsa_bytes and not pinned[1].mldsa_bytes
    env = add_signature(sign_release([hybrid], tree), classical, tree)
    assert verify_release(env, pinned, threshold=2, root=tree).signers == ("hana", "hugo")
    pq = hybrid.public.mldsa_key
    assert pq is not None
    data = json.loads(env)
    data["signatures"] = [s for s in data["signatures"] if not s["keyid"].startswith("mldsa65:")]
    with pytest.raises(IntegrityError, match=f"no signature by {mldsa_key_id(pq)}"):
        verify_release(json.dumps(data), pinned, threshold=2, root=tree)
