"""The ``depositd`` command: serve the API, migrate, and the admin verbs."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import getpass
import os
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import structlog
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from depositd.chain.addresses import WatchOnlyKey
from depositd.config import ChainConfig, Config, load_config
from depositd.db.engine import Database
from depositd.db.migrate import is_current, upgrade
from depositd.domain.assets import AssetBook
from depositd.domain.audit import CLI_ACTOR
from depositd.errors import ConfigError, DepositdError
from depositd.jsontext import dump_json
from depositd.logs import configure_logging
from depositd.runtime import freeze_startup_objects
from depositd.sealing import Sealer
from depositd.services import addresses, audit, merchants, operators
from depositd.signer import Signer
from depositd.workers import ROLES

if TYPE_CHECKING:
    from depositd.services.deliveries import Delivery

log = structlog.get_logger("depositd")

#: a number parsed from a command-line argument
N = TypeVar("N", int, float)

#: xpub at m/44'/60'/0'/0 of anvil's default mnemonic ("test test ... junk"): the demo
#: merchant's addresses are anvil's funded dev accounts. Never use it for real money.
DEV_XPUB = (
    "xpub6DyUKdwoLWmUJ4Tn9Bbsdtx7B5Ws18mEN19e5HT52ikE53FiUheSQXrZUNPovqfyKmw4579A1Mm3GXXKM39N64"
    "uooBfJ4tNAzFsEbodRTx4"
)


#: the demo merchant's dashboard operator that ``depositd dev`` makes
DEV_OPERATOR = "operator@demo.example"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="depositd",
        description="Self-hosted crypto deposit service: credit every deposit exactly once.",
    )
    parser.add_argument(
        "--config",
        type=Path,
        metavar="PATH",
        help="TOML config file (default: $DEPOSITD_CONFIG, else the embedded defaults:"
        " SQLite under ./var/)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the HTTP API",
        description="Serve the HTTP API. The schema must be current: run 'depositd migrate' first.",
    )
    serve.add_argument("--host", help="listen address (default: server.host)")
    serve.add_argument("--port", type=int, help="listen port (default: server.port)")
    serve.add_argument(
        "--processes",
        type=int,
        metavar="N",
        help="serve from N processes on one socket (PostgreSQL only; default: server.processes)",
    )
    serve.add_argument(
        "--no-workers",
        action="store_true",
        help="serve the API only; run the chain watchers and sweepers with 'depositd worker'",
    )

    worker = commands.add_parser(
        "worker",
        help="run the background workers without the API",
        description="Run the chain watcher of every chain with an rpc_url, the webhook"
        " sender, the deposit order expiry sweeper, the sweep of stored provider callbacks,"
        " the reconciler and the retention job, until stopped (SIGTERM or Ctrl-C).",
    )
    worker.add_argument(
        "--only",
        action="append",
        choices=ROLES,
        help="run only this worker (repeat for several); default: all of them",
    )

    commands.add_parser(
        "migrate",
        help="create or upgrade the database schema",
        description="Apply every pending migration in one transaction (safe to repeat).",
    )

    dev = commands.add_parser(
        "dev",
        help="a local chain, a demo merchant and API key, examples, the API and workers",
        description="Everything on embedded defaults for trying depositd out: starts the"
        " local anvil chain (from ./node_modules) unless it is running, deploys the demo token,"
        " migrates the database, ensures a merchant named 'demo', issues it a fresh API key,"
        " prints what to try, and serves the API with the chain watcher.",
    )
    dev.add_argument("--host", help="listen address (default: server.host)")
    dev.add_argument("--port", type=int, help="listen port (default: server.port)")
    dev_verbs = dev.add_subparsers(dest="verb", metavar="VERB")
    simulate = dev_verbs.add_parser(
        "simulate",
        help="send demo deposits on the dev chain and follow them to 'credited'",
        description="Send a demo deposit of ETH and of the demo token to a user's address on"
        " the dev chain, and print each deposit's status as the running 'depositd dev'"
        " watches it reach 'credited'.",
    )
    simulate.add_argument("--user", default="alice", help="the user's id (default: alice)")
    simulate.add_argument(
        "--amount",
        action="append",
        metavar="ASSET=AMOUNT",
        help="what to send, repeatable (default: ETH=0.5 and USDT=25)",
    )

    merchant_cmd = commands.add_parser("merchants", help="create and list merchants")
    merchant_verbs = merchant_cmd.add_subparsers(dest="verb", required=True, metavar="VERB")
    create = merchant_verbs.add_parser(
        "create",
        help="create a merchant and print its id",
        description="Create a merchant (a platform whose users deposit). Prints its id; then"
        " issue it a key with 'depositd api-keys create --merchant ID'.",
    )
    create.add_argument("name", help="display name")
    create.add_argument(
        "--xpub", help="account xpub at m/44'/60'/0'/0 that EVM deposit addresses derive from"
    )
    merchant_verbs.add_parser("list", help="list merchants (id and name)")
    set_xpub = merchant_verbs.add_parser(
        "set-xpub",
        help="set the xpub deposit addresses derive from",
        description="Set a merchant's account-level extended public key (m/44'/60'/0'/0)."
        " Only the public key: an xprv is refused, the server never holds spending keys."
        " Addresses already handed out keep their index.",
    )
    set_xpub.add_argument("merchant", metavar="ID", help="merchant id")
    set_xpub.add_argument("xpub", help="the xpub")

    key_cmd = commands.add_parser("api-keys", help="issue and revoke merchant API keys")
    key_verbs = key_cmd.add_subparsers(dest="verb", required=True, metavar="VERB")
    issue = key_verbs.add_parser(
        "create",
        help="issue an API key (shown once)",
        description="Issue a new API key for a merchant. The key is printed once and stored"
        " only as a hash: copy it now.",
    )
    issue.add_argument("--merchant", required=True, metavar="ID", help="merchant id")
    issue.add_argument("--label", default="", help="a note to tell keys apart")
    revoke = key_verbs.add_parser(
        "revoke",
        help="revoke an API key at once",
        description="Revoke an API key by its id (key_…); requests with it fail from now on.",
    )
    revoke.add_argument("key_id", help="the key's id, as printed by 'api-keys create'")

    operator_cmd = commands.add_parser("operators", help="people who sign in to the dashboard")
    operator_verbs = operator_cmd.add_subparsers(dest="verb", required=True, metavar="VERB")
    add_operator = operator_verbs.add_parser(
        "add",
        help="add a dashboard operator for a merchant",
        description="Add an operator who signs in to /dashboard with this email and sees only"
        " this merchant's data. The password is read from standard input (one line) or, at a"
        " terminal, asked for twice.",
    )
    add_operator.add_argument("--merchant", required=True, metavar="ID", help="merchant id")
    add_operator.add_argument("--email", required=True, help="the operator's email address")

    delivery_cmd = commands.add_parser(
        "deliveries", help="list webhook deliveries and retry one (every merchant's)"
    )
    delivery_verbs = delivery_cmd.add_subparsers(dest="verb", required=True, metavar="VERB")
    list_deliveries = delivery_verbs.add_parser(
        "list",
        help="list deliveries, newest first, one a line",
        description="List webhook deliveries of every merchant, newest first, one a line:"
        " id, status, merchant, endpoint, event seq and type, attempts, when it is due or"
        " finished, and the last outcome.",
    )
    list_deliveries.add_argument(
        "--status", choices=("pending", "delivered", "dead"), help="only deliveries in it"
    )
    list_deliveries.add_argument("--endpoint", metavar="ID", help="only this endpoint's")
    list_deliveries.add_argument(
        "--limit", default="50", metavar="N", help="at most N deliveries (default: 50)"
    )
    retry = delivery_verbs.add_parser(
        "retry",
        help="send a delivery again now",
        description="Make a delivery due now, whatever its status. A dead one gets one more"
        " attempt; a delivered one is sent again (same webhook-id, for the receiver to drop"
        " if it has it). Its endpoint must be enabled.",
    )
    retry.add_argument("delivery_id", metavar="DELIVERY_ID", help="the delivery's id")

    replay = commands.add_parser(
        "replay",
        help="re-send an endpoint's events after a seq or in a time range",
        description="Queue again, through the outbox, every event the endpoint subscribes to"
        " after --after-seq, or created from --from until --to (ISO times with a UTC offset),"
        " spread out at --rate a second so live deliveries keep going out between them."
        " At most 100,000 events at once.",
    )
    replay.add_argument("endpoint_id", metavar="ENDPOINT_ID", help="the endpoint's id (end_…)")
    replay.add_argument("--after-seq", metavar="N", help="re-send the events after this seq")
    replay.add_argument("--from", dest="created_from", metavar="T", help="from this time ...")
    replay.add_argument("--to", dest="created_to", metavar="T", help="... until this time")
    replay.add_argument("--rate", metavar="R", help="deliveries due per second (default: 50)")

    reconcile_cmd = commands.add_parser(
        "reconcile",
        help="recover missed callbacks and report sums that disagree",
        description="Process stored callbacks still unprocessed after the SLA, ask each"
        " provider with a status API about its deposits still pending after the SLA (and"
        " record what it says), then compare every account's balance with its entries and what"
        " providers claimed succeeded with what was credited. Exits 1 when something disagrees.",
    )
    reconcile_cmd.add_argument(
        "--sla-seconds",
        metavar="S",
        help="overdue after this long (default: reconcile.sla_seconds)",
    )

    audit_cmd = commands.add_parser("audit", help="verify and read the audit log")
    audit_verbs = audit_cmd.add_subparsers(dest="verb", required=True, metavar="VERB")
    audit_verbs.add_parser(
        "verify",
        help="check the audit log's hash chain",
        description="Walk the audit log in seq order, recomputing every record's hash and its"
        " link to the one before. Prints the number of records and the head, or the first"
        " record edited, deleted or out of order, and exits 1.",
    )
    audit_list = audit_verbs.add_parser(
        "list",
        help="the latest audit records, newest first, one a line",
        description="List audit records newest first: seq, time, merchant, actor, action,"
        " subject and details.",
    )
    audit_list.add_argument("--merchant", metavar="ID", help="only this merchant's")
    audit_list.add_argument("--limit", default="50", metavar="N", help="at most N (default: 50)")

    purge_cmd = commands.add_parser(
        "purge",
        help="remove expired callbacks, attempt logs and events now",
        description="Apply the retention policy ([retention]) once: remove processed or"
        " rejected inbound callbacks, delivery attempt logs and the oldest events (with their"
        " finished deliveries) past their cutoffs, and print what was removed from each table."
        " Never the ledger, deposits or the audit log.",
    )
    purge_cmd.add_argument(
        "--dry-run", action="store_true", help="count what would be removed; remove nothing"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"depositd: config error: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.log_level)
    try:
        if args.command == "dev" and args.verb == "simulate":
            return asyncio.run(_simulate(config, args))
        if args.command == "dev":
            return _serve(_with_dev_keys(config), args, dev=True)
        if args.command == "serve":
            return _serve(config, args, dev=False)
        if args.command == "worker":
            return asyncio.run(_work(config, args.only))
        return asyncio.run(_admin(config, args))
    except ConfigError as exc:
        print(f"depositd: config error: {exc}", file=sys.stderr)
        return 2
    except DepositdError as exc:
        print(f"depositd: {exc}", file=sys.stderr)
        return 1
    except (SQLAlchemyError, OSError) as exc:
        print(f"depositd: database {_safe_url(config)}: {_reason(exc)}", file=sys.stderr)
        return 1


def _safe_url(config: Config) -> str:
    return make_url(config.database_url()).render_as_string(hide_password=True)


def _reason(exc: BaseException) -> str:
    """One line saying what went wrong, from the driver's own words where there are some."""
    cause = getattr(exc, "orig", None) or exc
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    return str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__


