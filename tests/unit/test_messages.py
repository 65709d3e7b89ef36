"""Human hints: every catalog message renders in every language; Accept-Language picks one."""

from __future__ import annotations

import string
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from depositd.domain.deposits import RejectReason
from depositd.domain.messages import (
    _CATALOG,
    LANGUAGES,
    Message,
    negotiate_language,
    payment_failure,
    render,
)

#: plausible parameters for every message code, as the state machine and reviewers fill them
PLAUSIBLE_PARAMS: dict[str, dict[str, Any]] = {
    "awaiting_first_confirmation": {"required": 12},
    "awaiting_confirmations": {"remaining": 4, "eta_seconds": 48},
    "confirmed": {"confirmations": 12},
    "provider_pending": {"provider": "fireblocks"},
    "provider_confirming": {"provider": "fireblocks", "confirmations": 2},
    "provider_confirmed": {"provider": "fireblocks"},
    "provider_failed": {"provider": "fireblocks"},
    "provider_reversed": {"provider": "fireblocks"},
    "provider_failed_reason": {"provider": "stripe", "reason": "processing_error"},
    "payment_failed_insufficient_funds": {},
    "payment_failed_card_declined": {},
    "payment_failed_expired_card": {},
    "payment_failed_card_details": {},
    "payment_failed_authentication": {},
    "payment_failed_transfer_expired": {},
    "payment_failed_transfer_returned": {"reason": "account_closed"},
    "below_minimum": {"minimum": "0.001", "symbol": "ETH"},
    "token_not_accepted": {},
    "transaction_failed": {},
    "fake_transfer": {},
    "claim_not_on_chain": {},
    "removed_by_reorg": {},
    "reversed_by_reorg": {},
    "held_claim_not_on_chain": {},
    "held_claim_failed_on_chain": {},
    "held_claim_unverifiable": {},
    "held_for_review": {"rule": "amount spike"},
    "held_kyc_limit": {"limit": "1000", "symbol": "USDT", "hours": 24, "level": 0},
    "anomaly_amount": {
        "amount": "5000",
        "symbol": "USDT",
        "ratio": 41.7,
        "median": "120",
        "z": 6.1,
    },
    "anomaly_burst": {"count": 9, "window_minutes": 60, "usual": 0.4},
    "anomaly_structuring": {"count": 4, "window_hours": 168, "limit": "1000", "symbol": "USDT"},
    "anomaly_first_large": {"amount": "90000", "symbol": "USDT", "ratio": 180.0, "median": "500"},
    "anomaly_first_over": {"amount": "60000", "symbol": "USDT", "absolute_limit": "50000"},
    "approved_by_reviewer": {},
    "rejected_by_reviewer": {},
}

CASES = [(code, language) for code in sorted(PLAUSIBLE_PARAMS) for language in LANGUAGES]


def _placeholders(template: str) -> set[str]:
    return {field for _, field, _, _ in string.Formatter().parse(template) if field}


def test_every_catalog_code_has_plausible_params_here() -> None:
    # a new message must be added here too, so the rendering tests below cover it
    assert set(PLAUSIBLE_PARAMS) == set(_CATALOG)


def test_languages_start_with_the_english_fallback() -> None:
    assert LANGUAGES[0] == "en"
    assert "zh-CN" in LANGUAGES


@pytest.mark.parametrize("code", sorted(_CATALOG))
def test_every_language_has_a_template_with_the_same_placeholders(code: str) -> None:
    templates = _CATALOG[code]
    plain = {key for key in templates if ":" not in key}
    assert plain == set(LANGUAGES)
    assert _placeholders(templates["zh-CN"]) == _placeholders(templates["en"])
    assert _placeholders(templates["en"]) == set(PLAUSIBLE_PARAMS[code])
    for key in set(templates) - plain:  # singular variants such as "en:one"
        language, _, form = key.partition(":")
        assert (language, form) in {(lang, "one") for lang in LANGUAGES}
        assert _placeholders(templates[key]) <= _placeholders(templates[language])


@pytest.mark.parametrize(
    ("code", "params", "english"),
    [
        (
            "awaiting_confirmations",
            {"remaining": 1, "eta_seconds": 12},
            "Waiting for 1 more confirmation, about 12 s.",
        ),
        (
            "awaiting_confirmations",
            {"remaining": 2, "eta_seconds": 24},
            "Waiting for 2 more confirmations, about 24 s.",
        ),
        ("confirmed", {"confirmations": 1}, "Credited after 1 confirmation."),
        (
            "awaiting_first_confirmation",
            {"required": 1},
            "Seen on the network; waiting for its confirmation.",
        ),
    ],
)
def test_english_says_one_in_the_singular(code: str, params: dict[str, Any], english: str) -> None:
    assert render(code, params, "en") == english


@pytest.mark.parametrize(("code", "language"), CASES)
def test_every_message_renders_in_every_language(code: str, language: str) -> None:
    params = PLAUSIBLE_PARAMS[code]
    text = Message(code, params).render(language)
    assert text
    assert "{" not in text
    assert "}" not in text
    for value in params.values():
        assert str(value) in text


