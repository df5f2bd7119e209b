"""The `agrajag` command: daemon | watch | notify | status.

Each subcommand imports its module only when it runs. repmgr's event hook should rather be
`agrajag-notify` (`agrajag.daemon.notify.main`), which starts without argparse and logging;
`agrajag notify` takes the same options.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from agrajag import __version__
from agrajag.daemon import notify as hook
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
        "notify",
        help="repmgr event_notification_command: wake the local daemon at once"
        " (agrajag-notify starts faster)",
    )
    for flag, text in hook.OPTIONS.items():
        notify.add_argument(
            flag, required=flag == "--socket", default="", help=text.replace("%", "%%")
        )

    status = sub.add_parser("status", help="what the registry says, at a glance")
    where = status.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", help="a daemon or watcher YAML to take ZooKeeper from")
    where.add_argument("--zookeeper", help="ZooKeeper hosts, e.g. 127.0.0.1:2181")
    status.add_argument("--root", default=None, help="registry root (default /agrajag)")
    status.add_argument("--cluster", action="append", help="only this cluster (repeatable)")
    status.add_argument("--json", action="store_true", help="machine-readable output")
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
            return hook.notify({hook.key(f): getattr(args, hook.key(f)) for f in hook.OPTIONS})
        from agrajag.status import run_status

        return run_status(args)
    except AgrajagError as exc:
        print(f"agrajag {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