async def _admin(config: Config, args: argparse.Namespace) -> int:
    db = Database(config.database_url())
    try:
        if args.command == "migrate":
            await upgrade(db)
            print(f"schema is current ({db.safe_url()})")
        elif args.command == "merchants" and args.verb == "create":
            await _require_schema(db)
            if args.xpub:
                WatchOnlyKey(args.xpub)  # refuse a bad key before creating anything
            merchant = await merchants.create_merchant(db, args.name)
            if args.xpub:
                await addresses.set_xpub(db, merchant.id, args.xpub)
            print(merchant.id)
        elif args.command == "merchants" and args.verb == "set-xpub":
            await _require_schema(db)
            await addresses.set_xpub(db, args.merchant, args.xpub)
            print(f"xpub set for {args.merchant}")
        elif args.command == "merchants":
            await _require_schema(db)
            for merchant in await merchants.list_merchants(db):
                print(f"{merchant.id}\t{merchant.name}")
        elif args.command == "api-keys" and args.verb == "create":
            await _require_schema(db)
            key = await merchants.create_api_key(db, args.merchant, args.label)
            print(f"id:  {key.id}\nkey: {key.secret}\n(the key is shown only now)")
        elif args.command == "operators":
            await _require_schema(db)
            operator = await operators.add_operator(db, args.merchant, args.email, _read_password())
            print(f"operator {operator.id} ({operator.email}) of {operator.merchant_id}")
        elif args.command == "deliveries" and args.verb == "list":
            await _require_schema(db)
            await _list_deliveries(db, args)
        elif args.command == "deliveries":
            await _require_schema(db)
            await _retry_delivery(db, args)
        elif args.command == "replay":
            await _require_schema(db)
            await _replay(db, args)
        elif args.command == "reconcile":
            await _require_schema(db)
            return await _reconcile(db, config, args)
        elif args.command == "audit" and args.verb == "verify":
            await _require_schema(db)
            return await _verify_audit(db)
        elif args.command == "audit":
            await _require_schema(db)
            await _list_audit(db, args)
        elif args.command == "purge":
            await _require_schema(db)
            await _purge(db, config, dry_run=args.dry_run)
        else:
            await _require_schema(db)
            await merchants.revoke_api_key(db, args.key_id)
            print(f"revoked {args.key_id}")
    finally:
        await db.dispose()
    return 0


