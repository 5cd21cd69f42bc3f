"""The direct call of cedarpy's core decides exactly as cedarpy's public API.

``strongroom.access.policy`` calls ``cedarpy._internal`` directly (the public
wrapper's result objects cost as much as Cedar's evaluation) once a start-up
self-check passes, and parses the result text itself. These properties hold
the direct path to the public one over random directories and requests:
same decision, same determining policies, same errors; an error in Cedar is
a deny (fail-closed) and is reported; a cedarpy whose core changed falls back
to the public API; a decision is never reused for another second.
"""

from __future__ import annotations

import json
from typing import Any

import cedarpy
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from strongroom.access import policy
from strongroom.access.directory import (
    EMPLOYMENT_STATES,
    VETTING_STATUSES,
    Enrollment,
    Resource,
    Vetting,
)
from strongroom.access.policy import (
    ACTIONS,
    Decision,
    PolicyEngine,
    _parse_result,
    _request,
    evaluate,
)
from strongroom.keys.identity import Identity

ENGINE = PolicyEngine()
KEYS = [Identity.generate().public.public_bytes for _ in range(6)]
COMPARTMENTS = ("atlas", "borealis", "cirrus")
ROLES = ("approvers", "security-officers")
#: A policy that errors (a missing attribute) in a forbid and in a permit: Cedar skips
#: such policies, so its own verdict can be Allow with errors; strongroom's is a deny.
ERRING = cedarpy.PolicySet.from_str(
    'permit (principal, action, resource);\n'
    '@id("forbid-on-missing") forbid (principal, action, resource) when '
    '{ context.missing == 1 };\n'
    'permit (principal, action, resource) when { principal.nosuch == 2 };')

principals = st.builds(
    lambda key, kind, clearance, comps, status, expires, flags, employment, roles: Enrollment(
        name=f"p{KEYS.index(key)}", key=key, kind=kind, clearance=clearance,
        compartments=tuple(sorted(comps)), roles=tuple(sorted(roles)),
        vetting=Vetting(status, 0, expires, tuple(flags)), employment=employment),
    st.sampled_from(KEYS), st.sampled_from(("person", "service")), st.integers(0, 4),
    st.sets(st.sampled_from(COMPARTMENTS)), st.sampled_from(VETTING_STATUSES),
    st.integers(0, 200), st.lists(st.sampled_from(("foreign-contact", "debt")), max_size=1),
    st.sampled_from(EMPLOYMENT_STATES), st.sets(st.sampled_from(ROLES)))
resources = st.builds(lambda n, c, comps: Resource(f"m{n}@1", "weights", c,
                                                   tuple(sorted(comps))),
                      st.integers(0, 2), st.integers(0, 4), st.sets(st.sampled_from(COMPARTMENTS)))


def _public(requests: list[dict[str, Any]], policies: Any,
            entities: cedarpy.Entities) -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
    """Cedar's verdict, determining policies (named by @id) and errors (each a set in Cedar,
    in no fixed order: sorted), via the public API."""
    out = []
    for r in cedarpy.is_authorized_batch(requests, policies, entities):
        names = r.diagnostics.id_annotations_by_reason
        out.append((r.decision.value,
                    tuple(sorted(str(names.get(p, p)) for p in r.diagnostics.reasons)),
                    tuple(sorted(r.diagnostics.errors))))
    return out


def _expected(public: tuple[str, tuple[str, ...], tuple[str, ...]]) -> Decision:
    verdict, reasons, errors = public
    return Decision(verdict == "Allow" and not errors, reasons, errors)


def test_the_core_passes_its_self_check() -> None:
    # cedarpy is pinned by hash: with this lock the direct path must be the one in use.
    assert policy._Core.usable()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(people=st.lists(principals, min_size=1, max_size=4, unique_by=lambda p: p.key),
       resource=resources,
       asks=st.lists(st.tuples(st.integers(0, 5), st.sampled_from(ACTIONS),
                               st.integers(0, 2), st.integers(0, 220)), min_size=1,
                     max_size=9))
def test_direct_path_decides_as_the_public_api(people: list[Enrollment], resource: Resource,
                                               asks: list[tuple[int, str, int, int]]) -> None:
    principals_ = tuple(sorted(people, key=lambda p: p.key_id))
    entities = ENGINE._entities(principals_, resource)
    # Unknown principals and resources (the index past the list / another name) error in Cedar.
    requests = [_request(Enrollment(name="x", key=KEYS[k]).key_id, action, f"m{r}@1", now)
                for k, action, r, now in asks]
    public = _public(requests, ENGINE._policies, entities)
    expected = [_expected(p) for p in public]
    assert evaluate(requests, ENGINE._policies, entities) == expected  # one batch
    assert [evaluate([q], ENGINE._policies, entities)[0] for q in requests] == expected
    # Fail-closed: a decision with errors never allows, and names them.
    for d, (verdict, _, errors) in zip(expected, public, strict=True):
        assert d.allowed == (verdict == "Allow" and not errors)
    # The erring policy set: Cedar's own verdict may be Allow; ours is a deny with the errors.
    erring = _public(requests, ERRING, entities)
    got = evaluate(requests, ERRING, entities)
    assert got == [_expected(p) for p in erring]
    assert all(not d.allowed and d.errors for d in got if d.errors)
    # The engine's entry points agree with it too.
    ask_pairs = [(p, a) for p, (_, a, _, _) in zip(people * 9, asks, strict=False)]
    now = asks[0][3]
    want = [_expected(p) for p in _public(
        [_request(p.key_id, a, resource.name, now) for p, a in ask_pairs], ENGINE._policies,
        ENGINE._entities(tuple(sorted({p.key_id: p for p, _ in ask_pairs}.values(),
                                      key=lambda p: p.key_id)), resource))]
    assert ENGINE.decide_many(ask_pairs, resource, now) == want
    assert ENGINE.decide_prepared(ENGINE.prepare(ask_pairs, resource), now) == want


