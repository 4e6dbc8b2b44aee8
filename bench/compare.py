"""Run one benchmark script under several source trees alternately (A B A B ...) and compare them.

Each tree is a git worktree of a commit (``--tree NAME=COMMIT``, made under ``--worktrees`` when
missing). The script comes from this folder; the measured code from the tree, put first on
``PYTHONPATH`` (the editable install's finder is last on ``sys.meta_path``, so the tree wins; checked
once per tree before measuring). Alternating puts both trees through the same stretches of a shared
machine; beside every run the load average before and after and ``machine_pace`` are kept, and the
summary gives each metric's median per tree, the ratio of the medians to the first tree's, and the
median of the per-round ratios. Each run's JSON record and output are kept under ``--out``.

Example (the batch pipeline, 1M events with the previous day present, three rounds):

    .venv/bin/python bench/compare.py --tree f490=f490027 --tree head=HEAD --rounds 3 \\
        --label pipeline_1m --metric cpu_s=sizes.0.median_cpu_seconds \\
        --metric wall_s=sizes.0.median_seconds.total -- \\
        pipeline_bench.py --events 1000000 --runs 1 --data /tmp/e/pipe --previous-day --publish off
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine_pace, record

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent


def git(*args: str, cwd: Path = REPO) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def worktree(folder: Path, commit: str) -> Path:
    """``folder`` checked out at ``commit`` (detached): added when missing, moved when clean."""
    if not folder.exists():
        git("worktree", "add", "--detach", str(folder), commit)
    elif git("rev-parse", "HEAD", cwd=folder) != commit:
        if git("status", "--porcelain", "--untracked-files=no", cwd=folder):
            raise SystemExit(f"{folder} has local changes: not moving it to {commit}")
        git("checkout", "--quiet", "--detach", commit, cwd=folder)
    return folder


def tree_env(folder: Path, name: str, results: Path) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(folder), os.environ.get("PYTHONPATH", "")) if p)
    return {
        **os.environ,
        "PYTHONPATH": path,
        "BANKANOM_BENCH_TREE": name,
        "BANKANOM_BENCH_RESULTS": str(results),
    }


def check_imports(folder: Path, name: str) -> None:
    """The tree's packages are the ones imported, not the editable install's."""
    probe = "import bankanom_pipeline, bankanom_api; print(bankanom_pipeline.__file__); print(bankanom_api.__file__)"
    out = subprocess.run(
        [sys.executable, "-c", probe],
        env=tree_env(folder, name, folder),
        cwd=folder.parent,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    if not all(Path(f).resolve().is_relative_to(folder.resolve()) for f in out):
        raise SystemExit(f"tree {name}: imported {out}, not from {folder}")


def lookup(data, path: str):
    for part in path.split("."):
        data = data[int(part)] if isinstance(data, list) else data[part]
    return data


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--tree", action="append", required=True, help="NAME=COMMIT; the first is the yardstick"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--label", required=True, help="names the output folder and the summary record")
    parser.add_argument("--metric", action="append", default=[], help="NAME=PATH in the script's JSON record")
    parser.add_argument("--worktrees", type=Path, default=Path("/tmp/e"))
    parser.add_argument("--out", type=Path, default=Path("/tmp/e/results"))
    parser.add_argument("script", help="a script of this folder")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="its arguments (after --)")
    args = parser.parse_args()
    script_args = args.args[1:] if args.args[:1] == ["--"] else args.args

    trees: dict[str, tuple[str, Path]] = {}
    for spec in args.tree:
        name, _, ref = spec.partition("=")
        commit = git("rev-parse", f"{ref}^{{commit}}")
        trees[name] = (commit, worktree(args.worktrees / name, commit))
        check_imports(trees[name][1], name)
    metrics = dict(m.split("=", 1) for m in args.metric)
    out = args.out / args.label
    runs: list[dict] = []
    for round_ in range(args.rounds):
        for name, (commit, folder) in trees.items():
            results = out / f"{round_}-{name}"
            results.mkdir(parents=True, exist_ok=True)
            before, pace = load(), machine_pace()
            began = time.time()
            with open(results / "output.txt", "w") as log:
                done = subprocess.run(
                    [sys.executable, str(BENCH / args.script), *script_args],
                    env=tree_env(folder, f"{name}-{commit[:7]}", results),
                    cwd=args.worktrees,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            if done.returncode:
                raise SystemExit(f"{name} round {round_} failed: see {results / 'output.txt'}")
            record_file = max(results.glob("*.json"), key=lambda p: p.stat().st_mtime)
            data = json.loads(record_file.read_text())
            run = {
                "tree": name,
                "round": round_,
                "started_utc": time.strftime("%H:%M:%S", time.gmtime(began)),
                "load_before": before,
                "load_after": load(),
                "machine_pace_s": round(pace, 3),
                "values": {m: lookup(data, path) for m, path in metrics.items()},
            }
            runs.append(run)
            print(json.dumps(run), flush=True)
    first = next(iter(trees))
    summary: dict = {"label": args.label, "script": [args.script, *script_args], "runs": runs, "trees": {}}
    for name, (commit, _) in trees.items():
        mine = [r for r in runs if r["tree"] == name]
        summary["trees"][name] = {
            "commit": commit,
            "median": {m: statistics.median(r["values"][m] for r in mine) for m in metrics},
            "median_pace_s": statistics.median(r["machine_pace_s"] for r in mine),
        }
    for name in trees:
        if name == first:
            continue
        ratios = summary["trees"][name]["ratio_to_" + first] = {}
        for m in metrics:
            pairs = [
                b["values"][m] / a["values"][m]
                for a, b in zip(
                    (r for r in runs if r["tree"] == first),
                    (r for r in runs if r["tree"] == name),
                    strict=False,
                )
                if a["values"][m]
            ]
            base = summary["trees"][first]["median"][m]
            ratios[m] = {
                "of_medians": summary["trees"][name]["median"][m] / base if base else None,
                "median_of_rounds": statistics.median(pairs) if pairs else None,
                "rounds": [round(p, 3) for p in pairs],
            }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    record(f"compare_{args.label}", summary)


if __name__ == "__main__":
    main()
