"""Configuration: one TOML file plus ``DEPOSITD_…`` environment overrides, checked at start-up."""

from __future__ import annotations

import ipaddress
import os
import re
import ssl
import tomllib
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from depositd.domain.anomaly import AnomalyPolicy
from depositd.domain.assets import Asset, AssetBook, ConfirmationTier
from depositd.domain.deposits import ProviderStatus
from depositd.domain.money import parse_amount
from depositd.errors import ConfigError, InvalidAmount
from depositd.mail import EmailSender, OutboxSender, SmtpSender
from depositd.providers.schemes import SchemeSettings, SignatureScheme
from depositd.sealing import Sealer
from depositd.signer import Signer

ENV_PREFIX = "DEPOSITD_"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseConfig(_Section):
    #: SQLAlchemy URL: ``sqlite:///var/depositd.db`` or ``postgresql://user@host/db``
    url: str = "sqlite:///var/depositd.db"
    #: a file holding the URL (for secrets mounted as files); wins over ``url``
    url_file: Path | None = None

    @field_validator("url")
    @classmethod
    def _known_database(cls, url: str) -> str:
        try:
            backend = make_url(url).get_backend_name()
        except (ArgumentError, ValueError):
            raise ValueError("not a database URL") from None
        if backend not in ("sqlite", "postgresql"):
            raise ValueError(f"use sqlite or postgresql, not {backend}")
        return url


def _check_networks(networks: list[str]) -> list[str]:
    for network in networks:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise ValueError(f"{network!r} is not an IP address or network") from None
    return networks


class ServerConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    #: requests with a larger body are refused with 413
    max_body_bytes: int = Field(65536, ge=1024, le=16 * 1024 * 1024)
    #: reverse proxies (addresses or CIDR networks) whose ``X-Forwarded-For`` is believed:
    #: a request from one of them comes from the last address in that header not itself a
    #: trusted proxy. Empty: the peer address is the source, whatever the headers say.
    trusted_proxies: list[str] = []
    #: processes serving the API on one socket (PostgreSQL only); the first also runs the
    #: background workers
    processes: int = Field(1, ge=1, le=64)
    #: /readyz answers 503 while a chain's watcher is more blocks than this behind its node
    #: (or cannot reach it)
    ready_max_lag_blocks: int = Field(100, ge=0, le=1_000_000)
    #: PEM certificate chain and private key: with both, ``depositd serve`` speaks HTTPS itself
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None

    _proxies = field_validator("trusted_proxies")(_check_networks)

    def check_tls(self) -> None:
        """``ConfigError`` unless TLS is off, or both files load as a certificate and its key."""
        if self.tls_cert_file is None and self.tls_key_file is None:
            return
        if self.tls_cert_file is None or self.tls_key_file is None:
            raise ConfigError("server.tls_cert_file and server.tls_key_file: set both or neither")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(self.tls_cert_file, self.tls_key_file)
        except OSError as exc:  # ssl.SSLError too
            reason = exc.strerror or getattr(exc, "reason", None) or str(exc)
            raise ConfigError(
                f"server.tls_cert_file / tls_key_file: cannot load them ({reason})"
            ) from None


