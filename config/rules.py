"""The schema of rules, notification targets, inhibition and silences (`rules:`,
`notify:`, `alerting:` in the settings), validated by pydantic at start.

A rule is one of several types, told apart by its ``type`` (a discriminated union, so an
error names the fields of that type only). Everything is strict (``extra="forbid"``):
a misspelt key stops the start naming it, it is not ignored. Durations are parsed by
:func:`config.settings.parse_duration_ms`, the one parser of the settings.

Checks that need the rest of the settings (a rule's window is a configured window, its
`notify` names exist, its selector names configured dims, names are unique, a
`secret_env` variable is set) run in :func:`rules_problems`, called by
:class:`config.settings.Settings`; each problem names the rule and the field, e.g.
``rules[1] (accuracy-floor).window``. Secrets are never stored in the settings: a
target names the variable, :meth:`NotifyTarget.secret` reads it when delivery starts.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from operators.metrics import HISTOGRAM_METRIC, LATENCY_METRICS, MACRO_F1, METRICS, RATIOS
from operators.rules.alerts import Severity
from operators.rules.selectors import ANY, ROLLUP_DIMS

if TYPE_CHECKING:
    from config.settings import Settings

# Metrics a rule can read: every published number of a `metrics` row.
NUMERIC_METRICS = (*METRICS, MACRO_F1, *LATENCY_METRICS)
# Metrics a canary's test can read: proportions, and means with a sum of squares.
CANARY_METRICS = tuple(name for name, r in RATIOS.items() if r.kind == "proportion" or r.squares)
# Metrics with a distribution per window for a drift rule's PSI and chi-square test:
# the confidence histogram, and proportions (successes and failures, 2 bins).
DISTRIBUTION_METRICS = (
    HISTOGRAM_METRIC,
    *(name for name, r in RATIOS.items() if r.kind == "proportion"),
)
KEPT_DIMS = ("tenant", "model_id", "deployment")  # operators.cells.KEPT_DIMS
BASE_DIMS = (*KEPT_DIMS, *ROLLUP_DIMS)
RULE_TYPES = ("threshold", "canary", "drift", "ratio", "spike")
ACTIONS = ("rollback", "retrain", "scale")
_NAME = r"^[A-Za-z0-9_.-]{1,64}$"


def _duration(value: Any) -> int:
    from config.settings import parse_duration_ms  # settings imports this module

    return parse_duration_ms(value)


def _instant(value: Any) -> int:
    from config.settings import _parse_instant_ms

    try:
        return _parse_instant_ms(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{value!r} is not an RFC 3339 time: {exc}") from None


Duration = Annotated[int, BeforeValidator(_duration), Field(ge=0)]
PositiveDuration = Annotated[int, BeforeValidator(_duration), Field(gt=0)]
Instant = Annotated[int, BeforeValidator(_instant)]  # epoch ms
# An exact value, a list of values, or "*" (operators.rules.selectors).
DimPattern = str | list[str]
Selector = dict[str, DimPattern]


def _check_metric(name: str, allowed: Sequence[str] = NUMERIC_METRICS) -> str:
    if name not in allowed:
        raise ValueError(f"unknown metric {name!r} (choose from {', '.join(allowed)})")
    return name


Metric = Annotated[str, AfterValidator(_check_metric)]
DriftMetric = Annotated[
    str, AfterValidator(lambda name: _check_metric(name, (*NUMERIC_METRICS, HISTOGRAM_METRIC)))
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# --- notification targets -------------------------------------------------------------


class NotifyTarget(Strict):
    """One named receiver: a URL and a payload format, its credentials by env var name."""

    url: str = Field(pattern=r"^https?://\S+$")
    format: Literal["standard", "slack", "pagerduty"] = "standard"
    # standard: the variable holding the Standard Webhooks secret (whsec_<base64>).
    secret_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    # pagerduty: the variable holding the Events API v2 routing (integration) key.
    routing_key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    group_wait: Duration | None = None  # default alerting.group_wait
    timeout: PositiveDuration = 10_000  # per attempt
    max_attempts: int = Field(5, ge=1, le=100)
    backoff_initial: Duration = 500
    backoff_max: Duration = 30_000
    retry_after_max: Duration = 60_000

    @model_validator(mode="after")
    def _credentials_for_format(self) -> NotifyTarget:
        if self.format == "standard" and self.secret_env is None:
            raise ValueError("format standard signs every request: set secret_env")
        if self.format == "pagerduty" and self.routing_key_env is None:
            raise ValueError("format pagerduty needs routing_key_env")
        return self

    def secret(self, environ: Mapping[str, str]) -> str | None:
        return environ.get(self.secret_env) if self.secret_env else None

    def routing_key(self, environ: Mapping[str, str]) -> str | None:
        return environ.get(self.routing_key_env) if self.routing_key_env else None

    def env_problems(self, environ: Mapping[str, str]) -> list[tuple[str, str]]:
        """(field, problem) for each credential variable that is unset or unusable; the
        message names the variable, never its value."""
        problems = []
        for field_name in ("secret_env", "routing_key_env"):
            var = getattr(self, field_name)
            if var is not None and not environ.get(var):
                problems.append((field_name, f"environment variable {var} is not set"))
        secret = self.secret(environ)
        if self.format == "standard" and secret and not _is_webhook_secret(secret):
            problems.append(
                (
                    "secret_env",
                    f"{self.secret_env} is not a Standard Webhooks secret "
                    "(whsec_ followed by base64)",
                )
            )
        return problems


def _is_webhook_secret(secret: str) -> bool:
    try:
        return bool(base64.b64decode(secret.removeprefix("whsec_"), validate=True))
    except (binascii.Error, ValueError):
        return False


# --- rules ------------------------------------------------------------------------------


class RuleBase(Strict):
    """What every rule has: which rows it reads, how its alerts live, who hears of them."""

    name: str = Field(pattern=_NAME)
    window: str  # a configured tumbling or sliding window
    where: Selector = Field(default_factory=dict)
    severity: Severity | None = None  # default alerting.severity
    notify: list[str] = Field(default_factory=list)  # names in `notify`
    for_: Duration = Field(0, alias="for")  # the condition holds this long before firing
    keep_firing_for: Duration | None = None  # default alerting.keep_firing_for
    repeat_interval: Duration | None = None  # default alerting.repeat_interval
    min_samples: int = Field(1, ge=0)  # fewer (the metric's own denominator): inconclusive
    notify_inconclusive: bool = False  # send inconclusive transitions to `notify` too
    action: Literal["rollback", "retrain", "scale"] | None = None

    def selectors(self) -> dict[str, Selector]:
        """Each selector of the rule by its field name (checked against the dims)."""
        return {"where": self.where}

    def cells_read(self) -> dict[str, Selector]:
        """Every selection of `metrics` cells the rule reads, by name: what the rules stage
        picks rows by (`required_reads` and any read for context only)."""
        return self.required_reads()

    def required_reads(self) -> dict[str, Selector]:
        """The selections the rule is evaluated on: aggregation.grouping_sets must compute
        each one's grouping set."""
        return {"where": self.where}


