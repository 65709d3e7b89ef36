"""Configuration: a TOML file plus DEPOSITD_ environment overrides, refused with one clear line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from depositd.config import load_config
from depositd.domain.assets import ConfirmationTier
from depositd.errors import ConfigError

ETHER = 10**18

CHAINS = """
[chains.mainnet]
chain_id = 1
block_time_seconds = 12.0
"""

ETH_ASSET = """
[[assets]]
code = "ETH"
chain = "mainnet"
symbol = "ETH"
decimals = 18
min_deposit = "0.01"
confirmations = 12
tiers = [{ min_amount = "100", confirmations = 64 }]
"""

USDT_ASSET = """
[[assets]]
code = "USDT"
chain = "mainnet"
symbol = "USDT"
decimals = 6
contract = "0xDAC17F958D2EE523A2206206994597C13D831EC7"
min_deposit = "5"
confirmations = 12
"""

SERVER = """
[server]
host = "10.0.0.5"
port = 8080
"""


WriteConfig = Callable[[str], Path]


@pytest.fixture
def write(tmp_path: Path) -> WriteConfig:
    """Write a config file and return its path."""

    def _write(text: str) -> Path:
        path = tmp_path / "depositd.toml"
        path.write_text(text)
        return path

    return _write


def _refused(path: Path | None, environ: dict[str, str] | None = None) -> str:
    """The one-line message ``load_config`` refuses this configuration with."""
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ or {})
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_embedded_defaults_load() -> None:
    config = load_config(None, {})
    assert config.server.port == 8000
    assert config.server.host == "127.0.0.1"
    assert config.database_url() == "sqlite:///var/depositd.db"
    assets = config.asset_book()
    assert sorted(assets) == ["ETH", "USDT"]
    eth = assets["ETH"]
    assert eth.min_deposit == 10**15
    assert eth.tiers == (ConfirmationTier(10 * ETHER, 6),)
    assert eth.required_confirmations(ETHER) == 3
    assert eth.required_confirmations(10 * ETHER) == 6
    assert eth.block_time_seconds == 1.0  # from [chains.anvil]
    assert eth.contract is None
    assert assets["USDT"].min_deposit == 10**6


def test_a_config_file_loads(write: WriteConfig) -> None:
    config = load_config(write(SERVER + CHAINS + ETH_ASSET + USDT_ASSET), {})
    assert (config.server.host, config.server.port) == ("10.0.0.5", 8080)
    assert config.server.max_body_bytes == 65536  # default for what the file leaves out
    assets = config.asset_book()
    assert assets["ETH"].min_deposit == 10**16
    assert assets["ETH"].required_confirmations(100 * ETHER) == 64
    assert assets["ETH"].block_time_seconds == 12.0
    assert assets["USDT"].min_deposit == 5 * 10**6
    assert assets["USDT"].contract == "0xdac17f958d2ee523a2206206994597c13d831ec7"


def test_the_config_path_can_come_from_the_environment(write: WriteConfig) -> None:
    path = write(SERVER)
    assert load_config(None, {"DEPOSITD_CONFIG": str(path)}).server.port == 8080


def test_an_environment_override_applies_over_the_defaults() -> None:
    assert load_config(None, {"DEPOSITD_SERVER__PORT": "9000"}).server.port == 9000


def test_an_environment_override_applies_over_the_file(write: WriteConfig) -> None:
    environ = {"DEPOSITD_SERVER__PORT": "9000", "DEPOSITD_LOG_LEVEL": "debug"}
    config = load_config(write(SERVER), environ)
    assert config.server.port == 9000
    assert config.server.host == "10.0.0.5"
    assert config.log_level == "debug"


def test_an_environment_override_can_add_a_chain(write: WriteConfig) -> None:
    environ = {"DEPOSITD_CHAINS__MAINNET__CHAIN_ID": "1"}
    config = load_config(write(ETH_ASSET), environ)
    assert config.asset_book()["ETH"].chain == "mainnet"


def test_other_environment_variables_are_ignored() -> None:
    config = load_config(None, {"HOME": "/root", "DEPOSITD": "x", "SERVER__PORT": "abc"})
    assert config.server.port == 8000


def test_a_bad_value_from_the_environment_names_the_key() -> None:
    message = _refused(None, {"DEPOSITD_SERVER__PORT": "abc"})
    assert message.startswith("server.port: ")
    assert "'abc'" in message


def test_an_out_of_range_port_names_the_key() -> None:
    assert _refused(None, {"DEPOSITD_SERVER__PORT": "70000"}).startswith("server.port: ")


def test_a_bad_value_in_the_file_names_the_key(write: WriteConfig) -> None:
    message = _refused(write('log_level = "loud"\n'))
    assert message.startswith("log_level: ")


def test_an_unknown_key_from_the_environment_is_refused_by_name() -> None:
    assert _refused(None, {"DEPOSITD_SERVER__BOGUS": "1"}).startswith("server.bogus: ")
    assert _refused(None, {"DEPOSITD_NOPE": "1"}).startswith("nope: ")


def test_an_unknown_key_in_the_file_is_refused_by_name(write: WriteConfig) -> None:
    assert _refused(write("[server]\nprot = 9000\n")).startswith("server.prot: ")


def test_an_environment_name_that_is_not_a_key_is_refused() -> None:
    message = _refused(None, {"DEPOSITD_SERVER__PO-RT": "1"})
    assert "DEPOSITD_SERVER__PO-RT" in message


def test_an_environment_override_below_a_plain_value_is_refused() -> None:
    message = _refused(None, {"DEPOSITD_LOG_LEVEL__X": "1"})
    assert "DEPOSITD_LOG_LEVEL__X" in message
    assert "not a section" in message


def test_a_password_in_the_files_database_url_is_refused(write: WriteConfig) -> None:
    path = write('[database]\nurl = "postgresql://depositd:hunter2@db/depositd"\n')
    message = _refused(path)
    assert message.startswith("database.url: ")
    assert "DEPOSITD_DATABASE__URL" in message  # says where it belongs instead
    assert "hunter2" not in message


def test_a_database_url_without_a_password_is_fine_in_the_file(write: WriteConfig) -> None:
    path = write('[database]\nurl = "postgresql://depositd@db/depositd"\n')
    assert load_config(path, {}).database_url() == "postgresql://depositd@db/depositd"


def test_a_password_may_come_from_the_environment(write: WriteConfig) -> None:
    url = "postgresql+asyncpg://depositd:hunter2@db/depositd"
    config = load_config(write(SERVER), {"DEPOSITD_DATABASE__URL": url})
    assert config.database_url() == url


def test_the_database_url_file_is_read(write: WriteConfig, tmp_path: Path) -> None:
    secret = tmp_path / "db-url"
    secret.write_text("postgresql://depositd:hunter2@db/depositd\n")
    path = write(f'[database]\nurl = "sqlite:///ignored.db"\nurl_file = "{secret}"\n')
    config = load_config(path, {})
    assert config.database.url_file == secret
    assert config.database_url() == "postgresql://depositd:hunter2@db/depositd"


def test_the_database_url_file_can_come_from_the_environment(tmp_path: Path) -> None:
    secret = tmp_path / "db-url"
    secret.write_text("sqlite:///from-file.db")
    config = load_config(None, {"DEPOSITD_DATABASE__URL_FILE": str(secret)})
    assert config.database_url() == "sqlite:///from-file.db"


def test_an_unreadable_database_url_file_is_refused_at_load(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^database\.url_file: cannot read it"):
        load_config(None, {"DEPOSITD_DATABASE__URL_FILE": str(tmp_path / "missing")})


def test_a_url_file_without_a_database_url_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "url"
    secret.write_text("mysql://u:hunter2@db/x\n")
    with pytest.raises(ConfigError, match=r"^database\.url_file: ") as refused:
        load_config(None, {"DEPOSITD_DATABASE__URL_FILE": str(secret)})
    assert "hunter2" not in str(refused.value)


@pytest.mark.parametrize("url", ["mysql://depositd@db/depositd", "not a url"])
def test_an_unsupported_database_url_is_refused(url: str) -> None:
    assert _refused(None, {"DEPOSITD_DATABASE__URL": url}).startswith("database.url: ")


def test_an_asset_on_a_missing_chain_is_refused(write: WriteConfig) -> None:
    message = _refused(write(ETH_ASSET))
    assert message.startswith("assets[0] (ETH).chain: ")
    assert "[chains.mainnet]" in message


@pytest.mark.parametrize("min_deposit", ["abc", "0", "-1", "0.0000000000000000001", "1e3"])
def test_a_bad_min_deposit_is_refused_naming_the_asset(
    write: WriteConfig, min_deposit: str
) -> None:
    text = CHAINS + USDT_ASSET + ETH_ASSET.replace('"0.01"', f'"{min_deposit}"')
    message = _refused(write(text))
    assert message.startswith("assets[1] (ETH): ")
    assert repr(min_deposit) in message


def test_a_bad_tier_amount_is_refused_naming_the_asset(write: WriteConfig) -> None:
    text = CHAINS + ETH_ASSET.replace('min_amount = "100"', 'min_amount = "lots"')
    assert _refused(write(text)).startswith("assets[0] (ETH): ")


def test_duplicate_asset_codes_are_refused(write: WriteConfig) -> None:
    assert _refused(write(CHAINS + ETH_ASSET + ETH_ASSET)).startswith("assets: ")


def test_a_bad_contract_address_is_refused(write: WriteConfig) -> None:
    text = CHAINS + USDT_ASSET.replace("0xDAC17F958D2EE523A2206206994597C13D831EC7", "0x12")
    assert _refused(write(text)).startswith("assets.0.contract: ")


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    message = _refused(tmp_path / "nope.toml")
    assert "nope.toml" in message


def test_invalid_toml_is_refused_naming_the_file(write: WriteConfig) -> None:
    path = write("[server\nport = 1\n")
    assert str(path) in _refused(path)


def test_a_database_key_that_is_not_a_table_is_refused_by_name(write: WriteConfig) -> None:
    assert _refused(write('database = "sqlite:///x.db"\n')).startswith("database: ")


def test_a_database_url_with_a_bad_port_in_the_file_is_refused_by_name(write: WriteConfig) -> None:
    path = write('[database]\nurl = "postgresql://depositd@db:abc/depositd"\n')
    assert _refused(path).startswith("database.url: ")


@pytest.mark.parametrize(
    "url", ["mysql://depositd:hunter2@db/depositd", "postgresql://depositd:hunter2@db:x/depositd"]
)
def test_a_refused_database_url_does_not_reveal_its_password(url: str) -> None:
    assert "hunter2" not in _refused(None, {"DEPOSITD_DATABASE__URL": url})


def test_a_watched_chain_needs_a_reorg_window_deeper_than_any_confirmations(
    write: WriteConfig,
) -> None:
    watched = CHAINS + 'rpc_url = "http://node:8545"\nreorg_window = 64\n'
    with pytest.raises(ConfigError, match=r"chains\.mainnet\.reorg_window: 64 blocks cannot undo"):
        load_config(write(watched + ETH_ASSET))  # its top tier needs 64 confirmations


def test_a_chain_node_url_must_be_http_and_the_start_block_a_number_or_latest() -> None:
    with pytest.raises(ConfigError, match=r"chains\.anvil\.rpc_url"):
        load_config(environ={"DEPOSITD_CHAINS__ANVIL__RPC_URL": "ftp://node"})
    with pytest.raises(ConfigError, match=r"chains\.anvil\.start_block"):
        load_config(environ={"DEPOSITD_CHAINS__ANVIL__START_BLOCK": "soon"})
    started = load_config(environ={"DEPOSITD_CHAINS__ANVIL__START_BLOCK": "latest"})
    assert started.chains["anvil"].start_block == "latest"
    numbered = load_config(environ={"DEPOSITD_CHAINS__ANVIL__START_BLOCK": "1200"})
    assert numbered.chains["anvil"].start_block == 1200


PROVIDER = """
[providers.custody]
merchant = "mer_1"
scheme = "hmac_sha256"
allowed_ips = ["203.0.113.0/24"]
ack = { body = "success", content_type = "text/plain" }

