"""Double-entry postings: every deposit credit and reversal as entries that sum to zero.

Accounts are named by key. A user holds ``available`` and ``locked`` sides per asset; the
merchant's ``external`` account per asset is where deposited money enters the ledger from
outside, so its balance is minus everything credited (see ``Account.cached``). Entries are
append-only: a reversal is a new posting with opposite signs, never an edit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache

from depositd.domain.deposits import DepositState, Posting


class Side(StrEnum):
    #: spendable by the user
    AVAILABLE = "available"
    #: the user's, but not spendable (held, frozen)
    LOCKED = "locked"
    #: the merchant's counter-account for money arriving from outside the ledger
    EXTERNAL = "external"


@dataclass(frozen=True)
class Account:
    merchant_id: str
    user_id: str | None
    asset: str
    side: Side
    #: ``user:<id>:<asset>:<side>`` or ``merchant:<id>:<asset>:external``
    key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # made once: recording a batch asks for it many times per entry
        owner = f"user:{self.user_id}" if self.user_id else f"merchant:{self.merchant_id}"
        object.__setattr__(self, "key", f"{owner}:{self.asset}:{self.side}")

    @property
    def cached(self) -> bool:
        """Whether the account row keeps a running balance.

        Users' accounts do. The merchant's external account does not: every deposit of the
        merchant posts to it, and a running balance there would make all of them queue on one
        row lock. Its balance is the sum of its entries, computed when asked.
        """
        return self.side is not Side.EXTERNAL


@dataclass(frozen=True)
class Entry:
    """One line of a posting. ``generation`` tells the n-th credit of a deposit (and the
    reversal of that credit) apart, so a deposit credited, reorged out and mined again is
    credited again — while a second credit of the same generation violates a unique key."""

    account: Account
    amount: int
    kind: Posting
    generation: int


def postings_for(deposit: DepositState, posting: Posting) -> list[Entry]:
    """Entries for ``posting`` on ``deposit`` as it is *after* the transition."""
    available = Account(deposit.merchant_id, deposit.user_id, deposit.asset, Side.AVAILABLE)
    external = _external(deposit.merchant_id, deposit.asset)
    amount = deposit.amount if posting is Posting.CREDIT else -deposit.amount
    # a reversal has already moved the deposit on to its next generation
    generation = deposit.credit_generation - (posting is Posting.REVERSAL)
    return [
        Entry(external, -amount, posting, generation),
        Entry(available, amount, posting, generation),
    ]


@lru_cache(maxsize=1024)
def _external(merchant_id: str, asset: str) -> Account:
    # every deposit of a merchant's asset posts to it: one object, not one per entry
    return Account(merchant_id, None, asset, Side.EXTERNAL)
