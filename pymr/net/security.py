"""The cluster key, CURVE on every socket, and the one function allowed to bind.

CURVE with no ZAP handler running accepts ANY client key, so ``secure_bind``
refuses to bind unless this process's authenticator is alive, and the
authenticator admits only clients that hold the cluster key.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import zmq

from ..errors import ConfigError, SecurityError, TransportError

log = logging.getLogger(__name__)

ZAP_DOMAIN = "pymr"
KEY_FILE_NAME = "cluster.key"
TOKEN_PREFIX = "pymr1:"


@dataclass(frozen=True, slots=True)
class ClusterKey:
    """One Curve25519 key pair shared by every member (z85 bytes)."""

    public: bytes
    secret: bytes

    @classmethod
    def generate(cls) -> ClusterKey:
        public, secret = zmq.curve_keypair()
        return cls(public, secret)

    @property
    def fingerprint(self) -> str:
        """Short public fingerprint for mDNS records; never reveals the secret."""
        return hashlib.sha256(self.public).hexdigest()[:16]

    def export_token(self) -> str:
        """A copy-pasteable join token (carries the secret: treat it like a password)."""
        raw = self.public + b":" + self.secret
        return TOKEN_PREFIX + base64.urlsafe_b64encode(raw).decode("ascii")

    @classmethod
    def from_token(cls, token: str) -> ClusterKey:
        token = token.strip()
        if not token.startswith(TOKEN_PREFIX):
            raise ConfigError("not a pymr join token: it should start with 'pymr1:'; "
                              "copy it whole from 'pymr key export'")
        try:
            raw = base64.urlsafe_b64decode(token[len(TOKEN_PREFIX):].encode("ascii"))
            # z85 keys may contain ':': the public key is exactly 40 characters.
            if len(raw) != 81 or raw[40:41] != b":":
                raise ValueError("wrong token length")
            key = cls(raw[:40], raw[41:])
            key.check()
        except (ValueError, zmq.ZMQError) as exc:
            raise ConfigError("the join token is damaged; copy it again from "
                              "'pymr key export'") from exc
        return key

    def check(self) -> None:
        """The public key must belong to the secret key."""
        if len(self.public) != 40 or len(self.secret) != 40:
            raise ValueError("z85 keys are 40 characters")
        if zmq.curve_public(self.secret) != self.public:
            raise ValueError("public key does not match secret key")


def save_key(key: ClusterKey, path: Path) -> None:
    """Write the key file with mode 0600, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(b"public=" + key.public + b"\nsecret=" + key.secret + b"\n")
    os.replace(tmp, path)


def load_key(path: Path) -> ClusterKey:
    """Read a key file; refuse one that others can read."""
    try:
        st = path.stat()
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ConfigError(f"no cluster key at {path}: run 'pymr keygen' or "
                          "'pymr key import TOKEN'") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read cluster key {path}: {exc.strerror}") from exc
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"cluster key {path} is readable by others: "
                          f"run 'chmod 600 {path}'")
    fields: dict[bytes, bytes] = {}
    for line in data.splitlines():
        if b"=" in line:
            k, v = line.split(b"=", 1)
            fields[k.strip()] = v.strip()
    try:
        key = ClusterKey(fields[b"public"], fields[b"secret"])
        key.check()
    except (KeyError, ValueError, zmq.ZMQError) as exc:
        raise ConfigError(f"cluster key {path} is damaged: import it again with "
                          "'pymr key import TOKEN'") from exc
    return key


class _MemberCheck:
    """ZAP credentials provider: a client is a member iff it presents the cluster key."""

    def __init__(self, public: bytes) -> None:
        self.public = public
        self.refused = 0

    self_test_key: bytes = b""

    def callback(self, domain: str, key: bytes) -> bool:
        if key == self.self_test_key:
            return False  # our own start-up check: expected, not worth a warning
        ok = key == self.public
        if not ok:
            self.refused += 1
            if self.refused <= 3:
                log.warning("refused a peer with a key that is not this cluster's")
        return ok


class Authenticator:
    """This process's ZAP handler; must be alive before anything binds."""

    def __init__(self, ctx: zmq.Context, key: ClusterKey) -> None:
        from zmq.auth.thread import ThreadAuthenticator  # imports asyncio: only binders pay

        self.key = key
        self._auth = ThreadAuthenticator(ctx, log=logging.getLogger(__name__ + ".zap"))
        self._check = _MemberCheck(key.public)

    def start(self) -> Authenticator:
        self._auth.start()
        self._auth.configure_curve_callback(domain=ZAP_DOMAIN,
                                            credentials_provider=self._check)
        return self

    @property
    def alive(self) -> bool:
        return self._auth.is_alive()

    def expect_stranger(self, public: bytes) -> None:
        """Refuse this key without a warning: it is our own start-up check."""
        self._check.self_test_key = public

    def stop(self) -> None:
        if self._auth.is_alive():
            self._auth.stop()


def secure_bind(sock: zmq.Socket, endpoint: str, auth: Authenticator | None) -> str:
    """Bind as a CURVE server; refuses unless the authenticator is alive.

    Returns the endpoint actually bound (``tcp://host:*`` picks a free port).
    """
    if auth is None or not auth.alive:
        raise SecurityError("refusing to bind without a running authenticator")
    sock.curve_server = True
    sock.curve_publickey = auth.key.public
    sock.curve_secretkey = auth.key.secret
    sock.zap_domain = ZAP_DOMAIN.encode()
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as exc:
        raise TransportError(f"cannot listen on {endpoint}: {exc.strerror}") from exc
    return sock.getsockopt_string(zmq.LAST_ENDPOINT)


def secure_connect(sock: zmq.Socket, endpoint: str, key: ClusterKey) -> None:
    """Connect as a CURVE client presenting the cluster key."""
    sock.curve_serverkey = key.public
    sock.curve_publickey = key.public
    sock.curve_secretkey = key.secret
    try:
        sock.connect(endpoint)
    except zmq.ZMQError as exc:
        raise TransportError(f"cannot connect to {endpoint}: {exc.strerror}") from exc


def prove_rejects_strangers(ctx: zmq.Context, endpoint: str, auth: Authenticator,
                            timeout_s: float = 5.0) -> None:
    """Connect to our own ``endpoint`` with a random key: the handshake must fail.

    Guards against the silent failure mode of CURVE (no ZAP handler means any key
    is accepted). Raises ``SecurityError`` if a stranger gets in.
    """
    from zmq.utils.monitor import recv_monitor_message

    stranger = ClusterKey.generate()
    server_key = auth.key.public
    auth.expect_stranger(stranger.public)
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED
                                      | zmq.EVENT_HANDSHAKE_FAILED_AUTH
                                      | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                                      | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
    try:
        sock.curve_serverkey = server_key
        sock.curve_publickey = stranger.public
        sock.curve_secretkey = stranger.secret
        sock.connect(endpoint)
        if not monitor.poll(int(timeout_s * 1000)):
            raise SecurityError("could not check that strangers are refused (no handshake)")
        event = recv_monitor_message(monitor)["event"]
        if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            raise SecurityError("a client with a foreign key was accepted: refusing to serve")
    finally:
        sock.disable_monitor()
        monitor.close(linger=0)
        sock.close(linger=0)

