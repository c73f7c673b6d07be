"""Rules, notification targets, inhibition and silences in the settings: the issue's
example loads exactly as written, and every mistake stops the start naming the rule and
the field (never the secret)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from config.rules import CanaryRule, DriftRule, RatioRule, SpikeRule, ThresholdRule
from config.settings import SettingsError, load_settings
from operators.rules.alerts import Severity
from operators.rules.selectors import selects_cell
from tests.conftest import ROOT

EXAMPLE = ROOT / "config" / "rules.example.yaml"
SECRET = "whsec_" + base64.b64encode(b"a secret of 24 bytes....").decode()
ENV = {"OPS_WEBHOOK_SECRET": SECRET}

# The issue's example, exactly as written there.
ISSUE_EXAMPLE = """\
notify:
  ops:
    url: http://127.0.0.1:9000/hooks/pulse
    format: standard            # standard | slack | pagerduty
    secret_env: OPS_WEBHOOK_SECRET  # env var holding the Standard Webhooks secret (whsec_...)
rules:
  - name: canary-thumbs-down
    type: canary
    window: 1m
    metric: thumbs_down_rate
    canary: {deployment: canary}
    baseline: {deployment: primary}
    match: [model_id]           # compare canary and baseline within the same model_id
    worse: higher               # higher | lower
    margin: 0.0                 # relative margin the canary must exceed to be worse
    alpha: 0.01
    notify: [ops]
    action: rollback
  - name: accuracy-floor
    type: threshold
    window: 1m
    metric: accuracy
    where: {model_version: "*", segment: "*", endpoint: "*"}
    op: "<"
    value: 0.8
    min_samples: 30
    for: 2m
    notify: [ops]
