"""Callflow runtime: the SIP engine, media relay, dialplan, hot reload and CLI."""
