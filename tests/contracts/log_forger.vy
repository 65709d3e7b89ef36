# pragma version ~=0.4.3
"""
@title Emits ERC-20 Transfer events for transfers that never happened.
@notice The log carries the real event signature and any sender, recipient and value, but
        its address is this contract's: only that tells it from a real token's log.
"""

event Transfer:
    sender: indexed(address)
    receiver: indexed(address)
    value: uint256


@external
def forge(_from: address, _to: address, _value: uint256):
    log Transfer(sender=_from, receiver=_to, value=_value)
