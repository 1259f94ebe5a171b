"""Partitioned batch scoring (in process and on a LocalCluster of 2 workers) stores the single-machine batch."""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.build import build_features
from features.partitioned import partition_data_dir, partition_of
from features.validation import load_history
from serving.batch import score_batch
from serving.partitioned_batch import score_partitioned_batch
from serving.policy import HandoffPolicy
from serving.stores import ScoreStore
from tests.models.sim_scoring import SimulatedScoring, simulated_scoring
from tests.serving.test_service import Info, model_mode_policy

T0 = datetime(2026, 1, 2, 2, 0, tzinfo=UTC)
NOW = pd.Timestamp("2026-06-01T00:00:00Z")


@pytest.fixture(scope="module")
def sim() -> SimulatedScoring:
    return simulated_scoring()


@pytest.fixture(scope="module")
def parts(sim: SimulatedScoring, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dask-score") / "parts"
    partition_data_dir(sim.data_dir, out, 3)
    return out


@pytest.fixture(scope="module")
def client():
    from pipelines.dask_runner import open_cluster

    with open_cluster("local:2") as c:
        yield c


def stored(store: ScoreStore) -> pd.DataFrame:
    frame = store.current_frame().drop(columns=["batch_id"])
    frame["handoff_id"] = frame["handoff_id"].notna()  # a random id per recorded handoff
    return frame.sort_values("lead_id", ignore_index=True)


def single_machine(sim: SimulatedScoring, policy: HandoffPolicy, url: str, nights: int) -> list[pd.DataFrame]:
    history = load_history(sim.data_dir, now=NOW).history
    frames = []
    with ScoreStore(url) as store:
        for night in range(nights):
            score_batch(history, sim.model, Info(), policy, store, scored_at=T0 + timedelta(days=night))
            frames.append(stored(store))
    return frames


def partitioned(parts: Path, sim: SimulatedScoring, policy: HandoffPolicy, url: str, nights: int, runner=None):
    frames = []
    with ScoreStore(url) as store:
        for night in range(nights):
            score_partitioned_batch(
                parts, sim.model, Info(), policy, store, scored_at=T0 + timedelta(days=night), runner=runner, now=NOW
            )
            frames.append(stored(store))
    return frames


def capacity_policy() -> HandoffPolicy:
    # capacity grading ranks the whole population; a weekly capacity caps handoffs across all partitions
    return model_mode_policy(grading={"mode": "capacity", "capacity": {"leads_per_week": 40}})


@pytest.mark.slow
@pytest.mark.parametrize("make_policy", [model_mode_policy, capacity_policy], ids=["model", "capacity"])
def test_batches_on_two_workers_equal_the_single_machine_batches(
    sim: SimulatedScoring, parts: Path, client, tmp_path: Path, make_policy
) -> None:
    from pipelines.dask_runner import DaskPartitionRunner

    policy = make_policy()
    assert len(client.scheduler_info()["workers"]) == 2
    # two nights: the second one's trends and cool-downs come from the first one's stored batch
    single = single_machine(sim, policy, f"sqlite:///{tmp_path / 'single.db'}", 2)
    dask = partitioned(parts, sim, policy, f"sqlite:///{tmp_path / 'dask.db'}", 2, DaskPartitionRunner(client))
    assert single[0]["handoff"].any() and single[0]["reasons"].notna().any()
    assert set(single[1]["trend"]) == {"steady"}
    for a, b in zip(single, dask, strict=True):
        pd.testing.assert_frame_equal(b, a, check_exact=True)


@pytest.mark.slow
def test_workers_killed_while_scoring_and_explaining_give_the_same_batch(
    sim: SimulatedScoring, parts: Path, client, tmp_path: Path
) -> None:
    from pipelines.dask_runner import DaskPartitionRunner
    from serving.partitioned_batch import explain_partition, score_partition

    class KillingRunner(DaskPartitionRunner):
        """The first scoring task and the first explaining task each kill their worker process outright."""

        def submit(self, fn, *args, key):
            if fn not in (score_partition, explain_partition):
                return super().submit(fn, *args, key=key)
            marker = tmp_path / f"killed-{fn.__name__}"

            def call(*a):
                try:
                    fd = os.open(marker, os.O_CREAT | os.O_EXCL)
                except FileExistsError:
                    return fn(*a)
                os.close(fd)
                os._exit(1)

            return super().submit(call, *args, key=key)

    policy = model_mode_policy()
    single = single_machine(sim, policy, f"sqlite:///{tmp_path / 'single.db'}", 1)
    dask = partitioned(parts, sim, policy, f"sqlite:///{tmp_path / 'dask.db'}", 1, KillingRunner(client))
    assert (tmp_path / "killed-score_partition").exists() and (tmp_path / "killed-explain_partition").exists()
    pd.testing.assert_frame_equal(dask[0], single[0], check_exact=True)
    client.wait_for_workers(2, timeout=60)


def test_in_process_partitioned_batch_equals_single_machine_and_exports_parts(
    sim: SimulatedScoring, parts: Path, tmp_path: Path
) -> None:
    policy = model_mode_policy()
    single = single_machine(sim, policy, f"sqlite:///{tmp_path / 'single.db'}", 1)
    with ScoreStore(f"sqlite:///{tmp_path / 'inline.db'}") as store:
        summary = score_partitioned_batch(
            parts, sim.model, Info(), policy, store, scored_at=T0, out=tmp_path / "s", now=NOW
        )
        got = stored(store)
    pd.testing.assert_frame_equal(got, single[0], check_exact=True)
    files = sorted((tmp_path / "s").glob("part-*.parquet"))
    assert summary.export == tmp_path / "s" and [f.name for f in files] == [f"part-0000{i}.parquet" for i in range(3)]
    for i, f in enumerate(files):
        frame = pd.read_parquet(f)
        assert (partition_of(frame["lead_id"].tolist(), 3) == i).all()
    exported = pd.concat([pd.read_parquet(f) for f in files]).sort_values("lead_id", ignore_index=True)
    assert exported["lead_id"].tolist() == single[0]["lead_id"].tolist()
    assert exported["score"].tolist() == single[0]["score"].tolist()


def _cli_script(parts: Path, model_file: Path, runs: list[list[str]]) -> str:
    """A script that runs ``leadscore score --data PARTS ...`` once per ``runs`` (the pickled model as the
    champion) and prints, after each run, the Dask modules imported so far."""
    return (
        "import pickle, sys\n"
        "from typer.testing import CliRunner\n"
        "import pipelines.flows as flows\n"
        "from pipelines.cli import app\n"
        "from tests.serving.test_service import Info\n"
        f"model = pickle.loads(open({str(model_file)!r}, 'rb').read())\n"
        "flows.load_champion = lambda *a, **k: (model, Info())\n"
        f"for args in {runs!r}:\n"
        f"    r = CliRunner().invoke(app, ['score', '--data', {str(parts)!r}, *args])\n"
        "    assert r.exit_code == 0, (r.output, r.exception)\n"
        "    print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed', 'prefect_dask')))\n"
    )


@pytest.mark.slow
def test_leadscore_score_on_partitions_imports_dask_only_with_cluster(
    sim: SimulatedScoring, parts: Path, tmp_path: Path
) -> None:
    model_file = tmp_path / "model.pkl"
    model_file.write_bytes(pickle.dumps(sim.model))
    env = {k: v for k, v in os.environ.items() if k != "LEADSCORE_DASK_ADDRESS"}
    env["LEADSCORE_HOME"] = str(tmp_path / "home")
    env["LEADSCORE_STORE_URL"] = f"sqlite:///{tmp_path / 'cli.db'}"
    as_of = ["--as-of", "2026-01-01T00:00:00Z"]
    runs = [["--out", str(tmp_path / "a"), *as_of], ["--out", str(tmp_path / "b"), *as_of, "--cluster", "local:2"]]
    code = _cli_script(parts, model_file, runs)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    without, with_cluster = out.stdout.strip().splitlines()[-2:]
    assert without == "[]"  # the first run, in process: nothing of Dask imported
    assert "distributed" in with_cluster
    for name in ("a", "b"):
        assert len(list((tmp_path / name).glob("part-*.parquet"))) == 3
    a = pd.concat(pd.read_parquet(f) for f in sorted((tmp_path / "a").glob("*.parquet")))
    b = pd.concat(pd.read_parquet(f) for f in sorted((tmp_path / "b").glob("*.parquet")))
    assert len(a) > 0 and a["lead_id"].tolist() == b["lead_id"].tolist()
    assert a["score"].tolist() == b["score"].tolist()
    with ScoreStore(env["LEADSCORE_STORE_URL"]) as store:
        batches = store.batches()
        assert len(batches) == 2 and all(pd.Timestamp(x.as_of) == pd.Timestamp(as_of[1]) for x in batches)


def test_score_refuses_cluster_on_plain_data_and_backfill_on_partitions(sim: SimulatedScoring, parts: Path) -> None:
    from typer.testing import CliRunner

    from pipelines.cli import app

    def refused(*args: str) -> str:
        result = CliRunner().invoke(app, ["score", *args])
        assert result.exit_code == 2, result.output
        return " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.output).split())  # the error box, unwrapped

    assert "is not partitioned" in refused("--data", str(sim.data_dir), "--cluster", "local:2")
    assert "is not understood" in refused("--data", str(parts), "--cluster", "http://x")
    assert "partitioned data directory yet" in refused("--data", str(parts), "--backfill", "2")


def test_explaining_a_partition_rebuilds_the_rows_it_scored_for_those_leads_only(
    sim: SimulatedScoring, parts: Path, tmp_path: Path
) -> None:
    import shutil

    from features.contract import Contract
    from features.partitioned import PartitionedLayout
    from serving.partitioned_batch import Scorer, explain_partition, score_partition

    layout = PartitionedLayout.read(parts)
    as_of = pd.Timestamp(sim.data_end).floor("s")
    args = (Contract.load(parts), NOW, as_of, pd.Timestamp(sim.data_end))
    scorer = Scorer(sim.model, Info(), model_mode_policy())
    item = (0, layout.part_dir(0))
    part = score_partition(item, scorer, *args)
    assert len(part.lead_ids) == len(part.outputs["readiness"]) == len(part.needs) > 10
    rows = np.array([1, 4, 7])
    readiness = part.outputs["readiness"][rows]
    reasons, actions = explain_partition(item, part.lead_ids[rows], readiness, scorer, *args)
    # the same reasons as explaining the whole partition's encoded rows (the single-machine pass)
    frame, _ = build_features(
        load_history(item[1], args[0], now=NOW).history, [as_of], scorer.service().feature_config, data_end=args[3]
    )
    whole = sim.model.encode(frame)
    assert (reasons, actions) == scorer.service().explain_rows(whole[rows], readiness)
    assert len(reasons) == 3 and all(r for r in reasons)
    # leads that are not (or no longer) in the partition: refused, never explained with other rows
    with pytest.raises(RuntimeError, match=r"partition 0 .*3 leads to explain, but .* gave 2 rows that do not match"):
        explain_partition(
            item, np.array([*part.lead_ids[rows[:2]], "no-such-lead"], dtype=object), readiness, scorer, *args
        )
    moved = tmp_path / "part"
    shutil.copytree(item[1], moved)
    assert explain_partition((0, moved), part.lead_ids[rows], readiness, scorer, *args) == (reasons, actions)


def test_a_worker_holds_no_scored_partition_while_explaining(
    sim: SimulatedScoring, parts: Path, client, tmp_path: Path
) -> None:
    from pipelines.dask_runner import DaskPartitionRunner
    from serving.partitioned_batch import explain_partition

    def leadscore_keys(dask_scheduler) -> list[str]:
        return [str(k) for k in dask_scheduler.tasks if str(k).startswith("leadscore-")]

    held_at_explain: list[list[str]] = []

    class Watching(DaskPartitionRunner):
        def submit(self, fn, *args, key):
            if fn is explain_partition:
                held_at_explain.append(client.run_on_scheduler(leadscore_keys))
            return super().submit(fn, *args, key=key)

    with ScoreStore(f"sqlite:///{tmp_path / 'd.db'}") as store:
        score_partitioned_batch(
            parts, sim.model, Info(), model_mode_policy(), store, scored_at=T0, runner=Watching(client), now=NOW
        )
    assert len(held_at_explain) == 3
    # when an explain task is sent, the scores of every partition were fetched and forgotten: only the
    # shared model (and the explain tasks sent before) are on the cluster
    for held in held_at_explain:
        assert not [k for k in held if k.startswith(("leadscore-score-", "leadscore-validate-"))], held
    assert client.run_on_scheduler(leadscore_keys) == []
