"""Media: RTP relay anchored on Callflow.

- ``base``: the seam the B2BUA talks to (MediaBackend.allocate -> MediaSession.anchor(leg, sdp) -> sdp,
  expect, close); rtpengine and aiortc backends will plug in behind it.
- ``relay``: the in-process asyncio backend, ``MediaRelay`` (legs kept bound for reuse, quarantine),
  built from ``ports`` (PortPool), ``latch`` (the sans-IO rule of which source a socket takes media
  from: negotiated hosts only, probation, lock), ``endpoint`` (a leg's sockets, the hot path) and
  ``session`` (RelaySession: one call).
- SDP parsing and the anchoring rewrite are sans-IO and live in ``runtime.sip.sdp``.
"""
