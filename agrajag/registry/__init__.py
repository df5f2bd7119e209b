"""The registry in ZooKeeper: `client` talks to it (the only module that does)."""
