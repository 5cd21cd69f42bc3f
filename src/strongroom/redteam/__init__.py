"""Continuous red-teaming: YAML scenarios run against a deployment and graded from evidence.

* :mod:`~strongroom.redteam.schema` — the scenario schema, validator and loader;
* :mod:`~strongroom.redteam.steps` / :mod:`~strongroom.redteam.checks` — the
  registries of named step and check functions scenarios refer to;
* :mod:`~strongroom.redteam.target` — the embedded target (a real deployment
  in a temporary directory) and the live-server target;
* :mod:`~strongroom.redteam.runner` / :mod:`~strongroom.redteam.grading` —
  running, grading blocked / detected / missed from the audit log and the
  alert store, storing the latest results.

See docs/redteam.md.
"""
