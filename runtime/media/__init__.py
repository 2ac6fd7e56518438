"""Media: RTP relay anchored on Callflow."""
