"""The exceptions depositd raises, one tree so callers catch at the level they care about.

DepositdError
├── ConfigError                  bad configuration; the CLI prints it and exits 2
├── InputError                   a caller sent something we cannot accept (an HTTP 4xx)
│   ├── InvalidAmount            not a positive amount the asset can represent
│   ├── UnknownAsset             asset code not in the configuration
│   ├── UnknownOwner             no such user or deposit address for this merchant
│   └── ObservationConflict      an observation contradicts what we recorded for that deposit
├── RpcError                     talking to a chain node failed (depositd.chain.rpc)
├── UpstreamUnavailable          a provider we depend on did not answer (HTTP 502)
├── NotFound                     the resource does not exist for this merchant
├── Conflict                     the request clashes with a resource's state (HTTP 409)
└── IllegalTransition            a deposit state change the state machine forbids (a bug)
"""

from __future__ import annotations


class DepositdError(Exception):
    """Base of every error depositd raises on purpose."""


class ConfigError(DepositdError):
    """The configuration is invalid; the message names the key."""


class InputError(DepositdError):
    """Something a caller sent cannot be accepted."""

    #: stable problem type slug, see ``depositd.api.problems``
    slug = "invalid-input"


class UpstreamUnavailable(DepositdError):
    """A provider the request depends on did not do its part; trying again may work."""

    slug = "upstream-unavailable"


class InvalidAmount(InputError):
    slug = "invalid-amount"


class UnknownAsset(InputError):
    slug = "unknown-asset"


class UnknownOwner(InputError):
    slug = "unknown-owner"


class ObservationConflict(InputError):
    slug = "observation-conflict"


class NotFound(DepositdError):
    """The resource does not exist, or belongs to another merchant (never say which)."""


class Conflict(DepositdError):
    """The request clashes with the state of a resource."""

    #: stable problem type slug, see ``depositd.api.problems``
    slug = "conflict"


class IllegalTransition(DepositdError):
    """The deposit state machine forbids this change; reaching it is a bug, not bad input."""
