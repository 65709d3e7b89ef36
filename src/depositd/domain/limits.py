"""KYC deposit limits: a credit that would take a user past their level's limit is held.

Each asset may cap what one user has credited within ``LIMIT_WINDOW`` (rolling 24 hours) by
the user's KYC level (``Asset.kyc_limits``). The check runs in the recording transaction,
where the credit would be posted: a batch sees what its user already had credited in the
window plus the credits earlier in the same batch, and a deposit over the limit becomes
``held`` instead, with a hint naming the limit, for an operator to approve or reject. An
approved hold is credited whatever the limit: the reviewer decided.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from depositd.domain.assets import LIMIT_WINDOW, Asset
from depositd.domain.messages import Message
from depositd.domain.money import format_amount


@dataclass
class LimitCheck:
    """One recording batch's view of its users' KYC levels and their credits in the window."""

    #: each user's KYC level (users not listed are at level 0)
    levels: Mapping[str, int]
    #: base units credited per (user id, asset code) within the window, counting this batch
    used: dict[tuple[str, str], int] = field(default_factory=dict)

    def hold(self, user_id: str, asset: Asset, amount: int) -> Message | None:
        """Why crediting ``amount`` to the user must wait for review, or None (then it counts
        toward the limit of later credits in this batch)."""
        level = self.levels.get(user_id, 0)
        limit = asset.kyc_limit(level)
        key = (user_id, asset.code)
        used = self.used.get(key, 0)
        if limit is not None and used + amount > limit:
            return Message(
                "held_kyc_limit",
                {
                    "limit": format_amount(limit, asset.decimals),
                    "symbol": asset.symbol,
                    "hours": round(LIMIT_WINDOW.total_seconds() / 3600),
                    "level": level,
                },
            )
        self.used[key] = used + amount
        return None
