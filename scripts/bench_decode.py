"""CPU µs a line of ``BatchDecoder.decode``: two source trees, alternated in one process.

Each tree's ``operators`` package is imported on its own (the modules of the first are
dropped from ``sys.modules`` before the second is imported; both stay alive), so both
decoders read the same lines in the same period (each batch by A and B in turn), as the
house rules want for an A/B on a shared machine. The lines are a bench log's
(``PULSE_HOME/log``): the first ``--lines`` of one feedback and one inference partition,
decoded in batches of ``--batch`` per topic as the flow's consumer reads them. Also
checks that both trees give the same events, offsets and dead letters.

    python scripts/bench_decode.py --a /tmp/base --b . --log <home>/log
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path
from typing import Any


def load_decoder(tree: str) -> tuple[Any, Any]:
    """`(BatchDecoder, msgspec.structs.asdict)` imported from `tree`'s packages."""
    for name in [m for m in sys.modules if m == "operators" or m.startswith("operators.")]:
        del sys.modules[name]
    sys.path.insert(0, tree)
    try:
        import msgspec

        from operators.decode import BatchDecoder

        return BatchDecoder, msgspec.structs.asdict
    finally:
        sys.path.remove(tree)


def lines_of(log: Path, count: int) -> list[tuple[str, list[bytes]]]:
    """Half the lines from each stream's first partition, as (topic, lines)."""
    out = []
    for topic in ("feedback", "inferences"):
        path = sorted((log / topic / "p0000").glob("*.jsonl"))[0]
        with path.open("rb") as f:
            lines = [line.rstrip(b"\n") for _, line in zip(range(count // 2), f, strict=False)]
        out.append((topic, lines))
    return out


def batches(streams: list[tuple[str, list[bytes]]], size: int) -> list[tuple[str, list[bytes]]]:
    """The streams' batches, interleaved as the flow reads them."""
    out = []
    for start in range(0, max(len(lines) for _, lines in streams), size):
        for topic, lines in streams:
            if chunk := lines[start : start + size]:
                out.append((topic, chunk))
    return out


def summary(decoder: Any, chunks: list[tuple[str, list[bytes]]]) -> list[Any]:
    """What a decoder gives: events (as dicts, with their types), offsets, dead letters."""
    out: list[Any] = []
    for topic, chunk in chunks:
        got = decoder.decode(topic, 0, chunk, list(range(len(chunk))))
        events = [(type(e).__name__, _typed(e)) for e in got.events]
        letters = [
            (d.topic, d.partition, d.offset, d.raw, d.error, d.reason) for d in got.dead_letters
        ]
        out.append((events, got.offsets, letters))
    return out


def _typed(event: Any) -> list[Any]:
    return [(f, type(v).__name__, v) for f in event.__struct_fields__ for v in [getattr(event, f)]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--a", required=True, help="tree A (e.g. the base worktree)")
    ap.add_argument("--b", required=True, help="tree B (e.g. this one)")
    ap.add_argument("--log", type=Path, required=True)
    ap.add_argument("--lines", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=5_000)
    ap.add_argument("--pairs", type=int, default=5)
    args = ap.parse_args()
    chunks = batches(lines_of(args.log, args.lines), args.batch)
    n = sum(len(chunk) for _, chunk in chunks)
    arms = {}
    for label, tree in (("A", args.a), ("B", args.b)):
        cls, _ = load_decoder(os.path.abspath(tree))
        arms[label] = cls(65_536, 946_684_800_000, 4_102_444_800_000)
    same = summary(arms["A"], chunks) == summary(arms["B"], chunks)
    print(f"{n:,} lines, batches of {args.batch:,}; same output: {same}")
    gc.freeze()
    for pair in range(args.pairs):
        spent = {"A": 0.0, "B": 0.0}
        gc.collect()
        for k, (topic, chunk) in enumerate(chunks):  # A and B on each batch, turn about
            positions = list(range(len(chunk)))
            for label in ("A", "B") if (pair + k) % 2 == 0 else ("B", "A"):
                start = time.process_time()
                arms[label].decode(topic, 0, chunk, positions)
                spent[label] += time.process_time() - start
        a, b = (spent[label] / n * 1e6 for label in ("A", "B"))
        load = os.getloadavg()[0]
        print(f"pair {pair}: A {a:.2f}  B {b:.2f} µs/line  B/A {b / a:.2f}  (load {load:.1f})")


if __name__ == "__main__":
    main()
