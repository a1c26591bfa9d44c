//! RFC 6455 WebSocket: handshake, frame codec and close handshake (sans-IO).
