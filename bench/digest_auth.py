"""Throughput of the digest hot paths: a registrar verifies one Authorization per REGISTER.

Run: python -m bench.digest_auth  (or PYTHONPATH=. python bench/digest_auth.py)
"""

from __future__ import annotations

import timeit

from runtime.sip.digest import (
    DigestClient,
    DigestServer,
    parse_challenge,
    parse_credentials,
    select_challenge,
)


def main() -> None:
    server = DigestServer("callflow.test", secret=b"k" * 32)
    client = DigestClient("alice", "s3cret")
    challenges = server.challenge(0.0)
    chosen = select_challenge(challenges)
    assert chosen is not None
    value = client.authorize(chosen, "REGISTER", "sip:callflow.test")
    passwords = {"alice": "s3cret"}.get
    cases = {
        "parse_challenge": lambda: parse_challenge(challenges[0]),
        "parse_credentials": lambda: parse_credentials(value),
        "challenge": lambda: server.challenge(0.0),
        "authorize": lambda: client.authorize(chosen, "REGISTER", "sip:callflow.test"),
        # replays after the first call, which still parses and hashes in full
        "verify": lambda: server.verify(value, "REGISTER", passwords, 1.0),
    }
    for name, fn in cases.items():
        n, _ = timeit.Timer(fn).autorange()
        best = min(timeit.repeat(fn, number=n, repeat=5)) / n
        print(f"{name:18} {best * 1e6:8.2f} us/op")


if __name__ == "__main__":
    main()