class ThresholdRule(RuleBase):
    """metric op value, on each selected cell."""

    type: Literal["threshold"]
    metric: Metric
    op: Literal["<", "<=", ">", ">=", "==", "!="]
    value: float


def canary_metric_problem(metric: str) -> str | None:
    """Why a canary's sequential test cannot read `metric` (None: it can). It needs a
    proportion's trials and successes, or a mean's count, sum and sum of squares."""
    ratio = RATIOS.get(metric)
    if ratio is None:
        return (
            f"metric {metric}: a canary compares a proportion or a mean "
            f"({', '.join(CANARY_METRICS)}), not {metric}"
        )
    if ratio.kind == "mean" and not ratio.squares:
        return (
            f"metric {metric}: its sum of squares is not aggregated, so the canary test has "
            f"no variance for it (choose from {', '.join(CANARY_METRICS)})"
        )
    return None


class CanaryRule(RuleBase):
    """The canary cells against the baseline cells with the same `match` dims, on one
    metric, by an anytime-valid sequential test at level `alpha`."""

    type: Literal["canary"]
    metric: Metric
    canary: Selector
    baseline: Selector
    match: list[str] = Field(default_factory=lambda: ["model_id"])
    worse: Literal["higher", "lower"]
    margin: float = Field(0.0, ge=0)  # how much worse the canary must be
    margin_type: Literal["relative", "absolute"] = "relative"
    alpha: float = Field(0.01, gt=0, lt=1)
    horizon: PositiveDuration | None = None  # evidence from at most this far back
    # operators.rules.sequential.CanaryTest: samples on each side before a verdict, and
    # the sample size at which the mixture's confidence sequence is tightest.
    min_samples: int = Field(100, ge=0)
    tightest_at: int = Field(20_000, ge=1)

    @model_validator(mode="after")
    def _shape(self) -> CanaryRule:
        if self.action not in (None, "rollback"):
            raise ValueError(f"a canary rule's action is rollback, not {self.action}")
        if not self.canary or not self.baseline:
            raise ValueError("canary and baseline each select at least one dim")
        if self.canary == self.baseline:
            raise ValueError("canary and baseline select the same cells")
        if (problem := canary_metric_problem(self.metric)) is not None:
            raise ValueError(problem)
        return self

    def selectors(self) -> dict[str, Selector]:
        return {"where": self.where, "canary": self.canary, "baseline": self.baseline}

    def required_reads(self) -> dict[str, Selector]:
        return {
            "canary": {**self.where, **self.canary},
            "baseline": {**self.where, **self.baseline},
        }

    def cells_read(self) -> dict[str, Selector]:
        return {**self.required_reads(), **self.version_reads()}

    def version_reads(self) -> dict[str, Selector]:
        """A side that reads the rollup over model_version also reads its per-version rows,
        for the versions only (a rollback names them); none when that grouping set is not
        computed, so it is not required."""
        return {
            f"{side}_versions": {**reads, "model_version": ANY}
            for side, reads in self.required_reads().items()
            if "model_version" not in reads
        }


