"""agrajag: the current PostgreSQL primary of a repmgr cluster, published in ZooKeeper."""

from agrajag.errors import AgrajagError

__version__ = "0.1.0.dev0"

__all__ = ["AgrajagError", "__version__"]
