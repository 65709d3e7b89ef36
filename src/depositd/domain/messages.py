"""Human hints for deposit transitions: a message code plus parameters, rendered per language.

Transitions store only the code and its parameters, so a hint can be shown in the reader's
language long after it was recorded and a wording fix reaches old deposits too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: languages we render, the first one is the fallback
LANGUAGES = ("en", "zh-CN")

_CATALOG: dict[str, dict[str, str]] = {
    "awaiting_first_confirmation": {
        "en": "Seen on the network; waiting for the first of {required} confirmations.",
        "en:one": "Seen on the network; waiting for its confirmation.",
        "zh-CN": "已在网络上发现，等待第一个确认（共需 {required} 个确认）。",
    },
    "awaiting_confirmations": {
        "en": "Waiting for {remaining} more confirmations, about {eta_seconds} s.",
        "en:one": "Waiting for 1 more confirmation, about {eta_seconds} s.",
        "zh-CN": "还需等待 {remaining} 个确认，约 {eta_seconds} 秒。",
    },
    "confirmed": {
        "en": "Credited after {confirmations} confirmations.",
        "en:one": "Credited after 1 confirmation.",
        "zh-CN": "已达到 {confirmations} 个确认，已入账。",
    },
    "provider_pending": {
        "en": "{provider} reports the payment as pending.",
        "zh-CN": "{provider} 报告该笔付款处理中。",
    },
    "provider_confirming": {
        "en": "{provider} reports the payment on its way; confirmations so far: {confirmations}.",
        "zh-CN": "{provider} 报告该笔付款正在确认中（已有 {confirmations} 个确认）。",
    },
    "provider_confirmed": {
        "en": "Credited: {provider} confirmed the payment.",
        "zh-CN": "{provider} 已确认付款，已入账。",
    },
    "provider_failed": {
        "en": "{provider} reports that the payment failed.",
        "zh-CN": "{provider} 报告该笔付款失败。",
    },
    "provider_failed_reason": {
        "en": "{provider} reports that the payment failed ({reason}). Try again or use another"
        " payment method.",
        "zh-CN": "{provider} 报告该笔付款失败（{reason}）。请重试或换一种付款方式。",
    },
    "payment_failed_insufficient_funds": {
        "en": "The card was declined for insufficient funds. Add funds or use another card,"
        " then start a new deposit.",
        "zh-CN": "卡内余额不足，付款被拒。请充值或换一张卡后重新发起充值。",
    },
    "payment_failed_card_declined": {
        "en": "The card issuer declined the payment. Contact your bank or use another card,"
        " then start a new deposit.",
        "zh-CN": "发卡行拒绝了该笔付款。请联系银行或换一张卡后重新发起充值。",
    },
    "payment_failed_expired_card": {
        "en": "The card has expired. Use another card, then start a new deposit.",
        "zh-CN": "该卡已过期。请换一张卡后重新发起充值。",
    },
    "payment_failed_card_details": {
        "en": "The card details (number, expiry date or security code) were not accepted."
        " Check them, then start a new deposit.",
        "zh-CN": "卡信息（卡号、有效期或安全码）有误。请核对后重新发起充值。",
    },
    "payment_failed_authentication": {
        "en": "The payment was not confirmed with your bank (3-D Secure). Start a new deposit"
        " and complete your bank's check.",
        "zh-CN": "付款未通过银行验证（3-D Secure）。请重新发起充值并完成银行验证。",
    },
    "payment_failed_transfer_expired": {
        "en": "No bank transfer arrived before the payment reference expired. Start a new"
        " deposit to get a fresh reference.",
        "zh-CN": "付款参考号过期前未收到银行转账。请重新发起充值以获取新的参考号。",
    },
    "payment_failed_transfer_returned": {
        "en": "The bank transfer was returned ({reason}). Check the account details and the"
        " reference, then start a new deposit.",
        "zh-CN": "银行转账被退回（{reason}）。请核对账户信息和参考号后重新发起充值。",
    },
    "provider_reversed": {
        "en": "{provider} reversed the payment; the credit was taken back.",
        "zh-CN": "{provider} 撤销了该笔付款，入账金额已扣回。",
    },
    "below_minimum": {
        "en": "Sent below the {minimum} {symbol} minimum; not credited.",
        "zh-CN": "金额低于最低充值额 {minimum} {symbol}，不予入账。",
    },
    "token_not_accepted": {
        "en": "Token contract not accepted; not credited.",
        "zh-CN": "不支持该代币合约，不予入账。",
    },
    "transaction_failed": {
        "en": "The transaction failed on chain; nothing arrived.",
        "zh-CN": "该交易在链上执行失败，资金未到账。",
    },
    "fake_transfer": {
        "en": "The transfer did not come from the token contract; not credited.",
        "zh-CN": "该转账并非来自代币合约本身，不予入账。",
    },
    "claim_not_on_chain": {
        "en": "The chain does not show this transfer; not credited.",
        "zh-CN": "链上查无此笔转账，不予入账。",
    },
    "removed_by_reorg": {
        "en": "The block holding this transaction was replaced by a chain reorganisation.",
        "zh-CN": "包含该交易的区块因链重组被替换。",
    },
    "reversed_by_reorg": {
        "en": "A deep chain reorganisation removed this credited deposit; the credit was reversed.",
        "zh-CN": "深度链重组移除了这笔已入账的充值，入账金额已冲正。",
    },
    "held_claim_not_on_chain": {
        "en": "Held for review: our node does not show the transfer the provider reported.",
        "zh-CN": "已暂扣待审核：本节点的链上数据中没有服务商报告的这笔转账。",
    },
    "held_claim_failed_on_chain": {
        "en": "Held for review: the transaction the provider reported failed on chain.",
        "zh-CN": "已暂扣待审核：服务商报告的交易在链上执行失败。",
    },
    "held_claim_unverifiable": {
        "en": "Held for review: the provider did not say which transaction or address to check.",
        "zh-CN": "已暂扣待审核：服务商未提供可供核验的交易或地址。",
    },
    "held_for_review": {
        "en": "Held for review: {rule}.",
        "zh-CN": "已暂扣待审核：{rule}。",
    },
    "held_kyc_limit": {
        "en": "Held for review: it would take this account over its limit of {limit} {symbol}"
        " per {hours} h at verification level {level}. Complete identity verification to"
        " raise the limit.",
        "zh-CN": "待审核：该笔充值将超出当前认证等级 {level} 每 {hours} 小时 {limit} {symbol}"
        " 的充值限额。完成身份认证可提高限额。",
    },
    "anomaly_amount": {
        "en": "Held for review: {amount} {symbol} is {ratio} times this account's usual"
        " deposit of {median} {symbol} (robust z-score {z}). It is credited once an operator"
        " has checked it.",
        "zh-CN": "待审核：{amount} {symbol} 是该账户常规充值金额 {median} {symbol} 的 {ratio} 倍"
        "（稳健 z 分数 {z}）。工作人员核实后即入账。",
    },
    "anomaly_burst": {
        "en": "Held for review: {count} deposits within {window_minutes} minutes, far more"
        " than this account's usual {usual}. It is credited once an operator has checked it.",
        "zh-CN": "待审核：{window_minutes} 分钟内共 {count} 笔充值，远多于该账户通常的 {usual}"
        " 笔。工作人员核实后即入账。",
    },
    "anomaly_structuring": {
        "en": "Held for review: {count} deposits within {window_hours} h each just under"
        " {limit} {symbol}. It is credited once an operator has checked it.",
        "zh-CN": "待审核：{window_hours} 小时内有 {count} 笔充值均略低于 {limit} {symbol}。"
        "工作人员核实后即入账。",
    },
    "anomaly_first_large": {
        "en": "Held for review: a first deposit of {amount} {symbol} is {ratio} times the usual"
        " first deposit of {median} {symbol}. It is credited once an operator has checked it.",
        "zh-CN": "待审核：首笔充值 {amount} {symbol} 是常见首笔充值金额 {median} {symbol} 的"
        " {ratio} 倍。工作人员核实后即入账。",
    },
    "anomaly_first_over": {
        "en": "Held for review: a first deposit of {amount} {symbol} is at or above"
        " {absolute_limit} {symbol}, which is checked before it is credited.",
        "zh-CN": "待审核：首笔充值 {amount} {symbol} 达到或超过 {absolute_limit} {symbol}，"
        "需核实后入账。",
    },
    "approved_by_reviewer": {
        "en": "Approved after review and credited.",
        "zh-CN": "审核通过，已入账。",
    },
    "rejected_by_reviewer": {
        "en": "Rejected after review; not credited.",
        "zh-CN": "审核未通过，不予入账。",
    },
}


@dataclass(frozen=True)
class Message:
    """A hint to render later: a catalog code and its parameters (JSON-safe values)."""

    code: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.code not in _CATALOG:
            raise KeyError(f"no message {self.code!r} in the catalog")

    def render(self, language: str = "en") -> str:
        return render(self.code, self.params, language)


#: the parameter that decides singular ("<language>:one" templates) for a code
_COUNTED_BY = {
    "awaiting_confirmations": "remaining",
    "confirmed": "confirmations",
    "awaiting_first_confirmation": "required",
}


def render(code: str, params: Mapping[str, Any], language: str = "en") -> str:
    """Render a stored hint in ``language`` (falls back to English)."""
    templates = _CATALOG.get(code)
    if templates is None:
        return code
    if code in _COUNTED_BY and params.get(_COUNTED_BY[code]) == 1:
        language_one = f"{language}:one"
        if language_one in templates:
            language = language_one
    template = templates.get(language) or templates[LANGUAGES[0]]
    try:
        return template.format(**params)
    except (KeyError, IndexError):
        return templates[LANGUAGES[0]].format_map(_Missing(params))


class _Missing(dict[str, Any]):
    def __init__(self, params: Mapping[str, Any]) -> None:
        super().__init__(params)

    def __missing__(self, key: str) -> str:
        return "?"


def negotiate_language(accept_language: str | None) -> str:
    """Pick English or Simplified Chinese from an ``Accept-Language`` header."""
    if not accept_language:
        return LANGUAGES[0]
    best, best_q = LANGUAGES[0], 0.0
    for part in accept_language.split(","):
        tag, *params = (piece.strip() for piece in part.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = -1.0
        if not 0 < q <= 1:
            continue  # q=0 means "not this one"; nonsense weights are ignored
        tag = tag.lower()
        lang = (
            "zh-CN"
            if tag.startswith("zh") and "hant" not in tag and "tw" not in tag
            else ("en" if tag.startswith("en") or tag == "*" else None)
        )
        if lang is not None and q > best_q:
            best, best_q = lang, q
    return best


#: failure codes payment providers commonly send (card decline codes, bank returns), each with
#: the hint that tells the user what to do; any other code is shown as the provider sent it
_FAILURE_HINTS = {
    "insufficient_funds": "payment_failed_insufficient_funds",
    "card_declined": "payment_failed_card_declined",
    "generic_decline": "payment_failed_card_declined",
    "do_not_honor": "payment_failed_card_declined",
    "lost_card": "payment_failed_card_declined",
    "stolen_card": "payment_failed_card_declined",
    "expired_card": "payment_failed_expired_card",
    "incorrect_number": "payment_failed_card_details",
    "incorrect_cvc": "payment_failed_card_details",
    "invalid_expiry_month": "payment_failed_card_details",
    "invalid_expiry_year": "payment_failed_card_details",
    "authentication_required": "payment_failed_authentication",
    "authentication_failed": "payment_failed_authentication",
    "transfer_expired": "payment_failed_transfer_expired",
    "transfer_not_received": "payment_failed_transfer_expired",
    "transfer_returned": "payment_failed_transfer_returned",
    "account_closed": "payment_failed_transfer_returned",
    "account_invalid": "payment_failed_transfer_returned",
}
#: the longest failure code kept, and what it may hold (it is shown to users)
_REASON_CHARS = 64
_REASON_UNSAFE = re.compile(r"[^A-Za-z0-9_.\- ]")


def payment_failure(provider: str, reason: str | None) -> Message:
    """The hint for a payment ``provider`` reports failed, with its failure code if it gave one."""
    if not reason:
        return Message("provider_failed", {"provider": provider})
    shown = _REASON_UNSAFE.sub("", reason)[:_REASON_CHARS] or "unknown"
    code = _FAILURE_HINTS.get(shown.lower(), "provider_failed_reason")
    return Message(code, {"provider": provider, "reason": shown})
