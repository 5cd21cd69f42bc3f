"""Access: compartments, vetting and multi-party approval, enforced by signatures.

The chain the release gate re-checks on every key release::

    officers pinned in the sealed keyring (k of m)
      --sign--> enrollments (key, roles, clearance, compartments, vetting) and resource labels
    enrolled people --sign--> requests and approvals (nonce, expiry, request digest)
    request + approvals meeting the rule --> Grant (time- and byte-bounded)
      --checked by--> GrantEvidence, the gate's evidence rule

Start with :class:`Enrollment` and :class:`ResourceLabel` (officers),
:class:`AccessRequest`, :func:`approve` and :func:`issue_grant` (people), and
:class:`GrantEvidence` (the gate). Rows in the database are never trusted:
every decision re-verifies signatures up to the pinned officers.
"""

from strongroom.access.approvals import AccessRequest, Approval, approve, deny, satisfy
from strongroom.access.breakglass import BreakGlass, review, take, verify_break_glass
from strongroom.access.caps import AccessCaps
from strongroom.access.directory import (
    LEVELS,
    Directory,
    DirectoryReader,
    Enrollment,
    KeyRevocation,
    Resource,
    ResourceLabel,
    Rule,
    Term,
    Vetting,
    level,
    publish,
)
from strongroom.access.evidence import GrantEvidence, make_evidence
from strongroom.access.grants import (
    VerifiedGrant,
    build_grant,
    issue_grant,
    revoke_grant,
    verify_grant,
)
from strongroom.access.policy import Decision, PolicyEngine, action_for_purpose, sign_policy

__all__ = [
    "LEVELS",
    "AccessCaps",
    "AccessRequest",
    "Approval",
    "BreakGlass",
    "Decision",
    "Directory",
    "DirectoryReader",
    "Enrollment",
    "GrantEvidence",
    "KeyRevocation",
    "PolicyEngine",
    "Resource",
    "ResourceLabel",
    "Rule",
    "Term",
    "VerifiedGrant",
    "Vetting",
    "action_for_purpose",
    "approve",
    "build_grant",
    "deny",
    "issue_grant",
    "level",
    "make_evidence",
    "publish",
    "review",
    "revoke_grant",
    "satisfy",
    "sign_policy",
    "take",
    "verify_break_glass",
    "verify_grant",
]
