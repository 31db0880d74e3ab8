"""A harness that checks and runs any bundle under ``bundles/`` on tiny synthetic data.

Each bundle describes its smoke test in ``configs/smoke_test.json`` (not a MONAI config: the harness reads it)::

    {
      "data": {"generator": "brats", "n": 4, "seed": 0, "options": {"size": 24}},
      "overrides": {"epochs": 1, "num_workers": 0, "image_size": [16, 16, 16], ...},
      "workflows": ["train", "evaluate", "inference"],
      "expect": {
        "train": {"files": ["models/model.pt", "splits.json"]},
        "evaluate": {"files": ["metrics.csv"], "metrics": ["test_auc"]},
        "inference": {"files": ["predictions.csv"], "predictions_csv": {"file": "predictions.csv", "split": "test"}}
      },
      "verify_net_in_out": true,
      "ckpt_export": true,
      "distributed": true
    }

``data`` names a generator module of :mod:`medssl.data.synth` (``generate(out, n, seed, **options)`` writes the public
layout the bundle reads), ``post`` lists functions ``f(dataset_dir, **options)`` run on it afterwards (``{"function":
"medssl.bundle.cxr.build_dataset_text_model"}``: a tiny text model trained on the reports); ``overrides`` shrink
the bundle (sizes, epochs, workers) and apply to every workflow, with
``workflow_overrides`` per workflow on top. Paths are never in the spec: :func:`workflow_overrides` adds
``bundle_root``, ``dataset_dir``, ``output_dir`` and ``ckpt_dir`` (``OUTPUT/models``). ``tests/test_bundles.py``
parametrises its tests over :func:`discover_bundles`, so a new bundle with a spec is tested without touching the
tests.

The same functions serve a user checking a bundle by hand::

    from medssl.bundle import harness
    harness.validate_metadata("bundles/mr_early_fusion_classification", "tests/data/monai_meta_schema_20240725.json")
    print(harness.unresolved_targets("bundles/mr_early_fusion_classification"))
"""

from __future__ import annotations

import csv
import hashlib
import importlib
import json
import os
import pydoc
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from medssl.exceptions import MedsslError

__all__ = [
    "SPEC_FILE",
    "WORKFLOW_FILES",
    "BundleCheckError",
    "discover_bundles",
    "load_spec",
    "config_files",
    "read_config",
    "validate_metadata",
    "iter_targets",
    "unresolved_targets",
    "expression_problems",
    "make_data",
    "workflow_overrides",
    "run_workflow",
    "command_line",
    "check_outputs",
    "read_metrics",
    "read_splits",
    "read_predictions",
    "build_network",
    "load_checkpoint",
    "checkpoint_changed",
    "check_network_io",
    "export_torchscript",
]

SPEC_FILE = "configs/smoke_test.json"
WORKFLOW_FILES = {
    "train": "train.json",
    "evaluate": "evaluate.json",
    "inference": "inference.json",
    "multi_gpu_train": ["train.json", "multi_gpu_train.json"],
}
_REQUIRED_FILES = ("configs/metadata.json", "configs/logging.conf", "docs/README.md", "LICENSE")
_MEDSSL_NAME = re.compile(r"\bmedssl(?:\.[A-Za-z_]\w*)+")


class BundleCheckError(MedsslError):
    """A bundle does not pass a check of the harness (the message names the bundle and what failed)."""


# ------------------------------------------------------------------------------------------------------ discovery
def discover_bundles(root: str | os.PathLike = "bundles") -> list[Path]:
    """The bundle folders under ``root``: every sub-folder with a ``configs/metadata.json``.

    Args:
        root: the bundles folder.

    Returns:
        Folders sorted by name.
    """
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / "configs" / "metadata.json").is_file())