class ChainConfig(_Section):
    chain_id: int = Field(ge=1)
    block_time_seconds: float = Field(12.0, gt=0)
    #: the node's JSON-RPC URL; without one, nothing watches this chain
    rpc_url: str | None = Field(None, pattern=r"^https?://")
    #: the node's WebSocket URL: ``newHeads`` wakes the watcher at once (else it polls)
    ws_url: str | None = Field(None, pattern=r"^wss?://")
    #: how often to ask for the head when no ``newHeads`` notification comes
    poll_interval_seconds: float = Field(1.0, gt=0, le=600)
    #: first block to scan on a fresh database: a number, or "latest" (the head at start)
    start_block: int | Literal["latest"] = "latest"
    #: recent block hashes kept to find the fork point of a reorg; deeper reorgs cannot be
    #: undone, so keep it above every asset's required confirmations
    reorg_window: int = Field(128, ge=2, le=10_000)
    #: most blocks scanned in one round (one database transaction)
    max_blocks_per_round: int = Field(200, ge=1, le=10_000)
    #: calls per JSON-RPC batch request, and batch requests in flight at once
    rpc_batch_size: int = Field(50, ge=1, le=1000)
    rpc_concurrency: int = Field(4, ge=1, le=64)
    rpc_timeout_seconds: float = Field(10.0, gt=0, le=300)
    #: how native coin sent to our addresses is found: "receipts" reads each block's receipts
    #: (eth_getBlockReceipts) and then only the transactions to our addresses; "blocks" reads
    #: every transaction of every block (for nodes without eth_getBlockReceipts: a watcher
    #: that is told the method does not exist switches by itself)
    native_reads: Literal["receipts", "blocks"] = "receipts"


class DeliveryConfig(_Section):
    """Outbound webhooks: how the sender posts, and where it may post to (DESIGN §5)."""

    #: plain ``http://`` endpoint URLs are refused unless this is true (dev, tests)
    allow_http: bool = False
    #: addresses or networks (CIDR) endpoints may reach although they are not public, for
    #: example ``["127.0.0.1/32", "::1/128"]`` in dev and tests; everything else non-public
    #: (loopback, private, link-local, metadata, ...) is refused at connect time
    allow_networks: list[str] = []

    _networks = field_validator("allow_networks")(_check_networks)

    #: a PEM file of extra certificate authorities to trust (certificates are always verified)
    ca_bundle: Path | None = None
    connect_timeout_seconds: float = Field(5.0, gt=0, le=60)
    total_timeout_seconds: float = Field(15.0, gt=0, le=300)
    #: deliveries claimed per batch, and requests in flight at once
    batch_size: int = Field(200, ge=1, le=10_000)
    concurrency: int = Field(64, ge=1, le=1024)
    #: how long a claimed delivery stays leased to its sender before another may take it
    lease_seconds: float = Field(60.0, ge=5, le=3600)
    #: how long an endpoint's old secret keeps signing beside the new one after a rotation
    rotation_grace_hours: float = Field(24.0, ge=0, le=24 * 30)
    #: consecutive failures that open an endpoint's circuit (no attempts for a while)
    circuit_failures: int = Field(5, ge=1, le=1000)
    circuit_open_seconds: float = Field(30.0, gt=0, le=3600)
    #: an endpoint failing without a single success for this long is disabled
    disable_after_hours: float = Field(72.0, gt=0, le=24 * 30)
    #: most response bytes kept with each attempt
    response_excerpt_bytes: int = Field(512, ge=0, le=65536)


class TierConfig(_Section):
    #: deposits of at least this amount (a decimal string) ...
    min_amount: str
    #: ... need this many confirmations
    confirmations: int = Field(ge=0)


class AnomalyConfig(_Section):
    """Anomaly detection for an asset (``domain.anomaly``): unusual credits are held."""

    #: robust z-score of an amount against the user's own history at which it is held
    amount_z: float = Field(3.0, ge=1.0, le=20.0)
    #: structuring: several deposits each just under this amount; default: the user's KYC
    #: limit for the asset
    threshold: str | None = None
    #: a user's first deposit of at least this is held, whatever other newcomers sent
    first_over: str | None = None


