"""The pretraining bundles' workflows (``cxr_convirt_pretraining``, ``cxr_gloria_pretraining``) on medssl's engine.

MONAI's bundle ``run`` executes whatever the config's ``run`` list says; these classes make the pretraining engine
(:class:`medssl.engines.Pretraining`, an ignite ``Engine`` with exact resume, DDP, AMP and tracking) a bundle
trainer without re-implementing it:

- :func:`build_pretraining_network`: the image-report model of a method and its options (the ``network_def`` of the
  three configs: the same object the engine trains);
- :class:`BundlePretraining`: ``train#trainer``. Builds the engine from the config's settings, attaches the config's
  MONAI handlers (``StatsHandler``, ``TensorBoardStatsHandler``, the ``MLFlowHandler`` that ``--tracking mlflow``
  adds, :class:`RetrievalValidation`) to its ignite engine, runs it, then writes ``{ckpt_dir}/model.pt``
  (``{"model": state dict}``, what ``CheckpointLoader`` and :func:`load_network_weights` read) and exports the
  encoders to ``{ckpt_dir}/encoders`` (``image.pt`` + ``image.json``: the encoder ``cxr_classification`` loads;
  ``text/``, ``heads.pt``, ``model.json``: :func:`medssl.networks.vlp.load_vlp_model`);
- :class:`RetrievalValidation`: an ignite handler computing image <-> report Recall@K on the validation pairs every
  ``interval`` epochs (into ``engine.state.metrics``, so MONAI's stats and tracking handlers log it);
- :class:`RetrievalEvaluator` (``evaluate.json``): Recall@K, mean/median rank with bootstrap CIs on the test pairs,
  ``metrics.csv`` + ``retrieval.csv``; :class:`ImageEmbedder` (``inference.json``): one image embedding per row,
  named by the item's salted ``case_key``.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medssl.engines.methods import create_method
from medssl.exceptions import MedsslError
from medssl.log import get_logger

__all__ = [
    "BundlePretrainingError",
    "build_pretraining_network",
    "load_network_weights",
    "BundlePretraining",
    "RetrievalValidation",
    "RetrievalEvaluator",
    "ImageEmbedder",
    "write_metrics_csv",
]

logger = get_logger(__name__)


class BundlePretrainingError(MedsslError):
    """A pretraining bundle workflow cannot run with its configuration (named in the message)."""


def build_pretraining_network(method: str, options: Mapping[str, Any]) -> nn.Module:
    """The image-report model of ``method`` with ``options`` (what the engine builds and trains).

    Args:
        method: a registered method (``convirt``, ``gloria``).
        options: the method's options (``text_model``, ``image_backbone`` ...).

    Returns:
        The model (:class:`medssl.networks.vlp.ConVIRT` or :class:`~medssl.networks.vlp.GLoRIA`).
    """
    return create_method(method, **dict(options)).build_model()


def load_network_weights(network: nn.Module, path: str | os.PathLike, key: str = "model") -> nn.Module:
    """Load ``{key: state dict}`` (or a plain state dict) saved by :class:`BundlePretraining` (``weights_only``).

    Raises:
        BundlePretrainingError: no such file (train first, or set ``ckpt_path``).
    """
    path = Path(path)
    if not path.is_file():
        raise BundlePretrainingError("no checkpoint: run the train workflow first (or set ckpt_path)", path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    network.load_state_dict(state[key] if key in state else state)
    return network


def write_metrics_csv(metrics: Mapping[str, float], output_dir: str | os.PathLike, filename: str = "metrics.csv"):
    """Write ``name<TAB>value`` rows, the format of MONAI's ``MetricsSaver``.

    Returns:
        The path written.
    """
    path = Path(output_dir) / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{name}\t{float(value)}\n" for name, value in metrics.items()))
    return path


def _scalar_output(transform: Any) -> Any:
    """Wrap an ``output_transform`` so that a one-element tuple (``from_engine`` on a dict) becomes its element."""

    def wrapped(output: Any) -> Any:
        value = transform(output)
        return value[0] if isinstance(value, tuple) and len(value) == 1 else value

    return wrapped


def _retrieval(
    network: nn.Module,
    items: Sequence[Mapping[str, Any]],
    method: str,
    options: Mapping[str, Any],
    ks: Sequence[int],
    mode: str | None,
    batch_size: int,
    num_workers: int,
    device: str | torch.device,
    n_boot: int,
    seed: int,
) -> dict[str, Any]:
    from medssl.eval.zero_shot import embed_pairs, retrieval_evaluation

    if len(items) < 2:
        raise BundlePretrainingError(f"retrieval needs at least 2 image-report pairs, the split has {len(items)}")
    spec = create_method(method, **dict(options))
    was_training = network.training
    try:
        images, texts, _ = embed_pairs(
            network.eval(), items, spec.tokenizer_path, spec.preprocessing(), batch_size, num_workers, device
        )
        return retrieval_evaluation(network, images, texts, ks, None, mode, n_boot, seed, device)
    finally:
        network.train(was_training)


class RetrievalValidation:
    """Image <-> report retrieval on validation pairs every ``interval`` epochs, into ``engine.state.metrics``.

    Args:
        items: validation items (``image`` and ``report``).
        method: the method (its preprocessing and tokenizer prepare the pairs).
        options: the method's options.
        ks: Recall@K cut-offs (those above the number of pairs are skipped).
        interval: epochs between evaluations.
        prefix: metric name prefix (``val`` gives ``val_i2t_recall@1`` ...).
        batch_size: pairs per forward pass.
        num_workers: loader workers.
        mode: the model's similarity mode (None: its default).
    """

    def __init__(
        self,
        items: Sequence[Mapping[str, Any]],
        method: str,
        options: Mapping[str, Any],
        ks: Sequence[int] = (1, 5, 10),
        interval: int = 1,
        prefix: str = "val",
        batch_size: int = 32,
        num_workers: int = 0,
        mode: str | None = None,
    ) -> None:
        self.items = list(items)
        self.method, self.options = method, dict(options)
        self.ks, self.interval, self.prefix = [int(k) for k in ks], max(1, int(interval)), prefix
        self.batch_size, self.num_workers, self.mode = int(batch_size), int(num_workers), mode
        self.network: nn.Module | None = None
        self.device: torch.device | str = "cpu"

    def attach(self, engine: Any) -> None:
        """Run after every ``interval``-th epoch of ``engine`` (whose ``network`` is the model being trained)."""
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self)

    def __call__(self, engine: Any) -> None:
        """Evaluate the engine's network and store the metrics (rank 0 computes; nothing on the other ranks)."""
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        if rank != 0 or len(self.items) < 2:
            return
        network = engine.network
        device = next(network.parameters()).device
        estimates = _retrieval(
            network,
            self.items,
            self.method,
            self.options,
            self.ks,
            self.mode,
            self.batch_size,
            self.num_workers,
            device,
            1,  # the values only: one bootstrap resample (the minimum) keeps the check cheap
            0,
        )
        for name, estimate in estimates.items():
            engine.state.metrics[f"{self.prefix}_{name}"] = float(estimate.value)
        logger.info(
            "epoch %d: %s",
            engine.state.epoch,
            ", ".join(f"{self.prefix}_{k}={v.value:.3f}" for k, v in estimates.items() if "recall" in k),
        )