def load_spec(bundle: str | os.PathLike) -> dict[str, Any]:
    """Read a bundle's smoke-test spec (``configs/smoke_test.json``).

    Args:
        bundle: the bundle folder.

    Returns:
        The spec with defaults: ``data`` None, ``overrides`` {}, ``workflow_overrides`` {}, ``workflows`` [],
        ``expect`` {}, ``verify_net_in_out``/``ckpt_export``/``distributed`` False.

    Raises:
        BundleCheckError: unreadable spec, or a workflow without its config file.
    """
    bundle = Path(bundle)
    path = bundle / SPEC_FILE
    spec: dict[str, Any] = {}
    if path.is_file():
        try:
            spec = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise BundleCheckError(f"invalid JSON: {error}", path) from error
    spec.setdefault("data", None)
    spec.setdefault("overrides", {})
    spec.setdefault("workflow_overrides", {})
    spec.setdefault("workflows", [])
    spec.setdefault("expect", {})
    for key in ("verify_net_in_out", "ckpt_export", "distributed"):
        spec.setdefault(key, False)
    for workflow in spec["workflows"]:
        for name in config_files(bundle, workflow):
            if not Path(name).is_file():
                raise BundleCheckError(f"workflow {workflow!r} needs {name}", bundle)
    return spec


def config_files(bundle: str | os.PathLike, workflow: str) -> list[str]:
    """The config file(s) of a workflow, as absolute paths (a list: ``multi_gpu_train`` merges two).

    Args:
        bundle: the bundle folder.
        workflow: ``train``, ``evaluate``, ``inference``, ``multi_gpu_train`` or a config file name.

    Returns:
        The paths.
    """
    names = WORKFLOW_FILES.get(workflow, workflow if workflow.endswith((".json", ".yaml")) else f"{workflow}.json")
    names = [names] if isinstance(names, str) else list(names)
    return [str((Path(bundle) / "configs" / n).resolve()) for n in names]


def read_config(bundle: str | os.PathLike, workflow: str) -> dict[str, Any]:
    """A workflow's config as one dict (files merged the way MONAI merges them).

    Args:
        bundle: the bundle folder.
        workflow: see :func:`config_files`.

    Returns:
        The merged config.
    """
    from monai.bundle import ConfigParser

    return ConfigParser.load_config_files(config_files(bundle, workflow))


