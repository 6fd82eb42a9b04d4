// Chat client: see docs/protocol.md
