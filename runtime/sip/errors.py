"""The SIP core's own error types: every bad input ends in one of these, never another exception."""

# The standard reason phrases (RFC 3261 21) of the codes a parse or check error can carry, so the
# status line a peer sees names the class of the problem before our detail.
REASONS = {
    400: "Bad Request",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    483: "Too Many Hops",
    505: "Version Not Supported",
    513: "Message Too Large",
}


class SipError(Exception):
    """Base of the SIP core's errors."""


class SipSyntaxError(SipError):
    """A message, header or URI that does not follow the grammar.

    `status` is the response a request deserves (400 unless a more precise code fits, e.g. 416 for an
    unsupported URI scheme); `reason` goes into the reason phrase so the peer's log says what was wrong.
    `is_response` is true when the bytes were recognisably a response: those are dropped, never answered.
    """

    def __init__(self, message: str, status: int = 400, *, is_response: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.is_response = is_response

    @property
    def reason(self) -> str:
        text = str(self)
        phrase = REASONS.get(self.status, "Bad Request")
        return phrase + " (" + text[:80].replace("\r", " ").replace("\n", " ") + ")"