[providers.custody.mapping]
deposit_id = "/id"
user = "/user"
asset = "/coin"
amount = "/amount"
status = "/status"
assets = { "usdt" = "USDT" }
statuses = { done = "succeeded", failed = "failed" }
"""
PROVIDER_SECRET = {"DEPOSITD_PROVIDERS__CUSTODY__SECRETS": "new-secret, old-secret"}


def test_a_provider_loads_with_its_secrets_from_the_environment(write: WriteConfig) -> None:
    config = load_config(write(CHAINS + USDT_ASSET + PROVIDER), PROVIDER_SECRET)
    custody = config.providers["custody"]
    assert custody.shared_secrets("custody") == ("new-secret", "old-secret")
    assert custody.ack.body == "success"
    assert custody.ack.status == 200
    assert custody.mapping.statuses["done"] == "succeeded"


def test_provider_secrets_can_come_from_a_file(write: WriteConfig, tmp_path: Path) -> None:
    secrets = tmp_path / "custody.secrets"
    secrets.write_text("one\n\ntwo\n")
    text = PROVIDER.replace(
        'scheme = "hmac_sha256"', f'scheme = "hmac_sha256"\nsecrets_file = "{secrets}"'
    )
    config = load_config(write(CHAINS + USDT_ASSET + text), {})
    assert config.providers["custody"].shared_secrets("custody") == ("one", "two")


def test_provider_secrets_in_the_config_file_are_refused(write: WriteConfig) -> None:
    text = PROVIDER.replace(
        'scheme = "hmac_sha256"', 'scheme = "hmac_sha256"\nsecrets = ["s3cr3t"]'
    )
    message = _refused(write(CHAINS + USDT_ASSET + text))
    assert message.startswith("providers.custody.secrets: secrets do not belong in the config")
    assert "s3cr3t" not in message


def test_a_provider_without_a_secret_is_refused(write: WriteConfig) -> None:
    message = _refused(write(CHAINS + USDT_ASSET + PROVIDER))
    assert message.startswith("providers.custody: no secret; set DEPOSITD_PROVIDERS__CUSTODY__")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (('deposit_id = "/id"', 'deposit_id = "id"'), "providers.custody.mapping.deposit_id"),
        (('"usdt" = "USDT"', '"usdt" = "DOGE"'), "providers.custody.mapping.assets.usdt"),
        (('done = "succeeded"', 'done = "paid"'), "providers.custody.mapping.statuses.done"),
        (('scheme = "hmac_sha256"', 'scheme = "md4"'), "providers.custody.scheme"),
        (('["203.0.113.0/24"]', '["203.0.113.0/99"]'), "providers.custody.allowed_ips"),
    ],
)
def test_a_bad_provider_setting_is_refused_by_name(
    write: WriteConfig, change: tuple[str, str], expected: str
) -> None:
    text = CHAINS + USDT_ASSET + PROVIDER.replace(*change)
    assert _refused(write(text), PROVIDER_SECRET).startswith(expected)


def test_a_provider_name_that_cannot_be_an_environment_key_is_refused(
    write: WriteConfig,
) -> None:
    text = CHAINS + USDT_ASSET + PROVIDER.replace("providers.custody", "providers.Cust-ody")
    assert _refused(write(text)).startswith("providers.Cust-ody: use 1-40 of a-z, 0-9 and _")


# --- fiat assets and payment providers ----------------------------------------------------------

USD_ASSET = """
[[assets]]
code = "USD"
symbol = "USD"
decimals = 2
min_deposit = "1"
"""

PAYMENTS = """
[providers.custody.payments]
url = "https://psp.example/v1/payments"
methods = ["card", "bank_transfer"]
token_header = "authorization"
"""


def test_a_fiat_asset_has_no_chain_and_needs_no_confirmations(write: WriteConfig) -> None:
    book = load_config(write(CHAINS + USD_ASSET), {}).asset_book()
    usd = book["USD"]
    assert (usd.chain, usd.fiat, usd.decimals, usd.min_deposit) == (None, True, 2, 100)
    assert usd.required_confirmations(10**9) == 0


@pytest.mark.parametrize(
    "extra", ["confirmations = 3", 'contract = "0xDAC17F958D2EE523A2206206994597C13D831EC7"']
)
def test_a_fiat_asset_with_chain_settings_is_refused(write: WriteConfig, extra: str) -> None:
    message = _refused(write(CHAINS + USD_ASSET + extra + "\n"))
    assert message.startswith("assets[0] (USD): a fiat asset (no chain) has no contract")


def test_an_on_chain_asset_still_needs_its_confirmations(write: WriteConfig) -> None:
    text = ETH_ASSET.replace("confirmations = 12\n", "")
    assert _refused(write(CHAINS + text)).startswith(
        "assets[0] (ETH).confirmations: required for an on-chain asset"
    )


def test_a_payment_provider_loads_with_its_token_from_the_environment(
    write: WriteConfig,
) -> None:
    environ = {**PROVIDER_SECRET, "DEPOSITD_PROVIDERS__CUSTODY__PAYMENTS__TOKEN": "sk_live_1"}
    config = load_config(write(CHAINS + USDT_ASSET + USD_ASSET + PROVIDER + PAYMENTS), environ)
    payments = config.providers["custody"].payments
    assert payments is not None
    assert (payments.methods, payments.token, payments.reference) == (
        ["card", "bank_transfer"],
        "sk_live_1",
        "/id",
    )


def test_a_payment_token_in_the_config_file_is_refused(write: WriteConfig) -> None:
    text = CHAINS + USDT_ASSET + PROVIDER + PAYMENTS + 'token = "sk_live_2"\n'
    message = _refused(write(text), PROVIDER_SECRET)
    assert message.startswith("providers.custody.payments.token: secrets do not belong")
    assert "DEPOSITD_PROVIDERS__CUSTODY__PAYMENTS__TOKEN" in message
    assert "sk_live_2" not in message


def test_two_providers_taking_one_method_for_a_merchant_are_refused(write: WriteConfig) -> None:
    second = (PROVIDER + PAYMENTS).replace("providers.custody", "providers.second")
    environ = {**PROVIDER_SECRET, "DEPOSITD_PROVIDERS__SECOND__SECRETS": "x"}
    message = _refused(write(CHAINS + USDT_ASSET + PROVIDER + PAYMENTS + second), environ)
    assert message.startswith("providers.second.payments.methods: custody already takes card")


def test_a_payment_method_the_service_does_not_know_is_refused(write: WriteConfig) -> None:
    text = CHAINS + USDT_ASSET + PROVIDER + PAYMENTS.replace('"card", ', '"cash", ')
    assert _refused(write(text), PROVIDER_SECRET).startswith("providers.custody.payments.methods.0")


def test_kyc_limits_load_in_base_units_by_level(write: WriteConfig) -> None:
    text = USDT_ASSET + 'kyc_limits = { 0 = "1000", 2 = "50000.5", 3 = "unlimited" }\n'
    usdt = load_config(write(CHAINS + text), {}).asset_book()["USDT"]
    assert usdt.kyc_limits == ((0, 1000 * 10**6), (2, 50_000_500_000), (3, None))
    assert [usdt.kyc_limit(level) for level in range(5)] == [
        1000 * 10**6,
        1000 * 10**6,
        50_000_500_000,
        None,
        None,
    ]


@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        ('{ 0 = "1.0000001" }', "assets[0] (USDT): "),
        ('{ -1 = "5" }', "assets.0.kyc_limits.-1"),
        ('{ 0 = "lots" }', "assets[0] (USDT): "),
    ],
)
def test_a_bad_kyc_limit_is_refused_naming_the_asset(
    write: WriteConfig, limits: str, expected: str
) -> None:
    text = CHAINS + USDT_ASSET + f"kyc_limits = {limits}\n"
    assert _refused(write(text)).startswith(expected)


def test_retention_defaults_are_conservative_and_callbacks_outlive_the_reconcile_window() -> None:
    retention = load_config(None, {}).retention
    assert retention.enabled
    days = (retention.inbound_callbacks_days, retention.delivery_attempts_days)
    assert (*days, retention.events_days) == (90, 30, 365)
    message = _refused(
        None,
        {"DEPOSITD_RETENTION__INBOUND_CALLBACKS_DAYS": "7", "DEPOSITD_RECONCILE__WINDOW_DAYS": "7"},
    )
    assert message.startswith("retention.inbound_callbacks_days: keep callbacks longer than")
    assert _refused(None, {"DEPOSITD_RETENTION__EVENTS_DAYS": "0"}).startswith(
        "retention.events_days: "
    )
