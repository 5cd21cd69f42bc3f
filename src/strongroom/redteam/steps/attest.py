"""Attestation steps: enclaves asking the gate for keys of an artifact labelled ``attested``.

The embedded target's gate trusts one throw-away SEV-SNP vendor as the test
platform ``sev-snp-test`` (``EmbeddedTarget.enclave_vendor``); the precondition
:func:`attested_document` stores a marked document, has the officers pin an
attestation policy for it (that platform, one allowed measurement) and label it
``attested: <policy>``, and grants ``who`` read access. The attack steps then
present enclave evidence signed by one of the vendor's chips:

* ``enclave_replay``: a genuine enclave is admitted; its report and nonce are
  replayed with the attacker's own ephemeral key (refused: ``nonce``);
* ``enclave_debug``: the allowed measurement, but a debug-enabled guest
  (refused: ``debug``);
* ``enclave_unlisted``: a measurement the policy does not list (refused:
  ``measurement``).
"""

from __future__ import annotations

from typing import Any

from strongroom.attest.admission import AttestedClaim, binding
from strongroom.crypto.age import X25519Identity
from strongroom.errors import InvalidInput
from strongroom.redteam.context import RunContext
from strongroom.redteam.steps.access import _resource
from strongroom.redteam.steps.registry import attempt, release_request, step

__all__ = ["attested_document", "enclave_debug", "enclave_replay", "enclave_unlisted"]

PLATFORM = "sev-snp-test"
#: The one launch measurement the scenarios' policy allows.
ALLOWED = b"\x42" * 48


def _vendor(ctx: RunContext) -> Any:
    vendor = getattr(ctx.target, "enclave_vendor", None)
    if vendor is None:
        raise InvalidInput("this target's gate trusts no test enclave vendor", obj="target",
                           remedy="run the attestation scenarios on the embedded target")
    return vendor


@step("attested_document")
def attested_document(ctx: RunContext, who: str, name: str) -> None:
    """A marked document only attested enclaves may receive keys for; ``who`` may read it."""
    from strongroom.access import statements
    from strongroom.attest.policy import AttestationPolicy, sign_policy
    from strongroom.redteam.steps.access import add_document

    t = ctx.target
    add_document(ctx, name, ["atlas"])
    resource = _resource(ctx, name)
    policy = AttestationPolicy(name=f"enclave-{ctx.marker}", serial=1, platforms=(PLATFORM,),
                               measurements=frozenset({ALLOWED.hex()}))
    statements.put(t.store, "attest-policy",
                   sign_policy(policy, *[o.private_key for o in t.officers]),
                   subject=policy.name)
    t.relabel(resource, attested=policy.name)
    ctx.vars["grant:" + who] = t.grant(ctx.actor(who), resource, "read")
    ctx.vars["attested:" + who] = resource
    ctx.vars["chip"] = _vendor(ctx).chip()


def _claim(ctx: RunContext, enclave: X25519Identity, **report: Any) -> AttestedClaim:
    """A fresh gate nonce, and a report from the vendor's chip binding it to ``enclave``."""
    target: Any = ctx.target
    desk = target.keys.gate.attestation.desk
    nonce = desk.challenge()
    chip = ctx.vars["chip"]
    rep = chip.report(report_data=binding(enclave.recipient.public_bytes, nonce), **report)
    return AttestedClaim(enclave.recipient, PLATFORM, rep, chip.collateral(), nonce)


def _ask(ctx: RunContext, who: str, claim: AttestedClaim, what: str) -> None:
    """``who`` asks the gate to release the document's key into the claimed enclave."""
    request = release_request(ctx, who, resource=ctx.vars["attested:" + who], purpose="read",
                              grant=ctx.vars["grant:" + who])
    target: Any = ctx.target
    gate = target.keys.gate
    attempt(ctx, f"{ctx.actor(who)} asks for {request.obj} into {what}",
            lambda: gate.release_attested(request, claim))


@step("enclave_replay")
def enclave_replay(ctx: RunContext, who: str) -> None:
    """A genuine enclave is admitted; its report and nonce are replayed with another key."""
    genuine = _claim(ctx, X25519Identity.generate(), measurement=ALLOWED)
    _ask(ctx, who, genuine, "the genuine enclave")
    thief = X25519Identity.generate()
    replayed = AttestedClaim(thief.recipient, genuine.platform, genuine.evidence,
                             genuine.collateral, genuine.nonce)
    _ask(ctx, who, replayed, "the attacker's key with the replayed report")


@step("enclave_debug")
def enclave_debug(ctx: RunContext, who: str) -> None:
    """The allowed measurement in a debug-enabled guest (the host can read its memory)."""
    from strongroom.attest.forge import DEFAULT_POLICY
    from strongroom.attest.sevsnp import POLICY_DEBUG

    claim = _claim(ctx, X25519Identity.generate(), measurement=ALLOWED,
                   policy=DEFAULT_POLICY | POLICY_DEBUG)
    _ask(ctx, who, claim, "a debug-enabled enclave")


@step("enclave_unlisted")
def enclave_unlisted(ctx: RunContext, who: str) -> None:
    """An enclave running an image whose measurement the policy does not list."""
    claim = _claim(ctx, X25519Identity.generate(), measurement=b"\x66" * 48)
    _ask(ctx, who, claim, "an enclave with an unlisted measurement")
