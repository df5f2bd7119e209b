"""The `agrajag` command: daemon | watch | notify | status | secure-registry | digest-id.

Each subcommand imports its module only when it runs, so `agrajag notify` (called by repmgr
on every event, possibly as the `postgres` user) stays quick and light.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from agrajag import __version__
from agrajag.errors import AgrajagError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agrajag",
        description="Publish the current PostgreSQL/repmgr primary in ZooKeeper; follow it.",
    )
    parser.add_argument("--version", action="version", version=f"agrajag {__version__}")
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    daemon = sub.add_parser("daemon", help="on each DB node: decide and publish the master")
    daemon.add_argument("--config", required=True, help="daemon YAML (see conf.d/)")

    watch = sub.add_parser("watch", help="on each app host: apply the master to proxies")
    watch.add_argument("--config", required=True, help="watcher YAML (see conf.d/)")

    notify = sub.add_parser(
        "notify", help="repmgr event_notification_command: wake the local daemon at once"
    )
    notify.add_argument("--socket", required=True, help="the daemon's wake-up socket")
    notify.add_argument("--node-id", default="", help="repmgr's %%n")
    notify.add_argument("--event", default="", help="repmgr's %%e")
    notify.add_argument("--success", default="", help="repmgr's %%s")
    notify.add_argument("--timestamp", default="", help="repmgr's %%t")
    notify.add_argument("--details", default="", help="repmgr's %%d")

    status = sub.add_parser("status", help="what the registry says, at a glance")
    where = status.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", help="a daemon or watcher YAML to take ZooKeeper from")
    where.add_argument("--zookeeper", help="ZooKeeper hosts, e.g. 127.0.0.1:2181")
    status.add_argument("--root", default=None, help="registry root (default /agrajag)")
    status.add_argument("--cluster", action="append", help="only this cluster (repeatable)")
    status.add_argument("--json", action="store_true", help="machine-readable output")

    secure = sub.add_parser(
        "secure-registry",
        help="give every existing znode the ACL of the config's zookeeper.acl (idempotent)",
    )
    secure.add_argument("--config", required=True, help="a daemon YAML (its identity is used)")
    secure.add_argument("--dry-run", action="store_true", help="only print what would change")

    digest = sub.add_parser(
        "digest-id", help="print the ZooKeeper digest id of a user, for zookeeper.acl lists"
    )
    digest.add_argument("--user", required=True)
    source = digest.add_mutually_exclusive_group(required=True)
    source.add_argument("--password-file", help="a file holding the password (mode 0600)")
    source.add_argument("--password-env", help="an environment variable holding it")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    try:
        if args.command == "daemon":
            from agrajag.daemon.loop import run_daemon

            return run_daemon(args.config)
        if args.command == "watch":
            from agrajag.watch.loop import run_watch

            return run_watch(args.config)
        if args.command == "notify":
            from agrajag.daemon.wakeup import notify

            return notify(args)
        if args.command == "secure-registry":
            from agrajag.secure_registry import run_secure_registry

            return run_secure_registry(args.config, dry_run=args.dry_run)
        if args.command == "digest-id":
            from agrajag.secure_registry import print_digest_id

            return print_digest_id(args.user, args.password_file, args.password_env)
        from agrajag.status import run_status

        return run_status(args)
    except AgrajagError as exc:
        print(f"agrajag {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