# ------------------------------------------------------------------------------------------------- static checks
def validate_metadata(bundle: str | os.PathLike, schema: str | os.PathLike) -> dict[str, Any]:
    """Validate ``configs/metadata.json`` against a local copy of MONAI's metadata schema, and check names.

    ``monai.bundle.verify_metadata`` does the schema check with ``filepath`` pointing at the local copy (it only
    downloads when that file is missing). On top: the bundle has the model-zoo files (``logging.conf``,
    ``docs/README.md``, ``LICENSE``, ``models/``), every input and output of ``network_data_format`` has a
    ``channel_def`` with one name per channel.

    Args:
        bundle: the bundle folder.
        schema: the schema file.

    Returns:
        The metadata.

    Raises:
        BundleCheckError: a missing file, a schema violation or an unnamed channel.
    """
    from monai.bundle import verify_metadata

    bundle = Path(bundle)
    schema = Path(schema)
    if not schema.is_file():
        raise BundleCheckError("no such schema file (it would be downloaded: refused)", schema)
    absent = [name for name in _REQUIRED_FILES if not (bundle / name).is_file()]
    if not (bundle / "models").is_dir():
        absent.append("models/")
    if absent:
        raise BundleCheckError(f"missing {absent}", bundle)
    meta_file = bundle / "configs" / "metadata.json"
    try:
        verify_metadata(meta_file=str(meta_file), filepath=str(schema), create_dir=False)
    except ValueError as error:
        raise BundleCheckError(f"metadata does not validate: {error}", meta_file) from error
    metadata = json.loads(meta_file.read_text())
    for kind in ("inputs", "outputs"):
        entries = metadata["network_data_format"][kind]
        if not entries:
            raise BundleCheckError(f"network_data_format has no {kind}", meta_file)
        for name, entry in entries.items():
            channels = entry.get("channel_def") if isinstance(entry, Mapping) else None
            if not isinstance(channels, Mapping) or len(channels) != entry.get("num_channels"):
                raise BundleCheckError(
                    f"{kind} {name!r}: channel_def must name each of its {entry.get('num_channels')} channels",
                    meta_file,
                )
    return metadata


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield from _walk(value, f"{path}#{key}" if path else str(key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, f"{path}#{index}")
    else:
        yield path, node


def iter_targets(config: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """The ``_target_`` names and the ``medssl.*`` names used in expressions of a config.

    Args:
        config: a parsed config dict.

    Yields:
        ``(config id, name)`` pairs.
    """
    for path, value in _walk(config):
        if not isinstance(value, str):
            continue
        if path.endswith("_target_"):
            yield path, value
        elif value.startswith("$"):
            for name in _MEDSSL_NAME.findall(value):
                yield path, name


def _resolves(name: str) -> bool:
    from monai.bundle import ComponentLocator

    if "." not in name:
        return ComponentLocator().get_component_module_name(name) is not None
    if pydoc.locate(name) is not None:
        return True
    module, _, attribute = name.rpartition(".")
    try:
        return hasattr(importlib.import_module(module), attribute)
    except ImportError:
        return False


def unresolved_targets(bundle: str | os.PathLike) -> list[str]:
    """Every ``_target_`` (and ``medssl.*`` name in an expression) of every config that cannot be located.

    Args:
        bundle: the bundle folder.

    Returns:
        ``"file: id -> name"`` for each one that does not resolve (empty when all do).
    """
    from monai.bundle import ConfigParser

    problems = []
    for path in sorted((Path(bundle) / "configs").glob("*.json")):
        if path.name in ("metadata.json", Path(SPEC_FILE).name):
            continue
        for where, name in iter_targets(ConfigParser.load_config_file(str(path))):
            if not _resolves(name):
                problems.append(f"{path.name}: {where} -> {name}")
    return problems


def expression_problems(bundle: str | os.PathLike) -> list[str]:
    """Every ``$`` expression of every config that is not valid Python once MONAI has substituted its references.

    MONAI turns ``@id`` into ``__local_refs['id']`` before ``eval``; inside a single-quoted f-string (``f'cuda:{@x}'``)
    that is a syntax error on Python < 3.12, found here without running anything.

    Args:
        bundle: the bundle folder.

    Returns:
        ``"file: id -> problem"`` for each bad expression (empty when all parse).
    """
    import ast

    from monai.bundle import ConfigParser
    from monai.bundle.reference_resolver import ReferenceResolver

    problems = []
    for path in sorted((Path(bundle) / "configs").glob("*.json")):
        if path.name in ("metadata.json", Path(SPEC_FILE).name):
            continue
        for where, value in _walk(ConfigParser.load_config_file(str(path))):
            if not isinstance(value, str) or not value.startswith("$"):
                continue
            refs = dict.fromkeys(ReferenceResolver.match_refs_pattern(value))
            code = ReferenceResolver.update_refs_pattern(value, refs)[1:]
            try:
                ast.parse(code)
            except SyntaxError as error:
                problems.append(f"{path.name}: {where} -> {error.msg}: {value}")
    return problems


# ----------------------------------------------------------------------------------------------------- running
def make_data(spec: Mapping[str, Any], root: str | os.PathLike) -> Path:
    """Write the spec's synthetic dataset under ``root`` (once per recipe: the folder is named by its hash).

    Args:
        spec: the bundle's spec (its ``data`` recipe).
        root: where datasets go.

    Returns:
        The dataset folder.

    Raises:
        BundleCheckError: no ``data`` recipe or an unknown generator.
    """
    recipe = spec.get("data")
    if not recipe:
        raise BundleCheckError("the smoke-test spec has no 'data' recipe")
    digest = hashlib.sha1(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    out = Path(root) / f"{recipe['generator']}-{digest}"
    done = out / ".complete"
    if done.is_file():
        return out
    try:
        module = importlib.import_module(f"medssl.data.synth.{recipe['generator']}")
    except ImportError as error:
        raise BundleCheckError(f"unknown synthetic data generator {recipe['generator']!r}") from error
    module.generate(out, int(recipe.get("n", 4)), int(recipe.get("seed", 0)), **recipe.get("options", {}))
    for step in recipe.get("post", []):  # e.g. a tiny text model trained on the dataset's reports
        function = pydoc.locate(step["function"])
        if not callable(function):
            raise BundleCheckError(f"unknown post-processing function {step['function']!r}")
        function(out, **step.get("options", {}))
    done.write_text(json.dumps(recipe) + "\n")
    return out


def workflow_overrides(
    bundle: str | os.PathLike,
    spec: Mapping[str, Any],
    workflow: str,
    dataset_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    **extra: Any,
) -> dict[str, Any]:
    """The overrides of one smoke-test run: paths, the spec's tiny settings, the workflow's own, then ``extra``.

    Args:
        bundle: the bundle folder.
        spec: its spec.
        workflow: the workflow name.
        dataset_dir: the synthetic dataset.
        output_dir: where outputs go (checkpoints under ``OUTPUT/models``).
        extra: further overrides.

    Returns:
        ``{config id: value}``.
    """
    output_dir = Path(output_dir).resolve()
    overrides: dict[str, Any] = {
        "bundle_root": str(Path(bundle).resolve()),
        "dataset_dir": str(Path(dataset_dir).resolve()),
        "output_dir": str(output_dir),
        "ckpt_dir": str(output_dir / "models"),
    }
    overrides.update(spec.get("overrides", {}))
    overrides.update(spec.get("workflow_overrides", {}).get(workflow, {}))
    overrides.update(extra)
    return overrides


def run_workflow(
    bundle: str | os.PathLike,
    workflow: str,
    overrides: Mapping[str, Any],
    tracking: str | None = None,
) -> None:
    """Run a workflow in this process through ``monai.bundle.run`` (what the command line calls).

    The bundle's ``logging.conf`` is not applied (``logging.config.fileConfig`` would reconfigure, and by default
    disable, the loggers of the calling process); the command line applies it.

    Args:
        bundle: the bundle folder.
        workflow: ``train``, ``evaluate``, ``inference`` ...
        overrides: from :func:`workflow_overrides`.
        tracking: ``"mlflow"`` to add MONAI's tracking handlers.
    """
    from monai.bundle import run

    files = config_files(bundle, workflow)
    run(
        config_file=files if len(files) > 1 else files[0],
        meta_file=str(Path(bundle, "configs", "metadata.json").resolve()),
        logging_file=False,
        tracking=tracking,
        **dict(overrides),
    )


def command_line(
    bundle: str | os.PathLike,
    workflow: str,
    overrides: Mapping[str, Any],
    python: str | None = None,
    torchrun: int | None = None,
    tracking: str | None = None,
) -> list[str]:
    """The standard command line of a workflow: ``python -m monai.bundle run --config_file ... --key value ...``.

    Values are written as Python literals (``repr``), which is how ``python -m monai.bundle`` (Python Fire) reads
    them back.

    Args:
        bundle: the bundle folder.
        workflow: see :func:`config_files`.
        overrides: ``{config id: value}`` (paths included).
        python: the interpreter (default: this one).
        torchrun: number of processes to start with ``torchrun --nproc_per_node`` (None: plain python).
        tracking: ``"mlflow"`` adds ``--tracking mlflow``.

    Returns:
        The argument list, for ``subprocess.run`` with the bundle folder as working directory.
    """
    python = python or sys.executable
    files = [os.path.relpath(f, Path(bundle).resolve()) for f in config_files(bundle, workflow)]
    config = files[0] if len(files) == 1 else repr(files)
    if torchrun:
        head = [python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={int(torchrun)}"]
    else:
        head = [python]
    args = head + ["-m", "monai.bundle", "run", "--config_file", config]
    if tracking:
        args += ["--tracking", tracking]
    for key, value in overrides.items():
        args += [f"--{key}", value if isinstance(value, str) else repr(value)]
    return args


# ------------------------------------------------------------------------------------------------------ outputs
def check_outputs(output_dir: str | os.PathLike, expect: Mapping[str, Any]) -> list[Path]:
    """Check that the files a workflow should write exist (glob patterns relative to ``output_dir``).

    Args:
        output_dir: the run's output folder.
        expect: the spec's ``expect`` entry of the workflow (``files``: patterns).

    Returns:
        The files found.

    Raises:
        BundleCheckError: a pattern matches nothing.
    """
    output_dir = Path(output_dir)
    found = []
    for pattern in expect.get("files", []):
        matches = sorted(output_dir.glob(pattern))
        if not matches:
            present = sorted(str(p.relative_to(output_dir)) for p in output_dir.rglob("*") if p.is_file())
            raise BundleCheckError(f"no file matches {pattern!r} (found {present})", output_dir)
        found.extend(matches)
    return found


def read_metrics(output_dir: str | os.PathLike, filename: str = "metrics.csv") -> dict[str, float]:
    """Read the ``metrics.csv`` of MONAI's ``MetricsSaver`` (``name,value`` rows, or tab-separated).

    Args:
        output_dir: the run's output folder.
        filename: the file name.

    Returns:
        ``{metric: value}``.
    """
    metrics = {}
    for line in (Path(output_dir) / filename).read_text().splitlines():
        parts = re.split(r"[,\t]", line.strip())
        if len(parts) == 2:
            metrics[parts[0]] = float(parts[1])
    return metrics


def read_splits(output_dir: str | os.PathLike) -> dict[str, list[str]]:
    """The case keys of each split that a run saved (``OUTPUT/splits.json``).

    Args:
        output_dir: the run's output folder.

    Returns:
        ``{split: [case keys]}``.
    """
    from medssl.data.splits import load_splits

    return load_splits(Path(output_dir) / "splits.json")["splits"]


def read_predictions(path: str | os.PathLike) -> dict[str, list[float]]:
    """Read a ``ClassificationSaver`` CSV: one row per case, the case key then the values.

    Args:
        path: the CSV file.

    Returns:
        ``{case key: [values]}``.
    """
    rows = {}
    with open(path, newline="") as handle:
        for row in csv.reader(handle):
            if row:
                rows[row[0]] = [float(v) for v in row[1:]]
    return rows


# ------------------------------------------------------------------------------------------------------ networks
def _parser(bundle: str | os.PathLike, workflow: str, overrides: Mapping[str, Any] | None = None) -> Any:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    files = config_files(bundle, workflow)
    parser.read_config(files if len(files) > 1 else files[0])
    parser.read_meta(str(Path(bundle, "configs", "metadata.json").resolve()))
    for key, value in (overrides or {}).items():
        parser[key] = value
    return parser


def build_network(
    bundle: str | os.PathLike, overrides: Mapping[str, Any] | None = None, workflow: str = "train", seed: int = 0
) -> Any:
    """Build a bundle's ``network_def`` (on CPU) after seeding as the workflows do.

    Args:
        bundle: the bundle folder.
        overrides: config overrides (the smoke test's tiny settings).
        workflow: whose config to read.
        seed: the seed given to ``monai.utils.set_determinism`` before building.

    Returns:
        The network in eval mode.
    """
    from monai.utils import set_determinism

    parser = _parser(bundle, workflow, overrides)
    set_determinism(seed=int(parser.get_parsed_content("seed")) if "seed" in parser else seed)
    network = parser.get_parsed_content("network_def", instantiate=True)
    set_determinism(seed=None)
    return network.eval()


def load_checkpoint(network: Any, path: str | os.PathLike, key: str = "model") -> Any:
    """Load a ``CheckpointSaver`` checkpoint into a network (``torch.load(weights_only=True)``).

    Args:
        network: the network.
        path: the checkpoint.
        key: the entry of the saved dict holding the weights.

    Returns:
        The network.
    """
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    network.load_state_dict(state[key] if key in state else state)
    return network


def checkpoint_changed(
    bundle: str | os.PathLike, overrides: Mapping[str, Any], path: str | os.PathLike, workflow: str = "train"
) -> bool:
    """Whether a checkpoint's parameters differ from the seeded initial ones (i.e. training changed them).

    The workflows seed with ``set_determinism(seed=@seed)`` in ``initialize`` and build the network before anything
    else draws random numbers (``network`` comes first among the trainer's arguments), so the initial weights are
    those of :func:`build_network` with the same overrides.

    Args:
        bundle: the bundle folder.
        overrides: the overrides of the training run.
        path: the checkpoint.
        workflow: the workflow that wrote it (whose config the overrides apply to).

    Returns:
        True when at least one parameter differs.
    """
    import torch

    network = build_network(bundle, overrides, workflow)
    initial = network.state_dict()
    trained = torch.load(path, map_location="cpu", weights_only=True)
    trained = trained.get("model", trained)
    if set(initial) != set(trained):
        raise BundleCheckError(f"checkpoint keys differ from network_def's: {sorted(set(initial) ^ set(trained))}")
    # Parameters only: normalisation buffers (running statistics) change in any forward pass in training mode.
    return any(not torch.equal(initial[name], trained[name]) for name, _ in network.named_parameters())


def _shape(spatial: Sequence[Any], n: int = 1) -> list[int]:
    """A concrete spatial shape from metadata entries like ``64``, ``"8*n"``, ``"*"``."""
    shape = []
    for entry in spatial:
        if isinstance(entry, int):
            shape.append(entry)
        elif entry == "*":
            shape.append(n)
        else:
            text = str(entry).replace("n", str(n)).replace("**", "^")
            value = 1
            for factor in text.split("*"):
                base, _, power = factor.partition("^")
                value *= int(base) ** int(power or 1)
            shape.append(value)
    return shape


def check_network_io(
    bundle: str | os.PathLike,
    overrides: Mapping[str, Any] | None = None,
    spatial_scale: float = 1.0,
    batch_size: int = 2,
) -> dict[str, Any]:
    """Check a multi-input network against ``network_data_format``: a forward pass on inputs built from it.

    Every tensor input except ``presence`` is random data of its declared channels and spatial shape (scaled by
    ``spatial_scale`` - the networks are size-agnostic - to keep the check cheap); ``presence`` drops one input of
    the first sample. Each declared output must be returned with ``num_channels`` in dimension 1, its declared
    trailing shape, and its dtype. The single-input networks use ``monai.bundle.verify_net_in_out`` instead.

    Args:
        bundle: the bundle folder.
        overrides: config overrides.
        spatial_scale: factor on the declared spatial shapes.
        batch_size: samples in the batch.

    Returns:
        The outputs.

    Raises:
        BundleCheckError: a declared output is missing or does not match.
    """
    import torch

    metadata = json.loads(Path(bundle, "configs", "metadata.json").read_text())["network_data_format"]
    network = build_network(bundle, overrides)
    inputs = {}
    for name, entry in metadata["inputs"].items():
        if name == "presence":
            continue
        shape = [max(8, int(round(s * spatial_scale))) for s in _shape(entry["spatial_shape"])]
        inputs[name] = torch.rand(batch_size, entry["num_channels"], *shape)
    kwargs = {}
    if "presence" in metadata["inputs"]:
        presence = torch.ones(batch_size, metadata["inputs"]["presence"]["num_channels"])
        presence[0, -1] = 0
        kwargs["presence"] = presence
    with torch.no_grad():
        outputs = network(inputs, **kwargs)
    if not isinstance(outputs, Mapping):
        outputs = {"pred": outputs}
    for name, entry in metadata["outputs"].items():
        if name not in outputs:
            raise BundleCheckError(f"the network returns no {name!r} (returns {sorted(outputs)})", bundle)
        value = outputs[name]
        expected = [batch_size, entry["num_channels"], *_shape(entry["spatial_shape"])]
        if list(value.shape) != expected:
            raise BundleCheckError(f"output {name!r} has shape {list(value.shape)}, metadata says {expected}", bundle)
        if str(value.dtype).replace("torch.", "") != entry["dtype"]:
            raise BundleCheckError(f"output {name!r} is {value.dtype}, metadata says {entry['dtype']}", bundle)
    return dict(outputs)


def export_torchscript(
    bundle: str | os.PathLike,
    ckpt_file: str | os.PathLike,
    filepath: str | os.PathLike,
    overrides: Mapping[str, Any] | None = None,
    use_trace: bool = False,
) -> Path:
    """Export a trained checkpoint to TorchScript with ``monai.bundle.ckpt_export`` (metadata and config inside).

    Args:
        bundle: the bundle folder.
        ckpt_file: the ``CheckpointSaver`` checkpoint (weights under ``model``).
        filepath: the ``.ts`` file to write.
        overrides: the overrides the checkpoint was trained with (network size).
        use_trace: trace instead of script (needs ``input_shape`` from the metadata).

    Returns:
        The written file.
    """
    from monai.bundle import ckpt_export

    ckpt_export(
        net_id="network_def",
        filepath=str(filepath),
        ckpt_file=str(ckpt_file),
        meta_file=str(Path(bundle, "configs", "metadata.json").resolve()),
        config_file=config_files(bundle, "inference")[0],
        key_in_ckpt="model",
        use_trace=use_trace,
        **dict(overrides or {}),
    )
    return Path(filepath)
