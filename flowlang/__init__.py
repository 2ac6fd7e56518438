"""The flow language: text in, a Program of plain frozen data out. No SIP, no asyncio."""
