"""Watch-only address derivation against published vectors."""

from __future__ import annotations

import pytest
from bip_utils import Bip39SeedGenerator, Bip44, Bip44Changes, Bip44Coins

from depositd.chain.addresses import InvalidXpub, WatchOnlyKey
from depositd.errors import InputError

#: the mnemonic anvil (and hardhat) fund their default accounts from
ANVIL_MNEMONIC = "test test test test test test test test test test test junk"
#: anvil's default accounts, m/44'/60'/0'/0/0 … /9, as anvil prints them at start-up
ANVIL_ACCOUNTS = [
    "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
    "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
    "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC",
    "0x90F79bf6EB2c4f870365E785982E1f101E93b906",
    "0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65",
    "0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc",
    "0x976EA74026E726554dB657fA54763abd0C3a0aa9",
    "0x14dC79964da2C08b23698B3D3cc7Ca32193d9955",
    "0x23618e81E3f5cdF7f54C3d65f7FBc0aBf5B21E8f",
    "0xa0Ee7A142d267C1f36714E4a8F75612F20a79720",
]


def account_chain_key(private: bool = False) -> str:
    seed = Bip39SeedGenerator(ANVIL_MNEMONIC).Generate()
    node = (
        Bip44.FromSeed(seed, Bip44Coins.ETHEREUM)
        .Purpose()
        .Coin()
        .Account(0)
        .Change(Bip44Changes.CHAIN_EXT)
    )
    key = node.PrivateKey() if private else node.PublicKey()
    extended: str = key.ToExtended()
    return extended


def test_the_anvil_xpub_derives_anvils_default_accounts() -> None:
    key = WatchOnlyKey(account_chain_key())
    assert [key.address(index) for index in range(10)] == ANVIL_ACCOUNTS


def test_the_dev_xpub_is_anvils() -> None:
    from depositd.cli import DEV_XPUB

    assert account_chain_key() == DEV_XPUB


def test_a_private_key_is_refused() -> None:
    with pytest.raises(InvalidXpub, match="private key"):
        WatchOnlyKey(account_chain_key(private=True))


def test_a_key_at_another_depth_is_refused() -> None:
    seed = Bip39SeedGenerator(ANVIL_MNEMONIC).Generate()
    account = Bip44.FromSeed(seed, Bip44Coins.ETHEREUM).Purpose().Coin().Account(0)
    with pytest.raises(InvalidXpub, match="depth 4"):
        WatchOnlyKey(account.PublicKey().ToExtended())


@pytest.mark.parametrize("text", ["", "xpub", "not a key", "xpub" + "1" * 107])
def test_garbage_is_refused(text: str) -> None:
    with pytest.raises(InvalidXpub):
        WatchOnlyKey(text)


@pytest.mark.parametrize("index", [-1, 2**31])
def test_indexes_stay_non_hardened(index: int) -> None:
    with pytest.raises(InputError, match="out of range"):
        WatchOnlyKey(account_chain_key()).address(index)
