"""The daemon: on every DB node, read repmgr, check every node, decide, publish.

Kept light: repmgr's hook (`agrajag-notify`) imports `agrajag.daemon.notify` and nothing else
of agrajag's.
"""
