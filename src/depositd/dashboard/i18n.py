"""The dashboard's and the status page's own words, in English and Simplified Chinese.

Deposit hints come from ``domain.messages``; this catalog holds only the pages' labels. The
reader's language is ``?lang=`` (remembered in a cookie), else that cookie, else
``Accept-Language``.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request

from depositd.domain.messages import LANGUAGES, negotiate_language

#: the cookie remembering a language picked with ``?lang=``
LANGUAGE_COOKIE = "depositd_lang"

_CATALOG: dict[str, tuple[str, str]] = {
    # key: (en, zh-CN)
    "dashboard": ("Dashboard", "控制台"),
    "overview": ("Overview", "概览"),
    "deposits": ("Deposits", "充值"),
    "endpoints": ("Endpoints", "回调端点"),
    "deliveries": ("Failing deliveries", "失败的推送"),
    "holds": ("Holds", "待审核"),
    "alerts": ("Alerts", "告警"),
    "reconciliation": ("Reconciliation", "对账"),
    "log_in": ("Log in", "登录"),
    "log_out": ("Log out", "退出"),
    "email": ("Email", "邮箱"),
    "password": ("Password", "密码"),
    "wrong_login": ("The email or the password is wrong.", "邮箱或密码错误。"),
    "too_many_logins": ("Too many attempts; try again in a minute.", "尝试次数过多，请稍后再试。"),
    "signed_in_as": ("Signed in as", "当前用户"),
    "live_feed": ("Live deposits", "实时充值"),
    "live": ("live", "实时"),
    "no_deposits": ("No deposits yet.", "暂无充值。"),
    "id": ("ID", "编号"),
    "user": ("User", "用户"),
    "asset": ("Asset", "资产"),
    "amount": ("Amount", "金额"),
    "status": ("Status", "状态"),
    "confirmations": ("Confirmations", "确认数"),
    "hint": ("Hint", "说明"),
    "created": ("Created", "创建时间"),
    "time": ("Time", "时间"),
    "charts": ("Last 30 minutes", "最近 30 分钟"),
    "chart_deposits": ("Deposits per minute", "每分钟充值笔数"),
    "chart_latency": ("Delivery latency (ms, mean)", "推送延迟（毫秒，平均）"),
    "chart_depth": ("Outbox depth", "待发送队列长度"),
    "active_alerts": ("Active alerts", "当前告警"),
    "no_alerts": ("No active alerts.", "当前没有告警。"),
    "reconciliation_summary": ("Reconciliation", "对账"),
    "mismatches": ("Mismatches", "不一致项"),
    "all_agree": ("Every sum agrees.", "所有金额均一致。"),
    "reconcile_window": ("Provider claims compared since", "比对第三方通知的起始时间"),
    "reconcile_note": (
        "Figures read now from the ledger and stored callbacks. Recovering missed callbacks"
        " from providers runs in the reconciler worker or with 'depositd reconcile'.",
        "以上数字实时读取自账本和已保存的回调。向第三方补查漏掉的回调由对账进程或"
        " 'depositd reconcile' 命令完成。",
    ),
    "kind": ("Kind", "类型"),
    "subject": ("Subject", "对象"),
    "expected": ("Expected", "应为"),
    "actual": ("Found", "实际"),
    "timeline": ("Timeline", "时间线"),
    "deposit": ("Deposit", "充值"),
    "transitions": ("Observations and transitions", "观测与状态变化"),
    "ledger_entries": ("Ledger entries", "账本分录"),
    "no_entries": ("No ledger entries.", "没有账本分录。"),
    "account": ("Account", "账户"),
    "side": ("Side", "方向"),
    "generation": ("Generation", "代次"),
    "webhooks": ("Webhook deliveries", "Webhook 推送"),
    "no_deliveries": ("No deliveries.", "没有推送。"),
    "attempts": ("Attempts", "尝试次数"),
    "attempt": ("Attempt", "尝试"),
    "latency": ("Latency", "延迟"),
    "response": ("Response", "响应"),
    "endpoint": ("Endpoint", "端点"),
    "event": ("Event", "事件"),
    "last_result": ("Last result", "最近结果"),
    "retry": ("Retry", "重试"),
    "replay": ("Replay from here", "从此处重放"),
    "replay_after": ("Replay after seq", "从该序号之后重放"),
    "retried": ("The delivery is due now.", "该推送已安排立即发送。"),
    "replayed": ("Events queued again.", "事件已重新排队。"),
    "approve": ("Approve", "批准"),
    "reject": ("Reject", "拒绝"),
    "approved": ("Approved: the deposit is credited.", "已批准：该笔充值已入账。"),
    "rejected": ("Rejected: the deposit will not be credited.", "已拒绝：该笔充值不会入账。"),
    "no_holds": ("Nothing is held for review.", "没有待审核的充值。"),
    "url": ("URL", "地址"),
    "health": ("Health", "健康状况"),
    "failure_rate": ("Failure rate", "失败率"),
    "failure_streak": ("Failures in a row", "连续失败"),
    "state_enabled": ("enabled", "正常"),
    "state_disabled": ("disabled", "已停用"),
    "state_circuit_open": ("circuit open", "熔断中"),
    "no_endpoints": ("No endpoints.", "没有回调端点。"),
    "of_last": ("of the last {n} requests", "（最近 {n} 次请求）"),
    "severity": ("Severity", "级别"),
    "since": ("Since", "开始时间"),
    "rule": ("Rule", "规则"),
    "not_found": ("Not found.", "未找到。"),
    "back": ("Back", "返回"),
    "dashboard_off": (
        "The dashboard is off: set dashboard.secret_key (DEPOSITD_DASHBOARD__SECRET_KEY).",
        "控制台未启用：请设置 dashboard.secret_key（DEPOSITD_DASHBOARD__SECRET_KEY）。",
    ),
    # the end user's status page
    "pay_title": ("Your deposit", "您的充值"),
    "pay_to": ("Send to this address", "请转账至以下地址"),
    "pay_amount": ("Amount", "金额"),
    "pay_any_amount": ("any amount", "任意金额"),
    "pay_network": ("Network", "网络"),
    "pay_expires": ("Pay before", "请在此时间前付款"),
    "pay_reference": ("Payment reference", "付款参考号"),
    "pay_checkout": ("Open the payment page", "打开付款页面"),
    "pay_progress": ("Progress", "进度"),
    "pay_waiting": ("Waiting for your payment…", "正在等待您的付款……"),
    "pay_credited": ("Credited", "已入账"),
    "pay_incoming": ("On its way", "到账中"),
    "order_awaiting_payment": ("Waiting for payment", "等待付款"),
    "order_confirming": ("Confirming", "确认中"),
    "order_paid": ("Paid", "已付款"),
    "order_underpaid": ("Underpaid", "付款不足"),
    "order_overpaid": ("Overpaid", "超额付款"),
    "order_expired": ("Expired", "已过期"),
    "order_failed": ("Payment failed", "付款失败"),
    "language": ("中文", "English"),
}

#: what each language's switch link offers
_OTHER = {"en": "zh-CN", "zh-CN": "en"}


def translator(language: str) -> Callable[..., str]:
    """``t(key, **params)`` in ``language`` (English for a key without a translation)."""
    column = LANGUAGES.index(language) if language in LANGUAGES else 0

    def t(key: str, **params: object) -> str:
        entry = _CATALOG.get(key)
        if entry is None:
            return key
        text = entry[column]
        return text.format(**params) if params else text

    return t


def other_language(language: str) -> str:
    return _OTHER.get(language, "zh-CN")


def request_language(request: Request) -> tuple[str, bool]:
    """The reader's language, and whether it was picked now (``?lang=``: remember it)."""
    picked = request.query_params.get("lang")
    if picked:
        return negotiate_language(picked), True
    remembered = request.cookies.get(LANGUAGE_COOKIE)
    if remembered in LANGUAGES:
        return remembered, False
    return negotiate_language(request.headers.get("accept-language")), False