class AssetConfig(_Section):
    code: str = Field(pattern=r"^[A-Za-z0-9._-]{1,40}$")
    #: the chain it moves on; none for a fiat currency, paid through a payment provider
    #: (card, bank transfer) with amounts in minor units (``decimals = 2``: cents)
    chain: str | None = None
    symbol: str
    decimals: int = Field(ge=0, le=77)
    #: token contract (0x…), or none for the chain's native coin
    contract: str | None = Field(None, pattern=r"^0x[0-9a-fA-F]{40}$")
    min_deposit: str
    #: required for an on-chain asset; a fiat payment is final when its provider says so
    confirmations: int | None = Field(None, ge=0)
    tiers: list[TierConfig] = []
    #: KYC deposit limits: the most credited to one user within 24 hours, by KYC level
    #: (``{ 0 = "1000", 1 = "10000", 2 = "unlimited" }``); a deposit that would pass its
    #: user's limit is held for review. A level not listed uses the highest one below it
    kyc_limits: dict[Annotated[int, Field(ge=0, le=100)], str] = {}
    #: hold credits unlike the user's habits for review (``[assets.anomaly]``, or
    #: ``anomaly = {}`` for the defaults)
    anomaly: AnomalyConfig | None = None

    def anomaly_policy(self) -> tuple[AnomalyPolicy | None, int | None]:
        """The detector's policy and the structuring threshold, in base units."""
        if self.anomaly is None:
            return None, None
        cfg = self.anomaly

        def units(amount: str | None) -> int | None:
            return None if amount is None else parse_amount(amount, self.decimals)

        policy = AnomalyPolicy(amount_z=cfg.amount_z, first_absolute=units(cfg.first_over))
        return policy, units(cfg.threshold)


class AckConfig(_Section):
    """The answer a provider expects once its callback is safely stored."""

    status: int = Field(200, ge=200, le=299)
    body: str = '{"ok":true}'
    content_type: str = "application/json"


class PayloadMapping(_Section):
    """Where a provider's callback body keeps each fact: JSON pointers (RFC 6901, ``/a/b``)."""

    #: the provider's id for this message; without one, the signature scheme's message id
    #: (Standard Webhooks' ``webhook-id``), else the deposit id and status together
    event_id: str | None = None
    #: the provider's id for the deposit (the same across its status updates)
    deposit_id: str
    #: your id for the user (``external_id``)
    user: str
    asset: str
    amount: str
    status: str
    confirmations: str | None = None
    #: the transaction and the receiving address, which our node checks before crediting a
    #: deposit on a chain we watch (without an address: the user's deposit address there)
    tx_hash: str | None = None
    address: str | None = None
    #: why a failed payment failed (a decline code like ``insufficient_funds``): the user's hint
    reason: str | None = None
    #: "decimal": amounts in the asset's units ("12.5"); "base": integers in base units
    amount_unit: Literal["decimal", "base"] = "decimal"
    #: the provider's asset names mapped to our asset codes (unlisted names are used as is)
    assets: dict[str, str] = {}
    #: the provider's status values mapped to ours; a value not listed is refused
    statuses: dict[str, ProviderStatus]

    @field_validator("event_id", "deposit_id", "user", "asset", "amount", "status",
                     "confirmations", "tx_hash", "address", "reason")  # fmt: skip
    @classmethod
    def _pointer(cls, pointer: str | None) -> str | None:
        if pointer is not None and not pointer.startswith("/"):
            raise ValueError(f"{pointer!r} is not a JSON pointer (it starts with '/')")
        return pointer


class StatusApiConfig(_Section):
    """A provider's API for the status of one deposit, asked when its callbacks are overdue."""

    #: ``GET`` this URL, ``{deposit_id}`` replaced by the provider's deposit id; the answer is
    #: read with the provider's ``mapping``, like a callback's body
    url: str = Field(pattern=r"^https?://.*\{deposit_id\}")
    #: header carrying the token (``DEPOSITD_PROVIDERS__<NAME>__STATUS__TOKEN``), if any;
    #: ``authorization`` sends ``Bearer <token>``
    token_header: str | None = None
    token: str | None = None
    timeout_seconds: float = Field(10.0, gt=0, le=120)


