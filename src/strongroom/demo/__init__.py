"""``make demo``: strongroom's main job end to end, one module per part.

Run it with ``python -m strongroom.demo`` (what ``make demo`` does); the walk
through itself (key ceremony, encrypted import, in-memory load, tampering,
export, audit log with a witness, seal) is in :mod:`strongroom.demo.__main__`,
and each part it calls lives in its own module:

- :mod:`strongroom.demo.access`: a load denied, a request, two approvals, a Grant
  (and :func:`~strongroom.demo.access.demo_grant`, used by the other parts);
- :mod:`strongroom.demo.gateway`: output-only inference, an extractor throttled;
- :mod:`strongroom.demo.supplychain`: a signed import and an airgap round trip;
- :mod:`strongroom.demo.monitor`: an exfiltration loop stopped at the egress cap;
- :mod:`strongroom.demo.redteam`: the red-team scorecard and the posture report.

Demo code only: it enrolls throw-away people, sets tight budgets and single-officer
Grants. Nothing in the library imports this package; never run it against a
production deployment.
"""