@pytest.mark.parametrize("code", sorted(PLAUSIBLE_PARAMS))
def test_chinese_rendering_is_a_translation_not_the_fallback(code: str) -> None:
    params = PLAUSIBLE_PARAMS[code]
    assert render(code, params, "zh-CN") != render(code, params, "en")


def test_rendering_fills_in_the_parameters() -> None:
    message = Message("awaiting_confirmations", {"remaining": 4, "eta_seconds": 48})
    assert message.render() == "Waiting for 4 more confirmations, about 48 s."
    assert message.render("zh-CN") == "还需等待 4 个确认，约 48 秒。"


def test_an_unknown_language_falls_back_to_english() -> None:
    params = PLAUSIBLE_PARAMS["below_minimum"]
    assert render("below_minimum", params, "fr") == render("below_minimum", params, "en")


@pytest.mark.parametrize("language", LANGUAGES)
def test_a_missing_parameter_still_renders_without_placeholders(language: str) -> None:
    text = render("awaiting_confirmations", {"remaining": 4}, language)
    assert "4" in text
    assert "{" not in text


def test_an_unknown_code_renders_as_the_code_itself() -> None:
    # hints stored by a newer version must not break an older reader
    assert render("some_future_code", {}, "en") == "some_future_code"


def test_a_message_outside_the_catalog_cannot_be_created() -> None:
    with pytest.raises(KeyError, match="not_a_code"):
        Message("not_a_code")


@pytest.mark.parametrize("reason", list(RejectReason))
def test_every_reject_reason_has_a_message(reason: RejectReason) -> None:
    assert Message(reason.value).render("zh-CN")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("zh-CN,zh;q=0.9,en;q=0.8", "zh-CN"),
        ("en-US", "en"),
        ("en-US,en;q=0.9", "en"),
        ("en", "en"),
        ("zh", "zh-CN"),
        ("ZH-cn", "zh-CN"),
        ("zh-Hans-CN", "zh-CN"),
        ("zh-SG", "zh-CN"),
        ("en;q=0.5,zh-CN;q=0.8", "zh-CN"),
        ("zh;q=0.3,en;q=0.7", "en"),
        ("fr, zh-CN;q=0.5", "zh-CN"),
        ("zh-CN;q=0.5,en;q=0.5", "zh-CN"),  # a tie keeps the first listed
        ("*", "en"),
        # nothing we render: the fallback
        ("fr", "en"),
        ("fr-FR,fr;q=0.9,de;q=0.8", "en"),
        # traditional Chinese is not simplified Chinese
        ("zh-TW", "en"),
        ("zh-Hant", "en"),
        ("zh-Hant-TW,zh;q=0.5,en;q=0.9", "en"),
        (None, "en"),
        ("", "en"),
        # garbage is ignored, never an error
        (";;;q=abc", "en"),
        ("zh-CN;q=abc", "en"),
        ("zh-CN;q=abc,en;q=0.1", "en"),
        (",,,", "en"),
        ("q=0.5", "en"),
    ],
)
def test_negotiate_language(header: str | None, expected: str) -> None:
    assert negotiate_language(header) == expected


def test_negotiate_language_allows_whitespace_before_the_weight() -> None:
    assert negotiate_language("zh-CN;q=0.9, en; q=0.5") == "zh-CN"


def test_negotiate_language_never_picks_a_language_refused_with_q_zero() -> None:
    assert negotiate_language("fr, zh;q=0") == "en"


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_negotiate_language_always_returns_a_rendered_language(header: str) -> None:
    assert negotiate_language(header) in LANGUAGES


@pytest.mark.parametrize(
    ("reason", "code", "english"),
    [
        (None, "provider_failed", "psp reports that the payment failed."),
        ("", "provider_failed", "psp reports that the payment failed."),
        (
            "insufficient_funds",
            "payment_failed_insufficient_funds",
            "The card was declined for insufficient funds. Add funds or use another card,"
            " then start a new deposit.",
        ),
        ("DO_NOT_HONOR", "payment_failed_card_declined", None),
        ("expired_card", "payment_failed_expired_card", None),
        ("incorrect_cvc", "payment_failed_card_details", None),
        ("authentication_failed", "payment_failed_authentication", None),
        ("transfer_not_received", "payment_failed_transfer_expired", None),
        (
            "account_closed",
            "payment_failed_transfer_returned",
            "The bank transfer was returned (account_closed). Check the account details and"
            " the reference, then start a new deposit.",
        ),
        (
            "processing_error",
            "provider_failed_reason",
            "psp reports that the payment failed (processing_error). Try again or use another"
            " payment method.",
        ),
    ],
)
def test_a_payment_failure_gets_the_hint_for_its_code(
    reason: str | None, code: str, english: str | None
) -> None:
    message = payment_failure("psp", reason)
    assert message.code == code
    if english is not None:
        assert message.render("en") == english
    assert message.render("zh-CN") != message.render("en")


def test_a_failure_code_is_shown_only_as_safe_bounded_text() -> None:
    message = payment_failure("psp", "<script>alert(1)</script>" + "x" * 200)
    assert message.code == "provider_failed_reason"
    shown = message.params["reason"]
    assert not set("<>()").intersection(shown)
    assert len(shown) == 64
    assert payment_failure("psp", "<>").params["reason"] == "unknown"
