"""When a source should hold back a stream it has read ahead of the other in event time."""

from __future__ import annotations

from operators.stream_merge import ALIGNMENT_SLACK_MS, reads_ahead

BOTH = ("inferences", "feedback")


def test_a_stream_more_than_the_slack_ahead_of_one_still_reading_waits() -> None:
    at = {"inferences": 100_000, "feedback": 100_000 - ALIGNMENT_SLACK_MS - 1}
    assert reads_ahead("inferences", at, BOTH)
    assert not reads_ahead("feedback", at, BOTH)


def test_streams_within_the_slack_both_read() -> None:
    at = {"inferences": 100_000, "feedback": 100_000 - ALIGNMENT_SLACK_MS}
    assert not reads_ahead("inferences", at, BOTH)
    assert not reads_ahead("feedback", at, BOTH)


def test_a_caught_up_or_ended_stream_holds_nothing_back() -> None:
    at = {"inferences": 500_000, "feedback": 1_000}
    assert not reads_ahead("inferences", at, ["inferences"])  # feedback has nothing to read


def test_a_stream_not_read_yet_counts_as_behind_until_it_says_otherwise() -> None:
    at = {"inferences": 500_000, "feedback": None}
    assert reads_ahead("inferences", at, BOTH)
    assert not reads_ahead("feedback", at, BOTH)
    assert not reads_ahead("inferences", {"inferences": None, "feedback": None}, BOTH)
