"""Links to an order's status page that only someone given the link can make.

A link carries the order id and its MAC under the dashboard key: order ids are not secret
(they appear in logs and webhooks), but without the key nobody can turn one into a link,
so the status pages cannot be enumerated.
"""

from __future__ import annotations

from dataclasses import dataclass

from depositd.signer import Signer

PURPOSE = "order-status"


@dataclass(frozen=True)
class StatusLinks:
    signer: Signer
    #: prefix of every link (``https://pay.example.com``); empty: a path on our own address
    base_url: str = ""

    def token(self, order_id: str) -> str:
        return self.signer.sign(PURPOSE, order_id)

    def check(self, order_id: str, token: str | None) -> bool:
        return token is not None and self.signer.verify(PURPOSE, order_id, token)

    def url(self, order_id: str) -> str:
        return f"{self.base_url.rstrip('/')}/pay/{order_id}?t={self.token(order_id)}"
