"""Chains: EVM JSON-RPC clients and watch-only address derivation."""
