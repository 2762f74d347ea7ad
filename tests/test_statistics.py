"""The sweep report's statistics against scipy.stats: intervals, tests, seeds needed."""

from __future__ import annotations

import csv
import io
import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from runner.sweep import statistics as st
from runner.sweep.report import (
    Row,
    aggregate_table,
    configs_csv,
    label_rows,
    verdict,
    within_range,
)


def sample(values: list[float], seeds: list[int] | None = None, **kw) -> st.Sample:
    seeds = seeds or list(range(1, len(values) + 1))
    return st.Sample({(str(s), None): v for s, v in zip(seeds, values, strict=True)}, **kw)


RNG = np.random.default_rng(7)
A = list(RNG.normal(0.90, 0.02, 12))
B = list(RNG.normal(0.88, 0.03, 12))


def test_the_interval_is_students_t_interval_of_the_mean():
    low, high = st.interval(sample(A))
    expected = scipy_stats.t.interval(0.95, len(A) - 1, loc=np.mean(A), scale=scipy_stats.sem(A))
    assert (low, high) == pytest.approx(expected, rel=1e-12)
    assert st.interval(sample([0.9])) is None  # one seed: no interval


def test_same_seeds_are_paired_and_other_seeds_use_welch():
    paired = st.compare(sample(A), sample(B))
    assert paired.test == st.PAIRED
    assert paired.p == pytest.approx(scipy_stats.ttest_rel(B, A).pvalue, rel=1e-12)
    welch = st.compare(sample(A), sample(B[:9], seeds=list(range(20, 29))))
    assert welch.test == st.WELCH
    expected = scipy_stats.ttest_ind(B[:9], A, equal_var=False).pvalue
    assert welch.p == pytest.approx(expected, rel=1e-12)
    assert st.compare(sample(A), sample([0.5])).p is None  # one run: not tested
    # Runs that never vary: equal means are tied, different ones are told apart.
    assert st.compare(sample([1.0, 1.0]), sample([1.0, 1.0])).p == 1.0
    assert st.compare(sample([1.0, 1.0]), sample([0.5, 0.5], seeds=[5, 6])).p == 0.0


def test_folds_use_the_corrected_resampled_t_test_paired_by_seed_and_fold():
    folds = 5
    keys = [(str(seed), str(fold)) for seed in (1, 2) for fold in range(folds)]
    a = dict(zip(keys, A[:10], strict=True))
    b = dict(zip(keys, B[:10], strict=True))
    result = st.compare(st.Sample(a, folds), st.Sample(b, folds))
    assert result.test == st.CORRECTED
    diffs = np.array([b[k] - a[k] for k in keys])
    # Nadeau and Bengio (2003): the variance of the mean difference grows by n_test/n_train.
    t = diffs.mean() / math.sqrt((1 / len(diffs) + 1 / (folds - 1)) * diffs.var(ddof=1))
    assert result.p == pytest.approx(2 * scipy_stats.t.sf(abs(t), len(diffs) - 1), rel=1e-12)
    # More cautious than a plain paired test of the same numbers, which folds would fool.
    assert result.p > scipy_stats.ttest_rel(list(b.values()), list(a.values())).pvalue
    low, high = st.interval(st.Sample(a, folds))
    plain_low, plain_high = st.interval(st.Sample(a))
    assert low < plain_low and high > plain_high


def test_seeds_needed_reaches_the_power_one_seed_fewer_does_not():
    a, b = sample(A), sample(B, seeds=list(range(20, 32)))  # other seeds: two-sample
    n = st.seeds_needed(a, b)
    pooled = math.sqrt((np.var(A, ddof=1) + np.var(B, ddof=1)) / 2)
    effect = abs(np.mean(A) - np.mean(B)) / pooled
    assert st.t_test_power(effect, n) >= 0.8 > st.t_test_power(effect, n - 1)
    # The power is the t-test's: simulated t-tests at that size reject as often.
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (4000, n))
    y = rng.normal(effect, 1, (4000, n))
    rejected = np.mean(scipy_stats.ttest_ind(x, y, axis=1).pvalue < 0.05)
    assert rejected == pytest.approx(st.t_test_power(effect, n), abs=0.03)
    # Same seeds: the paired test's power, on the per-seed differences.
    diffs = np.subtract(B, A)
    paired = st.seeds_needed(sample(A), sample(B))
    effect = abs(diffs.mean()) / diffs.std(ddof=1)
    assert st.t_test_power(effect, paired, True) >= 0.8 > st.t_test_power(effect, paired - 1, True)
    rejected = np.mean(
        scipy_stats.ttest_1samp(rng.normal(effect, 1, (4000, paired)), 0, axis=1).pvalue < 0.05
    )
    assert rejected == pytest.approx(st.t_test_power(effect, paired, True), abs=0.03)
    assert st.seeds_needed(sample([0.9]), b) is None  # one run: unknown spread
    assert st.seeds_needed(sample([0.5, 0.5]), sample([0.5, 0.5])) is None  # no difference
    tiny = st.seeds_needed(
        sample([0.9, 0.901, 0.902]), sample([0.90005, 0.90105, 0.90205], [4, 5, 6])
    )
    assert 6000 < tiny < 6600  # 0.05 standard deviations apart: (2.8 / 0.05)^2 * 2


