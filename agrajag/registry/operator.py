"""Connecting an operator's command (`status`, `registry`) to ZooKeeper.

ZooKeeper is taken from `--zookeeper` or from the `zookeeper:` section of a daemon or watcher
YAML (`--config`), so an operator on a host already set up types only the cluster.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace

from agrajag.config import load_yaml
from agrajag.registry.errors import Unavailable
from agrajag.registry.maintenance import Maintenance
from agrajag.registry.values import Session
from agrajag.zookeeper_settings import Role, ZooKeeperSettings

START_TIMEOUT_S = 5.0


def open_registry(args: argparse.Namespace, role: Role = Role.READER) -> Maintenance:
    """A connected Registry; Unavailable when ZooKeeper does not answer within 5 s. With
    `--config`, the process's own identity, ACLs and TLS settings are used."""
    if args.config:
        section = load_yaml(args.config).section("zookeeper")
        zk = ZooKeeperSettings.from_section(section, role)
    else:
        zk = ZooKeeperSettings(hosts=args.zookeeper)
    zk = replace(zk, root=args.root or zk.root)
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("kazoo").setLevel(logging.WARNING)  # no "Connecting to ..." noise
    registry = Maintenance.connect(zk, role, start_timeout=START_TIMEOUT_S)
    if registry.session is not Session.CONNECTED:
        registry.close()
        raise Unavailable(f"cannot reach ZooKeeper at {zk.hosts}")
    return registry
