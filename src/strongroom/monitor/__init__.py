"""Exfiltration defence and insider-risk detection.

* :mod:`~strongroom.monitor.egress` — byte budgets charged at key release
  (:class:`EgressMeter`, the release gate's ``EgressMeter``), over the budgets
  of :mod:`~strongroom.monitor.budgets` and the ledger of
  :mod:`~strongroom.monitor.ledger`;
* :mod:`~strongroom.monitor.exfil_report` — the time-to-exfiltrate report;
* :mod:`~strongroom.monitor.detectors` — rules over audit events with their
  MITRE ATT&CK / ATLAS ids, and the per-person risk score (:class:`RiskEngine`);
* :mod:`~strongroom.monitor.canaries` — decoy artifacts (:class:`CanaryRegistry`);
* :mod:`~strongroom.monitor.alerts` — stored, de-duplicated, acknowledged,
  audited alerts and their sinks (:class:`AlertManager`);
* :mod:`~strongroom.monitor.evaluation` — the synthetic lab and the detectors'
  measured recall and false-alert rate (``strongroom monitor eval``).

Importing this package does not import the evaluation or numpy-heavy parts;
import those modules directly.
"""

from __future__ import annotations

from strongroom.monitor.alerts import (
    Alert,
    AlertManager,
    ConsoleSink,
    JsonLinesSink,
    StoredAlert,
    WebhookSink,
)
from strongroom.monitor.budgets import Budget, BudgetUsage
from strongroom.monitor.egress import EgressMeter
from strongroom.monitor.exfil_report import ExfiltrationEstimate

__all__ = [
    "Alert",
    "AlertManager",
    "Budget",
    "BudgetUsage",
    "ConsoleSink",
    "EgressMeter",
    "ExfiltrationEstimate",
    "JsonLinesSink",
    "StoredAlert",
    "WebhookSink",
]
