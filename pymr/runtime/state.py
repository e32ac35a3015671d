"""A machine's pymr state directory: the cluster key, the persistent node id, the data dir.

Everything lives under one directory (``--home``, ``$PYMR_HOME``, ``~/.pymr``) so that
tests and lab hosts each get their own. The directory is private (mode 0700); the key
file is mode 0600 and a node refuses one that others can read (``security.load_key``).
"""

from __future__ import annotations

import logging
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..net.security import KEY_FILE_NAME, ClusterKey, load_key, save_key

log = logging.getLogger(__name__)

NODE_ID_FILE = "node_id"
DATA_DIR = "data"
#: Node ids are short lower-case hex: 8 characters (32 bits) keep instance names short
#: while making a collision between two machines of one LAN very unlikely.
NODE_ID_HEX = 8
_NODE_ID_RE = re.compile(r"^[0-9a-f]{4,32}$")


@dataclass(frozen=True, slots=True)
class StateDir:
    """Paths of one machine's (or one lab host's) pymr state."""

    home: Path
    key_override: Path | None = None

    @property
    def key_file(self) -> Path:
        return self.key_override if self.key_override is not None else self.home / KEY_FILE_NAME

    @property
    def node_id_file(self) -> Path:
        return self.home / NODE_ID_FILE

    @property
    def data_dir(self) -> Path:
        return self.home / DATA_DIR

    def ensure(self) -> None:
        """Create the private state directory and the data dir."""
        try:
            self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.data_dir.mkdir(exist_ok=True, mode=0o700)
        except OSError as exc:
            raise ConfigError(f"cannot create the pymr state directory {self.home}: "
                              f"{exc.strerror}") from exc

    # ------------------------------------------------------------ key
    def has_key(self) -> bool:
        return self.key_file.exists()

    def load_key(self) -> ClusterKey:
        return load_key(self.key_file)

    def require_key(self, why: str) -> ClusterKey:
        """The cluster key, or a ConfigError that says how to get one (``why``: what needs
        it, e.g. ``"pymr status"``)."""
        if not self.has_key():
            raise ConfigError(f"{why} needs this machine to hold the cluster key "
                              f"({self.key_file} is missing): run 'pymr key export' on a "
                              "member and 'pymr key import TOKEN' here, or 'pymr keygen' to "
                              "start a new cluster")
        return self.load_key()

    def save_key(self, key: ClusterKey, *, replace: bool = False) -> Path:
        """Store the cluster key (mode 0600); refuses to overwrite one unless ``replace``."""
        if self.has_key() and not replace:
            raise ConfigError(f"a cluster key already exists at {self.key_file}; "
                              "pass --force to replace it (this machine leaves its cluster)")
        self.ensure()
        try:
            save_key(key, self.key_file)
        except OSError as exc:
            raise ConfigError(f"cannot write the cluster key {self.key_file}: "
                              f"{exc.strerror}") from exc
        return self.key_file

    # ------------------------------------------------------------ node id
    def node_id(self) -> str:
        """This machine's persistent node id; created on first use."""
        path = self.node_id_file
        try:
            text = path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            text = ""
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the node id {path}: {exc}") from exc
        if text:
            if not _NODE_ID_RE.match(text):
                raise ConfigError(f"the node id in {path} is damaged ({text[:40]!r}); "
                                  "delete the file and a new id is made")
            return text
        self.ensure()
        new = secrets.token_hex(NODE_ID_HEX // 2)
        tmp = path.with_name(path.name + ".tmp")
        try:
            tmp.write_text(new + "\n", encoding="ascii")
            os.replace(tmp, path)
        except OSError as exc:
            raise ConfigError(f"cannot write the node id {path}: {exc.strerror}") from exc
        log.info("new node id %s in %s", new, path)
        return new


def open_state(home: str | os.PathLike[str] | None, key_file: str | None = None) -> StateDir:
    """The state directory for an explicit ``home`` (the CLI resolves the environment)."""
    from ..config import home_from_env

    base = home_from_env(str(home) if home else None)
    override = Path(key_file).expanduser() if key_file else None
    return StateDir(home=base, key_override=override)
