"""Realistic synthetic traffic: inferences of several models and versions, their
feedback, and the faults a real event log carries.

Deterministic for a seed (``random.Random``), streaming (events leave a heap in emission
order as soon as nothing earlier can follow, so memory stays flat for any duration), and
honest about what it injected: every :class:`GeneratedEvent` says whether it is invalid,
a duplicate, an orphan (feedback with no inference) or very late, so tests can check the
pipeline against the truth.

With `canary_share` the traffic is one model, `assistant`, whose `primary` and `canary`
deployments are alike (thumbs feedback only, a 10 % thumbs-down rate) until
`canary_degrade_at_ms`, from which the canary's inferences get `canary_thumbs_down`: a
canary that degrades at a known event time, for the canary rule's end-to-end tests. The
draws do not depend on the degradation, so a degrading log and an alike one of the same
seed differ only in the canary's thumbs after that time.

Emission order is event time plus a uniform jitter in [0, jitter_ms]: disorder stays
within `jitter_ms` (keep it below `time.max_out_of_orderness`), except for the very late
events, emitted `late_by_ms` after their timestamp.
"""

from __future__ import annotations

import heapq
import json
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

DEFAULT_START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


@dataclass(frozen=True)
class ModelProfile:
    model_id: str
    versions: tuple[tuple[str, str, float, float], ...]  # (version, deployment, share, quality)
    endpoints: tuple[str, ...]
    classes: tuple[str, ...]
    kinds: tuple[tuple[str, float], ...]  # feedback kind and its weight


CATALOGUE = (
    ModelProfile(
        "fraud-detector",
        (("v12", "primary", 0.9, 0.93), ("v13", "canary", 0.1, 0.81)),
        ("/v1/score",),
        ("legit", "fraud", "review"),
        (("label", 0.8), ("report", 0.2)),
    ),
    ModelProfile(
        "ranker",
        (("r7", "primary", 0.8, 0.30), ("r8", "canary", 0.2, 0.34)),
        ("/v1/rank", "/v1/feed"),
        ("slot-1", "slot-2", "slot-3"),
        (("click", 0.5), ("conversion", 0.2), ("dwell", 0.2), ("thumbs", 0.1)),
    ),
    ModelProfile(
        "assistant",
        (("2026-01", "primary", 0.7, 0.85), ("2026-02", "canary", 0.3, 0.78)),
        ("/v1/chat",),
        ("answer",),
        (("thumbs", 0.5), ("rating", 0.3), ("preference", 0.2)),
    ),
    ModelProfile(
        "bandit",
        (("b3", "primary", 1.0, 0.6),),
        ("/v1/choose",),
        ("arm-a", "arm-b", "arm-c"),
        (("reward", 1.0),),
    ),
)
SEGMENTS = ("web", "ios", "android")
TENANTS = ("acme", "globex")
# Median feedback delay per kind, seconds (delays are log-normal around it).
MEDIAN_DELAY_S = {
    "label": 20.0,
    "thumbs": 8.0,
    "rating": 15.0,
    "reward": 1.0,
    "click": 2.0,
    "conversion": 45.0,
    "dwell": 25.0,
    "preference": 12.0,
    "report": 90.0,
}
# The canary scenario's model: both deployments alike, thumbs feedback only.
CANARY_BASE_THUMBS_DOWN = 0.10


def canary_model(share: float) -> ModelProfile:
    quality = 1.0 - CANARY_BASE_THUMBS_DOWN
    return ModelProfile(
        "assistant",
        (("2026-01", "primary", 1.0 - share, quality), ("2026-02", "canary", share, quality)),
        ("/v1/chat",),
        ("answer",),
        (("thumbs", 1.0),),
    )


MAX_DELAY_S = 400.0  # below join.ttl (10 min) so every on-time feedback can join


@dataclass(frozen=True)
class TrafficProfile:
    seed: int = 0
    start_ms: int = DEFAULT_START_MS
    duration_s: float = 300.0  # event-time span of the inferences
    rate: float = 50.0  # inferences per second of event time
    feedback_probability: float = 0.8
    invalid_rate: float = 0.01
    duplicate_rate: float = 0.02
    orphan_rate: float = 0.01
    late_rate: float = 0.003
    late_by_ms: int = 180_000
    jitter_ms: int = 3_000
    dims: int | None = None  # a synthetic cube of about this many (version, segment, endpoint)
    canary_share: float = 0.0  # > 0: the canary scenario (see the module docstring)
    canary_degrade_at_ms: int | None = None  # the canary's inferences from here on degrade
    canary_thumbs_down: float | None = None  # ...to this thumbs-down probability
    # The inferences' tenants, drawn uniformly; `pulse up` uses ("default",), the tenant of
    # the local key it prints.
    tenants: tuple[str, ...] = TENANTS

    def __post_init__(self) -> None:
        if not 0.0 <= self.canary_share < 1.0:
            raise ValueError(f"canary_share must be in [0, 1), got {self.canary_share}")
        degrades = (self.canary_degrade_at_ms is not None, self.canary_thumbs_down is not None)
        if any(degrades) and not (all(degrades) and self.canary_share > 0):
            raise ValueError(
                "a degrading canary needs canary_share > 0, canary_degrade_at_ms and "
                "canary_thumbs_down together"
            )
        if self.canary_thumbs_down is not None and not 0.0 <= self.canary_thumbs_down <= 1.0:
            raise ValueError(f"canary_thumbs_down must be in [0, 1], got {self.canary_thumbs_down}")


