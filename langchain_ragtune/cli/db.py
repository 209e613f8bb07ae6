"""``ragtune db status|stop``: the embedded PostgreSQL that runs when RAGTUNE_PG_URI is unset.

The server outlives a process that was killed (its handle stays recorded), and PostgreSQL's
own ``pg_ctl stop`` refuses to run as root, so the package gives both answers itself.

Example:
    $ ragtune db status --json
    $ ragtune db stop
"""

from __future__ import annotations

from typing import Any

from langchain_ragtune.cli._common import add_json_flag, print_json

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add ``db status`` and ``db stop``."""
    p = subparsers.add_parser("db", help="the embedded PostgreSQL: status, stop")
    sub = p.add_subparsers(dest="db_command", metavar="ACTION")
    st = sub.add_parser("status", help="is the embedded server running, who uses it")
    add_json_flag(st)
    st.set_defaults(handler=_status)
    stop = sub.add_parser("stop", help="stop the embedded server (committed data is kept)")
    stop.add_argument("--force", action="store_true",
                      help="stop it even while other processes use it")
    add_json_flag(stop)
    stop.set_defaults(handler=_stop)
    p.set_defaults(handler=lambda args: (p.print_help(), 2)[1])


def _external(config: Any, args: Any, action: str) -> int | None:
    """With RAGTUNE_PG_URI set, the server is the user's: say so instead of acting."""
    if not config.pg_uri:
        return None
    msg = ("RAGTUNE_PG_URI is set: the store uses your own PostgreSQL, which ragtune neither "
           f"started nor {action}s; manage it with your own tools.")
    if args.json:
        print_json({"embedded": False, "pg_uri_set": True, "message": msg})
    else:
        print(msg)
    return 0 if action == "report" else 1


def _status(args: Any) -> int:
    from langchain_ragtune.config import StoreConfig
    from langchain_ragtune.store.embedded import embedded_status

    config = StoreConfig.from_env()
    rc = _external(config, args, "report")
    if rc is not None:
        return rc
    st = embedded_status(config.pgdata)
    if args.json:
        print_json({"embedded": True, **st})
        return 0
    if not st["initialised"]:
        print(f"no embedded database yet in {st['pgdata']} (it is created on first use)")
    elif st["running"]:
        print(f"running: pid {st['pid']}, socket {st['socket_dir']}, data {st['pgdata']} "
              f"({st['size_mb']} MB); in use by {len(st['clients'])} process(es) "
              f"{st['clients'] or ''}".rstrip())
        if st["stale_clients"] and not st["clients"]:
            print("no live process uses it (left by processes that were killed): "
                  "`ragtune db stop` stops it")
    else:
        print(f"stopped: data {st['pgdata']} ({st['size_mb']} MB)")
    return 0


def _stop(args: Any) -> int:
    from langchain_ragtune.config import StoreConfig
    from langchain_ragtune.store.embedded import stop_embedded

    config = StoreConfig.from_env()
    rc = _external(config, args, "stop")
    if rc is not None:
        return rc
    st = stop_embedded(config.pgdata, force=args.force)
    if args.json:
        print_json({"embedded": True, **st})
    elif st["stopped"]:
        print(f"stopped the embedded PostgreSQL in {st['pgdata']}")
    else:
        print(f"the embedded PostgreSQL in {st['pgdata']} was not running")
    return 0
