"""Typed settings: `config/pulse.yaml` defaults, an optional YAML file over them, then
`PULSE_*` environment variables, validated by pydantic at start.

Environment names are derived from the field paths (``PULSE_<SECTION>_<FIELD>``), not
parsed by splitting on a delimiter: pydantic-settings' ``env_nested_delimiter`` cannot
tell ``PULSE_TIME_MAX_OUT_OF_ORDERNESS`` (time.max_out_of_orderness) apart from a deeper
path, while a lookup from field to name is unambiguous and lets unknown ``PULSE_*``
variables (typos) fail fast instead of being ignored.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import limits
import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from config.rules import (
    RULE_TYPES,
    AlertingSettings,
    NotifyTarget,
    Rule,
    rule_label,
    rules_problems,
)
from operators.errors import PulseError

DEFAULTS_FILE = Path(__file__).with_name("pulse.yaml")
ENV_PREFIX = "PULSE_"
# Variables with the prefix that are not settings.
RESERVED_ENV = {"PULSE_CONFIG", "PULSE_API_KEY"}

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


class SettingsError(PulseError):
    """A setting is missing, malformed or out of range; the message names it."""


class _Inconsistent(Exception):
    """Settings that are each valid but name each other wrongly (config.rules); carries
    (location, problem) pairs for `_validate` to word like field errors."""

    def __init__(self, problems: list[tuple[tuple[str | int, ...], str]]) -> None:
        super().__init__(problems)
        self.problems = problems


def parse_duration_ms(value: Any) -> int:
    """'250ms' / '10s' / '5m' / '1h' / '1d', or integer milliseconds."""
    if isinstance(value, bool):
        raise ValueError("a duration, not a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        if value.strip().isdigit():
            return int(value)
        match = _DURATION.match(value)
        if match:
            return round(float(match.group(1)) * _UNIT_MS[match.group(2)])
    raise ValueError(f"{value!r} is not a duration (use e.g. 250ms, 10s, 5m, 1h, 1d)")


def format_duration(ms: int) -> str:
    """Milliseconds as the units people read: 100000 -> '1m40s', 0 -> '0s'."""
    parts = []
    for unit in ("d", "h", "m", "s", "ms"):
        count, ms = divmod(ms, _UNIT_MS[unit])
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def _parse_instant_ms(value: Any) -> int:
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, int) and not isinstance(value, bool):
        return value
    else:
        dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


Duration = Annotated[int, BeforeValidator(parse_duration_ms), Field(ge=0)]
PositiveDuration = Annotated[int, BeforeValidator(parse_duration_ms), Field(gt=0)]
InstantMs = Annotated[int, BeforeValidator(_parse_instant_ms)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LogSettings(Section):
    backend: Literal["local", "kafka"] = "local"
    partitions: int = Field(4, ge=1, le=4096)
    segment_bytes: int = Field(64 * 1024 * 1024, ge=1024)


class KafkaSettings(Section):
    bootstrap_servers: str = "127.0.0.1:9092"
    topic_prefix: str = Field("pulse", pattern=r"^[A-Za-z0-9._-]+$")
    replication_factor: int = Field(1, ge=1)
    consumer_batch_size: int = Field(5000, ge=1)
    # librdkafka properties, credentials among them: kept out of reprs and messages.
    client_config: dict[str, str] = Field(default_factory=dict, repr=False)

    def topic(self, stream: str) -> str:
        return f"{self.topic_prefix}.{stream}"


class ClickHouseSettings(Section):
    dsn: str | None = Field(None, repr=False)  # may hold a password
    database: str = Field("pulse", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    insert_block_rows: int = Field(100_000, ge=1)
    flush_interval: PositiveDuration = 1000
    max_pending_rows: int = Field(1_000_000, ge=1)
    retry_backoff_max: PositiveDuration = 30_000

    @model_validator(mode="after")
    def _dsn_scheme(self) -> ClickHouseSettings:
        if self.dsn is not None and not re.match(r"^(chdb|https?)://", self.dsn):
            raise ValueError("dsn must start with chdb://, http:// or https://")
        return self


class SourceSettings(Section):
    read_bytes: int = Field(1024 * 1024, ge=4096)
    poll_interval: PositiveDuration = 50


class ValidationSettings(Section):
    max_event_bytes: int = Field(65_536, ge=256)
    min_ts: InstantMs = _parse_instant_ms("2000-01-01T00:00:00Z")
    max_ts: InstantMs = _parse_instant_ms("2100-01-01T00:00:00Z")


class TimeSettings(Section):
    max_out_of_orderness: Duration = 10_000
    allowed_lateness: Duration = 0
    idle_timeout: PositiveDuration = 5_000
    emit_interval: PositiveDuration = 1_000
    early_emit_budget: float = Field(0.25, gt=0, le=1)


class JoinSettings(Section):
    ttl: PositiveDuration = 600_000
    max_entries: int = Field(1_000_000, ge=1)
    wait: Duration = 30_000


class DedupSettings(Section):
    horizon: PositiveDuration = 86_400_000
    max_entries: int = Field(2_000_000, ge=1)


class WindowSettings(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    kind: Literal["tumbling", "sliding", "session"]
    length: PositiveDuration | None = None
    slide: PositiveDuration | None = None
    gap: PositiveDuration | None = None
    # How often this window's early rows go out (default: time.emit_interval). Not part of
    # the recovery fingerprint.
    early_interval: PositiveDuration | None = None
    # Sliding windows only: which of the overlapping open windows emit early rows.
    # `latest` (the default): the one ending soonest of those holding the newest event
    # time, i.e. the latest `length` of events; `all`: every open one, taking turns.
    # Not part of the recovery fingerprint.
    early_windows: Literal["latest", "all"] | None = None

    @model_validator(mode="after")
    def _shape(self) -> WindowSettings:
        if self.kind == "tumbling":
            if self.length is None or self.slide is not None or self.gap is not None:
                raise ValueError(f"window {self.name}: tumbling takes `length` only")
        elif self.kind == "sliding":
            if self.length is None or self.slide is None or self.gap is not None:
                raise ValueError(f"window {self.name}: sliding takes `length` and `slide`")
            if self.slide > self.length:
                raise ValueError(f"window {self.name}: slide must not exceed length")
        elif self.gap is None or self.length is not None or self.slide is not None:
            raise ValueError(f"window {self.name}: session takes `gap` only")
        if self.kind == "session" and self.early_interval is not None:
            raise ValueError(f"window {self.name}: sessions emit no early rows")
        if self.kind != "sliding" and self.early_windows is not None:
            raise ValueError(f"window {self.name}: early_windows is for sliding windows only")
        return self


Dim = Literal["model_version", "segment", "endpoint"]
DEFAULT_DIMS: tuple[Dim, ...] = ("model_version", "segment", "endpoint")


class AggregationSettings(Section):
    dims: list[Dim] = Field(default_factory=lambda: list(DEFAULT_DIMS))
    grouping_sets: Literal["cube"] | list[list[str]] = "cube"
    extra_dims: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]] = Field(
        default_factory=list
    )
    confidence_bins: int = Field(10, ge=1, le=100)
    session_shards: int = Field(4, ge=1, le=1024)

    @model_validator(mode="after")
    def _grouping_sets_use_dims(self) -> AggregationSettings:
        if len(set(self.dims)) != len(self.dims):
            raise ValueError("dims must not repeat")
        if self.grouping_sets != "cube":
            for grouping in self.grouping_sets:
                unknown = set(grouping) - set(self.dims)
                if unknown:
                    raise ValueError(f"grouping set {grouping} names dims not in `dims`: {unknown}")
        return self

    def grouping_set_tuples(self) -> list[tuple[str, ...]]:
        """The grouping sets as tuples of kept dims, finest first, without repeats."""
        if self.grouping_sets == "cube":
            sets = [
                tuple(d for i, d in enumerate(self.dims) if mask >> i & 1)
                for mask in range(2 ** len(self.dims) - 1, -1, -1)
            ]
        else:
            sets = [tuple(d for d in self.dims if d in g) for g in self.grouping_sets]
        return list(dict.fromkeys(sets))


class RunSettings(Section):
    bounded: bool = False
    recovery: bool = True
    recovery_dir: Path | None = None  # default <home>/recovery
    snapshot_interval: PositiveDuration = 10_000
    backup_interval: Duration = 0
    status_interval: PositiveDuration = 1_000


ApiScope = Literal["ingest", "read", "query", "admin"]
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


class ApiKeySettings(Section):
    """One API key, stored as its SHA-256 (keys are random 256-bit tokens, so a fast hash
    is the right one: nothing to brute-force; `pulse keys create` makes key and hash)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", repr=False)
    # The tenant the key acts for: its events must carry it (or none, then it is set),
    # its reads see only it. "*" is an operator key: any tenant, reads see all.
    tenant: str = Field(pattern=r"^(\*|[A-Za-z0-9_.:-]{1,128})$")
    scopes: list[ApiScope] = Field(min_length=1)