class BundlePretraining:
    """``train#trainer`` of the pretraining bundles: medssl's pretraining engine with MONAI handlers attached.

    Args:
        ckpt_dir: where ``model.pt`` and ``encoders/`` go (the bundle's ``models/``).
        handlers: ignite/MONAI handlers (anything with ``attach(engine)``; None entries are skipped) attached to the
            engine before it runs; their ``output_transform`` sees the step's dict (``{"loss", "lr", ...}``).
        settings: the fields of :class:`medssl.engines.PretrainConfig` (``method``, ``data``, ``out``,
            ``options``, ``epochs``, ``batch_size``, ``lr``, ``resume`` ...); ``export`` is done here, into
            ``ckpt_dir``.
    """

    def __init__(self, ckpt_dir: str | os.PathLike, handlers: Sequence[Any] | None = None, **settings: Any) -> None:
        from medssl.engines import PretrainConfig

        settings.pop("export", None)
        self.config = PretrainConfig.from_dict({**settings, "export": False})
        self.ckpt_dir = Path(ckpt_dir)
        self.handlers = [h for h in (handlers or []) if h is not None]
        self.pretraining: Any = None

    @property
    def engine(self) -> Any:
        """The ignite engine (built on first use)."""
        return self.setup().engine

    def setup(self) -> Any:
        """Build the engine and attach the handlers (once).

        Returns:
            The :class:`medssl.engines.Pretraining`.
        """
        from medssl.engines import Pretraining

        if self.pretraining is None:
            self.pretraining = Pretraining(self.config).setup()
            for handler in self.handlers:
                if hasattr(handler, "output_transform"):
                    handler.output_transform = _scalar_output(handler.output_transform)
                handler.attach(self.pretraining.engine)
        return self.pretraining

    def run(self) -> dict[str, Any]:
        """Train (or resume) to the last step, then write ``model.pt`` and the encoders (rank 0).

        Returns:
            The engine's summary plus ``model`` (the checkpoint) and ``encoders`` (the exported files).
        """
        from medssl.engines import atomic_torch_save

        pretraining = self.setup()
        summary = pretraining.run()
        if pretraining.context.is_main and summary["finished"]:
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            model_path = atomic_torch_save({"model": pretraining.model.state_dict()}, self.ckpt_dir / "model.pt")
            encoders = pretraining.method.export(pretraining.model, pretraining.loss, self.ckpt_dir / "encoders")
            summary.update(model=os.fspath(model_path), encoders=encoders)
            logger.info("model and encoders written to %s", self.ckpt_dir)
        return summary


