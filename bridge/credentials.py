"""Kafka credentials read from their files when a connection is made, so rotation needs no restart.

A renewed client certificate (cert-manager, a Strimzi KafkaUser) or a rotated SCRAM password
arrives as new file contents, usually through a Kubernetes Secret mounted as a volume. So the
TLS context and the SASL password are not built once at start: each new connection of every
client asks `Credentials.current()`, which stats the files (cheap) and reads and loads them
again only when a stat changed. New files that do not load (a certificate written before its
key, an empty password file) are reported once, and the previous material stays in use until
they do.

The same object remembers whether Kafka has accepted this process's material at all, and since
when it rejects the current material: the rotation rule in `service` rests on both (README,
"Rotating credentials").
"""

from __future__ import annotations

import hashlib
import logging
import os
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bridge.errors import ConfigError

log = logging.getLogger(__name__)
#: What a stat of one file shows of a change; None: the file cannot be read now.
_Stat = tuple[int, int, int, int, int] | None


@dataclass(frozen=True)
class Sources:
    """Where one client's TLS and SASL material comes from: files, or values given inline."""

    tls: bool
    sasl: bool
    cafile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    key_password: str | None = field(default=None, repr=False)
    key_password_file: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    sasl_password_file: str | None = None

    def files(self) -> tuple[str, ...]:
        """Every file the material is read from, each once."""
        named = [self.sasl_password_file] if self.sasl else []
        if self.tls:
            named += [self.cafile, self.certfile, self.keyfile, self.key_password_file]
        return tuple(dict.fromkeys(path for path in named if path))


@dataclass(frozen=True)
class Material:
    """What a connection needs: the TLS context (None without TLS) and the SASL password."""

    ssl_context: ssl.SSLContext | None
    sasl_password: str | None
    #: Of the files' contents: equal digests, equal material.
    digest: str


class Credentials:
    """The material of one set of files, loaded again whenever the files change."""

    def __init__(self, sources: Sources, clock: Callable[[], float] = time.monotonic) -> None:
        self.sources = sources
        self.clock = clock
        self._material: Material | None = None
        self._stats: tuple[_Stat, ...] = ()
        self._unloadable = ""
        self._rejected_since: float | None = None
        #: When Kafka began rejecting this process's material (whatever the files did since).
        self._refused_since: float | None = None
        #: Whether Kafka accepted any of this process's material (a connection succeeded).
        self.ever_accepted = False

    def current(self) -> Material:
        """The material the files hold now (the previous one while new files do not load).

        Raises `ConfigError` only when no material ever loaded: at start, a bad file is the
        operator's to fix.
        """
        stats = tuple(_stat(path) for path in self.sources.files())
        if self._material is not None and stats == self._stats:
            return self._material
        try:
            contents = {path: Path(path).read_bytes() for path in self.sources.files()}
        except OSError as exc:
            problem = ConfigError(
                f"cannot read the Kafka credential file {exc.filename}: {exc.strerror}"
            )
            return self._unusable(problem.problem, problem)
        digest = hashlib.sha256()
        for path, content in contents.items():
            digest.update(f"{path}\0{len(content)}\0".encode() + content)
        found = digest.hexdigest()
        if self._material is not None and found == self._material.digest:
            self._stats = stats  # touched, not changed
            return self._material
        try:
            material = self._load(contents, found)
        except ConfigError as exc:
            return self._unusable(found, exc)
        if self._material is not None:
            log.warning(
                "the Kafka credential files changed (%s): new connections use the new ones",
                ", ".join(self._changed(stats)),
            )
        self._material, self._stats, self._unloadable = material, stats, ""
        # New material has not been rejected yet: it gets a fresh chance.
        self._rejected_since = None
        return material

    def accepted(self) -> None:
        """Kafka accepted a new connection made with the current material."""
        if self._refused_since is not None:
            log.warning(
                "Kafka accepts this replica's credentials again, after %.0f s of refusals",
                self.clock() - self._refused_since,
            )
        self.ever_accepted = True
        self._rejected_since = self._refused_since = None

    def rejected(self) -> None:
        """Kafka rejected the current material (a login, a certificate)."""
        now = self.clock()
        if self._rejected_since is None:
            self._rejected_since = now
        if self._refused_since is None:
            self._refused_since = now

    @property
    def rejected_since(self) -> float | None:
        """When (on `clock`) Kafka first rejected the current material; None if it has not."""
        return self._rejected_since

    def rejected_for(self) -> float | None:
        """Seconds since Kafka first rejected the current material; None if it has not."""
        if self._rejected_since is None:
            return None
        return self.clock() - self._rejected_since

    def _unusable(self, seen: str, problem: ConfigError) -> Material:
        """The previous material, after one line per unusable state of the files."""
        if self._material is None:
            raise problem
        if seen != self._unloadable:
            self._unloadable = seen
            log.warning(
                "%s; new Kafka connections keep the previous credentials until the files load",
                problem.problem,
            )
        return self._material

    def _changed(self, stats: tuple[_Stat, ...]) -> list[str]:
        files = self.sources.files()
        if len(self._stats) != len(files):
            return list(files)
        return [
            path for path, old, new in zip(files, self._stats, stats, strict=True) if old != new
        ]

    def _load(self, contents: dict[str, bytes], digest: str) -> Material:
        sources = self.sources
        password = None
        if sources.sasl:
            password = _secret(
                sources.sasl_password, sources.sasl_password_file, contents, "SASL password"
            )
        context = None
        if sources.tls:
            key_password = _secret(
                sources.key_password, sources.key_password_file, contents, "TLS key password"
            )
            try:
                context = ssl.create_default_context(cafile=sources.cafile)
                if sources.certfile:
                    given = key_password or ""
                    context.load_cert_chain(
                        sources.certfile,
                        sources.keyfile,
                        # Never None: with None, OpenSSL prompts for a pass phrase on the terminal.
                        password=lambda: given,
                    )
            except (ssl.SSLError, OSError) as exc:
                raise ConfigError(
                    f"cannot load the Kafka TLS files: {exc}",
                    "check --ssl-cafile, --ssl-certfile, --ssl-keyfile and the key's password",
                ) from None
        return Material(context, password, digest)


def _stat(path: str) -> _Stat:
    try:
        # Follows symbolic links: a Kubernetes Secret volume swaps the target of `..data`.
        found = os.stat(path)
    except OSError:
        return None
    return (found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns, found.st_ctime_ns)


#: Told every secret read from a file, before it is used: the log's redaction (bridge/cli.py)
#: learns a rotated password as soon as the bridge does.
_secret_listener: Callable[[str], None] | None = None


def on_secret(listener: Callable[[str], None] | None) -> None:
    """Have `listener` told every secret read from a credential file from now on."""
    global _secret_listener
    _secret_listener = listener


def _secret(
    value: str | None, path: str | None, contents: dict[str, bytes], what: str
) -> str | None:
    if path is None:
        return value
    secret = contents[path].decode("utf-8", "replace").strip()
    if not secret:
        raise ConfigError(f"the {what} file {path} is empty", "put the secret in it")
    if _secret_listener is not None:
        _secret_listener(secret)
    return secret


#: One `Credentials` per set of sources: every client of the process shares what it learns.
_KNOWN: dict[Sources, Credentials] = {}


def credentials_for(sources: Sources) -> Credentials:
    """The process's `Credentials` for `sources` (made on first use)."""
    found = _KNOWN.get(sources)
    if found is None:
        found = _KNOWN[sources] = Credentials(sources)
    return found
