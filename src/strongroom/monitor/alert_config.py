"""``alerts.yaml``: where alerts go beyond the database — its schema, loading and safe display.

One file in the data directory (``<home>/alerts.yaml``; ``STRONGROOM_ALERTS_CONFIG``
names another) lists the routes::

    delivery: {timeout_s: 5, backoff_initial_s: 5, backoff_max_s: 600}
    routes:
      - {name: soc, type: webhook, url: "https://siem.example/hook?token=...", min_severity: high}
      - {name: chat, type: slack, url: "https://hooks.slack.com/services/T0/B0/XXXX"}
      - {name: siem, type: syslog, host: 10.0.0.5, port: 6514,
         tls: {ca_file: /etc/strongroom/siem-ca.pem}, detectors: [SR-BREAKGLASS, SR-CANARY]}

    config = load_alerts_config(alerts_config_path(home))   # ConfigError naming file:line
    config.route("soc").target()                            # "https://siem.example/…" (no token)

A bad file is refused whole with every problem named by file, line and key
and the remedy; nothing is half-applied. A file anyone but its owner may write
is refused: whoever can edit it can silence the alerts. Secrets (webhook URLs
carry tokens, headers carry credentials) never appear in ``repr``, errors or
listings: :meth:`Route.target` shows scheme and host only.

No file means no routes: alerts are still stored, audited and written to
``alerts.jsonl``, and ``strongroom alerts ls`` shows them.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from strongroom.errors import ConfigError
from strongroom.monitor.alerts import SEVERITIES

__all__ = [
    "ALERTS_CONFIG_ENV",
    "ALERTS_CONFIG_NAME",
    "AlertsConfig",
    "Delivery",
    "Route",
    "SyslogRoute",
    "SyslogTls",
    "WebhookRoute",
    "alerts_config_path",
    "load_alerts_config",
]

#: The file's name in the data directory.
ALERTS_CONFIG_NAME = "alerts.yaml"
#: The environment variable that names another file.
ALERTS_CONFIG_ENV = "STRONGROOM_ALERTS_CONFIG"
_DOCS = "see 'Alert routing' in docs/operations.md"
#: Syslog facilities by name (RFC 5424 section 6.2.1).
FACILITIES = {"kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6,
              "news": 7, "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11,
              **{f"local{i}": 16 + i for i in range(8)}}


def alerts_config_path(home: Path) -> Path:
    """Where the routes are configured: ``$STRONGROOM_ALERTS_CONFIG`` or ``<home>/alerts.yaml``."""
    named = os.environ.get(ALERTS_CONFIG_ENV)
    return Path(named).expanduser() if named else Path(home) / ALERTS_CONFIG_NAME


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Delivery(_Strict):
    """How the outbox delivers: per-attempt timeout, back-off between attempts, batch size."""

    timeout_s: float = Field(default=5.0, gt=0, le=120)
    backoff_initial_s: float = Field(default=5.0, gt=0, le=3600)
    backoff_max_s: float = Field(default=600.0, gt=0, le=86400)
    #: Each wait is drawn uniformly from [(1 - jitter) * d, d], d the exponential delay.
    jitter: float = Field(default=0.5, ge=0, le=1)
    batch: int = Field(default=100, ge=1, le=10000)
    #: On first sight a route is fed the alerts raised in this many seconds before.
    backfill_s: float = Field(default=86400.0, ge=0, le=90 * 86400)


class _RouteBase(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    min_severity: Literal["info", "warning", "high", "critical"] = "info"
    #: Rule names (``SR-BREAKGLASS``, ...); empty: every detector.
    detectors: tuple[str, ...] = ()

    @field_validator("detectors")
    @classmethod
    def _rule_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for rule in value:
            if not re.fullmatch(r"SR-[A-Z0-9-]+", rule):
                raise ValueError(f"{rule!r} is not a detector rule name (SR-..., upper case, "
                                 "as `strongroom alerts ls` shows them)")
        return value

    def accepts(self, severity: str, rule: str) -> bool:
        """True when an alert of ``severity`` from ``rule`` passes this route's filter."""
        rank = SEVERITIES.index(severity) if severity in SEVERITIES else len(SEVERITIES)
        if rank < SEVERITIES.index(self.min_severity):
            return False
        return not self.detectors or rule in self.detectors

    def target(self) -> str:
        """Where it delivers, without secrets."""
        raise NotImplementedError


class WebhookRoute(_RouteBase):
    """HTTP(S) POST: generic JSON (``webhook``) or a Slack/Mattermost incoming-webhook body."""

    type: Literal["webhook", "slack"]
    url: SecretStr
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    #: A CA bundle (PEM) that an https receiver's certificate must chain to (default: the system's).
    ca_file: Path | None = None

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: SecretStr) -> SecretStr:
        parts = urlsplit(value.get_secret_value())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        return value

    @field_validator("ca_file")
    @classmethod
    def _ca_exists(cls, value: Path | None) -> Path | None:
        return _readable(value)

    def target(self) -> str:
        """``https://host[:port]/…``: the path and query (where tokens live) hidden."""
        parts = urlsplit(self.url.get_secret_value())
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{parts.hostname}{port}/…"