async def _reconcile(db: Database, config: Config, args: argparse.Namespace) -> int:
    from depositd.services.reconcile import reconcile  # imports the HTTP client

    sla = None
    if args.sla_seconds is not None:
        seconds = _number("--sla-seconds", args.sla_seconds, float)
        if seconds < 0:
            raise DepositdError(f"--sla-seconds {args.sla_seconds!r}: must not be negative")
        sla = timedelta(seconds=seconds)
    report = await reconcile(db, config, config.asset_book(), sla=sla)
    print(f"stored callbacks processed late: {report.processed}")
    for found in report.recovered:
        print(f"recovered {found.provider}:{found.provider_deposit_id}"
              f" {found.before} -> {found.after}")  # fmt: skip
    for unanswered in report.unanswered:
        print(f"no answer from the provider about {unanswered}")
    for mismatch in report.mismatches:
        print(f"MISMATCH {mismatch.kind} {mismatch.subject}: expected {mismatch.expected},"
              f" found {mismatch.actual}")  # fmt: skip
    print(f"mismatches: {len(report.mismatches)}")
    return 1 if report.mismatches else 0


async def _verify_audit(db: Database) -> int:
    verdict = await audit.verify_audit_log(db)
    if verdict.problem is not None:
        print(f"audit log BROKEN after {verdict.rows} good rows: {verdict.problem}")
        return 1
    print(f"audit log intact: {verdict.rows} rows, head {verdict.head[:16]}")
    return 0


