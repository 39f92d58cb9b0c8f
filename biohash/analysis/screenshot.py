"""``make mlflow-screenshot``: the MLflow UI listing a sweep's best runs, as a PNG.

Takes the README's picture from a real UI rather than drawing it: runs the
``demo`` sweep into ``--workdir`` unless its tracking store already has best
runs, starts ``mlflow server`` on 127.0.0.1 on a free port (``biohash ui``'s
command), and lets headless Chromium load the experiment's run list with the
best-runs filter (``biohash.results.mlflow_best.BEST_FILTER``) applied.

The filter and the columns travel as an MLflow *shared view* (the UI's own
"share" feature: the experiment tag ``mlflow.sharedViewState.<key>`` holds the
view as JSON, the URL names the key), because a plain ``searchFilter`` URL
shows the best runs folded under their sweep's run. Chromium is checked
first, so a missing browser fails in a second, not after the sweep::

    python -m biohash.analysis.screenshot --out docs/mlflow-best-runs.png
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import urllib.parse
from pathlib import Path

from biohash.errors import BiohashError, ConfigError, ResultsError
from biohash.utils import free_port

__all__ = ["main", "take_screenshot", "find_chromium", "best_runs_url", "share_best_view"]

#: Browsers tried in order (Debian's package is ``chromium``).
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
#: Above this the PNG is not commit-sized.
MAX_PNG_BYTES = 300_000
#: Chromium tries, and seconds each.
ATTEMPTS, ATTEMPT_TIMEOUT_S = 3, 60
#: The shared view's key (experiment tag ``mlflow.sharedViewState.<key>``).
VIEW_KEY = "biohash-best"
#: Columns beside the run name: the answer, the loss, the tag that selects the runs.
VIEW_COLUMNS = ("metrics.`score`", "params.`loss`", "params.`lr`", "tags.`biohash.best`")


def find_chromium() -> str:
    """The path of a Chromium binary; ``ConfigError`` naming the install command if none."""
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise ConfigError(f"no headless browser found (tried {', '.join(CHROMIUM_NAMES)}); "
                      "install one, e.g. apt-get install -y chromium")


def best_runs_url(base: str, experiment_id: str) -> str:
    """The experiment's run list showing the shared view ``VIEW_KEY`` (``share_best_view``)."""
    query = urllib.parse.urlencode({"viewStateShareKey": VIEW_KEY})
    return f"{base}/#/experiments/{experiment_id}/runs?{query}"


def share_best_view(tracking_uri: str, experiment_id: str) -> None:
    """Store the view ``best_runs_url`` opens: the best-runs filter, sorted by run name."""
    from mlflow import MlflowClient

    from biohash.results.mlflow_best import BEST_FILTER

    view = {"searchFilter": BEST_FILTER, "orderByKey": "attributes.run_name", "orderByAsc": True,
            "selectedColumns": list(VIEW_COLUMNS)}
    MlflowClient(tracking_uri).set_experiment_tag(
        experiment_id, f"mlflow.sharedViewState.{VIEW_KEY}", json.dumps(view))


def _experiment_with_best(tracking_uri: str, experiment: str) -> str | None:
    """The id of ``experiment`` when some run in it carries the best tag, else None."""
    from mlflow import MlflowClient

    from biohash.results.mlflow_best import BEST_FILTER

    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    runs = client.search_runs([found.experiment_id], filter_string=BEST_FILTER, max_results=1)
    return found.experiment_id if runs else None


def _run_demo_sweep(workdir: Path, tracking_uri: str) -> None:
    from biohash.orchestrator.sweep import SweepOptions, run_sweep

    print(f"running the demo sweep into {workdir} (a few minutes) ...", flush=True)
    summary = run_sweep(SweepOptions(space="demo", storage=str(workdir / "sweeps"),
                                     mlflow_uri=tracking_uri, num_cpus=os.cpu_count(), verbose=0))
    if summary.interrupted:
        raise ResultsError("the demo sweep was interrupted; rerun make mlflow-screenshot")


