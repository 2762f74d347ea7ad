"""Screenshots of the MLflow UI on a runner store, for an issue's evidence.

    .venv/bin/python scripts/screenshots.py --store-dir outputs --out outputs/screenshots

Starts the UI (`python -m runner.ui`), finds the latest single run and the latest sweep's
parent run, and shoots with headless Chromium (`apt-get install chromium`): the experiment's
runs table, the run's overview, its model-metric charts, a plot among its artifacts, the
sweep's parent run. Then stops the UI. Prints each PNG's path.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

from mlflow.entities import Run, ViewType
from mlflow.tracking import MlflowClient

from runner.tracking import embedded_store, experiment_url, run_url, tags

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
WINDOW = "1600,1000"
BUDGET_MS = 15000  # virtual time the page gets to load its data and draw its charts
START_LIMIT = 120.0  # seconds the UI may take to print its URL (slow on a busy machine)


def latest(client: MlflowClient, ids: list[str], condition: str) -> Run | None:
    """The most recent active run of the experiments that meets a search condition."""
    runs = client.search_runs(
        ids, condition, ViewType.ACTIVE_ONLY, max_results=1, order_by=["attributes.start_time DESC"]
    )
    return runs[0] if runs else None


def single_run(client: MlflowClient, ids: list[str]) -> Run | None:
    """The latest run that is neither a sweep's parent nor one of its jobs."""
    for run in client.search_runs(
        ids, "", ViewType.ACTIVE_ONLY, max_results=200, order_by=["attributes.start_time DESC"]
    ):
        if tags.IS_SWEEP not in run.data.tags and tags.PARENT_RUN_ID not in run.data.tags:
            return run
    return None


def first_plot(client: MlflowClient, run_id: str, path: str | None = None) -> str | None:
    """The path of the run's first PNG artifact (plots/ first), if any."""
    files = sorted(client.list_artifacts(run_id, path), key=lambda f: f.path != "plots")
    for item in files:
        if item.is_dir:
            found = first_plot(client, run_id, item.path)
            if found:
                return found
        elif item.path.endswith(".png"):
            return item.path
    return None


def shoot(browser: str, url: str, png: Path) -> None:
    """One headless screenshot of `url`."""
    subprocess.run(
        [
            browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--run-all-compositor-stages-before-draw",  # else charts are still spinners
            f"--screenshot={png}", f"--window-size={WINDOW}",
            f"--virtual-time-budget={BUDGET_MS}", url,
        ],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    print(f"{png}  <- {url}")


def start_ui(store_dir: str, port: int) -> tuple[subprocess.Popen, str]:
    """`python -m runner.ui` on the store, and the base URL once it printed its line."""
    ui = subprocess.Popen(
        [sys.executable, "-m", "runner.ui", "--store-dir", store_dir, "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + START_LIMIT
    for line in ui.stdout:
        if "http://" in line:
            return ui, line.split("http://", 1)[1].split("/", 1)[0]
        if time.monotonic() > deadline:
            break
    ui.terminate()
    sys.exit(f"the UI did not start (exit status {ui.wait()})")


def main() -> None:
    """Start the UI, shoot each page, stop the UI."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store-dir", default="outputs")
    parser.add_argument("--out", default="outputs/screenshots", help="folder for the PNGs")
    parser.add_argument("--port", type=int, default=5055)
    args = parser.parse_args()
    browser = next((b for b in map(shutil.which, BROWSERS) if b), None)
    if browser is None:
        sys.exit("no Chromium found: apt-get install chromium")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ui, host = start_ui(args.store_dir, args.port)
    base = f"http://{host}"
    try:
        client = MlflowClient(embedded_store(args.store_dir)[0])
        ids = [e.experiment_id for e in client.search_experiments()]
        run = single_run(client, ids)
        sweep = latest(client, ids, f"tags.`{tags.IS_SWEEP}` = 'true'")
        if run is None and sweep is None:
            sys.exit(f"no runs in {args.store_dir}")
        pages = []
        if run is not None:
            eid, rid = run.info.experiment_id, run.info.run_id
            pages += [
                ("experiment", experiment_url(base, eid)),
                ("run-overview", run_url(base, eid, rid)),
                ("run-model-metrics", run_url(base, eid, rid, "model-metrics")),
            ]
            plot = first_plot(client, rid)
            if plot:
                pages.append(("run-artifacts-plot", run_url(base, eid, rid, f"artifacts/{plot}")))
        if sweep is not None:
            eid, rid = sweep.info.experiment_id, sweep.info.run_id
            pages += [
                ("sweep-parent", run_url(base, eid, rid)),
                ("sweep-parent-model-metrics", run_url(base, eid, rid, "model-metrics")),
            ]
        for name, url in pages:
            shoot(browser, url, out / f"{name}.png")
    finally:
        ui.terminate()
        ui.wait(timeout=30)


if __name__ == "__main__":
    main()
