"""The signer and the verified directory an embedded access operation works with.

:func:`open_context` opens the local vault through its key agent together with
a :class:`Context`: the identity named by ``STRONGROOM_IDENTITY``, the
officers pinned in the keyring, a directory reader that believes only
statements signed by k of them, and the Cedar policy in force::

    vault, ctx = open_context()
    with vault:
        directory = ctx.directory()

The embedded service's access operations and the CLI's officer commands
(``people``, ``compartments``, ``console``, ``gateway owners``) use it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from strongroom.artifacts import ArtifactRef
from strongroom.errors import AccessDenied, InvalidInput, NotFound

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA65PrivateKey

    from strongroom.access.directory import Directory, DirectoryReader, Resource
    from strongroom.access.policy import PolicyEngine
    from strongroom.keys.identity import Identity
    from strongroom.store.db import Store
    from strongroom.vault.vault import Vault

__all__ = ["Context", "find_envelope", "find_statement", "identity", "open_context"]


def identity() -> Identity:
    """The identity this process signs with (``STRONGROOM_IDENTITY``)."""
    from strongroom.keys.config import KeysSettings
    from strongroom.keys.identity import Identity

    path = KeysSettings().identity
    if path is None:
        raise AccessDenied("no identity to sign with", obj="STRONGROOM_IDENTITY",
                           remedy="set STRONGROOM_IDENTITY to your identity file "
                           "(`strongroom keys new-identity`)")
    return Identity.load(Path(path))


class Context:
    """An open vault, the signer, a verifying directory reader and the policy in force."""

    def __init__(self, vault: Vault, me: Identity) -> None:
        from strongroom.access.directory import DirectoryReader
        from strongroom.keys.officers import Officers

        self.vault = vault
        self.me = me
        self.pins = Officers.from_public_keys(vault.keys.public_keys())
        self.officers = dict(self.pins.ed25519)
        status = vault.keys.status()
        # The pinned threshold; until the key service reports it, demand every officer.
        threshold = int(getattr(status, "officer_threshold", 0) or len(self.officers) or 1)
        self.reader: DirectoryReader = DirectoryReader.for_officers(vault.store, self.pins,
                                                                    threshold)

    @property
    def name(self) -> str:
        """Who signs: the identity's name."""
        return self.me.public.principal

    def directory(self) -> Directory:
        """The verified directory."""
        return self.reader.view()

    def engine(self) -> PolicyEngine:
        """The policy in force."""
        from strongroom.access.policy import PolicyEngine, current_policy

        return PolicyEngine(current_policy(self.reader)[0])

    def resource(self, name: str, directory: Directory | None = None) -> Resource:
        """The resource ``name`` (newest version unless ``name@v``) with its label applied."""
        from strongroom.access.evidence import describe_resource

        ref = ArtifactRef.parse(name, obj="resource")
        m = self.vault.manifest(ref.name, ref.version)
        res = describe_resource(m.ref, m.kind, m.compartments, m.metadata)
        return res.labelled((directory or self.directory()).label(m.name))

    def officer_keys(self) -> list[object]:
        """My key, if I am an officer pinned in the keyring (else AccessDenied)."""
        if self.me.public.key_id not in self.officers:
            raise AccessDenied(f"{self.name} is not a security officer pinned in the keyring",
                               obj="officer statement",
                               remedy="officer statements are signed by officers' identities")
        return [self.me.private_key]

    def officer_pq(self) -> MLDSA65PrivateKey | None:
        """My ML-DSA-65 key to sign beside Ed25519 (None: a classical officer).

        When the keyring pins my ML-DSA-65 key, an identity without it (or with
        another) is refused here: its signature would not count.
        """
        return self.pins.mldsa_signer(self.me.public.key_id, self.me.mldsa_key)


def open_context() -> tuple[Vault, Context]:
    """Open the vault (through the agent) and the signing context; close the vault after."""
    from strongroom.runtime.services import open_vault

    me = identity()
    vault = open_vault(identity=me)
    try:
        return vault, Context(vault, me)
    except BaseException:
        vault.close()
        raise


def find_statement(store: Store, kind: str, prefix: str) -> str:
    """The full digest of a stored statement of ``kind`` whose id starts with ``prefix``."""
    from strongroom.access.statements import find_by_prefix

    if len(prefix) < 8:
        raise InvalidInput("give at least 8 characters of the id", obj=prefix)
    found = find_by_prefix(store, kind, prefix)
    if len(found) != 1:
        raise InvalidInput(f"{len(found)} {kind} statements match {prefix!r}", obj=prefix,
                           remedy="`strongroom access grants --pending` shows the ids")
    return found[0].digest


def find_envelope(store: Store, kind: str, prefix: str) -> tuple[str, str]:
    """The digest and signed envelope of the stored statement :func:`find_statement` names."""
    from strongroom.access import statements

    digest = find_statement(store, kind, prefix)
    env = statements.by_digest(store, digest)
    if env is None:
        raise NotFound(f"{kind} statement {digest[:16]} vanished while being read",
                       obj=prefix, remedy="retry the command")
    return digest, env
