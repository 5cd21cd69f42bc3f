"""Attestation policies as the officers pinned them: the newest serial per name that k signed.

Policies are officer statements of kind ``attest-policy`` (stored under the
policy's name, cosigned with ``strongroom people cosign``); nothing in a row is
believed until the pinned officers' threshold is met::

    policy = pinned_policy(reader, "inference")     # None if none is pinned yet
    for p in pinned_policies(reader): ...

The release gate's attestation service resolves a label's ``attested: <name>``
through :func:`pinned_policy`.
"""

from __future__ import annotations

from strongroom.access import statements
from strongroom.access.directory import DirectoryReader
from strongroom.attest.policy import AttestationPolicy
from strongroom.errors import IntegrityError, InvalidInput

__all__ = ["KIND", "pinned_policies", "pinned_policy"]

KIND = "attest-policy"


def _verified(reader: DirectoryReader, subject: str | None, *,
              allow_test: bool = False) -> dict[str, AttestationPolicy]:
    best: dict[str, AttestationPolicy] = {}
    for env in statements.envelopes(reader.store, KIND, subject=subject):
        try:
            st = reader.verify_officer_statement(env, KIND, "attestation policy")
            policy = AttestationPolicy.from_json(st, allow_test=allow_test)
        except (IntegrityError, InvalidInput):
            continue  # under-signed, unsigned or malformed rows pin nothing
        if subject is not None and policy.name != subject:
            continue  # a row filed under another name than it signs
        current = best.get(policy.name)
        if current is None or policy.serial > current.serial:
            best[policy.name] = policy
    return best


def pinned_policy(reader: DirectoryReader, name: str, *,
                  allow_test: bool = False) -> AttestationPolicy | None:
    """The newest policy called ``name`` that the officers' threshold signed, else None.

    Policies listing a test platform pin only with ``allow_test`` (a gate given test roots).
    """
    return _verified(reader, name, allow_test=allow_test).get(name)


def pinned_policies(reader: DirectoryReader) -> list[AttestationPolicy]:
    """Every pinned policy (newest serial of each name), by name."""
    return sorted(_verified(reader, None).values(), key=lambda p: p.name)
