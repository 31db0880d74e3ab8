"""Experiment tracking of a training run: a CSV file always, TensorBoard and MLflow on request, rank 0 only.

``metrics.csv`` (columns ``step,name,value``) is the record the tests and the docs read. TensorBoard event files go
to ``{out}/tensorboard``. MLflow is optional (``pip install medssl[tracking]``, imported only when asked for) and logs
to a local file store, ``{out}/mlruns``, unless a tracking URI is given; the run id is kept in the checkpoint so a
resumed run continues the same MLflow run.

On resume every backend drops what was logged after the checkpoint's step (the CSV is rewritten, TensorBoard purges
the later events), so a run killed between two checkpoints leaves one clean trajectory.

Only hyperparameters and metric values are logged: no paths of images or reports, no patient keys.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medssl.exceptions import MedsslError
from medssl.log import get_logger

__all__ = ["TrackingError", "TRACKING_BACKENDS", "Tracker", "read_metrics"]

logger = get_logger(__name__)

TRACKING_BACKENDS = ("csv", "tensorboard", "mlflow")


class TrackingError(MedsslError):
    """A tracking backend is unknown or cannot be used."""


def read_metrics(path: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
    """Read a ``metrics.csv`` into ``{name: [(step, value), ...]}`` (steps in file order).

    Args:
        path: the CSV file or the run folder holding it.

    Returns:
        The series.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.csv"
    series: dict[str, list[tuple[int, float]]] = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            series.setdefault(row["name"], []).append((int(row["step"]), float(row["value"])))
    return series


class Tracker:
    """Log scalars and hyperparameters of a run to the chosen backends.

    Args:
        out_dir: the run folder.
        backends: any of ``"csv"``, ``"tensorboard"``, ``"mlflow"``.
        enabled: False on ranks other than 0 (every call is then a no-op).
        resume_step: when resuming, drop what was logged after this step.
        mlflow_uri: MLflow tracking URI (default: the local file store ``{out_dir}/mlruns``).
        mlflow_experiment: MLflow experiment name.
        mlflow_run_id: continue this MLflow run (from the checkpoint).
        run_name: MLflow run name.

    Raises:
        TrackingError: an unknown backend, or MLflow asked for but not installed.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        backends: Sequence[str] = ("csv", "tensorboard"),
        enabled: bool = True,
        resume_step: int | None = None,
        mlflow_uri: str | None = None,
        mlflow_experiment: str = "medssl-pretrain",
        mlflow_run_id: str | None = None,
        run_name: str | None = None,
    ) -> None:
        unknown = [b for b in backends if b not in TRACKING_BACKENDS]
        if unknown:
            raise TrackingError(f"unknown tracking backends {unknown}; known: {list(TRACKING_BACKENDS)}")
        self.out_dir = Path(out_dir)
        self.backends = tuple(dict.fromkeys(backends))
        self.enabled = bool(enabled)
        self.mlflow_run_id: str | None = mlflow_run_id
        self._csv = None
        self._csv_writer = None
        self._tb = None
        self._mlflow = None
        if not self.enabled:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if "csv" in self.backends:
            self._open_csv(resume_step)
        if "tensorboard" in self.backends:
            from torch.utils.tensorboard import SummaryWriter

            purge = None if resume_step is None else int(resume_step) + 1
            self._tb = SummaryWriter(log_dir=os.fspath(self.out_dir / "tensorboard"), purge_step=purge)
        if "mlflow" in self.backends:
            self._start_mlflow(mlflow_uri, mlflow_experiment, run_name, resume_step)

    def _open_csv(self, resume_step: int | None) -> None:
        path = self.out_dir / "metrics.csv"
        rows: list[dict[str, str]] = []
        if resume_step is not None and path.is_file():
            with open(path, newline="") as handle:
                rows = [r for r in csv.DictReader(handle) if int(r["step"]) <= int(resume_step)]
        self._csv = open(path, "w", newline="")
        self._csv_writer = csv.DictWriter(self._csv, fieldnames=["step", "name", "value"])
        self._csv_writer.writeheader()
        self._csv_writer.writerows(rows)
        self._csv.flush()

    def _start_mlflow(self, uri: str | None, experiment: str, run_name: str | None, resume_step: int | None) -> None:
        from monai.utils import optional_import

        mlflow, has_mlflow = optional_import("mlflow")
        if not has_mlflow:
            raise TrackingError("--tracking mlflow needs the mlflow package: pip install 'medssl[tracking]'")
        mlflow.set_tracking_uri(uri or (self.out_dir / "mlruns").resolve().as_uri())
        mlflow.set_experiment(experiment)
        if self.mlflow_run_id:
            run = mlflow.start_run(run_id=self.mlflow_run_id)
        else:
            run = mlflow.start_run(run_name=run_name)
        self.mlflow_run_id = run.info.run_id
        self._mlflow = mlflow

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log hyperparameters (flattened ``a.b`` keys; values as text)."""
        if not self.enabled:
            return
        flat = _flatten(params)
        if self._tb is not None:
            self._tb.add_text("hyperparameters", "\n".join(f"    {k}: {v}" for k, v in sorted(flat.items())), 0)
        if self._mlflow is not None:
            run = self._mlflow.active_run()
            existing = set(run.data.params) if run is not None and hasattr(run, "data") else set()
            new = {k: str(v)[:500] for k, v in flat.items() if k not in existing}
            if new:
                self._mlflow.log_params(new)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Log scalar metrics at ``step`` (non-finite values are logged as they are)."""
        if not self.enabled:
            return
        values = {k: float(v) for k, v in metrics.items()}
        if self._csv_writer is not None:
            self._csv_writer.writerows({"step": int(step), "name": k, "value": repr(v)} for k, v in values.items())
            self._csv.flush()
        if self._tb is not None:
            for name, value in values.items():
                self._tb.add_scalar(name, value, int(step))
        if self._mlflow is not None:
            finite = {k: v for k, v in values.items() if math.isfinite(v)}
            if finite:
                self._mlflow.log_metrics(finite, step=int(step))

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps to continue the same run (the MLflow run id)."""
        return {"mlflow_run_id": self.mlflow_run_id}

    def close(self, status: str = "FINISHED") -> None:
        """Flush and close every backend (MLflow: end the run with ``status``)."""
        if self._csv is not None:
            self._csv.close()
            self._csv = self._csv_writer = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._mlflow is not None:
            self._mlflow.end_run(status=status)
            self._mlflow = None


def _flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out