class SyslogTls(_Strict):
    """TLS for syslog: the receiver's certificate must chain to ``ca_file`` (pinned, no system CAs)."""

    ca_file: Path
    #: The name the receiver's certificate must carry (default: the route's host).
    server_name: str | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    @field_validator("ca_file", "cert_file", "key_file")
    @classmethod
    def _files_exist(cls, value: Path | None) -> Path | None:
        return _readable(value)


class SyslogRoute(_RouteBase):
    """RFC 5424 messages over TCP, octet-counted (RFC 6587), optionally in TLS (RFC 5425)."""

    type: Literal["syslog"]
    host: str = Field(min_length=1, max_length=255)
    port: int = Field(ge=1, le=65535)
    tls: SyslogTls | None = None
    facility: str = "auth"
    app_name: str = Field(default="strongroom", pattern=r"^[!-~]{1,48}$")
    #: The structured-data id (RFC 5424 section 7.2.2); 32473 is the documentation number.
    sd_id: str = Field(default="strongroom@32473", pattern=r"^[!#-<>-Z^-~]{1,32}$")

    @field_validator("facility")
    @classmethod
    def _known_facility(cls, value: str) -> str:
        if value not in FACILITIES:
            raise ValueError(f"unknown facility {value!r}; one of {', '.join(FACILITIES)}")
        return value

    def target(self) -> str:
        """``tcp://host:port`` or ``tcp+tls://host:port``."""
        return f"{'tcp+tls' if self.tls else 'tcp'}://{self.host}:{self.port}"


Route = Annotated[WebhookRoute | SyslogRoute, Field(discriminator="type")]


class AlertsConfig(_Strict):
    """The parsed file: delivery settings and the routes (names unique)."""

    delivery: Delivery = Field(default_factory=Delivery)
    routes: tuple[Route, ...] = ()
    #: The file it came from (``None``: no file, no routes).
    source: Path | None = Field(default=None, exclude=True)

    @field_validator("routes")
    @classmethod
    def _unique_names(cls, value: tuple[Any, ...]) -> tuple[Any, ...]:
        names = [r.name for r in value]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"route names must be unique; repeated: {', '.join(dupes)}")
        return value

    def route(self, name: str) -> WebhookRoute | SyslogRoute:
        """The route called ``name`` (ConfigError naming the known ones if none is)."""
        for r in self.routes:
            if r.name == name:
                return r
        known = ", ".join(r.name for r in self.routes) or "none"
        raise ConfigError(f"no alert route {name!r} (routes: {known})",
                          obj=str(self.source or ALERTS_CONFIG_NAME),
                          remedy=f"add it under routes: ({_DOCS})")


def _readable(path: Path | None) -> Path | None:
    if path is not None and not Path(path).expanduser().is_file():
        raise ValueError(f"{path} is not a readable file")
    return Path(path).expanduser() if path is not None else None


def _key_line(root: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """The 1-based line of the deepest key of ``loc`` present in the YAML tree."""
    node, line = root, None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = [(k, v) for k, v in node.value if str(k.value) == str(part)]
            if not match:
                continue  # a union tag pydantic adds to the location
            node, line = match[0][1], match[0][0].start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) \
                and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
    return line


def _refuse_writable_by_others(path: Path) -> None:
    mode = path.stat().st_mode
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError("the alert routes file is writable by others: whoever can edit it "
                          "can silence the alerts", obj=str(path),
                          remedy=f"chmod 600 {path} (owned by the service's user)")


def load_alerts_config(path: Path) -> AlertsConfig:
    """Parse and check ``path``; no file: no routes. ConfigError names file, line, key, remedy."""
    path = Path(path)
    if not path.exists():
        return AlertsConfig()
    try:
        _refuse_writable_by_others(path)
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the alert routes file ({exc})", obj=str(path),
                          remedy="check its permissions and that it is UTF-8 text") from None
    try:
        tree = yaml.compose(text, Loader=yaml.SafeLoader)
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"not valid YAML ({getattr(exc, 'problem', None) or exc})", obj=where,
                          remedy="fix the YAML syntax; " + _DOCS) from None
    if doc is None:
        return AlertsConfig(source=path)
    if not isinstance(doc, dict):
        raise ConfigError("must be a mapping with 'routes:' (and optionally 'delivery:')",
                          obj=str(path), remedy=_DOCS)
    try:
        return AlertsConfig.model_validate({**doc, "source": path})
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False, include_input=False)[:6]:
            loc = tuple(err["loc"])
            line = _key_line(tree, loc)
            key = ".".join(str(p) for p in loc if not (isinstance(p, str) and p in
                                                       ("webhook", "slack", "syslog")))
            problems.append(f"line {line if line else '?'}, {key or 'file'}: {err['msg']}")
        first = _key_line(tree, tuple(exc.errors()[0]["loc"]))
        raise ConfigError("invalid alert routes: " + "; ".join(problems),
                          obj=f"{path}:{first}" if first else str(path),
                          remedy="correct the keys named; " + _DOCS) from None
