"""HSM PIN guessing against a SoftHSM2 token, in a separate process.

python-pkcs11 loads SoftHSM2 once per process and SoftHSM2 reads
``SOFTHSM2_CONF`` only then, so the probe runs in a child process with its
own token directory: it initialises an HSM-backed keyring (``init`` with the
``hsm`` backend), then makes ``guesses`` unseal attempts with wrong PINs from
a fresh key service, reads the keyring status independently afterwards, and
finally unseals with the right PIN (a control: the probe proves the token
works, so the refusals are the PIN check and not a broken set-up). It prints
one JSON object.

Precondition (explicit in the scenario's ``needs: [softhsm]``): Debian's
``softhsm2`` (``softhsm2-util`` and ``libsofthsm2.so``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["run_pin_guessing", "softhsm_missing"]

LIBRARY = os.environ.get("STRONGROOM_TEST_SOFTHSM_LIB", "/usr/lib/softhsm/libsofthsm2.so")
TOKEN = "sr-redteam"
PIN = "730519"


def softhsm_missing() -> str | None:
    """Why SoftHSM2 cannot be used here (``None`` when it can)."""
    if shutil.which("softhsm2-util") is None:
        return "softhsm2-util is not installed (apt-get install softhsm2)"
    if not os.path.isfile(LIBRARY):
        return f"the SoftHSM2 library {LIBRARY} is missing (apt-get install softhsm2)"
    return None


def run_pin_guessing(directory: Path, *, guesses: int, actor: str, timeout_s: float = 60) -> dict[str, Any]:
    """Initialise a token under ``directory`` and run the probe in a child process."""
    missing = softhsm_missing()
    if missing is not None:
        return {"error": missing}
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tokens").mkdir(exist_ok=True)
    conf = directory / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {directory / 'tokens'}/\n"
                    "objectstore.backend = file\nlog.level = ERROR\n")
    env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
    for key in ("STRONGROOM_HOME", "STRONGROOM_DATABASE_URL", "STRONGROOM_WITNESSES",
                "STRONGROOM_WITNESS_QUORUM", "STRONGROOM_HSM_PIN", "STRONGROOM_HSM_TOKEN"):
        env.pop(key, None)
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--so-pin", "0000", "--pin", PIN,
                    "--label", TOKEN], check=True, capture_output=True, env=env, timeout=timeout_s)
    proc = subprocess.run([sys.executable, "-m", "strongroom.redteam.hsm", str(directory),
                           str(guesses), actor], capture_output=True, text=True, env=env,
                          timeout=timeout_s)
    try:
        out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": f"probe failed (exit {proc.returncode}): {proc.stderr.strip()[-300:]}"}
    return out


def _probe(directory: Path, guesses: int, actor: str) -> dict[str, Any]:
    from strongroom.crypto.age import X25519Identity
    from strongroom.errors import StrongroomError
    from strongroom.keys import ceremony
    from strongroom.keys.config import KeysSettings
    from strongroom.runtime.services import LocalKeyService
    from strongroom.store.db import Store

    store = Store.open(f"sqlite:///{directory / 'hsm.db'}")
    settings = KeysSettings(key_backend="hsm", hsm_library=LIBRARY, hsm_token=TOKEN, hsm_pin=PIN)
    cust = directory / "custodian.pub"
    cust.write_text(f"{X25519Identity.generate().recipient}\n")
    ceremony.init_vault(store, custodians=[cust], threshold=1, shares_dir=directory / "shares",
                        settings=settings)
    attacker = LocalKeyService(store, KeysSettings(key_backend="hsm", hsm_library=LIBRARY,
                                                   hsm_token=TOKEN), actor=actor)
    refused: list[str] = []
    for i in range(guesses):
        guess = f"{i:06d}" if f"{i:06d}" != PIN else "999999"
        try:
            attacker.unseal_hsm(guess)
        except StrongroomError as exc:
            refused.append(type(exc).__name__)
    observer = LocalKeyService(store, settings, actor="observer")
    sealed_after = observer.status().sealed and attacker.status().sealed
    control = LocalKeyService(store, settings, actor="control")
    control_ok = not control.unseal_hsm().sealed
    control.seal()
    store.close()
    return {"guesses": guesses, "refused": len(refused), "errors": sorted(set(refused)),
            "sealed_after": sealed_after, "right_pin_unseals": control_ok,
            "summary": f"{len(refused)}/{guesses} refused, sealed afterwards: {sealed_after}, "
                       f"right PIN still unseals: {control_ok}"}


if __name__ == "__main__":
    print(json.dumps(_probe(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3])))
