"""The partition stage's parts on columns (issue 13), each testable alone.

Built by role, as Flink's slicing window operator is a thin shell over its parts: a
parser (:mod:`.parser`), a clock (:mod:`.clock`), a dedup set (:mod:`.dedup_set`) and a
join buffer (:mod:`.join_buffer`), the last two over one persistent hashed FIFO
(:mod:`.hash_fifo`), and an accumulator (:mod:`.accumulator`) over the metric families'
objects (:mod:`operators.families`). Each gives exactly what the row-wise component
gives, whatever the batch split (property tests in ``tests/operators/columnar``). The
clock, dedup set, join buffer and accumulator are wired into the partition stage; the
parser is not yet (``docs/columnar.md`` says what remains).
"""
