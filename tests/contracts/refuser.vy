# pragma version ~=0.4.3
"""
@title Reverts every payment: installed at an address (anvil_setCode), it makes native
       transfers to that address fail, so the transaction is mined with status 0.
"""


@external
@payable
def __default__():
    raise "payments refused"
