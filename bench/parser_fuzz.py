"""Feed 1,000,000 mutated torture messages to the parser; print how many non-SIP errors escaped.

    python bench/parser_fuzz.py [--count 1000000] [--workers 2] [--seed 4475]

Mutations are those of tests/unit/test_parser_fuzz.py (bit flips, truncations, duplicated and
deleted spans, inserted CR/LF/NUL/quotes/angle brackets...), drawn from a seeded generator so a
run is reproducible; each input goes through parse_message, every typed view, validate,
check_request and serialising back. An escape is any exception other than SipSyntaxError: the
first few are printed with the input that caused them. The exit status is 1 if any escaped.
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runtime.sip.errors import SipSyntaxError  # noqa: E402
from runtime.sip.message import Request, StreamFramer, check_request, parse_message  # noqa: E402

SAMPLES = [p.read_bytes() for p in sorted((ROOT / "tests" / "conformance").glob("*/*.dat"))]
INSERTS = [b"\r", b"\n", b"\r\n", b"\r\n ", b"\x00", b'"', b"\\", b"<", b">", b";", b",", b":", b"@",
           b"[", b"]", b" ", b"\t", b"=", b"%", b"\xff", b"\xc3", b"SIP/2.0", b"\r\n\r\n", b"9" * 12]
VIEWS = ("call_id", "cseq", "vias", "top_via", "from_", "to", "contacts", "contact_star", "routes",
         "record_routes", "content_type", "expires", "max_forwards")


def mutate(rng: random.Random) -> bytes:
    data = bytearray(rng.choice(SAMPLES))
    for _ in range(rng.randint(1, 4)):
        if not data:
            break
        kind = rng.randrange(6)
        i = rng.randrange(len(data))
        if kind == 0:
            data[i] ^= 1 << rng.randrange(8)
        elif kind == 1:
            del data[i:]
        elif kind == 2:
            data[i:i] = data[i : rng.randint(i, min(len(data), i + 64))]
        elif kind == 3:
            data[i:i] = rng.choice(INSERTS)
        elif kind == 4:
            del data[i : rng.randint(i, min(len(data), i + 16))]
        else:
            data[i] = rng.randrange(256)
    return bytes(data)


def exercise(data: bytes, stream: bool) -> None:
    try:
        msg = parse_message(data, stream=stream)
    except SipSyntaxError:
        return
    for view in VIEWS:
        try:
            getattr(msg, view)
        except SipSyntaxError:
            pass
    try:
        msg.validate()
    except SipSyntaxError:
        pass
    if isinstance(msg, Request):
        check_request(msg)
    parse_message(bytes(msg), stream=stream)


def work(args: tuple[int, int, int]) -> tuple[int, int, list[str]]:
    """Run `count` inputs from the generator seeded `seed`; return (inputs, escapes, reports)."""
    seed, count, index = args
    rng = random.Random(f"{seed}-{index}")
    escapes = 0
    reports: list[str] = []
    framer_every = 50
    for n in range(count):
        data = mutate(rng)
        try:
            exercise(data, stream=bool(n & 1))
            if n % framer_every == 0:
                framer = StreamFramer(max_size=4096)
                try:
                    framer.feed(data)
                    framer.feed(b"")
                except SipSyntaxError:
                    pass
        except SipSyntaxError:
            # check_request promises never to raise, and what we serialise must parse again
            escapes += 1
            if len(reports) < 3:
                reports.append(f"{traceback.format_exc(limit=4)}input: {data!r}")
        except Exception:  # noqa: BLE001 - counting them is the point
            escapes += 1
            if len(reports) < 3:
                reports.append(f"{traceback.format_exc(limit=4)}input: {data[:300]!r}")
    return count, escapes, reports


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=1_000_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=4475)
    args = ap.parse_args()
    chunks = 40
    per = args.count // chunks
    jobs = [(args.seed, per + (1 if i < args.count % chunks else 0), i) for i in range(chunks)]
    t0 = time.perf_counter()
    total = escapes = 0
    reports: list[str] = []
    with multiprocessing.Pool(args.workers) as pool:
        for count, esc, rep in pool.imap_unordered(work, jobs):
            total += count
            escapes += esc
            reports.extend(rep)
    elapsed = time.perf_counter() - t0
    for report in reports[:5]:
        print(report)
    print(f"inputs: {total:,}  escapes: {escapes}  {total / elapsed:,.0f} inputs/s "
          f"({elapsed:.1f} s, {args.workers} workers, seed {args.seed})")
    sys.exit(1 if escapes else 0)


if __name__ == "__main__":
    main()
