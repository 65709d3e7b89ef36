"""An end user's status page for a deposit order: the address and QR code, then the
confirmations rising live as blocks are mined on the chain the server watches."""

from __future__ import annotations

import httpx
from playwright.sync_api import Browser, Page, expect

from .conftest import ETH_CONFIRMATIONS, Served, shot


def rpc(url: str, method: str, *params: object) -> object:
    answer = httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
    body = answer.json()
    assert "error" not in body, body
    return body["result"]


def new_order(served: Served, user: str) -> dict[str, str]:
    assert served.api.post("/v1/users", json={"external_id": user}).status_code in (200, 201)
    made = served.api.post(
        "/v1/deposit-orders", json={"user": user, "asset": "ETH", "amount": "0.1"}
    )
    assert made.status_code == 201, made.text
    order: dict[str, str] = made.json()
    return order


def test_the_status_page_shows_confirmations_rising(page: Page, served: Served) -> None:
    order = new_order(served, "payer")
    page.goto(served.base_url + order["status_url"])
    expect(page.get_by_test_id("address")).to_have_text(order["address"])
    expect(page.get_by_test_id("qr").locator("svg")).to_be_visible()
    expect(page.get_by_test_id("order-status")).to_have_text("Waiting for payment")
    shot(page, "10-status-page-awaiting-payment")

    accounts = rpc(served.anvil_url, "eth_accounts")
    assert isinstance(accounts, list)
    rpc(served.anvil_url, "eth_sendTransaction",
        {"from": accounts[0], "to": order["address"], "value": hex(10**17)})  # fmt: skip
    confirmations = page.get_by_test_id("confirmations")
    expect(confirmations).to_have_text(f"0 / {ETH_CONFIRMATIONS}", timeout=20_000)
    expect(page.get_by_test_id("hint")).to_contain_text("waiting for the first of")
    shot(page, "11-status-page-seen-0-confirmations")
    for mined in range(1, ETH_CONFIRMATIONS + 1):
        rpc(served.anvil_url, "anvil_mine", "0x1")
        expect(confirmations).to_have_text(f"{mined} / {ETH_CONFIRMATIONS}", timeout=20_000)
        shot(page, f"12-status-page-{mined}-confirmations")
    expect(page.get_by_test_id("order-status")).to_have_text("Paid")
    expect(page.get_by_test_id("credited")).to_have_text("0.1")


def test_the_status_page_in_chinese_and_only_with_its_link(
    browser: Browser, served: Served
) -> None:
    order = new_order(served, "payer-zh")
    context = browser.new_context(locale="zh-CN", extra_http_headers={"accept-language": "zh-CN"})
    try:
        page = context.new_page()
        page.goto(served.base_url + order["status_url"])
        expect(page.get_by_test_id("order-status")).to_have_text("等待付款")
        expect(page.locator("h2").first).to_have_text("请转账至以下地址")
        shot(page, "13-status-page-zh-CN")
        missing = page.goto(f"{served.base_url}/pay/{order['id']}?t=guessed")
        assert missing is not None
        assert missing.status == 404
    finally:
        context.close()