def take_screenshot(url: str, out: Path, *, chromium: str, size: tuple[int, int],
                    wait_ms: int) -> Path:
    """Headless Chromium's PNG of ``url`` after ``wait_ms`` of virtual time (the UI
    is a JavaScript app: the runs appear after its API calls answer). A long
    budget never ends: the UI keeps polling, so virtual time keeps waiting."""
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [chromium, "--headless", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
           f"--window-size={size[0]},{size[1]}", f"--virtual-time-budget={wait_ms}",
           f"--screenshot={out.resolve()}", url]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.insert(1, "--no-sandbox")  # Chromium refuses to start as root with its sandbox
    # On a freshly started server the first page load never lets virtual time
    # run out (seen with MLflow 3.17 and Chromium 150); a second load works.
    for _ in range(ATTEMPTS):
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=ATTEMPT_TIMEOUT_S)
            break
        except subprocess.TimeoutExpired:
            continue
    else:
        raise ResultsError(f"chromium did not finish in {ATTEMPTS} tries of "
                           f"{ATTEMPT_TIMEOUT_S} s on {url}")
    if done.returncode != 0 or not out.is_file():
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise ResultsError(f"chromium failed ({done.returncode}) on {url}: {' | '.join(tail)}")
    return out


def _shrink(path: Path) -> None:
    """A palette PNG when the screenshot is not commit-sized (UI colours are few)."""
    if path.stat().st_size <= MAX_PNG_BYTES:
        return
    from PIL import Image

    with Image.open(path) as img:
        img.convert("RGB").quantize(colors=128).save(path, optimize=True)
    if path.stat().st_size > MAX_PNG_BYTES:
        raise ResultsError(f"{path} is {path.stat().st_size} bytes, above {MAX_PNG_BYTES}; "
                           "use a smaller --window-size")


def _size(text: str) -> tuple[int, int]:
    parts = text.split(",")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) >= 100 for p in parts):
        raise ConfigError(f"bad --window-size {text!r}; allowed: WIDTH,HEIGHT (integers >= 100)")
    return int(parts[0]), int(parts[1])


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m biohash.analysis.screenshot",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("docs/mlflow-best-runs.png"))
    p.add_argument("--workdir", type=Path, default=Path("build/mlflow-screenshot"),
                   help="sweeps/ and mlflow.db of the demo sweep (default: %(default)s)")
    p.add_argument("--mlflow-uri", help="use this tracking store instead of the workdir's "
                                        "(it must already hold best runs)")
    p.add_argument("--experiment", default="biohash")
    p.add_argument("--window-size", default="1600,720", help="WIDTH,HEIGHT in pixels")
    p.add_argument("--wait-ms", type=int, default=8000)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from biohash.analysis.ui import start_ui, wait_healthy

    args = _parse(argv)
    try:
        size = _size(args.window_size)
        chromium = find_chromium()
        uri = args.mlflow_uri or f"sqlite:///{(args.workdir / 'mlflow.db').resolve()}"
        experiment_id = _experiment_with_best(uri, args.experiment)
        if experiment_id is None:
            if args.mlflow_uri:
                raise ResultsError(f"no run in experiment {args.experiment!r} of {uri} has the "
                                   "best tag; run biohash results sync-mlflow NAME first")
            _run_demo_sweep(args.workdir.resolve(), uri)
            experiment_id = _experiment_with_best(uri, args.experiment)
            if experiment_id is None:
                raise ResultsError(f"the demo sweep left no best runs in {uri}")
        share_best_view(uri, experiment_id)
        port = free_port()
        proc = start_ui(uri, port, quiet=True)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_healthy(base, proc, timeout_s=120)
            out = take_screenshot(best_runs_url(base, experiment_id), args.out,
                                  chromium=chromium, size=size, wait_ms=args.wait_ms)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        _shrink(out)
    except BiohashError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