class ServiceSettings(Section):
    """The HTTP service (connectors.service): ingestion, reads, SQL, health, /metrics."""

    # Flows (`pulse run`, `pulse up`) host the service too; an embedded store is read
    # by other processes through it.
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(0, ge=0, le=65535)  # 0: any free port, recorded in <home>/service.json
    api_keys: list[ApiKeySettings] = Field(default_factory=list)
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    max_batch_events: int = Field(5000, ge=1)
    # Events accepted per second per key (a moving window; `limits` notation also works,
    # e.g. "100000/minute"). A key over it gets 429 with Retry-After.
    rate_limit: str = Field("50000/second", pattern=r"^\s*\d+\s*(/|per)\s*\d*\s*[a-z]+\s*$")
    # How long an ingestion request waits for the log to confirm before 503.
    ingest_timeout: PositiveDuration = 10_000
    query_max_rows: int = Field(100_000, ge=1)
    query_timeout: PositiveDuration = 30_000
    # /readyz fails when the flow's watermark trails the wall clock by more than this.
    ready_max_lag: PositiveDuration = 300_000

    @model_validator(mode="after")
    def _keys_off_loopback(self) -> ServiceSettings:
        if self.host not in LOOPBACK_HOSTS and not self.api_keys:
            raise ValueError(
                f"service.host {self.host!r} is not loopback: configure service.api_keys first "
                "(`pulse keys create`), so the service is not open to the network"
            )
        names = [k.name for k in self.api_keys]
        if len(set(names)) != len(names):
            raise ValueError("api_keys names must be unique")
        try:
            limits.parse(self.rate_limit)  # what connectors.service.rate_limit reads
        except ValueError:
            raise ValueError(
                f"rate_limit {self.rate_limit!r} is not a rate such as 50000/second"
            ) from None
        return self


