"""The ``depositd`` command: serve the API, migrate, and the admin verbs."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

import structlog
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from depositd.chain.addresses import WatchOnlyKey
from depositd.config import Config, load_config
from depositd.db.engine import Database
from depositd.db.migrate import is_current, upgrade
from depositd.errors import ConfigError, DepositdError
from depositd.logs import configure_logging
from depositd.services import addresses, merchants

log = structlog.get_logger("depositd")

DEMO_MERCHANT = "demo"
#: xpub at m/44'/60'/0'/0 of anvil's default mnemonic ("test test ... junk"): the demo
#: merchant's addresses are anvil's funded dev accounts. Never use it for real money.
DEV_XPUB = (
    "xpub6DyUKdwoLWmUJ4Tn9Bbsdtx7B5Ws18mEN19e5HT52ikE53FiUheSQXrZUNPovqfyKmw4579A1Mm3GXXKM39N64"
    "uooBfJ4tNAzFsEbodRTx4"
)


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

    commands.add_parser(
        "migrate",
        help="create or upgrade the database schema",
        description="Apply every pending migration in one transaction (safe to repeat).",
    )

    dev = commands.add_parser(
        "dev",
        help="migrate, create a demo merchant and API key, print examples, serve",
        description="Everything on embedded defaults for trying depositd out: migrates the"
        " database, ensures a merchant named 'demo', issues it a fresh API key,"
        " prints example requests and serves the API.",
    )
    dev.add_argument("--host", help="listen address (default: server.host)")
    dev.add_argument("--port", type=int, help="listen port (default: server.port)")

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
        if args.command in ("serve", "dev"):
            return _serve(config, args, dev=args.command == "dev")
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
        else:
            await _require_schema(db)
            await merchants.revoke_api_key(db, args.key_id)
            print(f"revoked {args.key_id}")
    finally:
        await db.dispose()
    return 0


async def _require_schema(db: Database) -> None:
    if not await is_current(db):
        raise DepositdError(
            f"the database schema is not current: run 'depositd migrate' ({db.safe_url()})"
        )


async def _prepare_dev(db: Database, base_url: str) -> None:
    await upgrade(db)
    existing = [m for m in await merchants.list_merchants(db) if m.name == DEMO_MERCHANT]
    merchant = existing[0] if existing else await merchants.create_merchant(db, DEMO_MERCHANT)
    await addresses.set_xpub(db, merchant.id, DEV_XPUB)
    key = await merchants.create_api_key(db, merchant.id, "make dev")
    auth = f"-H 'Authorization: Bearer {key.secret}'"
    print(
        f"""
depositd dev — database {db.safe_url()}
demo merchant {merchant.id}, API key (new on every start):

    {key.secret}

Try:
  curl -s {auth} -H 'Content-Type: application/json' \\
       -d '{{"external_id": "alice"}}' {base_url}/v1/users
  curl -s {auth} -H 'Content-Type: application/json' \\
       -d '{{"provider": "demo", "provider_deposit_id": "dep-1", "user": "alice",
            "asset": "USDT", "amount": "25.5", "status": "succeeded"}}' \\
       {base_url}/v1/observations
  curl -s {auth} -H 'Content-Type: application/json' \\
       -d '{{"chain": "anvil"}}' {base_url}/v1/users/alice/addresses
  curl -s {auth} {base_url}/v1/users/alice/balances
  curl -s {auth} '{base_url}/v1/deposits?limit=10'
  curl -s {auth} -H 'Accept-Language: zh-CN' '{base_url}/v1/deposits?limit=1'
  curl -s {auth} '{base_url}/v1/events?after=0'
API reference: {base_url}/docs   (OpenAPI: {base_url}/openapi.json)
""",
        flush=True,
    )


def _serve(config: Config, args: argparse.Namespace, *, dev: bool) -> int:
    # the web stack is imported only when serving: admin verbs start twice as fast
    import uvicorn

    from depositd.app import create_app

    host = args.host or config.server.host
    port = args.port or config.server.port
    db = Database(config.database_url())

    async def run() -> None:
        if dev:
            await _prepare_dev(db, f"http://{host}:{port}")
        else:
            await _require_schema(db)
        log.info("starting", database=db.safe_url(), host=host, port=port)
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(config, db),
                host=host,
                port=port,
                log_config=None,
                access_log=False,
                loop="uvloop",
                http="httptools",
                proxy_headers=False,
            )
        )
        try:
            await server.serve()
        finally:
            await db.dispose()

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