class TrailingReference(Strict):
    """The reference is the previous `windows` windows of the same cell."""

    kind: Literal["trailing"]
    windows: int = Field(ge=1, le=10_000)


class FixedReference(Strict):
    """The reference is a fixed period of event time [start, end)."""

    kind: Literal["fixed"]
    start: Instant
    end: Instant

    @model_validator(mode="after")
    def _ordered(self) -> FixedReference:
        if self.start >= self.end:
            raise ValueError("reference start must be before end")
        return self


class ChangeDetector(Strict):
    """An online change detector (river) on the metric's series, one point per window;
    the fields of :class:`operators.rules.change_detectors.DetectorSpec` (None: the
    kind's default)."""

    kind: Literal["adwin", "page_hinkley"]
    delta: float | None = Field(None, gt=0)  # adwin: confidence in (0, 1); PH: magnitude
    threshold: float | None = Field(None, gt=0)  # page_hinkley only: lambda
    min_points: int = Field(10, ge=1)  # points before a change can be reported
    mode: Literal["up", "down", "both"] = "both"  # page_hinkley only

    @model_validator(mode="after")
    def _kind(self) -> ChangeDetector:
        if self.kind == "adwin" and self.threshold is not None:
            raise ValueError("adwin has no threshold (its bound is set by delta)")
        if self.kind == "adwin" and self.delta is not None and not self.delta < 1:
            raise ValueError(f"adwin delta is a confidence in (0, 1), got {self.delta}")
        return self


