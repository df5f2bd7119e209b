"""The `agrajag` command: daemon | watch | notify | status | registry | check-config |
secure-registry | digest-id | conf-dir.

Each subcommand imports its module only when it runs. repmgr's event hook should rather be
`agrajag-notify` (`agrajag.daemon.notify.main`), which starts without argparse and logging;
`agrajag notify` takes the same options.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from agrajag import __version__
from agrajag.daemon import notify as hook
from agrajag.errors import AgrajagError

#: The shipped conf.d: package data in an installed wheel, a link to the top-level conf.d in
#: a source tree.
CONF_DIR = (Path(__file__).parent / "conf.d").resolve()


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
    watch.add_argument(
        "--render-only",
        action="store_true",
        help="first start: write every sink's missing file (from ZooKeeper, else the state "
        "file) and what it needs, activate nothing, exit",
    )

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
    _add_location(status)
    status.add_argument("--cluster", action="append", help="only this cluster (repeatable)")
    status.add_argument("--json", action="store_true", help="machine-readable output")

    sub.add_parser(
        "conf-dir", help="print where the shipped conf.d is (units, examples, templates, SQL)"
    )

    check = sub.add_parser(
        "check-config",
        help="every problem of a daemon or watcher YAML; renders and checks every sink",
    )
    check.add_argument("file", help="the daemon or watcher YAML")

    _add_registry(sub.add_parser("registry", help="operators: look at and repair a cluster"))

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


def _add_location(parser: argparse.ArgumentParser) -> None:
    """Where the registry is: `--zookeeper` or the `zookeeper:` section of a YAML."""
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", help="a daemon or watcher YAML to take ZooKeeper from")
    where.add_argument("--zookeeper", help="ZooKeeper hosts, e.g. 127.0.0.1:2181")
    parser.add_argument("--root", default=None, help="registry root (default /agrajag)")


def _add_registry(registry: argparse.ArgumentParser) -> None:
    actions = registry.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = actions.add_parser("show", help="every znode of a cluster's subtree, with its data")
    trim = actions.add_parser("trim-history", help="delete all but the newest N history entries")
    trim.add_argument("--keep", type=_positive, required=True, help="entries to keep (>= 1)")
    reset = actions.add_parser(
        "reset",
        help="after a rebuilt cluster: delete the master, so the daemons republish, with an "
        "epoch above every one in use and a history entry saying who and why",
    )
    reset.add_argument("--reason", required=True, help="why, kept in the history entry")
    reset.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    for action in (show, trim, reset):
        _add_location(action)
        action.add_argument("--cluster", required=True, help="the cluster's name")
    for action in (trim, reset):
        action.add_argument("--dry-run", action="store_true", help="say what, change nothing")


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return int(text)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    try:
        if args.command == "conf-dir":
            print(CONF_DIR)
            return 0
        if args.command == "daemon":
            from agrajag.daemon.process import run_daemon

            return run_daemon(args.config)
        if args.command == "watch":
            from agrajag.watch.loop import render_only, run_watch

            return render_only(args.config) if args.render_only else run_watch(args.config)
        if args.command == "notify":
            return hook.notify({hook.key(f): getattr(args, hook.key(f)) for f in hook.OPTIONS})
        if args.command == "check-config":
            from agrajag.check_config import run_check_config

            return run_check_config(args.file)
        if args.command == "registry":
            from agrajag.registry_cli import run_registry

            return run_registry(args)
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
