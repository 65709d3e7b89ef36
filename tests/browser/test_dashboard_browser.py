"""An operator in the dashboard: logs in, watches a deposit arrive live, opens its timeline,
retries a failed webhook delivery, approves a held deposit, and reads it all in Chinese."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from playwright.sync_api import Browser, Page, expect

from .conftest import Served, log_in, shot

_ids = itertools.count(1)


def observe(served: Served, user: str, amount: str) -> dict[str, object]:
    """Report a succeeded USDT deposit to ``user`` through the API; the deposit."""
    assert served.api.post("/v1/users", json={"external_id": user}).status_code in (200, 201)
    answer = served.api.post(
        "/v1/observations",
        json={
            "provider": "custody",
            "provider_deposit_id": f"browser-{time.time_ns()}-{next(_ids)}",
            "user": user,
            "asset": "USDT",
            "amount": amount,
            "status": "succeeded",
        },
    )
    assert answer.status_code == 200, answer.text
    deposit: dict[str, object] = answer.json()["deposit"]
    return deposit


def test_log_in_see_a_deposit_arrive_live_and_open_its_timeline(page: Page, served: Served) -> None:
    log_in(page, served)
    expect(page.locator("h2", has_text="Live deposits")).to_be_visible()
    shot(page, "01-overview-after-login")
    page.evaluate("window.notReloaded = true")

    deposit = observe(served, "live-feed-user", "12.5")
    row = page.locator(f"#feed tr[data-deposit='{deposit['id']}']")
    expect(row).to_be_visible(timeout=10_000)
    expect(row).to_contain_text("12.5 USDT")
    expect(row).to_contain_text("credited")
    assert page.evaluate("window.notReloaded") is True  # it came in without a reload
    shot(page, "02-deposit-appeared-live")

    row.locator("a").click()
    page.wait_for_url(f"**/dashboard/deposits/{deposit['id']}")
    expect(page.get_by_test_id("deposit-status")).to_have_text("credited")
    expect(page.get_by_test_id("transitions")).to_contain_text("Credited: custody confirmed")
    expect(page.get_by_test_id("ledger")).to_contain_text("12.5 USDT")
    shot(page, "03-deposit-timeline")


@dataclass
class Receiver:
    """A webhook receiver on 127.0.0.1 that fails (500, retry in an hour) until told not to."""

    succeed: bool = False
    #: (status answered, event type) of every request
    received: list[tuple[int, str]] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            status = 200 if found.succeed else 500
            found.received.append((status, json.loads(body)["type"]))
            self.send_response(status)
            if status != 200:
                self.send_header("retry-after", "3600")  # only a manual retry comes sooner
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    found.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield found
    server.shutdown()
    server.server_close()


def wait_for(condition: object, within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "gave up waiting"
        time.sleep(0.1)


def test_retry_a_failed_delivery_and_the_receiver_gets_it(
    page: Page, served: Served, receiver: Receiver
) -> None:
    made = served.api.post("/v1/endpoints", json={"url": receiver.url})
    assert made.status_code == 201, made.text
    endpoint_id = made.json()["id"]
    try:
        deposit = observe(served, "webhook-user", "3")
        wait_for(lambda: len(receiver.received) >= 1)
        assert receiver.received[0] == (500, "deposit.credited")
        delivery = served.api.get("/v1/deliveries", params={"endpoint_id": endpoint_id}).json()
        (failed,) = delivery["data"]

        log_in(page, served)
        page.goto(f"{served.base_url}/dashboard/deliveries")
        line = page.locator(f"tr[data-delivery='{failed['id']}']")
        expect(line).to_contain_text("HTTP 500")
        shot(page, "04-failing-delivery")

        receiver.succeed = True
        page.get_by_test_id(f"retry-{failed['id']}").click()
        expect(page.locator(".notice")).to_have_text("The delivery is due now.")
        wait_for(lambda: (200, "deposit.credited") in receiver.received)
        assert receiver.received == [(500, "deposit.credited"), (200, "deposit.credited")]

        page.goto(f"{served.base_url}/dashboard/deposits/{deposit['id']}")
        expect(page.get_by_test_id(f"delivery-{failed['id']}")).to_contain_text("delivered")
        shot(page, "05-delivery-retried-and-delivered")
    finally:
        served.api.delete(f"/v1/endpoints/{endpoint_id}")


def test_approve_a_held_deposit(page: Page, served: Served) -> None:
    held = observe(served, "holds-user", "250")  # over the 100 USDT KYC level-0 limit
    assert held["status"] == "held"
    log_in(page, served)
    page.goto(f"{served.base_url}/dashboard/holds")
    row = page.locator(f"tr[data-deposit='{held['id']}']")
    expect(row).to_contain_text("over its limit of 100 USDT per 24 h")
    shot(page, "06-holds-queue")

    page.get_by_test_id(f"approve-{held['id']}").click()
    expect(page.locator(".notice")).to_have_text("Approved: the deposit is credited.")
    expect(page.locator(f"tr[data-deposit='{held['id']}']")).to_have_count(0)
    shot(page, "07-hold-approved")
    assert served.api.get(f"/v1/deposits/{held['id']}").json()["status"] == "credited"


def test_the_dashboard_in_simplified_chinese(browser: Browser, served: Served) -> None:
    context = browser.new_context(locale="zh-CN", extra_http_headers={"accept-language": "zh-CN"})
    try:
        page = context.new_page()
        page.goto(f"{served.base_url}/dashboard")
        expect(page.locator("h1")).to_have_text("登录")
        page.fill("input[name=email]", "ops@acme.example")
        page.fill("input[name=password]", "not the password")
        page.click("button[type=submit]")
        expect(page.get_by_test_id("login-error")).to_have_text("邮箱或密码错误。")
        log_in(page, served)
        expect(page.locator("h2", has_text="实时充值")).to_be_visible()
        shot(page, "08-overview-zh-CN")
        page.get_by_test_id("language-switch").click()
        expect(page.locator("h2", has_text="Live deposits")).to_be_visible()
    finally:
        context.close()
