"""The daemon: on every DB node, read repmgr, check every node, decide, publish.

Kept light: `agrajag notify` imports `agrajag.daemon.wakeup` without kazoo or psycopg.
"""