"""

RULE = {"name": "r", "type": "threshold", "window": "1m", "metric": "accuracy", "op": "<",
        "value": 0.8}  # fmt: skip


def settings_error(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> str:
    file = tmp_path / "c.yaml"
    file.write_text(text)
    with pytest.raises(SettingsError) as err:
        load_settings(file, environ=ENV if environ is None else environ)
    return str(err.value)


def test_the_issue_example_loads_exactly_as_written(tmp_path: Path) -> None:
    file = tmp_path / "issue.yaml"
    file.write_text(ISSUE_EXAMPLE)
    s = load_settings(config_file=file, environ=ENV)
    ops = s.notify["ops"]
    assert (ops.url, ops.format, ops.secret_env) == (
        "http://127.0.0.1:9000/hooks/pulse", "standard", "OPS_WEBHOOK_SECRET",
    )  # fmt: skip
    assert ops.secret(ENV) == SECRET and SECRET not in repr(s)
    canary, floor = s.rules
    assert isinstance(canary, CanaryRule) and isinstance(floor, ThresholdRule)
    assert (canary.metric, canary.canary, canary.baseline, canary.match) == (
        "thumbs_down_rate", {"deployment": "canary"}, {"deployment": "primary"}, ["model_id"],
    )  # fmt: skip
    assert (canary.worse, canary.margin, canary.alpha, canary.action) == (
        "higher", 0.0, 0.01, "rollback",
    )  # fmt: skip
    assert floor.where == {"model_version": "*", "segment": "*", "endpoint": "*"}
    assert (floor.op, floor.value, floor.min_samples, floor.for_, floor.notify) == (
        "<", 0.8, 30, 120_000, ["ops"],
    )  # fmt: skip


def test_the_shipped_example_holds_the_issue_example_and_one_rule_of_each_type() -> None:
    assert ISSUE_EXAMPLE in EXAMPLE.read_text()
    s = load_settings(config_file=EXAMPLE, environ=ENV)
    kinds = [type(r) for r in s.rules]
    assert kinds == [CanaryRule, ThresholdRule, DriftRule, RatioRule, SpikeRule]
    ratio = s.rules[3]
    assert isinstance(ratio, RatioRule) and ratio.scale == 1000
    assert ratio.denominator.metric == "inference_count"
    assert s.rules[4].severity is Severity.CRITICAL
    (inhibit,) = s.alerting.inhibit
    assert (inhibit.source.types, inhibit.target.types, inhibit.equal) == (
        ["canary"], ["threshold"], ["model_id"],
    )  # fmt: skip


def test_a_missing_secret_names_the_target_and_the_variable_not_a_value(tmp_path: Path) -> None:
    message = settings_error(tmp_path, ISSUE_EXAMPLE, environ={})
    assert message == (
        "invalid setting notify.ops.secret_env: target ops: environment variable "
        "OPS_WEBHOOK_SECRET is not set"
    )
    bad = "whsec_not base64!"
    message = settings_error(tmp_path, ISSUE_EXAMPLE, environ={"OPS_WEBHOOK_SECRET": bad})
    assert "notify.ops.secret_env: target ops: OPS_WEBHOOK_SECRET is not a Standard" in message
    assert bad not in message


def rules_yaml(*rules: str) -> str:
    return ISSUE_EXAMPLE + "".join(f"  - {rule}\n" for rule in rules)


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (
            '{name: fast, type: threshold, window: 1m, metric: accuracy, op: "<", value: 1, '
            "for: soon}",
            "invalid setting rules[2] (fast).for: Value error, 'soon' is not a duration",
        ),
        (
            '{name: m, type: threshold, window: 1m, metric: acuracy, op: "<", value: 1}',
            "invalid setting rules[2] (m).metric: Value error, unknown metric 'acuracy'",
        ),
        (
            '{name: w, type: threshold, window: 2m, metric: accuracy, op: "<", value: 1}',
            "invalid setting rules[2] (w).window: '2m' is not a configured tumbling or "
            "sliding window (config `windows`: 1m, 1h, 5m_30s)",
        ),
        (
            '{name: s, type: threshold, window: session_30m, metric: accuracy, op: "<", value: 1}',
            "invalid setting rules[2] (s).window: 'session_30m' is not a configured",
        ),
        (
            '{name: n, type: threshold, window: 1m, metric: accuracy, op: "<", value: 1, '
            "notify: [pager]}",
            "invalid setting rules[2] (n).notify: 'pager' is not in `notify` (ops)",
        ),
        (
            '{name: d, type: threshold, window: 1m, metric: accuracy, op: "<", value: 1, '
            "where: {region: eu}}",
            "invalid setting rules[2] (d).where.region: unknown dim",
        ),
        (
            '{name: accuracy-floor, type: threshold, window: 1m, metric: accuracy, op: "<", '
            "value: 1}",
            "invalid setting rules[2] (accuracy-floor).name: 'accuracy-floor' is also rules[1]",
        ),
        (
            '{name: o, type: threshold, window: 1m, metric: accuracy, op: "=<", value: 1}',
            "invalid setting rules[2] (o).op: Input should be",
        ),
        (
            '{name: x, type: threshold, window: 1m, metric: accuracy, op: "<", value: 1, '
            "treshold: 2}",
            "invalid setting rules[2] (x).treshold: Extra inputs are not permitted",
        ),
        (
            "{name: t, type: thresold, window: 1m}",
            "invalid setting rules[2] (t): Input tag 'thresold' found using 'type' does not "
            "match any of the expected tags",
        ),
        (
            "{name: c, type: canary, window: 1m, metric: ctr, canary: {deployment: canary}, "
            "baseline: {deployment: primary}, worse: up}",
            "invalid setting rules[2] (c).worse: Input should be 'higher' or 'lower'",
        ),
        (
            "{name: c, type: canary, window: 1m, metric: ctr, canary: {deployment: canary}, "
            "baseline: {deployment: primary}, worse: higher, action: retrain}",
            "invalid setting rules[2] (c): Value error, a canary rule's action is rollback",
        ),
        (
            "{name: dr, type: drift, window: 1h, reference: {kind: trailing, windows: 0}}",
            "invalid setting rules[2] (dr).reference.trailing.windows: Input should be greater",
        ),
        (
            "{name: dr, type: drift, window: 1h, reference: {kind: trailing, windows: 3}, "
            "psi: null, test: null}",
            "invalid setting rules[2] (dr): Value error, a drift rule needs psi, test or detector",
        ),
        (
            "{name: dr, type: drift, window: 1h, reference: {kind: trailing, windows: 3}, "
            "detector: {kind: adwin, threshold: 5}}",
            "invalid setting rules[2] (dr).detector: Value error, adwin has no threshold",
        ),
        (
            "{name: ra, type: ratio, window: 1h, numerator: {metric: report_amount_sum}, "
            'denominator: {}, op: ">", value: 0.5}',
            "invalid setting rules[2] (ra).denominator: Value error, give exactly one of metric",
        ),
        (
            "{name: sp, type: spike, window: 1m, metric: ctr, change: -1}",
            "invalid setting rules[2] (sp).change: Input should be greater than 0",
        ),
    ],
)
def test_each_mistake_names_the_rule_and_the_field(tmp_path: Path, rule: str, message: str) -> None:
    assert message in settings_error(tmp_path, rules_yaml(rule))


def test_a_selector_must_read_a_computed_grouping_set(tmp_path: Path) -> None:
    text = rules_yaml('{name: g, type: threshold, window: 1m, metric: accuracy, op: "<", '
                      "value: 1, where: {segment: '*'}}") + (
        "aggregation:\n  grouping_sets: [[model_version, segment, endpoint], []]\n"
    )  # fmt: skip
    message = settings_error(tmp_path, text)
    assert "invalid setting rules[2] (g).where: reads the grouping set ['segment']" in message
    # The issue's accuracy-floor reads the finest cells, which that list computes.
    assert "accuracy-floor" not in message


def test_extra_dims_can_be_selected(tmp_path: Path) -> None:
    file = tmp_path / "c.yaml"
    file.write_text(rules_yaml('{name: r, type: threshold, window: 1m, metric: ctr, op: "<", '
                               "value: 1, where: {region: [eu, us]}}")
                    + "aggregation:\n  extra_dims: [region]\n")  # fmt: skip
    assert load_settings(file, environ=ENV).rules[2].where == {"region": ["eu", "us"]}


def test_notify_targets_need_the_credentials_of_their_format(tmp_path: Path) -> None:
    text = "notify:\n  pd: {url: 'https://events.pagerduty.com/v2/enqueue', format: pagerduty}\n"
    assert "invalid setting notify.pd: Value error, format pagerduty needs routing_key_env" in (
        settings_error(tmp_path, text)
    )
    text = text.replace("format: pagerduty", "format: pagerduty, routing_key_env: PD_KEY")
    assert "notify.pd.routing_key_env: target pd: environment variable PD_KEY is not set" in (
        settings_error(tmp_path, text)
    )
    file = tmp_path / "ok.yaml"
    file.write_text(text)
    assert load_settings(file, environ={"PD_KEY": "k"}).notify["pd"].routing_key({"PD_KEY": "k"})


def test_inhibit_and_silences(tmp_path: Path) -> None:
    file = tmp_path / "c.yaml"
    file.write_text(ISSUE_EXAMPLE + (
        "alerting:\n"
        "  group_wait: 10s\n"
        "  inhibit:\n"
        "    - {source: {rules: [canary-thumbs-down]}, target: {types: [threshold]}}\n"
        "  silences:\n"
        "    - {matchers: {rule: accuracy-floor, model_id: m1}, until: 2026-12-02T08:00:00Z}\n"
    ))  # fmt: skip
    s = load_settings(file, environ=ENV)
    assert s.alerting.group_wait == 10_000 and s.alerting.repeat_interval == 4 * 3_600_000
    assert s.alerting.inhibit[0].equal == ["model_id"]
    assert s.alerting.silences[0].until == 1_796_198_400_000
    file.write_text(file.read_text().replace("rules: [canary-thumbs-down]", "rules: [canery]"))
    assert "invalid setting alerting.inhibit.0.source.rules: no rule named 'canery'" in (
        settings_error(tmp_path, file.read_text())
    )
    bad = ISSUE_EXAMPLE + "alerting:\n  silences: [{matchers: {rule: x}, until: tomorrow}]\n"
    assert (
        "invalid setting alerting.silences.0.until: Value error, 'tomorrow' is not an RFC 3339"
        in (settings_error(tmp_path, bad))
    )


def test_rules_can_live_in_their_own_file(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(ISSUE_EXAMPLE + "alerting:\n  group_wait: 5s\n")
    config = tmp_path / "c.yaml"
    config.write_text(f"rules_file: {rules}\n")
    s = load_settings(config, environ=ENV)
    assert [r.name for r in s.rules] == ["canary-thumbs-down", "accuracy-floor"]
    assert s.alerting.group_wait == 5000 and s.alerting.repeat_interval == 4 * 3_600_000
    s = load_settings(environ={**ENV, "PULSE_RULES_FILE": str(rules)})
    assert len(s.rules) == 2
    # Rules in both places: which one wins would be a guess.
    config.write_text(f"rules_file: {rules}\n" + ISSUE_EXAMPLE)
    with pytest.raises(
        SettingsError, match="invalid setting notify: set in the config and in rules file"
    ):
        load_settings(config, environ=ENV)
    with pytest.raises(SettingsError, match=r"invalid setting rules_file: .* does not exist"):
        load_settings(environ={**ENV, "PULSE_RULES_FILE": str(tmp_path / "none.yaml")})


def test_the_defaults_have_no_rules_and_the_documented_alerting_defaults() -> None:
    s = load_settings(environ={})
    assert (s.rules, s.notify, s.rules_file) == ([], {}, None)
    a = s.alerting
    assert (a.group_wait, a.repeat_interval, a.keep_firing_for, a.severity) == (
        30_000, 4 * 3_600_000, 0, Severity.WARNING,
    )  # fmt: skip
    assert load_settings(environ={"PULSE_ALERTING_GROUP_WAIT": "1m"}).alerting.group_wait == 60_000


def test_selectors_read_cells_like_query_by() -> None:
    """`"*"` on a rollup dim: each value, not its rollup row; a rollup dim left out: its
    rollup row; kept dims left out: every value."""
    where = {"model_version": "*", "segment": "*", "endpoint": "*"}  # the accuracy-floor
    cell = {"tenant": "t", "model_id": "m", "deployment": "primary", "model_version": "v1",
            "segment": "eu", "endpoint": "e"}  # fmt: skip
    assert selects_cell(where, cell)
    assert not selects_cell(where, {**cell, "segment": "*"})  # a rollup row
    assert not selects_cell({}, cell) and selects_cell(
        {}, {**cell, "model_version": "*", "segment": "*", "endpoint": "*"}
    )
    per_segment = {"segment": ["eu", "us"], "deployment": "canary"}
    rolled = {**cell, "model_version": "*", "endpoint": "*", "deployment": "canary"}
    assert selects_cell(per_segment, rolled)
    assert not selects_cell(per_segment, {**rolled, "segment": "asia"})
    assert not selects_cell(per_segment, {**rolled, "deployment": "primary"})
    assert not selects_cell({"region": "eu"}, rolled)  # an extra dim the cell lacks
