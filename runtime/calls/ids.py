"""The one place a call session id is minted (the `call` field of every event, the call record's
call_id, the prefix of our legs' Call-IDs).

8 random bytes, 16 lowercase hex digits. By the birthday bound, n ids collide with probability about
n^2 / 2^65: one in a million after about 6 million calls, where the former 4 bytes (8 hex digits)
reached an even chance after about 77,000 calls (and one in a hundred after about 9,300), so records
and logs of different calls shared an id. Nothing parses the id's length: it is an opaque token.
"""

from __future__ import annotations

from secrets import token_hex

CALL_ID_BYTES = 8


def new_call_session_id() -> str:
    """A fresh call session id: CALL_ID_BYTES random bytes as lowercase hex (16 characters)."""
    return token_hex(CALL_ID_BYTES)
