"""The console's run history: read straight from a real Dagster instance's SQLite run storage."""

import dagster as dg

from bankanom_api.runs import recent_runs


@dg.op
def _ok():
    return 1


@dg.op
def _broken():
    raise RuntimeError("boom")


def test_recent_runs_reads_a_real_instance_newest_first(tmp_path):
    ok_job = dg.GraphDefinition(name="ok_job", node_defs=[_ok]).to_job()
    broken_job = dg.GraphDefinition(name="broken_job", node_defs=[_broken]).to_job()
    with dg.DagsterInstance.local_temp(str(tmp_path)) as instance:
        first = ok_job.execute_in_process(instance=instance, tags={"dagster/partition": "2026-01-05"})
        second = broken_job.execute_in_process(instance=instance, raise_on_error=False)
    runs, problem = recent_runs(tmp_path)
    assert problem is None
    assert [(r["run_id"], r["job"], r["status"]) for r in runs] == [
        (second.run_id, "broken_job", "FAILURE"),
        (first.run_id, "ok_job", "SUCCESS"),
    ]
    assert runs[1]["partition"] == "2026-01-05" and runs[1]["seconds"] >= 0


def test_no_run_history_is_a_note_not_an_error(tmp_path):
    runs, problem = recent_runs(tmp_path)
    assert runs == [] and "no run history" in problem