class PaymentsApiConfig(_Section):
    """A payment provider's API for starting card and bank transfer payments.

    depositd POSTs ``{"reference", "method", "amount", "currency", "customer", "metadata",
    "expires_at"}`` (``amount`` in minor units, our order id as ``reference`` and as the
    ``Idempotency-Key`` header) and reads the provider's payment id — the deposit id its
    callbacks will carry — and what the user needs from the answer, by JSON pointers.
    """

    url: str = Field(pattern=r"^https?://")
    #: the methods this provider takes for its merchant
    methods: list[Literal["card", "bank_transfer"]] = Field(min_length=1)
    #: header carrying the token (``DEPOSITD_PROVIDERS__<NAME>__PAYMENTS__TOKEN``), if any;
    #: ``authorization`` sends ``Bearer <token>``
    token_header: str | None = None
    token: str | None = None
    timeout_seconds: float = Field(10.0, gt=0, le=120)
    #: where the answer keeps the payment's id, the card checkout page, the bank details
    reference: str = "/id"
    redirect_url: str | None = "/redirect_url"
    instructions: str | None = "/instructions"


class ProviderConfig(_Section):
    """An upstream provider that posts deposit callbacks to ``/v1/callbacks/<name>``."""

    #: the merchant whose users the provider's deposits belong to
    merchant: str = Field(min_length=1)
    scheme: SignatureScheme
    #: the shared secrets, several while one is rotated: only from the environment
    #: (``DEPOSITD_PROVIDERS__<NAME>__SECRETS``, comma-separated) or ``secrets_file``
    secrets: list[str] = []
    #: a file with one secret per line; wins over ``secrets``
    secrets_file: Path | None = None
    #: addresses or CIDR networks callbacks may come from; empty: anywhere
    allowed_ips: list[str] = []
    #: how far a signed timestamp may be from our clock
    tolerance_seconds: int = Field(300, ge=1, le=86_400)
    #: hmac_sha256 / hmac_sha512: the header with the signature, and its encoding
    signature_header: str = "x-signature"
    signature_encoding: Literal["hex", "base64"] = "hex"
    #: md5_sign: the body field with the signature
    sign_field: str = "sign"
    #: larger callbacks are refused (and kept, cut to this size, for audit)
    max_body_bytes: int = Field(65536, ge=256, le=16 * 1024 * 1024)
    ack: AckConfig = AckConfig()
    mapping: PayloadMapping
    #: where to ask for a deposit's status when its callbacks are overdue (reconciliation)
    status: StatusApiConfig | None = None
    #: where to start card and bank transfer payments (``method`` of a deposit order)
    payments: PaymentsApiConfig | None = None

    _ips = field_validator("allowed_ips")(_check_networks)

    @field_validator("secrets", mode="before")
    @classmethod
    def _split(cls, secrets: Any) -> Any:
        if isinstance(secrets, str):  # from the environment
            return [part.strip() for part in secrets.split(",") if part.strip()]
        return secrets

    def shared_secrets(self, name: str) -> tuple[str, ...]:
        if self.secrets_file is not None:
            try:
                lines = self.secrets_file.read_text().splitlines()
            except OSError as exc:
                raise ConfigError(
                    f"providers.{name}.secrets_file: cannot read it ({exc.strerror})"
                ) from exc
            secrets = tuple(line.strip() for line in lines if line.strip())
        else:
            secrets = tuple(self.secrets)
        if not secrets:
            raise ConfigError(
                f"providers.{name}: no secret; set DEPOSITD_PROVIDERS__{name.upper()}__SECRETS"
                " or secrets_file"
            )
        return secrets

    def signature(self, name: str) -> SchemeSettings:
        """How this provider's callbacks are verified (``ConfigError`` for an unusable secret)."""
        try:
            return SchemeSettings(
                scheme=self.scheme,
                secrets=self.shared_secrets(name),
                tolerance_seconds=self.tolerance_seconds,
                header=self.signature_header.lower(),
                encoding=self.signature_encoding,
                sign_field=self.sign_field,
            )
        except ValueError as exc:  # its message names the secret by position, never its value
            raise ConfigError(f"providers.{name}.secrets: {exc}") from None


