"""A real ``strongroom gateway serve`` restarted on the same database (SQLite, PostgreSQL).

The operator's setup of the live red-team test (:mod:`live_gateway`: a tiny BERT
imported as ``minilm``, the gateway's service principal with its load Grant, three
callers with infer Grants, a code release two pinned owners signed) and a gateway
with a per-caller budget of :data:`live_gateway.QUERY_BUDGET` texts a day. One
caller spends most of its day and another is suspended by the extraction detector
over HTTP; the gateway process is stopped (SIGTERM) and started again: the day's
spent budget and the suspension are still there (they are read back from the
audit log), and the third caller is unaffected. No ``strongroom serve``: the
gateway needs only the unsealed vault's key agent.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from strongroom.gateway.auth import sign_request
from strongroom.keys.identity import Identity

from cli_fixtures import unseal_home
from live_gateway import CALLERS, QUERY_BUDGET, enroll, gateway_process, prepare_gateway

PATH = "/v1/embeddings"


def _post(url: str, who: Path, texts: list[str]) -> tuple[int, str]:
    """``texts`` to the gateway at ``url``, signed as the identity in ``who``; (status, error)."""
    body = json.dumps({"input": texts}).encode()
    headers = {
        **sign_request(Identity.load(who), "POST", PATH, body),
        "Content-Type": "application/json",
    }
    reply = httpx.post(url + PATH, content=body, headers=headers, timeout=60)
    return reply.status_code, "" if reply.status_code == 200 else reply.text


def _plain(template: str, n: int) -> list[str]:
    """``n`` ordinary sentences (fewer than the probing detector's 24 variants of one template)."""
    return [template.format(i) for i in range(n)]


@pytest.mark.timeout(300)  # ~20 CLI calls and two gateway starts; ~40 s on 2 quiet cores
def test_budget_and_suspension_survive_a_gateway_serve_restart(tmp_path: Path, db_url: str) -> None:
    home = tmp_path / "home"
    run, env = unseal_home(home, db_url)
    try:
        approvers = [enroll(run, tmp_path, n, "approvers") for n in ("approver1", "approver2")]
        gw = prepare_gateway(run, env, tmp_path, approvers)
        spender, suspect, bystander = gw.callers
        spent = QUERY_BUDGET - 8
        with gateway_process(env, gw, tmp_path / "gateway-1.log") as url:
            half = spent // 2
            assert _post(url, spender, _plain("the river runs past the mill {}", half))[0] == 200
            assert (
                _post(url, spender, _plain("a letter came for her on day {}", spent - half))[0]
                == 200
            )
            noise = [f"qzxv{i} brrkt{i} xjqw{i} pfft{i}" for i in range(32)]
            status, error = _post(url, suspect, noise)
            assert status == 429 and "suspended" in error, error
        with gateway_process(env, gw, tmp_path / "gateway-2.log") as url:
            # the day's texts are still charged: 9 more would pass the budget
            status, error = _post(url, spender, _plain("we walked home by the old road {}", 9))
            assert status == 429, error
            budget = f"query budget of {QUERY_BUDGET} texts per 86400 s reached for {CALLERS[0]}"
            assert budget in error, error
            assert _post(url, spender, _plain("she kept the garden all summer {}", 8))[0] == 200
            status, error = _post(url, spender, ["one more sentence for the road"])
            assert status == 429 and "query budget" in error, error
            # the suspension the detector imposed before the restart still holds
            status, error = _post(url, suspect, ["a perfectly ordinary sentence"])
            assert status == 429 and "suspended" in error, error
            # another caller's day is untouched
            assert _post(url, bystander, _plain("the train left the station at {}", 20))[0] == 200
        tail = run("audit", "tail", "-n", "60").stdout
        assert tail.count("gateway.start") >= 2, tail
    finally:
        run("seal", ok=False)