def row(label_overrides: dict[str, str], seed: int, value: float, status: str = "FINISHED") -> Row:
    overrides = {**label_overrides, "seed": str(seed)}
    return Row(
        run_id=f"{label_overrides}-{seed}", overrides=overrides, params=10, metric="val_acc",
        final_val=value, best_val=value, best_epoch=1, final_train=value, wall_seconds=1.0,
        status=status, repeat=(str(seed), None), choices="model=xor_deep data=xor optim=adam",
    )  # fmt: skip


def test_the_report_names_the_best_its_ties_and_writes_configs_csv():
    noise = np.random.default_rng(3).normal(-0.002, 0.01, 12)
    noisy = [a + e for a, e in zip(A, noise, strict=True)]
    close = [a - 0.001 for a in A]  # paired with A: a tiny gap, but the same in every seed
    rows = [row({"optim.lr": "0.01"}, s + 1, v) for s, v in enumerate(noisy)]
    rows += [row({"optim.lr": "0.02"}, s + 1, v) for s, v in enumerate(B)]
    rows += [row({"optim.lr": "0.03"}, s + 1, v) for s, v in enumerate(A)]
    rows += [row({"optim.lr": "0.04"}, s + 1, v) for s, v in enumerate(close)]
    rows.append(row({"optim.lr": "0.01"}, 99, 0.1, status="FAILED"))  # left out
    label_rows(rows)
    table = {r.pop(0): dict(zip(aggregate_table(rows)[0][1:], r, strict=True)) for r in (
        aggregate_table(rows)[1]
    )}  # fmt: skip
    best = "optim.lr=0.03"  # the highest mean
    assert table[best]["p vs best"] == "best"
    assert table["optim.lr=0.01"]["tied with best"] == "yes"
    assert table["optim.lr=0.04"]["tied with best"] == "no"  # paired: the gap is consistent
    assert table["optim.lr=0.02"]["runs"] == "12"
    parsed = list(csv.DictReader(io.StringIO(configs_csv(rows))))
    assert list(parsed[0]) == [
        "config", "n", "mean", "std", "ci95_low", "ci95_high", "p_vs_best", "tied_with_best",
        "test", "params",
    ]  # fmt: skip
    by_name = {r["config"]: r for r in parsed}
    assert by_name[best]["p_vs_best"] == "" and by_name[best]["tied_with_best"] == "True"
    other = by_name["optim.lr=0.02"]
    assert float(other["p_vs_best"]) == pytest.approx(scipy_stats.ttest_rel(B, A).pvalue, rel=1e-8)
    assert other["test"] == st.PAIRED and other["n"] == "12"
    low, high = scipy_stats.t.interval(0.95, 11, loc=np.mean(B), scale=scipy_stats.sem(B))
    assert (float(other["ci95_low"]), float(other["ci95_high"])) == pytest.approx((low, high))
    lines = verdict(rows)
    assert lines[0].startswith(f"best: {best}, mean val_acc ")
    assert f"cannot be told apart from it (p >= 0.05, {st.PAIRED}): optim.lr=0.01" in lines[0]
    assert "optim.lr=0.04" not in lines[0]
    # The runner-up by mean is told apart already: the same gap in every seed (paired).
    assert lines[1] == (
        f"seeds: {best} and optim.lr=0.04 differ by 0.0010 in mean val_acc; about 2 seeds per "
        "config would tell that difference apart at 80% power (they ran 12 and 12)"
    )


def test_one_seed_per_config_says_so_and_a_seed_only_sweep_is_named_by_its_config():
    rows = [row({"model": "xor_linear"}, 1, 0.7), row({"model": "xor_deep"}, 1, 0.9)]
    label_rows(rows)
    header, cells = aggregate_table(rows)
    assert [c[header.index("95% CI of the mean")] for c in cells] == ["1 seed: no interval"] * 2
    assert "nan" not in repr(cells)
    assert verdict(rows)[0] == (
        "best: model=xor_deep, mean val_acc 0.9000 (1 seed: no interval); the others cannot "
        "be tested against it (add seeds: 2 or more per config)"
    )
    seeds_only = [row({}, seed, 0.8 + seed / 100) for seed in (1, 2, 3)]
    label_rows(seeds_only)
    header, cells = aggregate_table(seeds_only)
    assert [c[0] for c in cells] == ["model=xor_deep data=xor optim=adam"]
    assert cells[0][header.index("p vs best")] == ""  # nothing to be best against
    low, high = scipy_stats.t.interval(0.95, 2, loc=0.82, scale=scipy_stats.sem([0.81, 0.82, 0.83]))
    assert verdict(seeds_only) == [
        "one config: model=xor_deep data=xor optim=adam, mean val_acc 0.8200 "
        f"(95% CI {low:.4f} to {high:.4f}, 3 runs)"
    ]