class CallbacksConfig(_Section):
    """Processing of stored inbound callbacks."""

    #: record a callback's deposit right after acknowledging it; false leaves every callback
    #: to the workers' sweep (API replicas that only ingest)
    process_inline: bool = True
    #: how often the workers look for stored callbacks not yet processed, and how old one
    #: must be before they take it (younger ones are still being processed inline)
    sweep_interval_seconds: float = Field(5.0, gt=0, le=3600)
    sweep_after_seconds: float = Field(10.0, ge=0, le=3600)


class ReconcileConfig(_Section):
    """Missed-callback recovery (补单): what counts as overdue, and how often to look."""

    #: provider deposits still pending or confirming this long after their last change are
    #: asked about at the provider; stored callbacks unprocessed this long are processed
    sla_seconds: float = Field(600.0, ge=0, le=30 * 86_400)
    interval_seconds: float = Field(300.0, gt=0, le=86_400)
    #: how far back the report compares what providers claimed with what was credited
    window_days: float = Field(7.0, gt=0, le=366)


class AlertsConfig(_Section):
    """Alerts evaluated in the service; each fires once per incident and resolves."""

    enabled: bool = True
    interval_seconds: float = Field(15.0, gt=0, le=3600)
    #: a Slack-compatible incoming webhook (``{"text": …}``), reached through the same
    #: SSRF-guarded client as webhooks (``[delivery]`` allow_http / allow_networks apply)
    webhook_url: str | None = Field(None, pattern=r"^https?://")
    #: the window the rates below are measured over
    window_minutes: float = Field(5.0, gt=0, le=24 * 60)
    #: webhook deliveries: share of failed attempts to one endpoint, with at least so many
    delivery_failure_rate: float = Field(0.5, gt=0, le=1)
    delivery_min_attempts: int = Field(10, ge=1)
    #: inbound callbacks: share of one provider's callbacks rejected, with at least so many
    callback_rejection_rate: float = Field(0.2, gt=0, le=1)
    callback_min_count: int = Field(10, ge=1)
    #: dead deliveries this recent keep their endpoint's dead-letter alert open
    dead_letter_hours: float = Field(24.0, gt=0, le=24 * 30)
    #: a watcher further behind than this, or unable to reach its node for this long
    watcher_max_lag_blocks: int = Field(50, ge=0)
    node_down_seconds: float = Field(60.0, ge=0, le=86_400)
    #: deposits pending or confirming without a change for this long are stuck
    stuck_minutes: float = Field(30.0, gt=0, le=30 * 24 * 60)
    #: a reversal after a reorg keeps its alert open this long
    reversal_minutes: float = Field(60.0, gt=0, le=30 * 24 * 60)


class RetentionConfig(_Section):
    """How long raw records are kept (DESIGN §7). The ledger, deposits and the audit log are
    kept for good: no setting here reaches them."""

    #: purge on the workers' schedule (``depositd purge`` works either way)
    enabled: bool = True
    #: stored inbound callbacks received longer ago, once processed (or rejected, or a replay);
    #: longer than ``reconcile.window_days``, which compares their claims with the credits
    inbound_callbacks_days: int = Field(90, ge=1, le=36_500)
    #: the log of each delivery attempt
    delivery_attempts_days: int = Field(30, ge=1, le=36_500)
    #: events (with their finished deliveries), oldest first, up to the first one a pending
    #: delivery still needs
    events_days: int = Field(365, ge=1, le=36_500)
    interval_seconds: float = Field(3600.0, gt=0, le=7 * 86_400)
    #: rows of each table removed per transaction
    batch_size: int = Field(1000, ge=1, le=100_000)


