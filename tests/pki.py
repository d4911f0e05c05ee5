"""Throwaway certificates for the tests, made by the `openssl` CLI as PEM files.

A `Ca` is a self-signed certificate authority in a directory; `Ca.issue` signs a leaf
certificate for a name, a usage (server or client) and optional subject alternative names,
valid for two days from now or for a given period (one in the past makes an expired
certificate). All the keys are EC P-256, unencrypted; `Leaf.encrypted_key` writes a
password-protected copy, `Leaf.keystore` the key and certificate in one file, as Kafka's PEM
keystore takes them. `kafka_pki` makes the set that the Kafka TLS tests share.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tests.conftest import require

#: The password of the encrypted client key of `kafka_pki`.
KEY_PASSWORD = "correct horse battery staple"
#: The subject alternative names of a server certificate: the loopback host, by name and by IP.
LOOPBACK = ("DNS:localhost", "IP:127.0.0.1")
#: One day in January 2020 (notBefore, notAfter): the period of an expired certificate.
JANUARY_2020 = ("20200101000000Z", "20200102000000Z")

#: The extended key usage of a leaf certificate.
Usage = Literal["serverAuth", "clientAuth"]

_NEW_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
_DAYS = "2"


def _openssl(directory: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True, timeout=30)


@dataclass(frozen=True)
class Leaf:
    """A certificate and its unencrypted key."""

    cert: Path
    key: Path

    def encrypted_key(self, password: str) -> Path:
        """A copy of the key encrypted (AES-256) with `password`: NAME-encrypted.key."""
        encrypted = self.key.with_name(f"{self.key.stem}-encrypted.key")
        _openssl(
            self.key.parent,
            "pkey", "-in", self.key.name, "-aes256", "-passout", f"pass:{password}",
            "-out", encrypted.name,
        )  # fmt: skip
        return encrypted

    def keystore(self) -> Path:
        """The key, then the certificate, in one PEM file (Kafka's PEM keystore):
        NAME-keystore.pem."""
        keystore = self.key.with_name(f"{self.key.stem}-keystore.pem")
        keystore.write_text(self.key.read_text() + self.cert.read_text())
        return keystore


@dataclass(frozen=True)
class Ca:
    """A self-signed CA: NAME.crt and NAME.key in `directory`; it signs leaves there."""

    directory: Path
    name: str

    @property
    def cert(self) -> Path:
        return self.directory / f"{self.name}.crt"

    @property
    def key(self) -> Path:
        return self.directory / f"{self.name}.key"

    @classmethod
    def new(cls, directory: Path, name: str = "ca") -> Ca:
        """A new CA, "CN=pypi-bridge test NAME", valid for two days; `directory` is made if
        missing. Fails in CI, skips elsewhere, without the openssl command."""
        require(shutil.which("openssl") is not None, "the openssl command")
        directory.mkdir(parents=True, exist_ok=True)
        ca = cls(directory, name)
        _openssl(
            directory,
            "req", "-x509", *_NEW_KEY, "-keyout", ca.key.name, "-out", ca.cert.name,
            "-days", _DAYS, "-subj", f"/CN=pypi-bridge test {name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            "-addext", "subjectKeyIdentifier=hash",
        )  # fmt: skip
        return ca

    def issue(
        self,
        name: str,
        common_name: str,
        usage: Usage,
        *,
        alt_names: Sequence[str] = (),
        period: tuple[str, str] | None = None,
    ) -> Leaf:
        """A leaf certificate "CN=COMMON_NAME" for `usage` signed by this CA: NAME.crt and
        NAME.key in the CA's directory.

        `alt_names` are subjectAltName entries ("DNS:localhost", "IP:127.0.0.1"). It is valid
        for two days from now, or for `period`, (notBefore, notAfter) as YYYYMMDDHHMMSSZ.
        """
        extensions = [
            "basicConstraints=CA:FALSE",
            "keyUsage=critical,digitalSignature",
            "subjectKeyIdentifier=hash",
            "authorityKeyIdentifier=keyid",
        ]
        if alt_names:
            extensions.append("subjectAltName=" + ",".join(alt_names))
        extensions.append(f"extendedKeyUsage={usage}")
        leaf = Leaf(self.directory / f"{name}.crt", self.directory / f"{name}.key")
        (self.directory / f"{name}.ext").write_text("\n".join(extensions) + "\n", encoding="utf-8")
        _openssl(
            self.directory,
            "req", "-new", *_NEW_KEY, "-keyout", leaf.key.name, "-out", f"{name}.csr",
            "-subj", f"/CN={common_name}",
        )  # fmt: skip
        signing = ["-in", f"{name}.csr", "-out", leaf.cert.name, "-extfile", f"{name}.ext"]
        if period is None:
            _openssl(
                self.directory,
                "x509", "-req", "-CA", self.cert.name, "-CAkey", self.key.name,
                "-CAcreateserial", "-days", _DAYS, *signing,
            )  # fmt: skip
        else:
            # `openssl x509` takes no past dates; `openssl ca` takes -startdate and -enddate.
            _openssl(
                self.directory,
                "ca", "-batch", "-config", self._ca_config().name, "-cert", self.cert.name,
                "-keyfile", self.key.name, "-rand_serial", "-notext",
                "-startdate", period[0], "-enddate", period[1], *signing,
            )  # fmt: skip
        return leaf

    def server(self, common_name: str = "localhost", name: str = "server") -> Leaf:
        """A server certificate for the loopback host (`LOOPBACK`)."""
        return self.issue(name, common_name, "serverAuth", alt_names=LOOPBACK)

    def _ca_config(self) -> Path:
        """The configuration `openssl ca` needs (and its empty database), written once."""
        config = self.directory / f"{self.name}.cnf"
        if not config.exists():
            (self.directory / f"{self.name}-index.txt").write_text("", encoding="utf-8")
            config.write_text(
                "[ca]\ndefault_ca = test\n"
                f"[test]\ndatabase = {self.name}-index.txt\nserial = {self.name}.serial\n"
                "new_certs_dir = .\ndefault_md = sha256\npolicy = any\nunique_subject = no\n"
                "[any]\ncommonName = supplied\n",
                encoding="utf-8",
            )
        return config


@dataclass(frozen=True)
class KafkaPki:
    """A CA (ca.crt), the broker's certificate it signed (server), a client certificate it
    signed (client), that client's key encrypted with `KEY_PASSWORD` and the password in a
    file, and an unrelated CA (other-ca.crt)."""

    ca: Path
    other_ca: Path
    server: Leaf
    client: Leaf
    client_key_encrypted: Path
    key_password_file: Path

    @property
    def authority(self) -> Ca:
        """The CA of `ca`, to issue more certificates."""
        return Ca(self.ca.parent, self.ca.stem)


def kafka_pki(directory: Path, client_common_name: str) -> KafkaPki:
    """The certificates of the Kafka TLS tests, in `directory`."""
    ca = Ca.new(directory)
    other_ca = Ca.new(directory, "other-ca")
    server = ca.server()
    client = ca.issue("client", client_common_name, "clientAuth")
    encrypted = client.encrypted_key(KEY_PASSWORD)
    password_file = directory / "key-password"
    # Written as a Kubernetes Secret file usually is: with a trailing newline.
    password_file.write_text(KEY_PASSWORD + "\n", encoding="utf-8")
    return KafkaPki(ca.cert, other_ca.cert, server, client, encrypted, password_file)
