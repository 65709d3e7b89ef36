"""Inbound callbacks from upstream providers: their signature schemes and payload mapping."""