class EndUsersConfig(_Section):
    """End users' own accounts: registration, email verification, login sessions, KYC."""

    session_hours: float = Field(24.0, gt=0, le=24 * 90)
    verify_token_hours: float = Field(24.0, gt=0, le=24 * 30)
    #: failed logins in a row that lock an account, and for how long
    max_failed_logins: int = Field(5, ge=1, le=100)
    lockout_minutes: float = Field(15.0, gt=0, le=24 * 60)
    #: requests to /v1/auth/* one source address may make per minute (per process)
    auth_requests_per_minute: int = Field(20, ge=1, le=1_000_000)
    #: a page of yours the verification email links to; ``{token}`` is replaced
    verify_url: str | None = Field(None, pattern=r"^https?://.*\{token\}")
    #: the key KYC fields are sealed with (base64, 32 bytes): from the environment
    #: (``DEPOSITD_END_USERS__KYC_KEY``) or a file; without one KYC submissions are refused
    kyc_key: str | None = None
    kyc_key_file: Path | None = None

    def sealer(self) -> Sealer | None:
        if self.kyc_key_file is not None:
            return Sealer.from_file(self.kyc_key_file, "end_users.kyc_key_file")
        if self.kyc_key is not None:
            return Sealer.from_text(self.kyc_key, "end_users.kyc_key")
        return None


class DashboardConfig(_Section):
    """The operators' dashboard and end users' order status pages."""

    #: signs dashboard session cookies and status page links (at least 32 random
    #: characters): from the environment (``DEPOSITD_DASHBOARD__SECRET_KEY``) or a file;
    #: without one the dashboard and the status pages are off
    secret_key: str | None = None
    secret_key_file: Path | None = None
    #: how long an operator stays logged in
    session_hours: float = Field(12.0, gt=0, le=24 * 30)
    #: where users reach this service, e.g. ``https://pay.example.com``: makes orders'
    #: ``status_url`` absolute (else it is a path on the API's own address)
    public_url: str | None = Field(None, pattern=r"^https?://[^/]+(/.*)?$")

    def signer(self) -> Signer | None:
        if self.secret_key_file is not None:
            return Signer.from_file(self.secret_key_file, "dashboard.secret_key_file")
        if self.secret_key is not None:
            return Signer.from_text(self.secret_key, "dashboard.secret_key")
        return None


class EmailConfig(_Section):
    """How email reaches end users: ``outbox`` writes .eml files (dev), ``smtp`` sends them."""

    sender: Literal["outbox", "smtp"] = "outbox"
    from_address: str = "depositd@localhost"
    outbox_dir: Path = Path("var/outbox")
    smtp_host: str | None = None
    smtp_port: int = Field(587, ge=1, le=65535)
    smtp_security: Literal["starttls", "tls", "none"] = "starttls"
    smtp_username: str | None = None
    #: from the environment only: ``DEPOSITD_EMAIL__SMTP_PASSWORD``
    smtp_password: str | None = None
    timeout_seconds: float = Field(10.0, gt=0, le=120)

    def email_sender(self) -> EmailSender:
        if self.sender == "outbox":
            return OutboxSender(self.outbox_dir)
        if self.smtp_host is None:
            raise ConfigError("email.smtp_host: required when email.sender is smtp")
        return SmtpSender(
            self.smtp_host,
            self.smtp_port,
            security=self.smtp_security,
            username=self.smtp_username,
            password=self.smtp_password,
            timeout_seconds=self.timeout_seconds,
        )


