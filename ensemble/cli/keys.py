"""`starter.py keys init [NAME...]`: local Ed25519 keys for approvers (docs/security.md)."""

from __future__ import annotations

import argparse

from ensemble.authoring import approvers
from ensemble.identity import keys
from ensemble.service.auth import local_token
from ensemble.spec.errors import InputError


def cmd_keys_init(args: argparse.Namespace) -> int:
    names = list(args.names)
    if not names:  # everyone in the approvers file
        for members in approvers.load_groups().values():
            names += [m for m in members if m not in names]
    for name, kid, created in keys.init_keys(names):
        print(f"{name}: {'created' if created else 'kept'} key {kid} ({keys.private_dir() / (name + '.pem')})")
    print(f"public keys in {keys.trust_file()} (workers read it: ENSEMBLE_APPROVER_KEYS or ENSEMBLE_HOME)")
    return 0


def cmd_keys_token(args: argparse.Namespace) -> int:
    if args.ttl <= 0:
        raise InputError(f"--ttl {args.ttl} must be a positive number of seconds")
    print(local_token(args.name, args.ttl))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("keys", help="approver keys that sign decisions (offline default)")
    ks = s.add_subparsers(dest="keys_command", required=True, parser_class=type(s))
    i = ks.add_parser(
        "init", help="make a local Ed25519 key for each approver (default: everyone in the approvers file)"
    )
    i.add_argument("names", nargs="*", help="approver names (default: every member of the approvers file's groups)")
    i.set_defaults(fn=cmd_keys_init)
    t = ks.add_parser(
        "token", help="print a short-lived bearer token for the service (`serve`), signed with USER's local key"
    )
    t.add_argument("name", metavar="USER", help="an approver with a local key (`keys init`)")
    t.add_argument("--ttl", type=int, default=3600, help="seconds the token is valid (default 3600)")
    t.set_defaults(fn=cmd_keys_token)
