"""The freshness bench reads the flow's own counters from its Prometheus text."""

from __future__ import annotations

from scripts.bench_freshness import pipeline_counters

TEXT = """# HELP pulse_pipeline_events_read_total Lines read from the event log
# TYPE pulse_pipeline_events_read_total counter
pulse_pipeline_events_read_total{stream="inferences",topic="inferences"} 30.0
pulse_pipeline_events_read_total{stream="feedback",topic="feedback"} 12.0
pulse_pipeline_events_read_created{stream="feedback",topic="feedback"} 1.7e9
pulse_pipeline_emissions_total 9.0
pulse_feedback_count{window="1m"} 4.0
"""


def test_counters_are_summed_over_their_labels_and_other_metrics_left_out() -> None:
    counters = pipeline_counters(TEXT)
    assert counters["pulse_pipeline_events_read_total"] == 42.0
    assert counters["pulse_pipeline_emissions_total"] == 9.0
    assert not any(name.startswith("pulse_feedback") for name in counters)
