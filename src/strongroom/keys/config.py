"""Key-custody settings read from the environment (``STRONGROOM_*``).

* ``STRONGROOM_KEY_BACKEND``: ``shamir`` (default; k-of-n custodians unseal) or
  ``hsm`` (the root key is wrapped by a non-extractable AES key in a PKCS#11 token).
* ``STRONGROOM_HSM_LIBRARY``, ``STRONGROOM_HSM_TOKEN``, ``STRONGROOM_HSM_PIN``,
  ``STRONGROOM_HSM_KEY_LABEL``: where the HSM root key lives (``hsm`` backend only).
* ``STRONGROOM_FILE_KEYS``: ``keyring`` (default; file keys wrapped under the keyring's
  KEK, released by this host's gate) or ``threshold`` (wrapped to the key servers' group
  key and released only by k of them; see ``docs/threshold.md``).
* ``STRONGROOM_THRESHOLD_SERVERS``: the key servers, ``name=URL`` separated by commas,
  asked in this order (``threshold`` only).
* ``STRONGROOM_THRESHOLD_COMMITMENTS``: a JSON file holding the group's Feldman
  commitments (hex, as ``GET /v1/keyserver/status`` shows them), pinned out of band.
* ``STRONGROOM_AGENT_IDLE``: seconds of inactivity after which the local agent
  seals and exits (default 1800).
* ``STRONGROOM_EGRESS_CAP_BYTES``: interim per-principal release cap over a
  sliding 24-hour window (default 64 GiB).
* ``STRONGROOM_IDENTITY``: the Ed25519 identity file the CLI acts as.

Do not put the HSM PIN in a file others can read; prefer the environment of the
unsealing shell, or answer the prompt.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["KeysSettings"]


class KeysSettings(BaseSettings):
    """How the keyring is backed, and the limits of the local agent and the gate."""

    model_config = SettingsConfigDict(env_prefix="STRONGROOM_", extra="ignore")

    key_backend: Literal["shamir", "hsm"] = Field(default="shamir", description="root key backend")
    hsm_library: str = Field(default="/usr/lib/softhsm/libsofthsm2.so", description="PKCS#11 module")
    hsm_token: str | None = Field(default=None, description="label of the HSM token")
    hsm_pin: str | None = Field(default=None, description="user PIN of the HSM token", repr=False)
    hsm_key_label: str = Field(default="strongroom-root", description="label of the HSM root key")
    file_keys: Literal["keyring", "threshold"] = Field(
        default="keyring", description="who wraps and releases file keys")
    threshold_servers: str = Field(default="", description="key servers: name=URL,name=URL")
    threshold_commitments: Path | None = Field(
        default=None, description="JSON file of the group's pinned Feldman commitments")
    agent_idle: float = Field(default=1800.0, gt=0, description="agent idle timeout, seconds")
    egress_cap_bytes: int = Field(default=64 * 1024**3, ge=0, description="per-principal 24 h cap")
    state_check_interval_s: float = Field(
        default=2.0, gt=0, le=3600,
        description="how often the gate re-derives restrictive state from the audit log")
    identity: Path | None = Field(default=None, description="identity file the CLI acts as")
