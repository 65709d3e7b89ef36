"""Pure deposit rules: money, assets, the deposit state machine, ledger postings, events."""
