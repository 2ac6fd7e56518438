"""Media: RTP relay anchored on Callflow.

- ``base``: the seam the B2BUA talks to (MediaBackend.allocate -> MediaSession.anchor(leg, sdp) -> sdp,
  close); rtpengine and aiortc backends will plug in behind it.
- ``relay``: the in-process asyncio backend: PortPool, MediaRelay (legs kept bound for reuse), RelaySession,
  symmetric RTP latching.
- SDP parsing and the anchoring rewrite are sans-IO and live in ``runtime.sip.sdp``.
"""
