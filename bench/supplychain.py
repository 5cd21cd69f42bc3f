"""Scan + hash + sign of a 1 GiB model directory vs ``model_signing sign key``, side by side.

Run: ``.venv/bin/python bench/supplychain.py [--gib 1] [--shards 4] [--rounds 3]``.
Writes the model directory under a temporary directory (page-cached after the
first round), then for each round times, in this process:

* strongroom: ``scan_path`` (structural safetensors checks) + ``hash_directory``
  (SHA-256 of every file, threads) + ``sign_digests`` (ECDSA P-256 bundle);
* model_signing as a library (``model_signing.signing.Config`` with the EC key);
* the ``model_signing sign key`` command (includes its interpreter start-up).

The target is strongroom <= 1.5 x model_signing. Best of the rounds is reported.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from safetensors.numpy import save_file

from strongroom.scanning.scan import scan_path
from strongroom.supplychain.signing import hash_directory, sign_digests


def make_model(root: Path, gib: float, shards: int) -> None:
    """``shards`` safetensors files totalling ``gib`` GiB, plus a config."""
    root.mkdir(parents=True)
    per = int(gib * 2**30 / shards / 4)
    rng = np.random.default_rng(0)
    for i in range(shards):
        rows = per // 4096
        tensors = {f"layer.{i}.w": rng.standard_normal((rows, 4096), dtype=np.float32)}
        save_file(tensors, str(root / f"model-{i:05d}-of-{shards:05d}.safetensors"))
    (root / "config.json").write_text('{"hidden_size": 4096}')


def strongroom_sign(model: Path, key: ec.EllipticCurvePrivateKey, out: Path) -> None:
    """What strongroom does on import: scan, hash, sign."""
    scan_path(model)
    out.write_text(sign_digests(model.name, hash_directory(model), key))


def main() -> None:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from model_signing import signing as ms_signing

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = root / "model"
        make_model(model, args.gib, args.shards)
        key = ec.generate_private_key(ec.SECP256R1())
        pem = root / "key.pem"
        pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
        tool = str(Path(sys.executable).parent / "model_signing")
        ours = lib = cli = float("inf")
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            strongroom_sign(model, key, root / "ours.sig")
            ours = min(ours, time.perf_counter() - t0)
            t0 = time.perf_counter()
            ms_signing.Config().use_elliptic_key_signer(private_key=pem).sign(model, root / "lib.sig")
            lib = min(lib, time.perf_counter() - t0)
            t0 = time.perf_counter()
            subprocess.run([tool, "sign", "key", "--private_key", str(pem), "--signature",
                            str(root / "cli.sig"), str(model)], check=True, capture_output=True)
            cli = min(cli, time.perf_counter() - t0)
        size = sum(p.stat().st_size for p in model.iterdir()) / 2**30
        print(f"model directory: {size:.2f} GiB in {args.shards} shards; best of {args.rounds}")
        print(f"strongroom scan+hash+sign:         {ours:.3f} s")
        print(f"model_signing library sign:        {lib:.3f} s   ratio {ours / lib:.2f}x")
        print(f"`model_signing sign key` command:  {cli:.3f} s   ratio {ours / cli:.2f}x (target <= 1.5x)")


if __name__ == "__main__":
    main()
