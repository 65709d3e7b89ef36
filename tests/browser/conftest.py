"""Browser tests: a real ``depositd serve`` on SQLite, watching the session's anvil, driven
through Debian's headless Chromium by Playwright (which downloads no browser of its own).

Every test saves screenshots of what it saw under ``var/screenshots/``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from depositd.cli import DEV_XPUB

from ..conftest import depositd_serving

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"
OPERATOR = "ops@acme.example"
PASSWORD = "a long operator passphrase"
#: USDT deposits over this within a day are held for review
USDT_KYC_LIMIT = "100"
#: ETH deposits need this many confirmations (enough to watch them rise)
ETH_CONFIRMATIONS = 4


@dataclass(frozen=True)
class Served:
    base_url: str
    merchant_id: str
    api: httpx.Client
    anvil_url: str
    log: Path


def _config(tmp: Path, anvil_url: str) -> Path:
    """The embedded defaults, watching the test anvil, with a KYC limit on USDT."""
    text = resources.files("depositd").joinpath("defaults.toml").read_text()
    text = re.sub(r"^rpc_url = .*$", f'rpc_url = "{anvil_url}"', text, flags=re.MULTILINE)
    text = re.sub(r"^ws_url = .*$", "", text, flags=re.MULTILINE)
    text = re.sub(r"^poll_interval_seconds = .*$", "poll_interval_seconds = 0.2", text,
                  flags=re.MULTILINE)  # fmt: skip
    text = text.replace("start_block = 0", 'start_block = "latest"')
    text = text.replace("confirmations = 3\ntiers", f"confirmations = {ETH_CONFIRMATIONS}\ntiers")
    text = text.replace(
        'min_deposit = "1"', f'min_deposit = "1"\nkyc_limits = {{ 0 = "{USDT_KYC_LIMIT}" }}'
    )
    path = tmp / "depositd.toml"
    path.write_text(text)
    return path


def _cli(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(  # noqa: S603 - our own command line
        [sys.executable, "-m", "depositd.cli", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, anvil_url: str) -> Iterator[Served]:
    """``depositd serve`` on a fresh SQLite database: a merchant with an API key, an xpub
    and a dashboard operator."""
    tmp = tmp_path_factory.mktemp("browser")
    env = {
        **os.environ,
        "DEPOSITD_CONFIG": str(_config(tmp, anvil_url)),
        "DEPOSITD_DATABASE__URL": f"sqlite:///{tmp}/depositd.db",
        "DEPOSITD_DASHBOARD__SECRET_KEY": "browser-tests-" + "k" * 32,
        "DEPOSITD_LOG_LEVEL": "warning",
    }
    _cli(env, "migrate")
    merchant_id = _cli(env, "merchants", "create", "acme", "--xpub", DEV_XPUB).strip()
    key = re.search(r"^key: (\S+)$", _cli(env, "api-keys", "create", "--merchant", merchant_id),
                    re.MULTILINE)  # fmt: skip
    assert key is not None
    _cli(env, "operators", "add", "--merchant", merchant_id, "--email", OPERATOR,
         stdin=PASSWORD + "\n")  # fmt: skip
    log = tmp / "server.log"
    with depositd_serving(env, log) as base_url:
        headers = {"authorization": f"Bearer {key.group(1)}"}
        with httpx.Client(base_url=base_url, headers=headers, timeout=10) as api:
            yield Served(base_url, merchant_id, api, anvil_url, log)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: 'make test' installs the Debian package chromium")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh browser context (no cookies) in English."""
    context = browser.new_context(locale="en-US", viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    opened.set_default_timeout(15_000)
    yield opened
    context.close()


def shot(page: Page, name: str) -> Path:
    """Save what the page shows as ``var/screenshots/<name>.png``."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def log_in(page: Page, served: Served) -> None:
    page.goto(f"{served.base_url}/dashboard")
    assert "/dashboard/login" in page.url  # sent to the form first
    page.fill("input[name=email]", OPERATOR)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{served.base_url}/dashboard")