async def _list_audit(db: Database, args: argparse.Namespace) -> None:
    limit = _number("--limit", args.limit, int)
    for record in await audit.latest_audit_records(db, args.merchant, limit):
        print("\t".join((str(record.seq), _stamp(record.at), record.merchant_id or "-",
                         record.actor, record.action, record.subject,
                         dump_json(record.details))))  # fmt: skip


async def _purge(db: Database, config: Config, *, dry_run: bool) -> None:
    from depositd.services.retention import TABLES, purge

    report = await purge(db, config.retention, actor=CLI_ACTOR, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    for table in TABLES:
        cutoff = _stamp(report.cutoffs.of_table(table))
        print(f"{table}: {verb} {report.removed[table]} (older than {cutoff})")
    print(f"the event log starts after seq {report.events_purged_through}")


async def _list_deliveries(db: Database, args: argparse.Namespace) -> None:
    from depositd.services import deliveries  # imports the HTTP client: only when needed

    page = await deliveries.list_deliveries(
        db,
        None,
        status=args.status,
        endpoint_id=args.endpoint,
        limit=_number("--limit", args.limit, int),
    )
    for delivery in page.items:
        print(_delivery_line(delivery))


async def _retry_delivery(db: Database, args: argparse.Namespace) -> None:
    from depositd.services import deliveries

    delivery_id = _number("DELIVERY_ID", args.delivery_id, int)
    before = await deliveries.get_delivery(db, None, delivery_id)
    retried = await deliveries.retry_delivery(db, None, delivery_id, actor=CLI_ACTOR)
    print(
        f"delivery {retried.id} of event {retried.event_seq} to {retried.endpoint_id} is due"
        f" now (it was {before.delivery.status} after {before.delivery.attempts} attempts)"
    )


async def _replay(db: Database, args: argparse.Namespace) -> None:
    from depositd.services import deliveries

    by_seq = args.after_seq is not None
    by_time = args.created_from is not None or args.created_to is not None
    if by_seq == by_time:
        raise DepositdError("replay: give --after-seq N, or --from T and --to T")
    if by_time and (args.created_from is None or args.created_to is None):
        raise DepositdError("replay: --from and --to go together")
    replayed = await deliveries.replay_endpoint(
        db,
        None,
        args.endpoint_id,
        after_seq=_number("--after-seq", args.after_seq, int) if by_seq else None,
        created_from=_time("--from", args.created_from) if by_time else None,
        created_to=_time("--to", args.created_to) if by_time else None,
        rate_per_second=deliveries.DEFAULT_REPLAY_RATE
        if args.rate is None
        else _number("--rate", args.rate, float),
        actor=CLI_ACTOR,
    )
    if not replayed.queued:
        print(f"nothing to replay to {replayed.endpoint_id}")
        return
    print(
        f"queued {replayed.queued} events (seq {replayed.first_seq}..{replayed.last_seq}) for"
        f" {replayed.endpoint_id}, all due by {replayed.finishes_by.isoformat(timespec='seconds')}"
    )


def _delivery_line(delivery: Delivery) -> str:
    if delivery.next_attempt_at is not None:
        when = f"due {_stamp(delivery.next_attempt_at)}"
    elif delivery.finished_at is not None:
        when = f"finished {_stamp(delivery.finished_at)}"
    else:
        when = "-"
    if delivery.last_error:
        last = delivery.last_error
    elif delivery.last_status_code is not None:
        last = f"HTTP {delivery.last_status_code}"
    else:
        last = "-"
    last = " ".join(last.split())  # one line, whatever the receiver or the network said
    return "\t".join(
        (
            str(delivery.id),
            delivery.status,
            delivery.merchant_id,
            delivery.endpoint_id,
            f"seq {delivery.event_seq}",
            delivery.event_type,
            f"attempts {delivery.attempts}",
            when,
            last,
        )
    )


def _stamp(at: datetime) -> str:
    return at.isoformat(timespec="seconds")


def _number(name: str, value: str, kind: Callable[[str], N]) -> N:
    try:
        return kind(value)
    except ValueError:
        raise DepositdError(f"{name} {value!r}: not a number") from None


def _time(name: str, value: str) -> datetime:
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        at = None
    if at is None or at.tzinfo is None:
        raise DepositdError(
            f"{name} {value!r}: write an ISO time with a UTC offset, for example"
            " 2024-05-01T00:00:00Z"
        )
    return at


async def _require_schema(db: Database) -> None:
    if not await is_current(db):
        raise DepositdError(
            f"the database schema is not current: run 'depositd migrate' ({db.safe_url()})"
        )


def _read_password() -> str:
    """A password from standard input: asked for twice at a terminal, else its first line."""
    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            raise DepositdError("the passwords differ")
        return password
    return sys.stdin.readline().rstrip("\r\n")


def _with_dev_keys(config: Config) -> Config:
    """In dev, KYC and the dashboard work out of the box: keys made once under ./var/
    (unless they are set)."""
    config = _with_dev_key(config, "end_users", "kyc", Path("var/kyc.key"), Sealer.new_key_text)
    return _with_dev_key(
        config, "dashboard", "secret", Path("var/dashboard.key"), Signer.new_key_text
    )


def _with_dev_key(
    config: Config, section: str, key: str, path: Path, new_key_text: Callable[[], str]
) -> Config:
    """``config`` with ``[section] {key}_key_file = path``, the file made if it is missing,
    unless ``{key}_key`` or ``{key}_key_file`` is set already."""
    settings = getattr(config, section)
    if getattr(settings, f"{key}_key") is not None or getattr(settings, f"{key}_key_file"):
        return config
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(new_key_text() + "\n")
    update = {section: settings.model_copy(update={f"{key}_key_file": path})}
    return config.model_copy(update=update)


def _dev_chain(config: Config) -> tuple[str, ChainConfig]:
    for name, chain in config.chains.items():
        if chain.rpc_url is not None:
            return name, chain
    raise ConfigError("chains: no chain has an rpc_url for the dev chain")


async def _prepare_dev(
    config: Config, db: Database, base_url: str
) -> subprocess.Popen[bytes] | None:
    """Start the dev chain and its demo token, migrate, make the demo merchant; print how to
    try it. Returns the anvil process if this started it."""
    from depositd import devchain  # the dev tools load only for `depositd dev`
    from depositd.chain.rpc import EvmRpc

    name, chain = _dev_chain(config)
    node = await devchain.start_anvil(chain, Path("var") / f"{name}-chain.json")
    try:
        assert chain.rpc_url is not None
        async with EvmRpc(chain.rpc_url) as rpc:
            tokens = [a for a in config.asset_book().values() if a.chain == name and a.contract]
            for token in tokens:
                await devchain.ensure_demo_token(rpc, token)
        await upgrade(db)
        merchant_id = await devchain.demo_merchant(db)
        key = await merchants.create_api_key(db, merchant_id, "make dev")
        operator_password = secrets.token_urlsafe(12)
        await operators.add_operator(
            db, merchant_id, DEV_OPERATOR, operator_password, reset_password=True
        )
    except BaseException:
        if node is not None:
            node.terminate()
        raise
    auth = f"-H 'Authorization: Bearer {key.secret}'"
    outbox = config.email.outbox_dir
    json = "-H 'Content-Type: application/json'"
    started = "started by depositd dev" if node else "already running"
    print(
        f"""
depositd dev — database {db.safe_url()}
dev chain {name}: {chain.rpc_url} ({started})
demo tokens: {", ".join(f"{t.code} at {t.contract}" for t in tokens) or "none"}
demo merchant {merchant_id}, API key (new on every start):

    {key.secret}

dashboard: {base_url}/dashboard  operator {DEV_OPERATOR}, password (new on every start):

    {operator_password}

Try, in another terminal:
  depositd dev simulate          # sends 0.5 ETH and 25 USDT to alice, follows them to credited
  curl -s {auth} {json} -d '{{"external_id": "alice"}}' {base_url}/v1/users
  curl -s {auth} {json} -d '{{"chain": "{name}"}}' {base_url}/v1/users/alice/addresses
  curl -s {auth} {json} -d '{{"user": "alice", "asset": "USDT", "amount": "10"}}' \\
       {base_url}/v1/deposit-orders
  curl -s {auth} {base_url}/v1/users/alice/balances
  curl -s {auth} '{base_url}/v1/deposits?limit=10'
  curl -s {auth} -H 'Accept-Language: zh-CN' '{base_url}/v1/deposits?limit=1'
  curl -s {auth} '{base_url}/v1/events?after=0'
  curl -s {base_url}/readyz                  # the chain watcher's head, cursor and lag
An end user of your platform signs up on their own (the email lands in {outbox}/):
  curl -s {json} {base_url}/v1/auth/register -d \\
     '{{"merchant": "{merchant_id}", "email": "mei@example.com", "password": "long passphrase"}}'
  then POST the token to /v1/auth/verify-email, log in at /v1/auth/login, and read /v1/me
API reference: {base_url}/docs   (OpenAPI: {base_url}/openapi.json)
""",
        flush=True,
    )
    return node


def _serve(config: Config, args: argparse.Namespace, *, dev: bool) -> int:
    host = args.host or config.server.host
    port = args.port or config.server.port
    asked = getattr(args, "processes", None)  # serve only: dev is one process
    processes = 1 if dev else asked if asked is not None else config.server.processes
    if processes < 1:
        raise DepositdError(f"--processes {processes}: at least 1")
    workers = dev or not args.no_workers
    if processes == 1:
        return _serve_one(config, host, port, dev=dev, workers=workers, sockets=None)
    if make_url(config.database_url()).get_backend_name() != "postgresql":
        raise ConfigError("server.processes: more than one process needs PostgreSQL")
    # one listening socket, made before forking: the kernel spreads connections over the
    # processes; the first also runs the background workers (if asked), the others only serve
    listener = socket.create_server((host, port), backlog=2048)
    children = []
    for _ in range(processes - 1):
        pid = os.fork()
        if pid == 0:
            _die_with_parent()
            code = _serve_one(config, host, port, dev=False, workers=False, sockets=[listener])
            os._exit(code)
        children.append(pid)

    async def stop_children() -> None:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in children:
            with contextlib.suppress(ChildProcessError):
                await asyncio.to_thread(os.waitpid, pid, 0)

    log.info("serving in several processes", processes=processes, children=children)
    return _serve_one(
        config, host, port, dev=False, workers=workers, sockets=[listener], on_stop=stop_children
    )


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when its parent dies (a killed parent leaves no
    orphans serving on); elsewhere, nothing."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _serve_one(
    config: Config,
    host: str,
    port: int,
    *,
    dev: bool,
    workers: bool,
    sockets: list[socket.socket] | None,
    on_stop: Callable[[], Awaitable[None]] | None = None,
) -> int:
    # the web stack is imported only when serving: admin verbs start twice as fast
    import uvicorn
    import uvloop

    from depositd.app import create_app

    db = Database(config.database_url())

    async def run() -> None:
        node = None
        if dev:
            node = await _prepare_dev(config, db, f"http://{host}:{port}")
        else:
            await _require_schema(db)

        async def stop() -> None:
            if node is not None and node.poll() is None:
                node.terminate()  # anvil writes its state file on the way out
                await asyncio.to_thread(node.wait, 15)
            if on_stop is not None:
                await on_stop()

        tls = config.server.tls_cert_file is not None
        log.info("starting", database=db.safe_url(), host=host, port=port, workers=workers, tls=tls)
        app = create_app(config, db, workers=workers, on_shutdown=stop)
        freeze_startup_objects()
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                host=host,
                port=port,
                log_config=None,
                access_log=False,
                loop="none",
                http="httptools",
                proxy_headers=False,
                ssl_certfile=config.server.tls_cert_file,
                ssl_keyfile=config.server.tls_key_file,
            )
        )
        try:
            await server.serve(sockets=sockets)
        finally:
            # reached on Ctrl-C; after SIGTERM uvicorn ends the process once the app has shut
            # down, which is why the app's shutdown stops the dev chain (and the other
            # processes)
            await db.dispose()
            await stop()

    # the server runs inside our own loop (uvicorn's ``loop`` setting is not applied then)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(run())
    return 0