class Config(_Section):
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    database: DatabaseConfig = DatabaseConfig()
    server: ServerConfig = ServerConfig()
    delivery: DeliveryConfig = DeliveryConfig()
    chains: dict[str, ChainConfig] = {}
    assets: list[AssetConfig] = []
    providers: dict[str, ProviderConfig] = {}
    callbacks: CallbacksConfig = CallbacksConfig()
    reconcile: ReconcileConfig = ReconcileConfig()
    retention: RetentionConfig = RetentionConfig()
    end_users: EndUsersConfig = EndUsersConfig()
    email: EmailConfig = EmailConfig()
    alerts: AlertsConfig = AlertsConfig()
    dashboard: DashboardConfig = DashboardConfig()

    def database_url(self) -> str:
        if self.database.url_file is not None:
            try:
                return self.database.url_file.read_text().strip()
            except OSError as exc:
                raise ConfigError(f"database.url_file: cannot read it ({exc.strerror})") from exc
        return self.database.url

    def asset_book(self) -> AssetBook:
        """The configured assets, with amounts turned into base units."""
        book = []
        for index, cfg in enumerate(self.assets):
            where = f"assets[{index}] ({cfg.code})"
            chain = None if cfg.chain is None else self.chains.get(cfg.chain)
            if cfg.chain is None:
                if cfg.contract is not None or cfg.tiers or cfg.confirmations:
                    raise ConfigError(
                        f"{where}: a fiat asset (no chain) has no contract, confirmations or tiers"
                    )
            elif chain is None:
                raise ConfigError(f"{where}.chain: no [chains.{cfg.chain}] section")
            elif cfg.confirmations is None:
                raise ConfigError(f"{where}.confirmations: required for an on-chain asset")
            try:
                minimum = parse_amount(cfg.min_deposit, cfg.decimals)
                tiers = tuple(
                    ConfirmationTier(parse_amount(t.min_amount, cfg.decimals), t.confirmations)
                    for t in cfg.tiers
                )
                kyc_limits = tuple(
                    (level, None if limit == "unlimited" else parse_amount(limit, cfg.decimals))
                    for level, limit in sorted(cfg.kyc_limits.items())
                )
                anomaly, anomaly_threshold = cfg.anomaly_policy()
            except InvalidAmount as exc:
                raise ConfigError(f"{where}: {exc}") from None
            book.append(
                Asset(
                    code=cfg.code,
                    chain=cfg.chain,
                    symbol=cfg.symbol,
                    decimals=cfg.decimals,
                    min_deposit=minimum,
                    confirmations=cfg.confirmations or 0,
                    contract=cfg.contract.lower() if cfg.contract else None,
                    block_time_seconds=chain.block_time_seconds if chain else 0.0,
                    tiers=tiers,
                    kyc_limits=kyc_limits,
                    anomaly=anomaly,
                    anomaly_threshold=anomaly_threshold,
                )
            )
        for cfg in self.assets:
            if cfg.chain is None:
                continue
            chain = self.chains[cfg.chain]
            deepest = max([cfg.confirmations or 0, *(t.confirmations for t in cfg.tiers)])
            if chain.rpc_url is not None and deepest >= chain.reorg_window:
                raise ConfigError(
                    f"chains.{cfg.chain}.reorg_window: {chain.reorg_window} blocks cannot undo a"
                    f" reorg of a credited {cfg.code} deposit ({deepest} confirmations);"
                    " make it larger"
                )
        codes = [asset.code for asset in book]
        if len(set(codes)) != len(codes):
            raise ConfigError("assets: asset codes must be unique")
        return AssetBook(book)


