"""Who may use the server, and how hard anyone may push it: digest challenges and the guessing guard
(`auth`, per source and per account), the flood and scanner guard (`flood`). Line trust (which
addresses are a provider's) is runtime/lines/trust.py (`LineTrust`); media latching is runtime/media/latch.py.
docs/security.md says what each defends against and which test shows it."""