async def _work(config: Config, only: list[str] | None) -> int:
    from depositd.workers.supervisor import Workers

    db = Database(config.database_url())
    try:
        await _require_schema(db)
        workers = Workers(config, db, config.asset_book(), roles=only)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        log.info(
            "workers starting",
            database=db.safe_url(),
            roles=sorted(workers.roles),
            chains=sorted(workers.watchers),
        )
        freeze_startup_objects()
        workers.start()
        await stop.wait()
        log.info("workers stopping")
        await workers.stop()
    finally:
        await db.dispose()
    return 0


async def _simulate(config: Config, args: argparse.Namespace) -> int:
    from depositd import devchain

    name, chain = _dev_chain(config)
    assets = config.asset_book()
    amounts = {}
    for item in args.amount or _default_amounts(assets, name):
        code, sep, amount = item.partition("=")
        if not sep or not amount:
            raise DepositdError(f"--amount {item!r}: write ASSET=AMOUNT, for example ETH=0.5")
        amounts[assets[code].code] = amount
    db = Database(config.database_url())
    try:
        await _require_schema(db)
        settled = await devchain.simulate(db, assets, name, chain, args.user, amounts)
    finally:
        await db.dispose()
    credited = sum(d.status.value == "credited" for d in settled)
    print(f"{credited} of {len(settled)} deposits credited")
    return 0 if credited == len(settled) else 1


def _default_amounts(assets: AssetBook, chain: str) -> list[str]:
    on_chain = [a for a in assets.values() if a.chain == chain]
    native = [f"{a.code}=0.5" for a in on_chain if a.contract is None][:1]
    tokens = [f"{a.code}=25" for a in on_chain if a.contract is not None][:1]
    return native + tokens


if __name__ == "__main__":
    raise SystemExit(main())