def test_a_diverged_run_is_left_out_of_its_configs_statistics():
    """MLflow stores an infinite metric as 1.8e308: it must not overflow the mean."""
    rows = [row({"model": "a"}, seed, 0.5 + seed / 100) for seed in (1, 2, 3)]
    rows += [row({"model": "a"}, 4, 1.7976931348623157e308)]
    rows += [row({"model": "b"}, seed, 0.4 + seed / 100) for seed in (1, 2, 3)]
    label_rows(rows)
    header, cells = aggregate_table(rows)
    assert [c[header.index("runs")] for c in cells] == ["3", "3"]
    assert verdict(rows)[0].startswith("best: model=a, mean val_acc 0.5200")


def test_an_experiments_report_labels_a_single_run_among_sweep_jobs_by_its_own_config():
    """`make run`, then a sweep: in `runner.report xor` the single run (no overrides) reads
    as its own model and optimizer, never `model=-`, and a value every run has alike
    (`trainer.plots`: false typed, False logged) is no label key."""
    single = row({}, 1, 0.9)
    single.overrides = {}
    single.config = {"model": "xor_deep", "optim": "adam", "trainer.plots": "False", "seed": "1"}
    jobs = []
    for model, optim in (("xor_linear", "sgd"), ("xor_deep", "sgd")):
        job = row({"model": model, "optim": optim, "trainer.plots": "false"}, 1, 0.7)
        job.config = {"model": model, "optim": optim, "trainer.plots": "False", "seed": "1"}
        jobs.append(job)
    assert label_rows([single, *jobs]) == ["model", "optim"]
    assert [r.label for r in (single, *jobs)] == [
        "model=xor_deep optim=adam", "model=xor_linear optim=sgd", "model=xor_deep optim=sgd",
    ]  # fmt: skip


def test_an_interval_stops_where_the_metric_does():
    # Three seeds near 100% accuracy: Student t reaches past 1; the report stops there.
    values = [1.0, 0.93, 0.99]
    raw_low, raw_high = scipy_stats.t.interval(
        0.95, 2, loc=np.mean(values), scale=scipy_stats.sem(values)
    )
    assert raw_high > 1.0
    rows = [row({"model": "a"}, s + 1, v) for s, v in enumerate(values)]
    rows += [row({"model": "b"}, s + 1, v - 0.3) for s, v in enumerate(values)]
    label_rows(rows)
    by_name = {r["config"]: r for r in csv.DictReader(io.StringIO(configs_csv(rows)))}
    assert float(by_name["model=a"]["ci95_low"]) == pytest.approx(raw_low)
    assert float(by_name["model=a"]["ci95_high"]) == 1.0
    assert "to 1.0000" in verdict(rows)[0]
    # Errors and losses stop at 0; R2 at 1; a metric without bounds keeps its interval.
    assert within_range((-0.2, 0.4), "val_rmse") == (0.0, 0.4)
    assert within_range((-0.2, 0.4), "val_loss") == (0.0, 0.4)
    assert within_range((0.7, 1.2), "val_r2") == (0.7, 1.0)
    assert within_range((-0.2, 1.2), "val_acc") == (0.0, 1.0)
    assert within_range(None, "val_acc") is None


def test_a_continued_runs_wall_time_leaves_out_its_pause_and_a_running_one_has_none(tmp_path):
    from mlflow.tracking import MlflowClient

    from runner.sweep.report import run_row
    from tests.conftest import ready_store, store_uri

    ready_store(tmp_path)
    client = MlflowClient(store_uri(tmp_path))
    run_id = client.create_run("0", start_time=1_000_000).info.run_id
    client.log_metric(run_id, "val_acc", 0.9, step=1)
    client.set_terminated(run_id, "KILLED", end_time=1_010_000)  # 10 s of training
    client.set_tag(run_id, "runner.paused_s", "50.0")  # continued 50 s later ...
    client.update_run(run_id, "RUNNING")  # ... and training again: no wall time yet
    assert run_row(client, client.get_run(run_id)).wall_seconds is None
    client.set_terminated(run_id, "FINISHED", end_time=1_065_000)  # 5 s more
    assert run_row(client, client.get_run(run_id)).wall_seconds == pytest.approx(15.0)
