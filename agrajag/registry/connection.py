"""What it takes to open a session: kazoo's logger without our secrets, the ACL in kazoo's
terms, and a TLS handshake with every server before kazoo starts (a certificate we cannot
trust is an error now, not an outage to wait out)."""

from __future__ import annotations

import logging
import socket
import ssl
from typing import Any

from kazoo.client import KazooClient
from kazoo.handlers.utils import create_tcp_connection
from kazoo.retry import KazooRetry
from kazoo.security import ACL, Id

from agrajag.errors import ConfigError
from agrajag.registry.acl import Grant
from agrajag.registry.errors import AccessDenied
from agrajag.zookeeper_settings import TlsSettings, ZooKeeperSettings


def new_client(zk: ZooKeeperSettings, creates: list[ACL]) -> KazooClient:
    """A kazoo client for `zk`, not started; every znode it creates gets `creates` ([]:
    ZooKeeper's default, open to anyone). A TLS server we cannot trust is refused here."""
    secrets = [zk.auth.password] if zk.auth else []
    tls = zk.tls
    try:
        client = KazooClient(
            hosts=zk.hosts,
            timeout=zk.session_timeout_s,
            connection_retry=KazooRetry(max_tries=-1, delay=0.1, max_delay=1.0),
            auth_data=[("digest", f"{zk.auth.user}:{zk.auth.password}")] if zk.auth else None,
            default_acl=creates or None,  # None: kazoo's default, open to anyone
            use_ssl=tls is not None,
            ca=tls and tls.ca,
            certfile=tls and tls.cert,
            keyfile=tls and tls.key,
            verify_certs=True,
            check_hostname=tls is not None,
            logger=RedactingLogger(logging.getLogger("kazoo.client"), secrets),
        )
    except ValueError as exc:
        raise ConfigError(f"zookeeper.hosts {zk.hosts!r}: {exc}") from None
    if tls:
        check_tls(client.hosts, tls, timeout=min(zk.call_timeout_s, 5.0))
    return client


class RedactingLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """kazoo's logger with our secrets taken out: at DEBUG kazoo logs every request it sends,
    the authentication request with its password included.

    >>> import io
    >>> out = io.StringIO(); base = logging.getLogger("redact-demo"); base.propagate = False
    >>> base.addHandler(logging.StreamHandler(out)); base.setLevel(logging.DEBUG)
    >>> RedactingLogger(base, ["s3cret"]).debug("Sending %r", ("digest", "u:s3cret"))
    >>> out.getvalue()
    "Sending ('digest', 'u:***')\\n"
    """

    def __init__(self, logger: logging.Logger, secrets: list[str]) -> None:
        super().__init__(logger, {})
        self.secrets = secrets

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if not self.isEnabledFor(level):
            return
        try:
            text = str(msg) % args if args else str(msg)
        except (TypeError, ValueError):  # a malformed call must not break kazoo's thread
            text = f"{msg} {args!r}"
        for secret in self.secrets:
            text = text.replace(secret, "***")
        kwargs.setdefault("stacklevel", 2)
        self.logger.log(level, "%s", text, **kwargs)


def kazoo_acl(grants: frozenset[Grant]) -> list[ACL]:
    return [ACL(g.perms, Id(g.scheme, g.id)) for g in sorted(grants)]


def check_tls(hosts: list[tuple[str, int]], tls: TlsSettings, timeout: float) -> None:
    """Shake hands with every address of every server as kazoo will; a server we cannot trust
    (or that does not speak TLS) is an error now. One that does not answer is left to kazoo's
    retries: an outage may pass, a wrong certificate will not."""
    for host, port in hosts:
        try:
            addresses = {
                info[4][0] for info in socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
            }
        except OSError:
            continue
        for address in sorted(addresses):
            try:
                conn = create_tcp_connection(
                    socket,
                    (address, port),
                    hostname=host,
                    timeout=timeout,
                    use_ssl=True,
                    ca=tls.ca,
                    certfile=tls.cert,
                    keyfile=tls.key,
                    verify_certs=True,
                    check_hostname=True,
                )
            except ssl.SSLError as exc:
                why = _handshake_refusal(exc, tls)
                raise AccessDenied(f"TLS to ZooKeeper {host}:{port} refused: {why}") from None
            except OSError:
                continue
            conn.close()


def _handshake_refusal(exc: ssl.SSLError, tls: TlsSettings) -> str:
    """Why a TLS handshake failed, in the operator's terms."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message} (zookeeper.tls.ca {tls.ca})"
    if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError):
        return "the server ended the handshake (a plaintext port, or it refused our certificate)"
    return str(exc.reason or exc)
