//! The sans-IO node: hostmap, handshake manager, lighthouse, punchy, relays, connection manager. Pure code.
