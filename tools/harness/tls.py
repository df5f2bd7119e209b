"""A throw-away PKI for the TLS tests, made with openssl: a CA, a ZooKeeper server
certificate for 127.0.0.1, a client certificate, and a second CA that signed nothing here."""

from __future__ import annotations

import os
import pwd
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tools.harness.procs import SERVICE_USER

_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=30)


@dataclass(frozen=True)
class Pki:
    dir: Path

    @property
    def ca(self) -> Path:
        return self.dir / "ca.pem"

    @property
    def other_ca(self) -> Path:
        return self.dir / "other-ca.pem"

    def cert(self, name: str) -> Path:
        return self.dir / f"{name}.pem"

    def key(self, name: str) -> Path:
        return self.dir / f"{name}.key"

    def keystore(self, name: str) -> Path:
        """Key and certificate in one PEM file, as ZooKeeper's `ssl.keyStore.type=PEM` reads."""
        return self.dir / f"{name}-keystore.pem"

    def client(self, name: str = "client", ca: Path | None = None) -> dict[str, str]:
        """The `zookeeper.tls` section of a client trusting `ca` (default: the right one)."""
        return {"ca": str(ca or self.ca), "cert": str(self.cert(name)), "key": str(self.key(name))}


def make_pki(directory: Path, *, server_names: str = "IP:127.0.0.1") -> Pki:
    """CA, `server` (subjectAltName `server_names`) and `client` certificates in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    pki = Pki(directory)
    for ca in ("ca", "other-ca"):
        _openssl(
            "req", "-x509", *_EC, "-days", "2", "-subj", f"/CN=agrajag-test-{ca}",
            "-keyout", str(directory / f"{ca}.key"), "-out", str(directory / f"{ca}.pem"),
        )  # fmt: skip
    for name, alt in (("server", server_names), ("client", "IP:127.0.0.1")):
        csr, ext = directory / f"{name}.csr", directory / f"{name}.ext"
        ext.write_text(f"subjectAltName={alt}\nbasicConstraints=CA:FALSE\n")
        _openssl(
            "req", *_EC, "-subj", f"/CN={name}", "-keyout", str(pki.key(name)), "-out", str(csr)
        )
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(pki.ca),
            "-CAkey", str(directory / "ca.key"), "-CAcreateserial", "-days", "2",
            "-extfile", str(ext), "-out", str(pki.cert(name)),
        )  # fmt: skip
        pki.key(name).chmod(0o600)
        pki.keystore(name).write_text(pki.key(name).read_text() + pki.cert(name).read_text())
    if SERVICE_USER:  # the daemons read their client key as the service user
        pw = pwd.getpwnam(SERVICE_USER)
        for path in directory.iterdir():
            os.chown(path, pw.pw_uid, pw.pw_gid)
    return pki
