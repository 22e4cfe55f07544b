"""Monitoring as a feature pipeline: inference log + feedback -> one ``monitoring`` row per window.

    from pipelines.monitor import run_monitor
    result = run_monitor(settings, window="1h")   # rows upserted, alerts evaluated

Per window (UTC-aligned, ``1h`` or ``1d``): traffic and health (requests; error, fallback, degraded
and no-answer rates; latency p50/p95/p99 in total and per logged stage; citations per answer;
feedback rate and negative share; prompt ids, model and index versions in use) and drift against
a **reference**:

- query embeddings: MMD² with a permutation p-value (``llmfti.monitoring.drift.mmd_test``) on a
  seeded sample of the window's queries, re-embedded here (the log holds no vectors; see
  ``pipelines/monitor_queries.py``) against the reference window's sample;
- best retrieval score: each sampled query's best cosine score against the index version and
  tenant that served it, compared with a two-sample KS test;
- out of coverage: the share of queries whose best score is below the reference's
  ``monitoring.coverage_quantile`` quantile (questions the documents do not cover);
- user features: PSI of each feature of the agent's user feature group (an alert needs PSI above
  ``monitoring.psi_max`` and a chi-square p-value on the same bins below ``drift_p_value``, since PSI
  alone is inflated on small windows), against the training
  dataset recorded in the served model's lineage when that dataset holds the group's columns, else
  against the reference window's logged user features (the row says which).

The reference is ``monitoring.reference`` (or ``--reference``): ``first`` (the earliest window with at
least ``monitoring.min_requests`` requests), an ISO time inside the window to use, or ``training``:
the questions of the served model's training dataset (from its registry lineage), scored against
the index version the model is coupled to. Without ``since``
the monitor recomputes from the last window it wrote (which may have been partial) onwards.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from llmfti.config import Settings
from llmfti.errors import InvalidInputError, NotFoundError
from llmfti.features.timestamps import to_utc
from llmfti.monitoring.drift import ks_test, mmd_test, psi_test
from llmfti.monitoring.group import Alert, evaluate_alerts, monitoring_spec

WINDOWS = {"1h": timedelta(hours=1), "1d": timedelta(days=1)}
LOG_COLUMNS = ["request_id", "created_at", "model_version", "prompt_id", "tenant", "user_id", "index_name",
               "index_version", "user_features", "user_features_missing", "query", "answer", "timings_ms",
               "total_ms", "fallback", "degraded", "error", "status"]
_CITATION = re.compile(r"\[(\d+)\]")
_RELATIVE = re.compile(r"^(\d+)([hd])$")


@dataclass
class MonitorResult:
    group: str
    window: str
    data_version: int | None
    reference: str | None
    rows: list[dict[str, Any]]
    alerts: list[Alert]
    seconds: float
    queries_embedded: int = 0
    thresholds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "group": self.group, "window": self.window, "data_version": self.data_version,
            "reference": self.reference, "windows": self.rows, "alerts": [a.to_dict() for a in self.alerts],
            "fired": len(self.alerts), "queries_embedded": self.queries_embedded, "seconds": self.seconds,
            "thresholds": self.thresholds,
        }


def parse_since(value: str | None, now: datetime | None = None) -> datetime | None:
    """An ISO time, or a span back from now (``24h``, ``7d``)."""
    if value is None:
        return None
    match = _RELATIVE.match(value.strip())
    if match:
        unit = timedelta(hours=1) if match[2] == "h" else timedelta(days=1)
        return (now or datetime.now(UTC)) - int(match[1]) * unit
    try:
        return to_utc(value)
    except ValueError:
        raise InvalidInputError(f"--since {value!r} is not a time", expected="an ISO-8601 time or a span like 24h, 7d",
                                fix="e.g. --since 2026-11-30T00:00:00Z or --since 24h") from None


def window_start(moment: datetime, window: str) -> datetime:
    moment = to_utc(moment)
    if window == "1d":
        return moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return moment.replace(minute=0, second=0, microsecond=0)


def window_id(window: str, start: datetime) -> str:
    return f"{window}@{start.strftime('%Y-%m-%dT%H:%MZ')}"


def run_monitor(settings: Settings, *, window: str | None = None, since: datetime | None = None,
                reference: str | None = None) -> MonitorResult:
    """Compute and upsert the monitoring rows of every window from ``since`` on; evaluate alerts."""
    from llmfti.features.feature_group import FeatureGroup

    started = time.perf_counter()
    config = settings.monitoring
    window = window or config.window
    if window not in WINDOWS:
        raise InvalidInputError(f"unknown window {window!r}", expected=f"one of {sorted(WINDOWS)}",
                                fix="pass --window 1h or --window 1d")
    group = FeatureGroup.create(settings, monitoring_spec(config.group))
    if since is None:
        since = _last_window_start(group, window)
    log = _read_log(settings)
    by_window: dict[datetime, list[int]] = {}
    for i, created in enumerate(log["created_at"]):
        by_window.setdefault(window_start(created, window), []).append(i)
    reference = reference or config.reference
    feedback = _read_feedback(settings)
    scorer = _scorer(settings)
    if reference == "training":
        ref_start = None
        ref_label, ref_signals = _training_reference(settings, scorer, log)
    else:
        ref_start = _reference_window(by_window, reference, window, config.min_requests)
        ref_label = window_id(window, ref_start) if ref_start else None
        ref_signals = _query_signals(settings, scorer, log, by_window[ref_start], ref_start) if ref_start else None
    lineage_reference = _lineage_user_features(settings, log)
    feature_kinds = _user_feature_kinds(settings)

    rows: list[dict[str, Any]] = []
    for start in sorted(by_window):
        if since is not None and start < window_start(since, window):
            continue
        indices = by_window[start]
        row = _health(log, indices, feedback, window, start)
        row.update(_drift(settings, scorer, log, indices, start, ref_start, ref_label, ref_signals, by_window,
                          lineage_reference, feature_kinds, window))
        rows.append(row)
    alerts: list[Alert] = []
    for row in rows:
        fired = evaluate_alerts(row, config)
        row["alerts"] = [a.name for a in fired]
        alerts.extend(fired)
    data_version = group.write(rows, mode="upsert", source="llmfti monitor").data_version if rows else None
    thresholds = {k: v for k, v in config.model_dump().items() if k.endswith(("_max", "_p_value"))}
    return MonitorResult(group.name, window, data_version, ref_label,
                         rows, alerts, round(time.perf_counter() - started, 3), scorer.embedded, thresholds)


# -- reading ---------------------------------------------------------------------------------------


def _read_log(settings: Settings) -> dict[str, list[Any]]:
    from pipelines.drain_logs import open_log_table

    table = open_log_table(settings).search().select(LOG_COLUMNS).limit(None).to_arrow()
    return {name: table.column(name).to_pylist() for name in LOG_COLUMNS}


def _read_feedback(settings: Settings) -> dict[str, list[int]]:
    from pipelines.drain_logs import open_feedback_table

    table = open_feedback_table(settings).search().select(["request_id", "rating"]).limit(None).to_arrow()
    out: dict[str, list[int]] = {}
    for request_id, rating in zip(table.column("request_id").to_pylist(), table.column("rating").to_pylist(),
                                  strict=True):
        out.setdefault(request_id, []).append(int(rating))
    return out


def _last_window_start(group: Any, window: str) -> datetime | None:
    rows = group.read(columns=["window", "window_start"]).to_pylist()
    starts = [r["window_start"] for r in rows if r["window"] == window]
    return max(starts) if starts else None


def _reference_window(by_window: dict[datetime, list[int]], reference: str, window: str,
                      min_requests: int) -> datetime | None:
    if reference == "first":
        eligible = [s for s in sorted(by_window) if len(by_window[s]) >= min_requests]
        return eligible[0] if eligible else None
    try:
        start = window_start(to_utc(reference), window)
    except ValueError:
        raise InvalidInputError(f"reference {reference!r} is neither 'first' nor a time",
                                expected="'first' or an ISO-8601 time inside the reference window",
                                fix="set monitoring.reference or pass --reference") from None
    if start not in by_window:
        raise NotFoundError(f"the reference window {window_id(window, start)} has no logged requests",
                            expected=f"one of {[window_id(window, s) for s in sorted(by_window)][:10]}",
                            fix="choose a window with traffic, or --reference first")
    return start


# -- traffic and health ----------------------------------------------------------------------------


def _health(log: dict[str, list[Any]], indices: list[int], feedback: dict[str, list[int]], window: str,
            start: datetime) -> dict[str, Any]:
    from llmfti.llm.backends.extractive import is_no_answer

    n = len(indices)
    failed = [bool(log["error"][i]) or (log["status"][i] or 200) >= 400 for i in indices]
    ok = [i for i, bad in zip(indices, failed, strict=True) if not bad]
    answers = [(log["answer"][i] or "").strip() for i in ok]
    stages: dict[str, list[float]] = {}
    for i in indices:
        for stage, ms in json.loads(log["timings_ms"][i] or "{}").items():
            if stage != "total" and isinstance(ms, int | float):
                stages.setdefault(stage, []).append(float(ms))
    totals = np.array([log["total_ms"][i] or 0.0 for i in indices], dtype=np.float64)
    ratings = [r for i in indices for r in feedback.get(log["request_id"][i], [])]
    rated = sum(1 for i in indices if log["request_id"][i] in feedback)
    p50, p95, p99 = (np.percentile(totals, [50, 95, 99]) if n else (None, None, None))
    return {
        "window_id": window_id(window, start),
        "window_start": start,
        "window": window,
        "window_end": start + WINDOWS[window],
        "requests": n,
        "error_rate": sum(failed) / n,
        "fallback_rate": sum(bool(log["fallback"][i]) for i in indices) / n,
        "degraded_rate": sum(bool(log["degraded"][i]) for i in indices) / n,
        "no_answer_rate": (sum(1 for a in answers if is_no_answer(a)) / len(answers)
                           if answers else None),
        "latency_total_p50_ms": _num(p50), "latency_total_p95_ms": _num(p95), "latency_total_p99_ms": _num(p99),
        "latency_stages_ms": json.dumps({s: dict(zip(("p50", "p95", "p99"),
                                                     np.round(np.percentile(v, [50, 95, 99]), 3).tolist(),
                                                     strict=True))
                                         for s, v in sorted(stages.items())}),
        "citations_per_answer": (float(np.mean([len(set(_CITATION.findall(a))) for a in answers]))
                                 if answers else None),
        "feedback_count": len(ratings),
        "feedback_rate": rated / n,
        "negative_feedback_share": (sum(1 for r in ratings if r < 0) / len(ratings)) if ratings else None,
        "prompt_ids": sorted({log["prompt_id"][i] for i in indices if log["prompt_id"][i]}),
        "model_versions": sorted({log["model_version"][i] for i in indices if log["model_version"][i]}),
        "index_versions": sorted({f"{log['index_name'][i]}@{log['index_version'][i]}" for i in indices
                                  if log["index_name"][i]}),
    }


def _num(value: Any) -> float | None:
    return None if value is None else round(float(value), 3)


# -- drift -----------------------------------------------------------------------------------------


@dataclass
class _QuerySignals:
    vectors: np.ndarray
    best: np.ndarray  # best cosine score per sampled query (NaN: no index to score against)


def _scorer(settings: Settings) -> Any:
    from pipelines.monitor_queries import QueryScorer

    return QueryScorer(settings)


def _query_signals(settings: Settings, scorer: Any, log: dict[str, list[Any]], indices: list[int],
                   start: datetime) -> _QuerySignals:
    config = settings.monitoring
    rng = np.random.default_rng([config.seed, int(start.timestamp())])
    usable = [i for i in indices if (log["query"][i] or "").strip()]
    if len(usable) > config.max_embedded_queries:
        usable = sorted(rng.choice(usable, size=config.max_embedded_queries, replace=False).tolist())
    if not usable:
        return _QuerySignals(np.zeros((0, 1), np.float32), np.zeros(0))
    vectors = scorer.embed([log["query"][i] for i in usable], log["index_name"][usable[0]])
    best = np.full(len(usable), np.nan)
    groups: dict[tuple[Any, Any, Any], list[int]] = {}
    for position, i in enumerate(usable):
        groups.setdefault((log["index_name"][i], log["index_version"][i], log["tenant"][i]), []).append(position)
    for (name, version, tenant), positions in groups.items():
        best[positions] = scorer.best_scores(vectors[positions], name, version, tenant)
    return _QuerySignals(vectors, best)


def _training_reference(settings: Settings, scorer: Any, log: dict[str, list[Any]]) -> tuple[str, _QuerySignals]:
    """Reference queries: the questions of the most served registered model's training dataset, scored
    against the index version that model is coupled to (reference ``training``)."""
    from llmfti.features.training_data import TrainingDataset
    from llmfti.registry import ModelRegistry

    for model_version, _ in Counter(v for v in log["model_version"] if v).most_common():
        match = re.match(r"^([A-Za-z][\w-]*):v(\d+)", model_version)
        if not match:
            continue
        try:
            mv = ModelRegistry(settings, match[1]).get(int(match[2]))
            table = TrainingDataset.load(settings, mv.training_dataset_id).read(verify=False)
        except NotFoundError:
            continue
        columns = [c for c in table.column_names if c.endswith("__question")]
        if not columns:
            continue
        questions = [q for q in table.column(columns[0]).to_pylist() if q and q.strip()]
        rng = np.random.default_rng(settings.monitoring.seed)
        if len(questions) > settings.monitoring.max_embedded_queries:
            questions = rng.choice(questions, size=settings.monitoring.max_embedded_queries, replace=False).tolist()
        vectors = scorer.embed(questions, mv.index_name)
        best = scorer.best_scores(vectors, mv.index_name, mv.index_version, None)
        return f"training_dataset:{mv.training_dataset_id} ({mv.ref})", _QuerySignals(vectors, best)
    raise NotFoundError(
        "no served model in the log has a training dataset with questions",
        expected="requests served by a registry model (model_version like assistant:v3) trained on an "
        "instruction dataset (llmfti dataset build)",
        fix="use --reference first, or an ISO time inside the reference window",
    )


def _drift(settings: Settings, scorer: Any, log: dict[str, list[Any]], indices: list[int], start: datetime,
           ref_start: datetime | None, ref_label: str | None, ref: _QuerySignals | None,
           by_window: dict[datetime, list[int]],
           lineage_reference: tuple[str, dict[str, list[Any]]] | None, kinds: dict[str, str],
           window: str) -> dict[str, Any]:
    config = settings.monitoring
    row: dict[str, Any] = {"reference": "none", "queries_embedded": 0, "embedding_mmd": None,
                           "embedding_drift_p": None, "top_score_mean": None, "top_score_ks": None,
                           "top_score_drift_p": None, "coverage_threshold": None, "out_of_coverage_share": None,
                           "user_feature_reference": "none", "user_feature_psi": "{}",
                           "user_feature_psi_max": None, "user_feature_drift_p": "{}"}
    enough = len(indices) >= config.min_requests
    if ref is not None and enough:
        row["reference"] = ref_label
        own = ref if start == ref_start else _query_signals(settings, scorer, log, indices, start)
        row["queries_embedded"] = len(own.vectors)
        scored = own.best[~np.isnan(own.best)]
        ref_scored = ref.best[~np.isnan(ref.best)]
        if len(scored):
            row["top_score_mean"] = round(float(scored.mean()), 6)
        if len(ref_scored):
            threshold = float(np.quantile(ref_scored, config.coverage_quantile))
            row["coverage_threshold"] = round(threshold, 6)
            if len(scored):
                row["out_of_coverage_share"] = float((scored < threshold).mean())
        if start != ref_start and len(own.vectors) >= 2 and len(ref.vectors) >= 2:
            mmd = mmd_test(ref.vectors, own.vectors, permutations=config.permutations, seed=config.seed)
            row["embedding_mmd"], row["embedding_drift_p"] = round(mmd.statistic, 8), mmd.p_value
            if len(scored) >= 2 and len(ref_scored) >= 2:
                ks = ks_test(ref_scored, scored)
                row["top_score_ks"], row["top_score_drift_p"] = round(ks.statistic, 6), ks.p_value
    if enough:
        row.update(_user_feature_drift(settings, log, indices, start, ref_start, by_window, lineage_reference,
                                       kinds, window))
    return row


def _features_of(log: dict[str, list[Any]], indices: list[int]) -> list[dict[str, Any]]:
    out = []
    for i in indices:
        raw = log["user_features"][i]
        if raw and not log["user_features_missing"][i]:
            out.append(json.loads(raw))
    return out


def _user_feature_drift(settings: Settings, log: dict[str, list[Any]], indices: list[int], start: datetime,
                        ref_start: datetime | None, by_window: dict[datetime, list[int]],
                        lineage_reference: tuple[str, dict[str, list[Any]]] | None, kinds: dict[str, str],
                        window: str) -> dict[str, Any]:
    current = _features_of(log, indices)
    if not current:
        return {}
    if lineage_reference is not None:
        label, reference = lineage_reference
    elif ref_start is not None and ref_start != start:
        label = window_id(window, ref_start)
        ref_rows = _features_of(log, by_window[ref_start])
        reference = {name: [r.get(name) for r in ref_rows] for name in kinds or _infer_kinds(ref_rows)}
    else:
        return {}
    kinds = kinds or _infer_kinds(current)
    scores, p_values = {}, {}
    for name, kind in sorted(kinds.items()):
        if name not in reference or kind == "skip":
            continue
        result = psi_test(reference[name], [r.get(name) for r in current], kind=kind,
                          bins=settings.monitoring.psi_bins)
        if result is not None:
            scores[name], p_values[name] = round(result.statistic, 6), result.p_value
    return {"user_feature_reference": label, "user_feature_psi": json.dumps(scores, sort_keys=True),
            "user_feature_psi_max": max(scores.values()) if scores else None,
            "user_feature_drift_p": json.dumps(p_values, sort_keys=True)}


def _infer_kinds(rows: list[dict[str, Any]]) -> dict[str, str]:
    kinds: dict[str, str] = {}
    for row in rows:
        for name, value in row.items():
            if value is None or name in kinds:
                continue
            if isinstance(value, bool) or isinstance(value, str):
                kinds[name] = "skip" if _looks_like_time(value) else "categorical"
            elif isinstance(value, int | float):
                kinds[name] = "numeric"
            elif isinstance(value, list):
                kinds[name] = "multi"
    return kinds


def _looks_like_time(value: Any) -> bool:
    return isinstance(value, str) and bool(re.match(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:", value))


def _user_feature_kinds(settings: Settings) -> dict[str, str]:
    """PSI kind per feature of the agent's user feature group (timestamps skipped); {} if no group."""
    from llmfti.features.feature_group import FeatureGroup
    from llmfti.features.spec import NUMERIC_TYPES

    try:
        spec = FeatureGroup.open(settings, settings.agent.user_feature_group).spec
    except NotFoundError:
        return {}
    return {f.name: ("numeric" if f.type in NUMERIC_TYPES else "multi" if f.type.startswith("list<")
                     else "skip" if f.type == "timestamp" else "categorical") for f in spec.features}


def _lineage_user_features(settings: Settings, log: dict[str, list[Any]]) -> tuple[str, dict[str, list[Any]]] | None:
    """User-feature columns of the training dataset of the most served registered model, if any."""
    served = Counter(v for v in log["model_version"] if v)
    for model_version, _ in served.most_common():
        match = re.match(r"^([A-Za-z][\w-]*):v(\d+)", model_version)
        if not match:
            continue
        from llmfti.features.training_data import TrainingDataset
        from llmfti.registry import ModelRegistry

        try:
            mv = ModelRegistry(settings, match[1]).get(int(match[2]))
            dataset = TrainingDataset.load(settings, mv.training_dataset_id)
        except NotFoundError:
            continue
        prefix = f"{settings.agent.user_feature_group}__"
        if not any(j.group == settings.agent.user_feature_group for j in dataset.spec.joins):
            continue
        table = dataset.read(verify=False)
        columns = {c[len(prefix):]: table.column(c).to_pylist() for c in table.column_names if c.startswith(prefix)}
        return f"training_dataset:{dataset.name} ({mv.ref})", columns
    return None