def test_erring_forbid_denies_and_reports() -> None:
    who = Enrollment(name="a", key=KEYS[0], clearance=4, vetting=Vetting("active", 0, 10**9))
    res = Resource("m0@1", "weights", 0, ())
    entities = ENGINE._entities((who,), res)
    q = _request(who.key_id, "load", res.name, 5)
    (verdict, _, errors), = _public([q], ERRING, entities)
    assert verdict == "Allow" and errors  # Cedar skipped the forbid that failed
    decision = evaluate([q], ERRING, entities)[0]
    assert not decision.allowed
    assert any("missing" in e for e in decision.errors)


def test_fallback_to_the_public_api_decides_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    who = Enrollment(name="a", key=KEYS[1], clearance=2, vetting=Vetting("active", 0, 100))
    res = Resource("m0@1", "weights", 1, ())
    entities = ENGINE._entities((who,), res)
    requests = [_request(who.key_id, a, res.name, now) for a in ACTIONS for now in (50, 150)]
    requests.append(_request("nobody", "load", res.name, 50))
    direct = evaluate(requests, ENGINE._policies, entities)
    monkeypatch.setattr(policy._Core, "_checked", False)
    assert evaluate(requests, ENGINE._policies, entities) == direct
    assert any(d.allowed for d in direct) and any(d.errors for d in direct)


class _ChangedCore:
    """A cedarpy core whose results no longer look the same (a future release, say)."""

    @staticmethod
    def is_authorized_batch(requests: list[Any], *_: Any) -> list[str]:
        return [json.dumps({"decision": "Allow", "diagnostics": {}}) for _ in requests]

    @staticmethod
    def is_authorized(request: Any, *_: Any) -> str:
        return json.dumps({"verdict": "Allow"})


def test_a_changed_core_fails_the_self_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(policy, "_cedar_core", _ChangedCore)
    assert policy._Core._self_check() is False
    monkeypatch.setattr(policy, "_cedar_core", None)
    assert policy._Core._self_check() is False


def test_result_parsing_is_strict() -> None:
    allow = ('{"decision":"Allow","correlation_id":null,"diagnostics":{"reason":["policy0"],'
             '"id_annotations_by_reason":{"policy0":"read"},"errors":[]}')
    assert _parse_result(allow + ',"metrics":{"a":1}}') == Decision(True, ("read",))
    assert _parse_result(allow + "}") == Decision(True, ("read",))  # no metrics
    # Another key order (metrics first): the part before them has no decision; all is read.
    moved = ('{"metrics":{"a":1},"decision":"Allow","diagnostics":{"reason":[],'
             '"id_annotations_by_reason":{},"errors":["boom"]}}')
    assert _parse_result(moved) == Decision(False, (), ("boom",))
    # ... and nothing is remembered from it: another text with the same start decides anew.
    assert _parse_result(moved.replace('"boom"', "")) == Decision(True, ())
    # An error message quoting ,"metrics": stays inside its (escaped) string.
    tricky = ('{"decision":"Deny","correlation_id":null,"diagnostics":{"reason":[],'
              '"id_annotations_by_reason":{},"errors":["x\\",\\"metrics\\":{"]},'
              '"metrics":{"a":2}}')
    assert _parse_result(tricky) == Decision(False, (), ('x","metrics":{',))
    for bad in ('{"decision":"Maybe","diagnostics":{}}', '{"decision":"Allow"}',
                '{"decision":"Allow","diagnostics":{"reason":"policy0"}}', "[]", "not json"):
        with pytest.raises(ValueError):
            _parse_result(bad)


def test_prepared_decisions_are_made_again_in_each_second() -> None:
    who = Enrollment(name="a", key=KEYS[2], clearance=4, vetting=Vetting("active", 0, 1001))
    res = Resource("m0@1", "weights", 1, ())
    prepared = ENGINE.prepare([(who, "load")], res)
    assert ENGINE.prepare([(who, "load")], res) is prepared  # same values: the same inputs
    assert ENGINE.decide_prepared(prepared, 1000.5)[0].allowed
    assert not ENGINE.decide_prepared(prepared, 1001.0)[0].allowed  # vetting lapsed
    assert ENGINE.decide_prepared(prepared, 1000.9)[0].allowed
    changed = Enrollment(name="a", key=KEYS[2], clearance=0, vetting=Vetting("active", 0, 1001))
    assert ENGINE.prepare([(changed, "load")], res) is not prepared
    assert not ENGINE.decide_prepared(ENGINE.prepare([(changed, "load")], res), 1000)[0].allowed
