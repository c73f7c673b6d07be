"""Plant one-line bugs in the core rules, one at a time, and report which the fast suite catches.

Each mutant is a file, an exact snippet and its replacement: a small, plausible change of
meaning in the rules that decide lateness, joining, dedup, finality and rollups. The script
copies the repository (git-tracked and untracked files as they are in the working tree,
not `.git` or `.venv`) into a temporary directory, and for each mutant writes the changed
file there, runs the fast suite (`tests/operators`, `tests/config`,
`tests/connectors/test_recovery.py`) with the repository's venv python and that copy
first on `PYTHONPATH`, and restores the file. The working tree is never written to (others
edit and test in it). A mutant whose snippet is not found exactly once is reported as
"not applicable" (the code moved on: update its snippet) and makes the exit status 1.

A plain script rather than `mutmut`: the mutants worth having are a curated few at the
boundaries of the rules, not every operator of every line, and one run of the fast suite
per mutant keeps the whole check at a few minutes per mutant at most.

    make mutate                              # every mutant
    make mutate ARGS="-k join"               # mutants whose name contains "join"
    make mutate ARGS="--exclude tests/operators/test_boundaries.py"   # without a test file
    make mutate ARGS="--list"                # the mutants, nothing run
    make mutate ARGS="--check"               # do their snippets still apply?
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FAST_SUITE = ("tests/operators", "tests/config", "tests/connectors/test_recovery.py")


@dataclass(frozen=True)
class Mutant:
    """`path`'s `original` snippet becomes `replacement`. `alternatives` are other
    (original, replacement) forms of the same change, for code in the middle of a
    refactor; the first whose original occurs exactly once is applied."""

    name: str
    path: str
    original: str
    replacement: str
    why: str
    alternatives: tuple[tuple[str, str], ...] = ()

    def forms(self) -> tuple[tuple[str, str], ...]:
        return ((self.original, self.replacement), *self.alternatives)


MUTANTS = (
    # The six of issue 14: each went unnoticed by the fast suite before (its two lateness
    # boundaries are one since inferences and feedback share `ColumnarClock.late`).
    Mutant("lateness-boundary", "operators/columnar/clock.py",
           "verdict: Any = is_final(cast(Any, window_ends), cast(Any, cutoffs), allowed_lateness)",
           "verdict: Any = window_ends + allowed_lateness < cutoffs",
           "an event (inference or feedback) whose window end + lateness equals its cutoff "
           "counts on time"),
    Mutant("join-give-up-boundary", "operators/join.py",
           "while deadlines and deadlines[0][0] <= watermark:",
           "while deadlines and deadlines[0][0] < watermark:",
           "feedback keeps waiting when the watermark is exactly at ts + join.wait"),
    Mutant("label-raw-value", "operators/partition_stage.py",
           "mine, theirs = object_column(labels)[paired], predictions[at]",
           "mine, theirs = object_column(given)[paired], predictions[at]",
           "a label compared as sent, not as a trimmed string (1, 1.0, ' cat ')"),
    Mutant("pending-ids-not-deduped-on-resume", "operators/partition_stage.py",
           "waiting = [event for event, _, _ in self.pending.items()] + self.released.events()",
           "waiting = []",
           "after a resume, an event_id still waiting to join can be counted again"),
    Mutant("final-on-fastest-partition", "operators/merge_stage.py",
           "return min(self.watermarks.values())", "return max(self.watermarks.values())",
           "windows go final when one partition, not every one, passed their end"),
    Mutant("late-rows-repeat-cells", "operators/cells.py",
           "return list(dict.fromkeys(rollup_cell(cell, g) for g in self.grouping_sets))",
           "return [rollup_cell(cell, g) for g in self.grouping_sets]",
           "a late event gets a metrics_late row per grouping set, not per distinct cell"),
    # More of the core rules.
    Mutant("window-final-boundary", "operators/windows.py",
           "return window_end + allowed_lateness <= watermark",
           "return window_end + allowed_lateness < watermark",
           "a window is not final when the watermark is exactly at its end + lateness"),
    Mutant("final-before-every-partition-heard", "operators/merge_stage.py",
           "if len(self.watermarks) < self.config.partitions:", "if not self.watermarks:",
           "a partition not heard from yet does not hold finality back"),
    Mutant("final-rows-early-version", "operators/merge_stage.py",
           "version=FINAL_VERSION", "version=int(self._now())",
           "final rows versioned like early rows: a replay's early row can replace them"),
    Mutant("watermark-ignores-disorder", "operators/clock.py",
           "return max_ts - max_out_of_orderness", "return max_ts",
           "the watermark is the largest event time, with no allowance for disorder"),
    Mutant("emitted-watermark-not-held-back", "operators/clock.py",
           "return self.watermark - self.join_wait", "return self.watermark",
           "the watermark passed downstream is not held back by join.wait"),
    Mutant("idle-while-backlog", "operators/clock.py",
           "caught_up and now - self.last_data >= self.idle_timeout",
           "now - self.last_data >= self.idle_timeout",
           "a partition with a backlog still to read counts as idle"),
    Mutant("dedup-horizon-ignored", "operators/dedup.py",
           "cutoff = watermark - self.horizon", "cutoff = watermark",
           "event_ids are forgotten as soon as the watermark passes them"),
    Mutant("join-ttl-ignored", "operators/join.py",
           "cutoff = watermark - self.ttl", "cutoff = watermark",
           "inferences leave the join cache as soon as the watermark passes them"),
    Mutant("slice-misses-oldest-window", "operators/windows.py",
           "while start >= lowest:", "while start > lowest:",
           "a slice is not added to the oldest window that contains it"),
    Mutant("rollup-marker-inverted", "operators/cells.py",
           "if name not in kept:", "if name in kept:",
           "a grouping set rolls up the dims it keeps instead of the others"),
    Mutant("label-float-not-normalized", "operators/metrics.py",
           "if isinstance(value, float) and value.is_integer():", "if False:",
           "a label 1.0 reads '1.0', not '1'"),
    Mutant("ctr-over-feedback", "operators/metrics.py",
           '"ctr": _proportion("clicks", "inference_count")',
           '"ctr": _proportion("clicks", "feedback_count")',
           "click-through rate over feedback instead of impressions",
           (('_rate_of("clicks", "inference_count")', '_rate_of("clicks", "feedback_count")'),)),
    Mutant("ratio-zero-denominator", "operators/metrics.py",
           "return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)",
           "return np.where(den >= 0, num / np.where(den > 0, den, 1.0), np.nan)",
           "a ratio with a zero denominator reads 0 instead of null"),
)  # fmt: skip


@dataclass
class Outcome:
    mutant: Mutant
    verdict: str  # killed | survived | not applicable
    detail: str
    seconds: float


def copy_repository(target: Path) -> None:
    """The working tree's tracked and untracked (not ignored) files, as they are now."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, check=True, capture_output=True,
    ).stdout.decode()  # fmt: skip
    for name in sorted(set(filter(None, listed.split("\0")))):
        source = ROOT / name
        if not source.is_file():  # deleted in the working tree
            continue
        destination = target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, destination)