@dataclass(frozen=True, slots=True)
class GeneratedEvent:
    emit_ms: int  # when it is emitted (event time + jitter, or late)
    stream: str  # "inferences" | "feedback": the topic it goes to
    key: str  # the partitioning key (request_id; for unparsable events a stand-in)
    line: bytes
    invalid: str | None = None  # the dead-letter category it must get
    duplicate: bool = False
    orphan: bool = False
    very_late: bool = False


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


class _Cube:
    """A synthetic dims cube for load tests: versions × segments × endpoints ≈ dims."""

    def __init__(self, dims: int) -> None:
        self.versions = [f"v{i}" for i in range(min(10, dims))]
        self.endpoints = [f"/e{i}" for i in range(max(1, min(20, dims // len(self.versions))))]
        per = len(self.versions) * len(self.endpoints)
        self.segments = [f"s{i}" for i in range(max(1, math.ceil(dims / per)))]


class TrafficGenerator:
    def __init__(self, profile: TrafficProfile) -> None:
        self.p = profile
        self.rng = random.Random(profile.seed)
        self.cube = _Cube(profile.dims) if profile.dims else None
        self.catalogue = (
            (canary_model(profile.canary_share),) if profile.canary_share else CATALOGUE
        )
        self._degrade_at = profile.canary_degrade_at_ms
        self._degraded_quality = 1.0 - (profile.canary_thumbs_down or 0.0)
        self._heap: list[tuple[int, int, GeneratedEvent]] = []
        self._seq = 0
        self._event_seq = 0

    def events(self) -> Iterator[GeneratedEvent]:
        """Every event, in emission order."""
        p = self.p
        total = int(p.duration_s * p.rate)
        step_ms = 1000.0 / p.rate
        for i in range(total):
            ts = p.start_ms + int(i * step_ms)
            self._inference(i, ts)
            while self._heap and self._heap[0][0] <= ts:
                yield heapq.heappop(self._heap)[2]
        while self._heap:
            yield heapq.heappop(self._heap)[2]

    # ---- building events ---------------------------------------------------------------

    def _push(self, event: GeneratedEvent) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (event.emit_ms, self._seq, event))

    def _emit_at(self, ts: int) -> int:
        return ts + self.rng.randint(0, self.p.jitter_ms)

    def _inference(self, i: int, ts: int) -> None:
        rng, p = self.rng, self.p
        request_id = f"req-{p.seed}-{i}"
        if self.cube is not None:
            model_id = "cube"
            version = rng.choice(self.cube.versions)
            deployment = "primary"
            quality = 0.8
            endpoint = rng.choice(self.cube.endpoints)
            segment = rng.choice(self.cube.segments)
            classes: tuple[str, ...] = ("a", "b", "c")
            kinds: tuple[tuple[str, float], ...] = (("label", 0.5), ("thumbs", 0.2), ("click", 0.3))
        else:
            model = rng.choice(self.catalogue)
            model_id, classes, kinds = model.model_id, model.classes, model.kinds
            version, deployment, _, quality = rng.choices(
                model.versions, weights=[v[2] for v in model.versions]
            )[0]
            if self._degrade_at is not None and deployment == "canary" and ts >= self._degrade_at:
                quality = self._degraded_quality
            endpoint = rng.choice(model.endpoints)
            segment = rng.choice(SEGMENTS)
        prediction = rng.choice(classes)
        inference = {
            "type": "inference",
            "request_id": request_id,
            "ts": _iso(ts) if rng.random() < 0.5 else ts,
            "model_id": model_id,
            "model_version": version,
            "endpoint": endpoint,
            "segment": segment,
            "tenant": rng.choice(p.tenants),
            "deployment": deployment,
            "prediction": prediction,
            "confidence": round(min(1.0, max(0.0, rng.gauss(quality, 0.12))), 4),
            "latency_ms": round(rng.lognormvariate(math.log(40.0), 0.5), 3),
        }
        if rng.random() < 0.05:
            inference["client"] = "sdk-1.4"  # an unknown field: kept in attributes
        line = _dumps(inference)
        self._push(GeneratedEvent(self._emit_at(ts), "inferences", request_id, line))
        if rng.random() < p.duplicate_rate / 4:
            self._push(
                GeneratedEvent(
                    self._emit_at(ts) + 1, "inferences", request_id, line, duplicate=True
                )
            )
        if rng.random() < p.feedback_probability:
            kind = rng.choices([k for k, _ in kinds], weights=[w for _, w in kinds])[0]
            self._feedback(request_id, ts, kind, prediction, classes, quality)
        if rng.random() < p.orphan_rate:
            kind = rng.choices([k for k, _ in kinds], weights=[w for _, w in kinds])[0]
            self._feedback(
                f"ghost-{p.seed}-{i}", ts, kind, prediction, classes, quality, orphan=True
            )
        if rng.random() < p.invalid_rate:
            self._invalid(ts, request_id)

    def _feedback(
        self,
        request_id: str,
        inference_ts: int,
        kind: str,
        prediction: str,
        classes: tuple[str, ...],
        quality: float,
        orphan: bool = False,
    ) -> None:
        rng, p = self.rng, self.p
        delay_s = min(MAX_DELAY_S, rng.lognormvariate(math.log(MEDIAN_DELAY_S[kind]), 0.6))
        ts = inference_ts + int(delay_s * 1000)
        good = rng.random() < quality
        value: object
        if kind == "label":
            value = (
                prediction
                if good
                else rng.choice([c for c in classes if c != prediction] or [prediction])
            )
        elif kind == "thumbs":
            value = good
        elif kind == "rating":
            value = rng.choice([4, 5]) if good else rng.choice([1, 2, 3])
        elif kind == "reward":
            value = round(rng.gauss(1.0 if good else 0.0, 0.5), 4)
        elif kind in ("click", "conversion"):
            value = good
        elif kind == "dwell":
            value = round(rng.expovariate(1 / (60.0 if good else 8.0)), 3)
        elif kind == "preference":
            value = {
                "winner": rng.choice(["a", "b", "tie"]),
                "policy_a": "2026-01",
                "policy_b": "2026-02",
            }
        else:  # report
            value = {
                "category": rng.choice(["chargeback", "abuse", "spam"]),
                "amount": round(rng.uniform(5, 500), 2) if rng.random() < 0.7 else None,
            }
        self._event_seq += 1
        event = {
            "type": "feedback",
            "event_id": f"fb-{p.seed}-{self._event_seq}",
            "request_id": request_id,
            "ts": ts if rng.random() < 0.5 else _iso(ts),
            "kind": kind,
            "value": value,
            "user_id": f"user-{rng.randint(1, 500)}",
        }
        if rng.random() < 0.5:
            event["session_id"] = f"sess-{rng.randint(1, 2000)}"
        line = _dumps(event)
        very_late = not orphan and rng.random() < p.late_rate
        emit = ts + p.late_by_ms if very_late else self._emit_at(ts)
        self._push(
            GeneratedEvent(emit, "feedback", request_id, line, orphan=orphan, very_late=very_late)
        )
        if rng.random() < p.duplicate_rate:
            self._push(
                GeneratedEvent(
                    emit + rng.randint(1, 5_000),
                    "feedback",
                    request_id,
                    line,
                    duplicate=True,
                    orphan=orphan,
                    very_late=very_late,
                )
            )

    def _invalid(self, ts: int, request_id: str) -> None:
        rng = self.rng
        base = {
            "type": "feedback",
            "event_id": f"bad-{self.p.seed}-{ts}",
            "request_id": request_id,
            "ts": ts,
            "kind": "rating",
            "value": 4,
            "user_id": "user-1",
        }
        choice = rng.randrange(6)
        if choice == 0:
            line, category = _dumps(base)[:-7], "malformed_json"
        elif choice == 1:
            line, category = _dumps({**base, "value": "five"}), "invalid"
        elif choice == 2:
            line, category = _dumps({k: v for k, v in base.items() if k != "user_id"}), "invalid"
        elif choice == 3:
            line, category = _dumps({**base, "kind": "emoji"}), "invalid"
        elif choice == 4:
            line, category = _dumps({**base, "ts": "yesterday"}), "invalid"
        else:
            line, category = _dumps([base]), "not_object"
        self._push(
            GeneratedEvent(self._emit_at(ts), "feedback", request_id, line, invalid=category)
        )
