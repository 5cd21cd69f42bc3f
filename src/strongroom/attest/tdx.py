"""Intel TDX quotes (v4/v5): verified offline by Phala's ``dcap-qvl`` against Intel's SGX root.

strongroom does not parse the PCK certificates' SGX extensions or Intel's
signed TCB info itself: ``dcap-qvl`` (Rust, MIT, Python bindings on PyPI;
install ``strongroom[tdx]``) checks the quote's ECDSA P-256 signatures, the QE
report, the PCK chain to Intel's SGX Root CA (built into it), the CRLs, the
TCB info and QE identity collateral and their validity at the time given. This
module adds what strongroom's policy needs on top::

    ev = Tdx().verify(quote, Collateral.from_pem(collateral_json), now=now)
    ev.measurement   # MRTD; RTMR0-3, MRSEAM, MRCONFIGID... in ev.details

and refuses: an unparsable or non-TDX quote (``quote``), missing collateral
(``collateral``), a failed signature (``signature``), stale or not-yet-valid
collateral (``expired``), a revoked certificate (``revoked``), anything else
``dcap-qvl`` rejects (``chain``), a TCB status other than UpToDate (``tcb``),
and a debuggable TD (``debug``: TD_ATTRIBUTES bit 0).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from strongroom.attest.evidence import Collateral, VerifiedEvidence, refuse
from strongroom.errors import ConfigError

__all__ = ["ACCEPTED_STATUS", "Tdx"]

#: TCB statuses accepted from Intel's TCB info (anything else needs a platform update).
ACCEPTED_STATUS = frozenset({"UpToDate"})
#: Quote versions this platform reads.
VERSIONS = (4, 5)
_TDX_TEE_TYPE = 0x81


def _dcap() -> Any:
    try:
        import dcap_qvl
    except ImportError as exc:
        raise ConfigError("TDX evidence needs the dcap-qvl package", obj="attestation platform",
                          remedy="pip install 'strongroom[tdx]' (docs/attestation.md)") from exc
    return dcap_qvl


def _check_for(message: str) -> str:
    low = message.lower()
    if "expired" in low or "in the future" in low or "not yet valid" in low:
        return "expired"
    if "revoked" in low:
        return "revoked"
    if "signature" in low:
        return "signature"
    return "chain"


class Tdx:
    """The TDX platform: dcap-qvl's verification plus strongroom's facts and refusals."""

    name = "tdx"

    def __init__(self) -> None:
        self._dcap = _dcap()

    def verify(self, evidence: bytes, collateral: Collateral, *, now: datetime) -> VerifiedEvidence:
        """Verify a TDX quote with its collateral (one dcap-qvl QuoteCollateralV3 JSON document)."""
        dcap = self._dcap
        try:
            quote = dcap.parse_quote(evidence)
        except ValueError as exc:
            raise refuse("quote", f"not a readable DCAP quote ({str(exc).splitlines()[0]})") \
                from None
        header = quote.header
        if not quote.is_tdx() or header.tee_type != _TDX_TEE_TYPE:
            raise refuse("quote", "this is an SGX quote, not a TDX one")
        if header.version not in VERSIONS:
            raise refuse("quote", f"quote version {header.version} is not one of {VERSIONS}")
        if len(collateral.documents) != 1:
            raise refuse("collateral", "give the quote's collateral as one JSON file "
                                       "(dcap-qvl QuoteCollateralV3: TCB info, QE identity, CRLs)")
        try:
            given = dcap.QuoteCollateralV3.from_json(collateral.documents[0].decode())
        except (ValueError, UnicodeDecodeError) as exc:
            raise refuse("collateral", f"the collateral JSON is malformed ({exc})") from None
        try:
            result = dcap.verify(evidence, given, int(now.timestamp()))
        except ValueError as exc:
            message = str(exc).replace("Verification failed: ", "").splitlines()[0]
            raise refuse(_check_for(message), f"dcap-qvl: {message}") from None
        status = str(result.status)
        if status not in ACCEPTED_STATUS:
            advisories = ", ".join(result.advisory_ids) or "none"
            raise refuse("tcb", f"the platform's TCB status is {status} (advisories: "
                                f"{advisories}); only {', '.join(sorted(ACCEPTED_STATUS))} "
                                "is accepted")
        report = quote.report
        if report.td_attributes[0] & 0x01:
            raise refuse("debug", "the TD is debuggable (TD_ATTRIBUTES.DEBUG): the host can "
                                  "read its memory")
        svn = bytes(report.tee_tcb_svn)
        ext = quote.pck_extension()
        details: dict[str, Any] = {
            "version": header.version, "status": status,
            "advisory_ids": list(result.advisory_ids), "fmspc": quote.fmspc(),
            "mr_seam": report.mr_seam.hex(), "mr_config_id": report.mr_config_id.hex(),
            "mr_owner": report.mr_owner.hex(), "mr_owner_config": report.mr_owner_config.hex(),
            "rtmr0": report.rt_mr0.hex(), "rtmr1": report.rt_mr1.hex(),
            "rtmr2": report.rt_mr2.hex(), "rtmr3": report.rt_mr3.hex(),
            "td_attributes": report.td_attributes.hex(), "xfam": report.xfam.hex(),
            "tee_tcb_svn": svn.hex(),
        }
        return VerifiedEvidence(
            platform=self.name, measurement=report.mr_td.hex(),
            report_data=bytes(report.report_data),
            tcb={f"svn{i}": b for i, b in enumerate(svn)},
            chip_id=ext.ppid.hex() if ext is not None and any(ext.ppid) else "",
            details=details,
        )
