"""`starter.py payloads prune`: delete the payload store's values that no run refers to any more
(logic in ensemble/runs/prune.py).

python starter.py payloads prune [--older-than 1d] [--namespace NS ...] [--dry-run] [--json]
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from ensemble.cli.output import emit_json
from ensemble.runs import prune
from ensemble.runtime import connection as temporal
from ensemble.runtime.payloads import external_storage
from ensemble.spec.errors import InputError


def register(sub: Any) -> None:
    p = sub.add_parser("payloads", help="the payload store of large values")
    actions = p.add_subparsers(dest="payloads_action", required=True)
    s = actions.add_parser(
        "prune", help="delete stored values no run or schedule refers to (after retention or a deleted run)"
    )
    s.add_argument(
        "--older-than",
        default="1d",
        metavar="DURATION",
        help="keep values written or used within this long (90s, 10m, 2h, 1d; default 1d, at least 60s)",
    )
    s.add_argument(
        "--namespace",
        action="append",
        metavar="NS",
        help="a namespace whose runs use the store (repeat for each; default TEMPORAL_NAMESPACE)",
    )
    s.add_argument("--dry-run", action="store_true", help="say what would be deleted, delete nothing")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_prune)


async def cmd_prune(args: argparse.Namespace) -> int:
    grace = prune.parse_grace(args.older_than)
    storage = external_storage()
    prune.file_driver(storage)  # one line before connecting when there is nothing to prune
    if args.namespace and any(not ns.strip() for ns in args.namespace):
        raise InputError("--namespace needs a name")
    client = await temporal.connect()
    swept = await prune.prune(client, storage, grace_s=grace, namespaces=args.namespace, dry_run=args.dry_run)
    if args.json:
        emit_json(dataclasses.asdict(swept))
    else:
        print(swept.line())
    return 0
