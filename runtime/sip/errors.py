"""The SIP core's own error types: every bad input ends in one of these, never another exception."""


class SipError(Exception):
    """Base of the SIP core's errors."""


class SipSyntaxError(SipError):
    """A message, header or URI that does not follow the grammar.

    `status` is the response a request deserves (400 unless a more precise code fits, e.g. 416 for an
    unsupported URI scheme); `reason` goes into the reason phrase so the peer's log says what was wrong.
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status

    @property
    def reason(self) -> str:
        text = str(self)
        return "Bad Request (" + text[:80].replace("\r", " ").replace("\n", " ") + ")"
