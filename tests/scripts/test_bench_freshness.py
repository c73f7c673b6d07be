"""The freshness bench reads the flow's own counters from its Prometheus text, and what
the machine gave the flow's worker from the kernel's counters."""

from __future__ import annotations

from scripts.bench_freshness import (
    CpuReading,
    cpu_shares,
    pipeline_counters,
    schedstat_seconds,
    steal_ticks,
)

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


def test_cpu_shares_read_the_worker_thread_and_the_steal_over_the_span() -> None:
    on_cpu, waiting = schedstat_seconds("2500000000 1000000000 1234\n")
    assert (on_cpu, waiting) == (2.5, 1.0)
    first = "cpu  100 0 50 800 10 0 5 20 0 0"
    later = "cpu  130 0 60 860 10 0 5 40 0 0"  # 20 of 120 more ticks stolen
    before = CpuReading(10.0, *schedstat_seconds("1000000000 0 1"), *steal_ticks(first))
    after = CpuReading(12.0, *schedstat_seconds("2000000000 500000000 9"), *steal_ticks(later))
    shares = cpu_shares(before, after)
    assert shares.on_cpu == 0.5 and shares.waiting == 0.25
    assert abs(shares.steal - 20 / 120) < 1e-12
