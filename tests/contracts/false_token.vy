# pragma version ~=0.4.3
"""
@title A token whose transfer returns false instead of reverting (like some early ERC-20s).
@notice A transfer without the balance succeeds as a transaction, moves nothing and logs
        nothing: an exchange that trusts the receipt status and the call data is fooled.
"""

event Transfer:
    sender: indexed(address)
    receiver: indexed(address)
    value: uint256

name: public(String[32])
symbol: public(String[16])
decimals: public(uint8)
balanceOf: public(HashMap[address, uint256])


@deploy
def __init__(_supply: uint256):
    self.name = "Quiet Dollar"
    self.symbol = "QUSD"
    self.decimals = 6
    self.balanceOf[msg.sender] = _supply


@external
def transfer(_to: address, _value: uint256) -> bool:
    if self.balanceOf[msg.sender] < _value:
        return False
    self.balanceOf[msg.sender] -= _value
    self.balanceOf[_to] += _value
    log Transfer(sender=msg.sender, receiver=_to, value=_value)
    return True
