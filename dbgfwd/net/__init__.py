"""The data path: byte relays, loopback listeners, websocket frames (every provider stream ends here)."""