def _read(path: Path) -> str:
    return path.read_text() if path.is_file() else ""


def apply(mutant: Mutant, text: str) -> str | None:
    """The mutated text, or None when no form's snippet occurs exactly once."""
    for original, replacement in mutant.forms():
        if text.count(original) == 1:
            return text.replace(original, replacement)
    return None


# Loaded into each suite run (`-p`): a failing hypothesis test would spend minutes
# shrinking its example, which a verdict does not need.
NO_SHRINK_PLUGIN = "_mutate_no_shrink"
NO_SHRINK_SOURCE = """from hypothesis import Phase, settings

settings.register_profile("mutate", phases=[p for p in Phase if p is not Phase.shrink])
settings.load_profile("mutate")
"""

FAILED = re.compile(r"^(?:FAILED|ERROR) (\S+)", re.MULTILINE)
XPASS = re.compile(r"^XPASS\(strict\) (\S+)", re.MULTILINE)


def run_suite(
    copy: Path, suite: list[str], timeout: float, seed: int, storage: Path
) -> tuple[int | None, str]:
    """Run the fast suite in `copy`; (exit status or None on timeout, its output)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    env.update(PYTHONPATH=str(copy), PYTHONDONTWRITEBYTECODE="1",
               HYPOTHESIS_STORAGE_DIRECTORY=str(storage))  # fmt: skip
    command = [str(ROOT / ".venv" / "bin" / "python"), "-m", "pytest", "-x", "-q",
               "-p", "no:cacheprovider", "-p", NO_SHRINK_PLUGIN, f"--hypothesis-seed={seed}",
               *suite]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=copy, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the suite and anything it started
        output, _ = process.communicate()
        return None, output
    return process.returncode, output


def first_failure(output: str) -> str:
    match = FAILED.search(output) or XPASS.search(output)
    if match:
        return match.group(1)
    lines = [line for line in output.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def check_imports_from(copy: Path) -> None:
    """The suite must import the copy's modules, not the working tree's (an editable
    install could shadow PYTHONPATH)."""
    env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}
    found = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "python"), "-c",
         "import operators.join, tests.harness; print(operators.join.__file__); "
         "print(tests.harness.__file__)"],
        cwd=copy, env=env, check=True, capture_output=True, text=True,
    ).stdout.split()  # fmt: skip
    for path in found:
        if not Path(path).resolve().is_relative_to(copy.resolve()):
            raise SystemExit(f"the suite would import {path}, not the copy in {copy}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "-k", dest="select", default="", help="only mutants whose name contains this"
    )
    parser.add_argument(
        "--exclude", action="append", default=[], metavar="PATH",
        help="leave this test file or directory out of the suite (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--timeout", type=float, default=None,
        help="seconds per mutant run (default: 4x the unmutated run, 600 without it)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="hypothesis seed (same seed, same run)")
    parser.add_argument(
        "--no-baseline", action="store_true",
        help="skip the unmutated run that checks the suite passes first",
    )  # fmt: skip
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument(
        "--check", action="store_true",
        help="only say whether each mutant's snippet still applies to the working tree",
    )  # fmt: skip
    args = parser.parse_args(argv)

    mutants = [m for m in MUTANTS if args.select in m.name]
    if args.list or not mutants:
        for m in mutants:
            print(f"{m.name:38} {m.path:30} {m.why}")
        return 0 if mutants else 1
    if args.check:
        stale = [m for m in mutants if apply(m, _read(ROOT / m.path)) is None]
        for m in mutants:
            print(f"{m.name:38} {'not applicable' if m in stale else 'applies'}")
        return 1 if stale else 0
    suite = [*FAST_SUITE, *(f"--ignore={path}" for path in args.exclude)]

    with tempfile.TemporaryDirectory(prefix="pulse-mutate-") as tmp:
        copy = Path(tmp) / "repo"
        copy_repository(copy)
        (copy / f"{NO_SHRINK_PLUGIN}.py").write_text(NO_SHRINK_SOURCE)
        check_imports_from(copy)
        storage = Path(tmp) / "hypothesis"
        print(f"fast suite: {' '.join(suite)}  (copy in {copy})", flush=True)
        timeout = args.timeout or 600.0
        if not args.no_baseline:
            started = time.monotonic()
            status, output = run_suite(copy, suite, timeout, args.seed, storage / "baseline")
            took = time.monotonic() - started
            if status != 0:
                print(output[-3000:])
                print(f"the unmutated suite does not pass ({first_failure(output)}): no verdicts")
                return 2
            # A suite that runs far longer than unmutated loops: the mutant is caught. The
            # bound is relative because the machine may be shared (and slow) right now.
            timeout = args.timeout or 4 * took
            print(f"unmutated: passes in {took:.0f} s (timeout per mutant {timeout:.0f} s)",
                  flush=True)  # fmt: skip

        outcomes: list[Outcome] = []
        for mutant in mutants:
            path = copy / mutant.path
            original = _read(path)
            mutated = apply(mutant, original)
            if mutated is None:
                outcome = Outcome(mutant, "not applicable", "snippet not found exactly once", 0.0)
            else:
                path.write_text(mutated)
                started = time.monotonic()
                try:
                    status, output = run_suite(copy, suite, timeout, args.seed,
                                               storage / mutant.name)  # fmt: skip
                finally:
                    path.write_text(original)
                took = time.monotonic() - started
                if status is None:  # a rule broken so that the suite never ends is caught too
                    outcome = Outcome(mutant, "killed", f"timeout after {timeout:.0f} s", took)
                elif status == 0:
                    outcome = Outcome(mutant, "survived", "", took)
                else:
                    outcome = Outcome(mutant, "killed", first_failure(output), took)
            outcomes.append(outcome)
            print(f"{outcome.mutant.name:38} {outcome.verdict:15} {outcome.seconds:5.0f} s  "
                  f"{outcome.detail}", flush=True)  # fmt: skip

    applicable = [o for o in outcomes if o.verdict != "not applicable"]
    killed = [o for o in applicable if o.verdict == "killed"]
    print()
    for o in outcomes:
        if o.verdict != "killed":
            print(f"{o.verdict.upper()}: {o.mutant.name} ({o.mutant.path}): {o.mutant.why}")
    skipped = len(outcomes) - len(applicable)
    print(f"killed {len(killed)} of {len(applicable)}"
          + (f" ({skipped} not applicable)" if skipped else ""))  # fmt: skip
    return 1 if skipped else 0


if __name__ == "__main__":
    sys.exit(main())
