"""What the registry raises: every ZooKeeper failure, as agrajag's own errors."""

from __future__ import annotations

from agrajag.errors import AgrajagError


class RegistryError(AgrajagError):
    """ZooKeeper did not do what was asked."""


class Unavailable(RegistryError):
    """ZooKeeper could not be reached within the call's bound (or the session is not connected)."""


class AccessDenied(RegistryError):
    """ZooKeeper refused the credentials or the ACL of a znode forbids the request."""


class NodeNameTaken(RegistryError):
    """Another live session owns `nodes/<node>`: a second daemon with the same node name."""


class AgentNameTaken(RegistryError):
    """Another live session owns `watchers/<agent>`: a second watcher with the same agent
    name, or this watcher's previous run whose session has not expired yet."""
