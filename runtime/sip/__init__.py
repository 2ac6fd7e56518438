"""Sans-IO SIP: messages, URIs, digest auth, transactions and dialogs. No sockets, no asyncio, no clock."""
