"""Outbound notifications: signed webhooks and the WebSocket stream, from the event log."""
