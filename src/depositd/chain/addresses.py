"""Watch-only deposit addresses: EIP-55 addresses derived from a merchant's account xpub.

The merchant gives the extended *public* key at ``m/44'/60'/0'/0`` (BIP-44, Ethereum, first
account, external chain); address ``i`` is its child ``i``. Private keys never reach us: an
extended private key is refused, so the server can watch addresses but never spend from them.
The same address is valid on every EVM chain.
"""

from __future__ import annotations

from functools import lru_cache

from bip_utils import Bip32Secp256k1, EthAddrEncoder

from depositd.errors import InputError

#: depth of m/44'/60'/0'/0
ACCOUNT_CHAIN_DEPTH = 4
#: non-hardened child indexes
MAX_INDEX = 2**31 - 1


class InvalidXpub(InputError):
    slug = "invalid-xpub"


class WatchOnlyKey:
    """An account-level extended public key that derives deposit addresses."""

    def __init__(self, extended_key: str) -> None:
        text = extended_key.strip()
        if text[1:4] == "prv":
            raise InvalidXpub(
                "that is an extended private key; give the xpub (watch-only), never the xprv"
            )
        try:
            key = Bip32Secp256k1.FromExtendedKey(text)
        except Exception:  # bip-utils raises several unrelated types for malformed input
            raise InvalidXpub("not an extended public key (xpub…)") from None
        if not key.IsPublicOnly():
            raise InvalidXpub("that is an extended private key; give the xpub, never the xprv")
        if key.Depth().ToInt() != ACCOUNT_CHAIN_DEPTH:
            raise InvalidXpub(
                f"give the xpub at m/44'/60'/0'/0 (depth {ACCOUNT_CHAIN_DEPTH}),"
                f" not one at depth {key.Depth().ToInt()}"
            )
        self._key = key
        self.text = text

    def address(self, index: int) -> str:
        """The EIP-55 checksummed address at child ``index``."""
        if not 0 <= index <= MAX_INDEX:
            raise InputError(f"address index {index} is out of range")
        return _derive(self.text, index)


@lru_cache(maxsize=65536)
def _derive(extended_key: str, index: int) -> str:
    key = Bip32Secp256k1.FromExtendedKey(extended_key).ChildKey(index)
    address: str = EthAddrEncoder.EncodeKey(key.PublicKey().KeyObject())
    return address