def load_config(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read the TOML file (or the embedded defaults), apply the environment, validate.

    Raises ``ConfigError`` with one line naming the offending key.
    """
    environ = os.environ if environ is None else environ
    if path is None and environ.get(f"{ENV_PREFIX}CONFIG"):
        path = Path(environ[f"{ENV_PREFIX}CONFIG"])
    if path is None:
        text = resources.files("depositd").joinpath("defaults.toml").read_text()
        source = "embedded defaults"
    else:
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"config file {path}: {exc.strerror}") from None
        source = str(path)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {source}: {exc}") from None
    _refuse_secrets_in_file(raw, source)
    for name, value in environ.items():
        if name.startswith(ENV_PREFIX) and name != f"{ENV_PREFIX}CONFIG":
            _override(raw, name, value)
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_one_line(exc)) from None
    book = config.asset_book()  # amounts, chains and files are checked now, not on first use
    config.server.check_tls()
    config.end_users.sealer()  # a key that is set must be usable
    config.dashboard.signer()
    config.email.email_sender()
    if config.retention.inbound_callbacks_days <= config.reconcile.window_days:
        raise ConfigError(
            f"retention.inbound_callbacks_days: keep callbacks longer than"
            f" reconcile.window_days ({config.reconcile.window_days:g}), whose report reads them"
        )
    for name, provider in config.providers.items():
        if not re.fullmatch(r"[a-z0-9_]{1,40}", name):
            raise ConfigError(f"providers.{name}: use 1-40 of a-z, 0-9 and _ in the name")
        provider.signature(name)
        for theirs, ours in provider.mapping.assets.items():
            if ours not in book:
                raise ConfigError(f"providers.{name}.mapping.assets.{theirs}: no asset {ours!r}")
        if provider.payments is not None:
            for method in provider.payments.methods:
                others = [
                    other
                    for other, cfg in config.providers.items()
                    if other < name
                    and cfg.merchant == provider.merchant
                    and cfg.payments is not None
                    and method in cfg.payments.methods
                ]
                if others:
                    raise ConfigError(
                        f"providers.{name}.payments.methods: {others[0]} already takes {method}"
                        " payments for this merchant; one provider per method"
                    )
    if config.database.url_file is not None:
        try:
            DatabaseConfig(url=config.database_url())
        except ValidationError:
            raise ConfigError(
                "database.url_file: the file does not hold a sqlite or postgresql URL"
            ) from None
    return config


def _refuse_secrets_in_file(raw: Mapping[str, Any], source: str) -> None:
    providers = raw.get("providers")
    for name, provider in providers.items() if isinstance(providers, dict) else ():
        if isinstance(provider, dict) and provider.get("secrets"):
            raise ConfigError(
                f"providers.{name}.secrets: secrets do not belong in the config file ({source});"
                f" set DEPOSITD_PROVIDERS__{name.upper()}__SECRETS or secrets_file"
            )
        for api in ("status", "payments"):
            section = provider.get(api) if isinstance(provider, dict) else None
            if isinstance(section, dict) and section.get("token"):
                raise ConfigError(
                    f"providers.{name}.{api}.token: secrets do not belong in the config file"
                    f" ({source}); set DEPOSITD_PROVIDERS__{name.upper()}__{api.upper()}__TOKEN"
                )
    for section, key, variable in (
        ("end_users", "kyc_key", "END_USERS__KYC_KEY"),
        ("email", "smtp_password", "EMAIL__SMTP_PASSWORD"),
        ("dashboard", "secret_key", "DASHBOARD__SECRET_KEY"),
    ):
        table = raw.get(section)
        if isinstance(table, dict) and table.get(key):
            raise ConfigError(
                f"{section}.{key}: secrets do not belong in the config file ({source});"
                f" set {ENV_PREFIX}{variable}"
            )
    database = raw.get("database")
    url = database.get("url") if isinstance(database, dict) else None
    if isinstance(url, str):
        try:
            password = make_url(url).password
        except (ArgumentError, ValueError):
            return  # reported by validation with the key's name
        if password:
            raise ConfigError(
                "database.url: a password does not belong in the config file;"
                " set DEPOSITD_DATABASE__URL or database.url_file"
            )


def _override(raw: dict[str, Any], name: str, value: str) -> None:
    path = name[len(ENV_PREFIX) :].lower().split("__")
    if not all(re.fullmatch(r"[a-z0-9_]+", part) for part in path):
        raise ConfigError(f"{name}: not a configuration key")
    node = raw
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{name}: {'.'.join(path)} is not a section")
        node = child
    node[path[-1]] = value


#: keys whose values may hold a secret, so an error about them never repeats the value
_SECRET_KEYS = frozenset({"database.url", "database.url_file"})
_SECRET_PARTS = frozenset({"secrets", "secrets_file", "token", "kyc_key", "smtp_password"})


def _one_line(exc: ValidationError) -> str:
    error = exc.errors()[0]
    key = ".".join(str(part) for part in error["loc"]) or "config"
    given = error.get("input")
    hidden = (
        key in _SECRET_KEYS
        or _SECRET_PARTS.intersection(str(part) for part in error["loc"])
        or isinstance(given, dict | list)
        or given is None
    )
    shown = "" if hidden else f" (got {given!r})"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{key}: {error['msg']}{shown}{more}"
