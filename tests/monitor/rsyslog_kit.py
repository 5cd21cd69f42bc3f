"""A private rsyslog (Debian's ``rsyslogd``) on a free loopback TCP port, writing to a file.

    with rsyslog(tmp_path) as syslog:                # plain TCP, octet-counted framing
        ... send to 127.0.0.1:syslog.port ...
        lines = syslog.wait_lines(3)                 # "<pri> <msgid> <structured-data> <msg>"
    with rsyslog(tmp_path, tls=TlsFiles(...)) as s:  # TLS through rsyslog's ossl driver

It runs in the foreground (``-n``) with its own config, pid file and work
directory under ``tmp_path`` and is stopped (SIGTERM, then SIGKILL) afterwards;
it never touches the system's syslog. Tests skip when rsyslogd (or, for TLS,
its ``lmnsd_ossl`` module) is missing, unless STRONGROOM_TEST_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import glob
import ipaddress
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
#: The output template: what the tests read back from the file.
TEMPLATE = "%pri% %msgid% %structured-data% %msg%\\n"


def need_rsyslog(*, tls: bool = False) -> None:
    """Skip (or fail, when services are required) unless rsyslogd — and its TLS driver — exist."""
    missing = None
    if not os.access(RSYSLOGD, os.X_OK):
        missing = "rsyslogd (Debian package rsyslog)"
    elif tls and not glob.glob("/usr/lib/*/rsyslog/lmnsd_ossl.so"):
        missing = "rsyslog's TLS driver (Debian package rsyslog-openssl)"
    if missing is None:
        return
    if os.environ.get("STRONGROOM_TEST_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{missing} is not installed (scripts/system-deps.sh installs it)")
    pytest.skip(f"{missing} is not installed")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class TlsFiles:
    """A CA and a server certificate for 127.0.0.1 / localhost, as PEM files."""

    ca: Path
    cert: Path
    key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_tls(directory: Path, *, name: str = "syslog-ca") -> TlsFiles:
    """A fresh CA (``name``) and a server certificate it signed, for localhost and 127.0.0.1."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name("localhost")).issuer_name(_name(name))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .sign(ca_key, hashes.SHA256()))
    files = TlsFiles(directory / f"{name}.pem", directory / "server.pem", directory / "server.key")
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                            serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    return files


class Rsyslog:
    """A running private rsyslogd: its port and the file it writes."""

    def __init__(self, root: Path, port: int, tls: TlsFiles | None) -> None:
        self.root = root
        self.port = port
        self.tls = tls
        self.out = root / "messages.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def _config(self) -> str:
        work = self.root / "work"
        work.mkdir(parents=True, exist_ok=True)
        lines = [f'global(workDirectory="{work}"']
        if self.tls:
            lines[0] += (f' defaultNetstreamDriverCAFile="{self.tls.ca}"'
                         f' defaultNetstreamDriverCertFile="{self.tls.cert}"'
                         f' defaultNetstreamDriverKeyFile="{self.tls.key}"')
        lines[0] += ")"
        if self.tls:
            lines.append('module(load="imtcp" streamDriver.name="ossl" streamDriver.mode="1" '
                         'streamDriver.authMode="anon")')
        else:
            lines.append('module(load="imtcp")')
        lines += [
            f'input(type="imtcp" address="127.0.0.1" port="{self.port}")',
            f'template(name="strongroom_test" type="string" string="{TEMPLATE}")',
            f'action(type="omfile" file="{self.out}" template="strongroom_test")',
        ]
        return "\n".join(lines) + "\n"

    def start(self) -> Rsyslog:
        conf = self.root / "rsyslog.conf"
        conf.write_text(self._config())
        log = (self.root / "rsyslogd.stderr").open("wb")
        self.proc = subprocess.Popen(  # its own pid file and config: never the system's
            [RSYSLOGD, "-n", "-f", str(conf), "-i", str(self.root / "rsyslogd.pid")],
            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("rsyslogd exited: "
                                   + (self.root / "rsyslogd.stderr").read_text()[-2000:])
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.port), timeout=0.5):
                return self
            time.sleep(0.05)
        raise RuntimeError(f"rsyslogd did not listen on 127.0.0.1:{self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def lines(self) -> list[str]:
        """What rsyslog wrote so far, one message a line."""
        return self.out.read_text("utf-8").splitlines() if self.out.exists() else []

    def wait_lines(self, n: int, timeout_s: float = 15.0) -> list[str]:
        """At least ``n`` lines (waits for rsyslog to write them)."""
        deadline = time.monotonic() + timeout_s
        while len(found := self.lines()) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        return found


@contextlib.contextmanager
def rsyslog(tmp_path: Path, *, tls: TlsFiles | None = None,
            port: int | None = None) -> Iterator[Rsyslog]:
    """A private rsyslogd listening on 127.0.0.1 (TLS when ``tls``), stopped afterwards."""
    need_rsyslog(tls=tls is not None)
    root = tmp_path / f"rsyslog-{port or 'auto'}-{time.monotonic_ns()}"
    root.mkdir(parents=True)
    server = Rsyslog(root, port or free_port(), tls).start()
    try:
        yield server
    finally:
        server.stop()
