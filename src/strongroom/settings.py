"""Settings read from the environment (``STRONGROOM_*``) with pydantic-settings."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]


class Settings(BaseSettings):
    """Where strongroom keeps its state and how it reaches its peers."""

    model_config = SettingsConfigDict(env_prefix="STRONGROOM_", extra="ignore")

    home: Path = Field(default=Path(".strongroom"), description="data directory")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default is SQLite in the data directory"
    )
    blob_store: str = Field(
        default="local", description="'local' (blobs under the data directory) or 's3'"
    )
    s3_endpoint: str | None = None
    s3_bucket: str = "strongroom"
    s3_region: str = "us-east-1"
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    threads: int = Field(default=2, ge=1, le=64, description="threads for chunk crypto")
    cipher: Literal["chacha20-poly1305", "aes-256-gcm"] = Field(
        default="chacha20-poly1305",
        description="payload cipher of new blobs: age's ChaCha20-Poly1305, or the "
        "FIPS-approved AES-256-GCM mode (docs/formats.md)",
    )
    host_id: str = Field(
        default_factory=socket.gethostname, min_length=1, max_length=255,
        description="this server host's name in the audit log (key.release details 'server')",
    )

    code_release: Path | None = Field(
        default=None, description="signed code release `serve` checks its installed modules "
        "against, at start and while serving (`strongroom serve --code-release`)",
    )
    code_check_s: float = Field(
        default=60.0, ge=0, description="seconds between two checks of the installed modules "
        "against the code release while serving (0: before every request)",
    )

    @property
    def resolved_home(self) -> Path:
        """The data directory as an absolute path."""
        return self.home.expanduser().resolve()

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to SQLite inside the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.resolved_home / 'strongroom.db'}"

    @property
    def blob_dir(self) -> Path:
        """Where the local blob store keeps encrypted blobs."""
        return self.resolved_home / "blobs"
