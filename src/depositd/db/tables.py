"""The schema: every table depositd stores, declared once (migrations are checked against it)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Table,
    UniqueConstraint,
    text,
)
from sqlalchemy.types import TypeDecorator, TypeEngine


class Amount(TypeDecorator[int]):
    """A signed integer amount of base units, up to uint256 — exact on both engines.

    PostgreSQL stores NUMERIC(78, 0). SQLite has only 64-bit integers, so there it is the
    decimal text; arithmetic on it goes through the ``big_add`` function ``db.engine``
    registers, never through SQLite's lossy numeric conversion.
    """

    impl = Numeric(78, 0)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(80))
        return dialect.type_descriptor(Numeric(78, 0))

    def process_bind_param(self, value: int | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        return str(value) if dialect.name == "sqlite" else Decimal(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> int | None:
        return None if value is None else int(value)


class UtcDateTime(TypeDecorator[datetime]):
    """An aware UTC timestamp on both engines (SQLite keeps naive UTC text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; use datetime.now(UTC)")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


#: autoincrementing key that is a rowid alias on SQLite
Serial = BigInteger().with_variant(Integer(), "sqlite")


def _ts(name: str, nullable: bool = False) -> Column[Any]:
    return Column(name, UtcDateTime(), nullable=nullable)


# Conditions of partial indexes, as SQL text: a query uses such an index only when its own
# condition names the same literal values (a bound parameter in their place would not do, on
# PostgreSQL's generic plans and on SQLite alike): ``db.alerts`` writes these very strings.
OPEN_DEPOSITS = "status IN ('pending', 'confirming')"
HELD_DEPOSITS = "status = 'held'"
REVERSALS = "type = 'deposit.reversed'"
DEAD_DELIVERIES = "status = 'dead'"

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

merchants = Table(
    "merchants",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(200), nullable=False),
    #: account-level extended public key (m/44'/60'/0'/0) that EVM deposit addresses derive from
    Column("xpub", String(200), nullable=True),
    _ts("created_at"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("merchant_id", ForeignKey("merchants.id"), nullable=False, index=True),
    Column("label", String(200), nullable=False),
    #: first characters of the key, shown in listings so people can tell keys apart
    Column("prefix", String(20), nullable=False),
    #: SHA-256 of the whole key; the key itself is shown once and never stored
    Column("key_hash", String(64), nullable=False, unique=True),
    _ts("created_at"),
    _ts("revoked_at", nullable=True),
)

users = Table(
    "users",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("merchant_id", ForeignKey("merchants.id"), nullable=False),
    Column("external_id", String(128), nullable=False),
    _ts("created_at"),
    #: the KYC level an operator approved (0: none); assets' deposit limits depend on it
    Column("kyc_level", Integer, nullable=False, server_default=text("0")),
    UniqueConstraint("merchant_id", "external_id"),
)

addresses = Table(
    "addresses",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("merchant_id", ForeignKey("merchants.id"), nullable=False),
    Column("user_id", ForeignKey("users.id"), nullable=False, index=True),
    Column("chain", String(40), nullable=False),
    #: lower-case hex for EVM chains
    Column("address", String(128), nullable=False),
    #: child index under the merchant's xpub; never reused (NULL: attached, not derived)
    Column("derivation_index", Integer, nullable=True),
    _ts("created_at"),
    UniqueConstraint("chain", "address"),
    UniqueConstraint("user_id", "chain"),
    UniqueConstraint("merchant_id", "chain", "derivation_index"),
    #: the chain watcher picks up new addresses by creation time
    Index(None, "chain", "created_at"),
)

deposits = Table(
    "deposits",
    metadata,
    Column("id", String(40), primary_key=True),
    #: ``chain:<chain>:<tx>:<log index>`` or ``provider:<merchant>:<provider>:<id>``
    Column("identity", String(300), nullable=False, unique=True),
    Column("merchant_id", ForeignKey("merchants.id"), nullable=False),
    Column("user_id", ForeignKey("users.id"), nullable=False, index=True),
    Column("asset", String(40), nullable=False),
    Column("amount", Amount(), nullable=False),
    Column("source", String(80), nullable=False),
    Column("chain", String(40), nullable=True),
    Column("tx_hash", String(100), nullable=True),
    Column("log_index", Integer, nullable=True),
    Column("provider", String(40), nullable=True),
    Column("provider_deposit_id", String(200), nullable=True),
    Column("block_number", BigInteger, nullable=True),
    Column("block_hash", String(100), nullable=True),
    Column("status", String(20), nullable=False),
    Column("confirmations", Integer, nullable=False),
    Column("required_confirmations", Integer, nullable=False),
    Column("reason_code", String(60), nullable=False),
    Column("reason_params", JSON, nullable=False),
    Column("version", Integer, nullable=False),
    Column("credit_generation", Integer, nullable=False),
    _ts("created_at"),
    _ts("updated_at"),
    Index(None, "merchant_id", "id"),
    Index(None, "merchant_id", "status", "id"),
    # a deposit order's deposits: one user's deposits of one asset within a time window
    Index(None, "user_id", "asset", "created_at"),
    #: the alert rules and the scrape: open deposits unchanged for long, held ones (by
    #: merchant first: the rules count per merchant, and SQLite picks an index in that order)
    Index(
        "ix_deposits_open_updated",
        "merchant_id",
        "updated_at",
        postgresql_where=text(OPEN_DEPOSITS),
        sqlite_where=text(OPEN_DEPOSITS),
    ),
    Index(
        "ix_deposits_held",
        "merchant_id",
        postgresql_where=text(HELD_DEPOSITS),
        sqlite_where=text(HELD_DEPOSITS),
    ),
)

#: requests that a user pay an asset before a deadline, to their deposit address (a deposit
#: belongs to the user's latest order of its asset created at or before it was first seen) or
#: through a payment provider (the deposits it reports under the order's payment reference)
deposit_orders = Table(
    "deposit_orders",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("merchant_id", ForeignKey("merchants.id"), nullable=False),
    Column("user_id", ForeignKey("users.id"), nullable=False),
    Column("method", String(20), nullable=False),
    Column("asset", String(40), nullable=False),
    #: crypto orders: the chain and the user's deposit address there (lower-case hex)
    Column("chain", String(40), nullable=True),
    Column("address", String(128), nullable=True),
    #: base units asked for; NULL: any amount
    Column("amount", Amount(), nullable=True),
    #: card and bank transfer orders: the payment provider, its id for the payment (its
    #: callbacks' deposit id), and what the user needs to pay (checkout URL, bank details)
    Column("provider", String(40), nullable=True),
    Column("payment_reference", String(200), nullable=True),
    Column("payment", JSON, nullable=True),
    _ts("expires_at"),
    #: when the expiry sweeper decided the order (expired, or already paid); NULL until then
    _ts("expiry_checked_at", nullable=True),
    #: set with ``expiry_checked_at`` when the deadline passed without full payment
    _ts("expired_at", nullable=True),
    _ts("created_at"),
    Index(None, "merchant_id", "id"),
    # attribution: a user's orders of one asset in creation order
    Index(None, "user_id", "asset", "created_at"),
    # the expiry sweeper's due orders
    Index(None, "expiry_checked_at", "expires_at"),
    UniqueConstraint("merchant_id", "provider", "payment_reference"),
)

accounts = Table(
    "accounts",
    metadata,
    Column("id", Serial, primary_key=True, autoincrement=True),
    #: ``user:<id>:<asset>:<side>`` or ``merchant:<id>:<asset>:external``
    Column("key", String(200), nullable=False, unique=True),
    Column("merchant_id", ForeignKey("merchants.id"), nullable=False),
    Column("user_id", ForeignKey("users.id"), nullable=True, index=True),
    Column("asset", String(40), nullable=False),
    Column("side", String(20), nullable=False),
    #: cache of the sum of this account's entries, updated in the same transaction; NULL for
    #: accounts that keep none (``Account.cached``)
    Column("balance", Amount(), nullable=True),
)

ledger_entries = Table(
    "ledger_entries",
    metadata,
    Column("id", Serial, primary_key=True, autoincrement=True),
    Column("account_id", ForeignKey("accounts.id"), nullable=False, index=True),
    Column("deposit_id", ForeignKey("deposits.id"), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("generation", Integer, nullable=False),
    Column("amount", Amount(), nullable=False),
    _ts("created_at"),
    # the database itself refuses a second credit (or reversal) of the same deposit generation
    UniqueConstraint("deposit_id", "kind", "generation", "account_id"),
)

events = Table(
    "events",
    metadata,
    #: global cursor, gap-free and in commit order (allocated from ``event_counter``)
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("id", String(40), nullable=False, unique=True),
    Column("merchant_id", ForeignKey("merchants.id"), nullable=False),
    Column("type", String(40), nullable=False),
    Column("deposit_id", ForeignKey("deposits.id"), nullable=True),
    Column("version", Integer, nullable=True),
    Column("data", JSON, nullable=False),
    _ts("created_at"),
    UniqueConstraint("deposit_id", "version"),
    Index(None, "merchant_id", "seq"),
    #: the alert rules: recent reversals
    Index(
        "ix_events_reversed",
        "merchant_id",
        "created_at",
        postgresql_where=text(REVERSALS),
        sqlite_where=text(REVERSALS),
    ),
)

#: one row holding the last ``events.seq`` handed out; its row lock orders event writers
event_counter = Table(
    "event_counter",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("last_seq", BigInteger, nullable=False),
    #: retention removed every event up to this seq (and none above it)
    Column("purged_through", BigInteger, nullable=False, server_default="0"),
)

endpoints = Table(
    "endpoints",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("merchant_id", ForeignKey("merchants.id"), nullable=False, index=True),
    Column("url", String(2000), nullable=False),
    _ts("created_at"),
    _ts("disabled_at", nullable=True),
    Column("description", String(500), nullable=False, server_default=""),
    #: tried in order when the primary URL fails
    Column("fallback_urls", JSON, nullable=False, server_default=text("'[]'")),
    #: ``whsec_`` + base64; signs every delivery
    Column("secret", String(100), nullable=False, server_default=""),
    #: the secret before the last rotation, still signing beside the new one until ...
    Column("previous_secret", String(100), nullable=True),
    _ts("previous_secret_until", nullable=True),
    #: why it was disabled (by the merchant, a 410, or sustained failure)
    Column("disabled_reason", String(300), nullable=True),
    #: consecutive failed attempts, and when the current run of failures began
    Column("failure_streak", Integer, nullable=False, server_default="0"),
    _ts("failing_since", nullable=True),
    #: circuit breaker: no attempts to this endpoint before this time
    _ts("circuit_open_until", nullable=True),
    _ts("updated_at", nullable=True),
)

endpoint_subscriptions = Table(
    "endpoint_subscriptions",
    metadata,
    Column("endpoint_id", ForeignKey("endpoints.id"), primary_key=True),
    #: an event type, or ``*`` for all
    Column("event_type", String(40), primary_key=True),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", Serial, primary_key=True, autoincrement=True),
    Column("endpoint_id", ForeignKey("endpoints.id"), nullable=False),
    Column("event_seq", ForeignKey("events.seq"), nullable=False),
    #: ``pending`` (due at ``next_attempt_at``; a claimed one is leased until then),
    #: ``delivered`` or ``dead`` (out of attempts)
    Column("status", String(20), nullable=False),
    Column("attempts", Integer, nullable=False),
    _ts("next_attempt_at"),
    _ts("created_at"),
    #: the event's deposit: one deposit's events reach an endpoint in order
    Column("ordering_key", String(40), nullable=True),
    _ts("last_attempt_at", nullable=True),
    Column("last_status_code", Integer, nullable=True),
    Column("last_error", String(300), nullable=True),
    _ts("finished_at", nullable=True),
    UniqueConstraint("endpoint_id", "event_seq"),
    #: the sender's claim: the pending rows in due order
    Index(
        "ix_deliveries_pending_due",
        "next_attempt_at",
        "id",
        postgresql_where=text("status = 'pending'"),
        sqlite_where=text("status = 'pending'"),
    ),
    #: the sender's per-deposit ordering check: the pending rows only
    Index(
        "ix_deliveries_pending_order",
        "endpoint_id",
        "ordering_key",
        "event_seq",
        postgresql_where=text("status = 'pending'"),
        sqlite_where=text("status = 'pending'"),
    ),
    #: the alert rules and the scrape: deliveries that gave up
    Index(
        "ix_deliveries_dead",
        "finished_at",
        postgresql_where=text(DEAD_DELIVERIES),
        sqlite_where=text(DEAD_DELIVERIES),
    ),
)

#: every attempt to deliver, kept for operators (and expired by retention)
delivery_attempts = Table(
    "delivery_attempts",
    metadata,
    Column("id", Serial, primary_key=True, autoincrement=True),
    Column("delivery_id", ForeignKey("deliveries.id"), nullable=False, index=True),
    Column("attempt", Integer, nullable=False),
    Column("url", String(2000), nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("latency_ms", Integer, nullable=False),
    #: the start of the response body, bounded
    Column("response_excerpt", String(500), nullable=True),
    #: what went wrong when there was no usable answer: timeout, refused, ssrf_blocked, ...
    Column("error_class", String(60), nullable=True),
    Column("error", String(300), nullable=True),
    _ts("created_at"),
    #: the alert rules: recent attempts
    Index("ix_delivery_attempts_created_at", "created_at"),
)

#: the watcher's view of each chain's recent canonical blocks: the highest row is its cursor
#: (every block up to it has been scanned); rows within the reorg window let it find the fork
#: point after a restart; older rows are pruned
chain_blocks = Table(
    "chain_blocks",
    metadata,
    Column("chain", String(40), primary_key=True),
    Column("number", BigInteger, primary_key=True, autoincrement=False),
    Column("hash", String(66), nullable=False),
    Column("parent_hash", String(66), nullable=False),
)

#: every request to ``/v1/callbacks/<provider>``, stored before anything else is done with it:
#: accepted, rejected (with the reason) or a replay of an accepted one — kept for audit
inbound_callbacks = Table(
    "inbound_callbacks",
    metadata,
    Column("id", String(40), primary_key=True),
    #: the provider named in the URL (cut to 60 characters: it may be anything)
    Column("provider", String(60), nullable=False),
    #: the merchant the provider is configured for; NULL when the provider is unknown
    Column("merchant_id", String(40), nullable=True),
    _ts("received_at"),
    Column("source_ip", String(64), nullable=False),
    #: the request headers, minus credentials (Authorization, Cookie)
    Column("headers", JSON, nullable=False),
    #: the raw body, byte for byte (cut to the provider's limit when it was larger)
    Column("body", LargeBinary, nullable=False),
    Column("body_bytes", Integer, nullable=False),
    #: ``accepted``, ``rejected`` or ``replayed`` (an accepted event id seen again)
    Column("outcome", String(20), nullable=False),
    #: why it was rejected: a stable code and one readable line
    Column("rejection_code", String(40), nullable=True),
    Column("rejection", String(300), nullable=True),
    #: the provider's id for this message (accepted and replayed ones)
    Column("event_id", String(200), nullable=True),
    #: a replayed callback's accepted original
    Column("replay_of", String(40), nullable=True),
    #: what the accepted callback claims (``ProviderClaim.as_dict``)
    Column("claim", JSON, nullable=True),
    #: processing of an accepted callback: when it was recorded, the deposit, what happened
    _ts("processed_at", nullable=True),
    Column("deposit_id", String(40), nullable=True),
    Column("result", String(60), nullable=True),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("last_error", String(300), nullable=True),
    #: one accepted callback per provider event: a replay is stored as ``replayed``
    Index(
        "uq_inbound_callbacks_event",
        "provider",
        "event_id",
        unique=True,
        postgresql_where=text("outcome = 'accepted'"),
        sqlite_where=text("outcome = 'accepted'"),
    ),
    #: the sweep's accepted callbacks not yet processed
    Index(
        "ix_inbound_callbacks_unprocessed",
        "received_at",
        postgresql_where=text("outcome = 'accepted' AND processed_at IS NULL"),
        sqlite_where=text("outcome = 'accepted' AND processed_at IS NULL"),
    ),
    Index(None, "merchant_id", "received_at"),
    #: the alert rules: recent callbacks of every provider
    Index("ix_inbound_callbacks_received_at", "received_at"),
)

#: end users who registered themselves (email and password), each one a merchant's user
end_users = Table(
    "end_users",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("merchant_id", ForeignKey("merchants.id"), nullable=False),
    #: the merchant's user this account is (its external_id is this row's id)
    Column("user_id", ForeignKey("users.id"), nullable=False, unique=True),
    #: lower-cased; one account per email per merchant
    Column("email", String(254), nullable=False),
    #: argon2id, in the PHC string format (parameters and salt included)
    Column("password_hash", String(200), nullable=False),
    _ts("created_at"),
    _ts("email_verified_at", nullable=True),
    #: failed logins since the last success; at the limit the account is locked for a while
    Column("failed_logins", Integer, nullable=False, server_default=text("0")),
    _ts("locked_until", nullable=True),
    UniqueConstraint("merchant_id", "email"),
)

#: one-time tokens sent by email (verification); only their SHA-256 is stored
email_tokens = Table(
    "email_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("end_user_id", ForeignKey("end_users.id"), nullable=False, index=True),
    Column("purpose", String(20), nullable=False),
    _ts("created_at"),
    _ts("expires_at"),
    _ts("used_at", nullable=True),
)

#: login sessions; the bearer token is shown once, only its SHA-256 is stored
end_user_sessions = Table(
    "end_user_sessions",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("end_user_id", ForeignKey("end_users.id"), nullable=False, index=True),
    _ts("created_at"),
    _ts("expires_at"),
    _ts("revoked_at", nullable=True),
)

#: KYC submissions: the personal fields sealed (AES-256-GCM), the decision in the clear
kyc_submissions = Table(
    "kyc_submissions",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("merchant_id", ForeignKey("merchants.id"), nullable=False),
    Column("end_user_id", ForeignKey("end_users.id"), nullable=False, index=True),
    #: the level the user asks for
    Column("level", Integer, nullable=False),
    #: nonce + ciphertext + tag of the personal fields as JSON, bound to this row's id
    Column("sealed", LargeBinary, nullable=False),
    #: ``pending``, ``approved`` or ``rejected``
    Column("status", String(20), nullable=False),
    _ts("submitted_at"),
    _ts("decided_at", nullable=True),
    #: the level granted on approval (the operator may grant less than asked)
    Column("granted_level", Integer, nullable=True),
    #: why it was rejected, shown to the user
    Column("reason", String(500), nullable=True),
    Index(None, "merchant_id", "status", "submitted_at"),
    #: one submission of a user waits for review at a time
    Index(
        "uq_kyc_submissions_pending",
        "end_user_id",
        unique=True,
        postgresql_where=text("status = 'pending'"),
        sqlite_where=text("status = 'pending'"),
    ),
)

#: each user's recent deposits of an asset with anomaly detection on (``domain.anomaly``)
anomaly_histories = Table(
    "anomaly_histories",
    metadata,
    Column("user_id", ForeignKey("users.id"), primary_key=True),
    Column("asset", String(40), primary_key=True),
    #: ``UserHistory.to_json()``: bounded, the last 50 deposits
    Column("history", JSON, nullable=False),
    _ts("updated_at"),
)

#: each asset's recent first deposits, the yardstick for a new user's first one
anomaly_first_deposits = Table(
    "anomaly_first_deposits",
    metadata,
    Column("asset", String(40), primary_key=True),
    #: ``FirstDeposits.to_json()``
    Column("data", JSON, nullable=False),
    _ts("updated_at"),
)

#: operational alerts: one row per incident, open while its condition holds
alerts = Table(
    "alerts",
    metadata,
    Column("id", Serial, primary_key=True, autoincrement=True),
    #: the rule and what it is about (``endpoint_disabled:ep_…``): one open incident per key
    Column("key", String(300), nullable=False),
    Column("name", String(60), nullable=False),
    Column("subject", String(200), nullable=False),
    #: the merchant it concerns, if one does
    Column("merchant_id", String(40), nullable=True),
    Column("summary", String(500), nullable=False),
    Column("details", JSON, nullable=False),
    _ts("fired_at"),
    _ts("resolved_at", nullable=True),
    #: when the sinks were told (None: not yet, or they failed: told again next round)
    _ts("fire_notified_at", nullable=True),
    _ts("resolve_notified_at", nullable=True),
    Index(
        "uq_alerts_open_key",
        "key",
        unique=True,
        postgresql_where=text("resolved_at IS NULL"),
        sqlite_where=text("resolved_at IS NULL"),
    ),
    Index(None, "fired_at"),
)

#: people who sign in to the dashboard, each acting for one merchant
operators = Table(
    "operators",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("merchant_id", ForeignKey("merchants.id"), nullable=False, index=True),
    #: lower-cased; it names the operator on the one login form, so it is unique service-wide
    Column("email", String(254), nullable=False, unique=True),
    #: argon2id, in the PHC string format (parameters and salt included)
    Column("password_hash", String(200), nullable=False),
    _ts("created_at"),
)

#: dashboard sessions; the cookie carries the session id, only its SHA-256 is stored
operator_sessions = Table(
    "operator_sessions",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("operator_id", ForeignKey("operators.id"), nullable=False, index=True),
    _ts("created_at"),
    _ts("expires_at"),
    _ts("revoked_at", nullable=True),
)

#: security and operator actions, hash-chained (``domain.audit``): appended in the
#: transaction of the action itself, never changed or expired
audit_log = Table(
    "audit_log",
    metadata,
    #: 1, 2, 3, ... without gaps, assigned in the appending transaction
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    _ts("at"),
    Column("merchant_id", String(40), nullable=True),
    #: ``api_key:<key id>``, ``cli`` or ``worker``
    Column("actor", String(80), nullable=False),
    Column("action", String(60), nullable=False),
    #: the id acted on
    Column("subject", String(200), nullable=False),
    Column("details", JSON, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index(None, "merchant_id", "seq"),
)

#: one row: the last record appended to ``audit_log``. Its row lock orders appenders, so the
#: chain never forks; verification compares it with the log's last row (a deleted tail shows)
audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
)
