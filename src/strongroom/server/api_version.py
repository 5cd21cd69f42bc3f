"""The HTTP API's version, and what a client does when a server reports another one.

``GET /v1/sys/version`` (no signature) answers ``{"version", "api", "api_minor"}``:
the strongroom release, the API's major version (the ``/v1`` prefix: raised when
a route changes incompatibly) and its minor version (raised when routes are
added). A client checks it once, before its first request
(:meth:`strongroom.server.client.Client.request`)::

    warning = check_server_version(client.version(), url)   # raises on a major skew
    if warning:
        sys.stderr.write(warning)

A server of another major version is refused before anything is signed or
sent to it (:class:`~strongroom.errors.ServerError`, naming both versions and
the remedy); a minor skew — one side has routes the other lacks — is a
warning, since every route both know behaves the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from strongroom.errors import ServerError

__all__ = ["API_MINOR", "API_VERSION", "check_server_version"]

#: The API's major version (the /v1 prefix); raised when a route changes incompatibly.
API_VERSION = 1
#: The API's minor version; raised when routes are added (1: GET /v1/audit/entries).
API_MINOR = 1


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def check_server_version(reported: Mapping[str, Any], url: str) -> str | None:
    """Refuse a server whose API major version differs; a warning line on a minor skew."""
    from strongroom import __version__

    release = str(reported.get("version", "?"))[:64]
    major, minor = _int(reported.get("api")), _int(reported.get("api_minor")) or 0
    if major != API_VERSION:
        said = f"API version {major}" if major is not None else "no API version"
        raise ServerError(
            f"the server reports {said} (strongroom {release}); this client "
            f"(strongroom {__version__}) speaks API version {API_VERSION}",
            obj=url,
            remedy=f"install the strongroom release the server runs ({release}) on this machine "
            f"(from the lab's wheelhouse: `strongroom bundle`), or set STRONGROOM_URL to a "
            f"server of API version {API_VERSION}")
    if minor == API_MINOR:
        return None
    lacks = ("the server lacks routes this client may call (they are refused by it)"
             if minor < API_MINOR else "the server offers routes this client does not know")
    return (f"warning: the server at {url} runs strongroom {release} (API {major}.{minor}), "
            f"this client strongroom {__version__} (API {API_VERSION}.{API_MINOR}): {lacks}; "
            f"install the same release on both to match\n")