TelemetryDim = Literal["tenant", "model_id", "deployment", "model_version", "segment", "endpoint"]
DEFAULT_GAUGE_DIMS: tuple[TelemetryDim, ...] = (
    "model_id", "model_version", "deployment", "segment", "endpoint"
)  # fmt: skip


class TelemetrySettings(Section):
    """OpenTelemetry (connectors.telemetry). OTLP export is configured by the standard
    OTEL_EXPORTER_OTLP_* variables and is off when they are unset."""

    # Serve Prometheus text at /metrics on the service.
    prometheus: bool = True
    # Window aggregates as `pulse.<metric>` gauges: these dims become attributes ...
    gauge_dims: list[TelemetryDim] = Field(default_factory=lambda: list(DEFAULT_GAUGE_DIMS))
    # ... for at most this many series per metric; further series are dropped and counted.
    max_series: int = Field(10_000, ge=0)
    # ... and a series with no window for this long (event time) stops being exported.
    series_ttl: PositiveDuration = 3_600_000
    # Only these metrics are exported as gauges ([]: every metric).
    gauge_metrics: list[str] = Field(default_factory=list)
    # Log lines: `human` on a terminal and `json` elsewhere when `auto`.
    log_format: Literal["auto", "human", "json"] = "auto"


class Settings(Section):
    home: Path = Path("./var")
    log: LogSettings = Field(default_factory=LogSettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    clickhouse: ClickHouseSettings = Field(default_factory=ClickHouseSettings)
    source: SourceSettings = Field(default_factory=SourceSettings)
    validation: ValidationSettings = Field(default_factory=ValidationSettings)
    time: TimeSettings = Field(default_factory=TimeSettings)
    join: JoinSettings = Field(default_factory=JoinSettings)
    dedup: DedupSettings = Field(default_factory=DedupSettings)
    windows: list[WindowSettings] = Field(default_factory=list)
    aggregation: AggregationSettings = Field(default_factory=AggregationSettings)
    run: RunSettings = Field(default_factory=RunSettings)
    service: ServiceSettings = Field(default_factory=ServiceSettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    # Rules and alerts (config.rules); `rules_file` may hold `rules`, `notify`, `alerting`.
    rules_file: Path | None = None
    notify: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")], NotifyTarget] = Field(
        default_factory=dict
    )
    rules: list[Rule] = Field(default_factory=list)
    alerting: AlertingSettings = Field(default_factory=AlertingSettings)

    @model_validator(mode="after")
    def _windows_named_once(self) -> Settings:
        names = [w.name for w in self.windows]
        if len(set(names)) != len(names):
            raise ValueError("window names must be unique")
        if not any(w.kind != "session" for w in self.windows):
            raise ValueError("at least one tumbling or sliding window is needed")
        return self

    @model_validator(mode="after")
    def _rules_consistent(self, info: ValidationInfo) -> Settings:
        environ = (info.context or {}).get("environ", os.environ)
        problems = rules_problems(self, environ)
        if problems:
            raise _Inconsistent(problems)
        return self

    @property
    def home_dir(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def recovery_dir(self) -> Path:
        return (self.run.recovery_dir or self.home / "recovery").expanduser().resolve()

    @property
    def clickhouse_dsn(self) -> str:
        """The configured DSN, or the embedded engine under <home>/olap."""
        return self.clickhouse.dsn or f"chdb://{self.home_dir / 'olap'}"

    def with_overrides(self, **sections: Mapping[str, Any] | Any) -> Settings:
        """A copy with some values replaced, validated again (e.g. run={'bounded': True})."""
        data = self.model_dump(mode="python")
        for key, value in sections.items():
            if isinstance(value, Mapping) and isinstance(data.get(key), dict):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        return _validate(data)


def env_names() -> dict[str, tuple[str, ...]]:
    """Every settable environment variable and the field path it sets."""
    names: dict[str, tuple[str, ...]] = {}
    for name, field in Settings.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            for sub in annotation.model_fields:
                names[f"{ENV_PREFIX}{name}_{sub}".upper()] = (name, sub)
        else:
            names[f"{ENV_PREFIX}{name}".upper()] = (name,)
    return names


def _deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _env_value(raw: str) -> Any:
    """JSON for lists/maps/null, otherwise the string (pydantic coerces it)."""
    stripped = raw.strip()
    if stripped[:1] in "[{" or stripped == "null":
        try:
            return json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise SettingsError(f"not valid JSON: {exc}") from exc
    return raw


def _where(loc: tuple[str | int, ...], data: Mapping[str, Any]) -> str:
    """A field's path as the errors name it: ``join.wait``, ``rules[1] (accuracy-floor).for``
    (a rule by index and name, without the `type` pydantic puts in the path)."""
    rules = data.get("rules")
    if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int) and isinstance(rules, list):
        rest = list(loc[2:])
        rule = rules[loc[1]] if loc[1] < len(rules) else None
        if (
            rest
            and rest[0] in RULE_TYPES
            and isinstance(rule, Mapping)
            and rule.get("type") == rest[0]
        ):
            rest = rest[1:]
        return ".".join([rule_label(loc[1], rules), *(str(p) for p in rest)])
    return ".".join(str(p) for p in loc) or "settings"


def _validate(
    data: Mapping[str, Any],
    sources: Mapping[tuple[str, ...], str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    context = {"environ": os.environ if environ is None else environ}
    try:
        return Settings.model_validate(data, context=context)
    except ValidationError as exc:
        located = [(tuple(err["loc"]), err["msg"]) for err in exc.errors()]
    except _Inconsistent as exc:
        located = list(exc.problems)
    problems = []
    for loc, msg in located:
        path = tuple(str(p) for p in loc)
        origin = (sources or {}).get(path[:2]) or (sources or {}).get(path[:1])
        suffix = f" (from {origin})" if origin else ""
        problems.append(f"invalid setting {_where(loc, data)}{suffix}: {msg}")
    raise SettingsError("; ".join(problems)) from None


# libyaml's loader when PyYAML was built with it (the wheels are): the same documents and
# errors as the pure-Python SafeLoader, ~10x faster (a 100-rule config took ~0.1 s).
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_SafeLoader)


def _read_yaml(path: Path) -> Any:
    try:
        return _yaml_load(path.read_text())
    except OSError as exc:
        raise SettingsError(f"config file {path} cannot be read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SettingsError(
            f"config file {path} is not valid YAML{where}: {problem}; fix the file "
            "(config/pulse.yaml shows every key)"
        ) from None


def load_settings(
    config_file: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Defaults, then `config_file` (or $PULSE_CONFIG), then PULSE_* variables."""
    env = os.environ if environ is None else environ
    data: dict[str, Any] = _yaml_load(DEFAULTS_FILE.read_text()) or {}
    config_file = config_file or env.get("PULSE_CONFIG")
    if config_file:
        path = Path(config_file)
        if not path.is_file():
            raise SettingsError(f"config file {path} does not exist")
        overlay = _read_yaml(path) or {}
        if not isinstance(overlay, Mapping):
            raise SettingsError(f"config file {path} must hold a mapping")
        data = _deep_merge(data, overlay)

    known = env_names()
    sources: dict[tuple[str, ...], str] = {}
    for var, raw in env.items():
        if not var.startswith(ENV_PREFIX) or var in RESERVED_ENV:
            continue
        path_ = known.get(var)
        if path_ is None:
            hint = difflib.get_close_matches(var, list(known), n=1)
            extra = f"; did you mean {hint[0]}?" if hint else ""
            raise SettingsError(f"unknown setting {var}{extra}")
        try:
            value = _env_value(raw)
        except SettingsError as exc:
            raise SettingsError(f"invalid setting {'.'.join(path_)} (from {var}): {exc}") from None
        if len(path_) == 1:
            data[path_[0]] = value
        else:
            section = data.get(path_[0])
            data[path_[0]] = {**(section if isinstance(section, dict) else {}), path_[1]: value}
        sources[path_] = var
    if data.get("rules_file"):
        data = _with_rules_file(data, Path(data["rules_file"]))
    return _validate(data, sources, env)


RULES_FILE_KEYS = ("rules", "notify", "alerting")


def _with_rules_file(data: dict[str, Any], path: Path) -> dict[str, Any]:
    """`rules`, `notify` and `alerting` read from `rules_file` (relative to the current
    directory); `rules` or `notify` set in both places is an error, not an override."""
    if not path.is_file():
        raise SettingsError(f"invalid setting rules_file: {path} does not exist")
    content = _read_yaml(path) or {}
    if not isinstance(content, Mapping):
        raise SettingsError(f"rules file {path} must hold a mapping")
    unknown = sorted(set(content) - set(RULES_FILE_KEYS))
    if unknown:
        raise SettingsError(
            f"rules file {path}: unknown key(s) {', '.join(map(str, unknown))}; it holds "
            f"{', '.join(RULES_FILE_KEYS)}"
        )
    merged = dict(data)
    for key, value in content.items():
        if key != "alerting" and data.get(key):
            raise SettingsError(
                f"invalid setting {key}: set in the config and in rules file {path}; keep one"
            )
        base = data.get(key)
        if key == "alerting" and isinstance(base, dict) and isinstance(value, Mapping):
            value = _deep_merge(base, value)
        merged[key] = value
    return merged