class RetrievalEvaluator:
    """``evaluator`` of ``evaluate.json``: image <-> report retrieval of a trained model on one split.

    Writes ``metrics.csv`` (``{prefix}_i2t_recall@K``, ``..._t2i_...``, mean and median ranks; MONAI's
    ``MetricsSaver`` format) and ``retrieval.csv`` (value, bootstrap CI, n per metric) in ``output_dir``.

    Args:
        network: the model (``network_def``).
        items: the split's items.
        method: the method (preprocessing and tokenizer).
        options: the method's options.
        output_dir: where the files go.
        ckpt_path: weights to load first (None: use ``network`` as it is).
        ks: Recall@K cut-offs.
        mode: the model's similarity mode (GLoRIA: ``global``, ``local`` or ``both``; None: its default).
        prefix: metric name prefix.
        batch_size: pairs per forward pass.
        num_workers: loader workers.
        device: where to compute.
        n_boot: bootstrap resamples of the queries.
        seed: seed of the resampling.
    """

    def __init__(
        self,
        network: nn.Module,
        items: Sequence[Mapping[str, Any]],
        method: str,
        options: Mapping[str, Any],
        output_dir: str | os.PathLike,
        ckpt_path: str | os.PathLike | None = None,
        ks: Sequence[int] = (1, 5, 10),
        mode: str | None = None,
        prefix: str = "test",
        batch_size: int = 32,
        num_workers: int = 0,
        device: str | torch.device = "cpu",
        n_boot: int = 1000,
        seed: int = 0,
    ) -> None:
        self.network, self.items, self.method, self.options = network, list(items), method, dict(options)
        self.output_dir, self.ckpt_path = Path(output_dir), ckpt_path
        self.ks, self.mode, self.prefix = [int(k) for k in ks], mode, prefix
        self.batch_size, self.num_workers, self.device = int(batch_size), int(num_workers), device
        self.n_boot, self.seed = int(n_boot), int(seed)

    def run(self) -> dict[str, float]:
        """Evaluate and write the files.

        Returns:
            ``{metric name: value}`` as written to ``metrics.csv``.
        """
        from medssl.eval.zero_shot import estimates_table

        if self.ckpt_path:
            load_network_weights(self.network, self.ckpt_path)
        self.network.to(self.device)
        estimates = _retrieval(
            self.network,
            self.items,
            self.method,
            self.options,
            self.ks,
            self.mode,
            self.batch_size,
            self.num_workers,
            self.device,
            self.n_boot,
            self.seed,
        )
        metrics = {f"{self.prefix}_{name}": float(e.value) for name, e in estimates.items()}
        write_metrics_csv(metrics, self.output_dir)
        rows = estimates_table(estimates, split=self.prefix, n_pairs=len(self.items))
        with open(self.output_dir / "retrieval.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        logger.info("retrieval on %d pairs: %s", len(self.items), metrics)
        return metrics


class ImageEmbedder:
    """``evaluator`` of ``inference.json``: the global image embedding of every item, one CSV row each.

    Rows are ``case_key, e_0, ..., e_{D-1}`` (the model's ``encode_image(...)["global"]``, the vector its similarity
    uses; ConVIRT compares them by cosine), in item order; an image that cannot be loaded is logged by case key and
    left out.

    Args:
        network: the model (``network_def``).
        items: the items to embed (``image``, ``case_key``).
        method: the method (image preprocessing).
        options: the method's options.
        output_dir: where the CSV goes.
        filename: the CSV name.
        ckpt_path: weights to load first.
        batch_size: images per forward pass.
        num_workers: loader workers.
        device: where to compute.
    """

    def __init__(
        self,
        network: nn.Module,
        items: Sequence[Mapping[str, Any]],
        method: str,
        options: Mapping[str, Any],
        output_dir: str | os.PathLike,
        filename: str = "embeddings.csv",
        ckpt_path: str | os.PathLike | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
        device: str | torch.device = "cpu",
    ) -> None:
        self.network, self.items, self.method, self.options = network, list(items), method, dict(options)
        self.output_dir, self.filename, self.ckpt_path = Path(output_dir), filename, ckpt_path
        self.batch_size, self.num_workers, self.device = int(batch_size), int(num_workers), device

    def run(self) -> Path:
        """Embed and write the CSV.

        Returns:
            The CSV path.
        """
        from monai.data import Dataset
        from monai.transforms import Compose, SelectItemsd
        from torch.utils.data import DataLoader

        from medssl.engines.data import SeededDataset, collate_dropping_failures
        from medssl.engines.methods import image_load_transforms
        from medssl.eval.zero_shot import embed_images

        if not self.items:
            raise BundlePretrainingError("no item to embed")
        if self.ckpt_path:
            load_network_weights(self.network, self.ckpt_path)
        p = create_method(self.method, **self.options).preprocessing()
        key = p["image_key"]
        steps = image_load_transforms(key, p["load_size"], p["fit"], p["in_channels"], final_size=p["image_size"])
        indexed = [{key: item[key], "_index": i} for i, item in enumerate(self.items)]
        loader = DataLoader(
            SeededDataset(Dataset(indexed), Compose([*steps, SelectItemsd([key, "_index"])])),
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            collate_fn=collate_dropping_failures,
        )
        batches = [b for b in loader if b is not None]
        embeddings = embed_images(self.network, batches, self.device, key)["global"].numpy()
        index = np.concatenate([np.asarray(b["_index"]).reshape(-1) for b in batches]).astype(int)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        path = self.output_dir / self.filename
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            for row, i in zip(embeddings, index):
                writer.writerow([str(self.items[i].get("case_key", i)), *(f"{v:.6g}" for v in row)])
        logger.info("%d image embeddings (%d-d) written to %s", len(index), embeddings.shape[1], path)
        return path