class DriftRule(RuleBase):
    """A distribution (the confidence histogram, or a metric over windows) against a
    reference: PSI and a two-sample test, and/or an online change detector."""

    type: Literal["drift"]
    metric: DriftMetric = HISTOGRAM_METRIC
    reference: Annotated[TrailingReference | FixedReference, Field(discriminator="kind")]
    # The checks of operators.rules.drift (docs/drift.md): PSI above `psi`, the
    # chi-square two-sample test below `test_alpha`; `require` both (default) or either.
    psi: float | None = Field(0.2, gt=0)
    test: Literal["chi2"] | None = "chi2"
    test_alpha: float = Field(0.01, gt=0, lt=1)
    require: Literal["both", "either"] = "both"
    min_samples: int = Field(200, ge=0)  # counts on each side, else inconclusive
    detector: ChangeDetector | None = None

    @model_validator(mode="after")
    def _shape(self) -> DriftRule:
        if self.psi is None and self.test is None and self.detector is None:
            raise ValueError("a drift rule needs psi, test or detector")
        if self.action not in (None, "retrain"):
            raise ValueError(f"a drift rule's action is retrain, not {self.action}")
        if self.metric not in DISTRIBUTION_METRICS and (self.psi or self.test):
            raise ValueError(
                f"metric {self.metric} has no distribution per window for psi and test "
                f"(only {', '.join(DISTRIBUTION_METRICS)}): set psi: null and test: null "
                "and use a detector on its series"
            )
        return self


class Quantity(Strict):
    """A ratio's operand: a published metric. (`attribute`, the sum of a numeric inference
    attribute, is refused: nothing aggregates attribute sums yet.)"""

    metric: Metric | None = None
    attribute: str | None = Field(None, pattern=_NAME)

    @model_validator(mode="after")
    def _one(self) -> Quantity:
        if (self.metric is None) == (self.attribute is None):
            raise ValueError("give exactly one of metric or attribute")
        if self.attribute is not None:
            raise ValueError(
                f"attribute {self.attribute!r}: sums of inference attributes are not "
                "aggregated yet; use a metric (e.g. {metric: inference_count})"
            )
        return self


class RatioRule(RuleBase):
    """numerator / denominator × scale op value (e.g. report amount per $100k of volume)."""

    type: Literal["ratio"]
    numerator: Quantity
    denominator: Quantity
    scale: float = Field(1.0, gt=0)
    op: Literal["<", "<=", ">", ">="]
    value: float


class SpikeRule(RuleBase):
    """The metric's relative change against the mean of its trailing windows."""

    type: Literal["spike"]
    metric: Metric
    baseline_windows: int = Field(10, ge=1, le=10_000)
    direction: Literal["up", "down", "both"] = "up"
    change: float = Field(gt=0)  # relative: 0.5 fires at +50 % (or -50 %)


Rule = Annotated[
    ThresholdRule | CanaryRule | DriftRule | RatioRule | SpikeRule, Field(discriminator="type")
]


# --- inhibition and silences --------------------------------------------------------------


class RuleMatcher(Strict):
    """Alerts of the named rules or of rules of the named types."""

    rules: list[str] = Field(default_factory=list)
    types: list[Literal["threshold", "canary", "drift", "ratio", "spike"]] = Field(
        default_factory=list
    )

    @model_validator(mode="after")
    def _not_empty(self) -> RuleMatcher:
        if not self.rules and not self.types:
            raise ValueError("name rules or types")
        return self


class InhibitRule(Strict):
    """While a source alert fires, target alerts with the same `equal` dims are muted."""

    source: RuleMatcher
    target: RuleMatcher
    equal: list[str] = Field(default_factory=lambda: ["model_id"])


class SilenceSettings(Strict):
    """Mute alerts matching `matchers` (dims, and `rule`) until an instant of event time."""

    matchers: Selector = Field(min_length=1)
    until: Instant  # RFC 3339 (or epoch ms); compared with event time
    comment: str = ""


class AlertingSettings(Strict):
    """Defaults for every rule and target, inhibition and silences."""

    group_wait: Duration = 30_000
    repeat_interval: Duration = 4 * 3_600_000  # 0: no repeats while firing
    keep_firing_for: Duration = 0
    severity: Severity = Severity.WARNING
    resolved_retention: Duration = 3_600_000  # resolved alerts are forgotten after this
    inhibit: list[InhibitRule] = Field(default_factory=list)
    silences: list[SilenceSettings] = Field(default_factory=list)


