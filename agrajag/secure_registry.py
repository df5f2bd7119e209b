"""`agrajag secure-registry` and `agrajag digest-id`: putting the registry under ACLs.

`secure-registry` runs with a daemon's config (its identity must be able to change every
znode's ACL: before the migration anyone can, afterwards the daemons can) and prints each
znode whose ACL it replaced; run again, it changes nothing.
"""

from __future__ import annotations

from agrajag.config import Section, load_yaml
from agrajag.errors import ConfigError
from agrajag.registry.acl import Policy, secure_tree
from agrajag.registry.errors import Unavailable
from agrajag.registry.maintenance import Maintenance
from agrajag.registry.values import Session
from agrajag.zookeeper_settings import DigestAuth, Role, ZooKeeperSettings


def run_secure_registry(config_path: str, *, dry_run: bool = False) -> int:
    section = load_yaml(config_path).section("zookeeper")
    zk = ZooKeeperSettings.from_section(section, Role.DAEMON)
    if zk.acl is None:
        raise ConfigError(f"{section.where('acl')}: missing: it says which ACLs to set")
    registry = Maintenance.connect(zk, Role.DAEMON, start_timeout=max(5.0, zk.call_timeout_s))
    try:
        if registry.session is not Session.CONNECTED:
            raise Unavailable(f"cannot reach ZooKeeper at {zk.hosts}")
        seen, changes = secure_tree(registry, zk.root, Policy(zk.acl), dry_run=dry_run)
    finally:
        registry.close()
    for change in changes:
        print(f"{'would set' if dry_run else 'set'} {change}")
    done = "would change" if dry_run else "changed"
    print(f"{seen} znodes under {zk.root}: {len(changes)} {done}")
    return 0


def print_digest_id(user: str, password_file: str | None, password_env: str | None) -> int:
    """The digest id of `user` with the password from a file or the environment (never an
    argument: it would show in `ps` and the shell's history)."""
    data = {"user": user, "password_file": password_file, "password_env": password_env}
    given = {k: v for k, v in data.items() if v is not None}
    print(DigestAuth.from_section(Section(given, "options")).id)
    return 0