# --- checks across the settings -----------------------------------------------------------


def rule_label(index: int, rules: Sequence[Any]) -> str:
    """How an error names a rule: ``rules[1] (accuracy-floor)``."""
    name = rules[index].get("name") if isinstance(rules[index], Mapping) else None
    return f"rules[{index}] ({name})" if isinstance(name, str) else f"rules[{index}]"


def rules_problems(
    settings: Settings, environ: Mapping[str, str]
) -> list[tuple[tuple[str | int, ...], str]]:
    """(location, problem) for what a rule, target or inhibition names but the settings do
    not have; an empty list when all is consistent."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    windows = {w.name: w for w in settings.windows}
    usable = [w.name for w in settings.windows if w.kind != "session"]
    dims = (*BASE_DIMS, *settings.aggregation.extra_dims)
    grouping_sets = {frozenset(g) for g in settings.aggregation.grouping_set_tuples()}
    seen: dict[str, int] = {}
    for i, rule in enumerate(settings.rules):
        if rule.name in seen:
            problems.append(
                (("rules", i, "name"), f"{rule.name!r} is also rules[{seen[rule.name]}]")
            )
        seen.setdefault(rule.name, i)
        window = windows.get(rule.window)
        if window is None or window.kind == "session":
            problems.append(
                (
                    ("rules", i, "window"),
                    f"{rule.window!r} is not a configured tumbling or sliding "
                    f"window (config `windows`: {', '.join(usable)})",
                )
            )
        for target in rule.notify:
            if target not in settings.notify:
                known = ", ".join(settings.notify) or "none configured"
                problems.append(
                    (("rules", i, "notify"), f"{target!r} is not in `notify` ({known})")
                )
        for field_name, selector in rule.selectors().items():
            for dim, pattern in selector.items():
                if dim not in dims:
                    problems.append(
                        (
                            ("rules", i, field_name, dim),
                            f"unknown dim (choose from {', '.join(dims)})",
                        )
                    )
                elif pattern == [] or (isinstance(pattern, list) and ANY in pattern):
                    problems.append(
                        (("rules", i, field_name, dim), 'a list of values, without "*", not empty')
                    )
        for field_name, reads in rule.required_reads().items():
            rollups = frozenset(d for d in reads if d in ROLLUP_DIMS)
            if rollups not in grouping_sets:
                problems.append(
                    (
                        ("rules", i, field_name),
                        f"reads the grouping set {sorted(rollups)}, "
                        "which aggregation.grouping_sets does not compute",
                    )
                )
        if isinstance(rule, CanaryRule):
            if window is not None and window.kind == "sliding":
                tumbling = [w.name for w in settings.windows if w.kind == "tumbling"]
                problems.append(
                    (
                        ("rules", i, "window"),
                        f"{rule.window!r} is a sliding window: a canary adds windows up, and "
                        "overlapping ones would count an event several times (use a tumbling "
                        f"window: {', '.join(tumbling)})",
                    )
                )
            for dim in rule.match:
                if dim not in dims:
                    problems.append((("rules", i, "match"), f"unknown dim {dim!r}"))
    for target_name, notify_target in settings.notify.items():
        for field_name, problem in notify_target.env_problems(environ):
            problems.append(
                (("notify", target_name, field_name), f"target {target_name}: {problem}")
            )
    names = set(seen)
    for j, inhibit in enumerate(settings.alerting.inhibit):
        for side in ("source", "target"):
            for rule_name in getattr(inhibit, side).rules:
                if rule_name not in names:
                    problems.append(
                        (("alerting", "inhibit", j, side, "rules"), f"no rule named {rule_name!r}")
                    )
        for dim in inhibit.equal:
            if dim not in dims:
                problems.append((("alerting", "inhibit", j, "equal"), f"unknown dim {dim!r}"))
    return problems
