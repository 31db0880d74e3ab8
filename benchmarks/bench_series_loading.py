"""Series loading: medssl's DICOM series reader vs SimpleITK's ImageSeriesReader vs MONAI's LoadImage(PydicomReader).

Each method turns one series folder into an array, from files on disk (page cache warm):

- ``medssl``: ``medssl.data.dicom.load_series(folder)`` -> ``(x, y, z)`` MetaTensor with affine (what users call);
- ``simpleitk``: ``ImageSeriesReader`` on ``GetGDCMSeriesFileNames(folder)`` then ``GetArrayFromImage`` (``(z, y, x)``
  NumPy array: no transpose to MONAI's layout, no MetaTensor, so the baseline is favoured);
- ``simpleitk+layout``: the same, then the contiguous ``(x, y, z)`` copy MONAI needs (what a MONAI user of SimpleITK
  pays to get the array medssl returns);
- ``monai``: ``LoadImage(image_only=True)(folder, reader=PydicomReader())`` (orders by InstanceNumber: the baseline a
  MONAI user gets, not a correct reader).

Series: a synthetic 256x256x60 MR series (int16 with rescale, shuffled file names, renumbered instances), the same
RLE-compressed (decoded by pydicom's RLE plugin and by GDCM), and pydicom's real CT series (``dicomdirtests`` CT5N,
16x16x5). Methods run round-robin, ``--repeats`` times after a warm-up, and the median is reported with the ratio
medssl / baseline measured in the same run (below 1: medssl is faster). ``--workers`` sets medssl's reading threads.

    python benchmarks/bench_series_loading.py --repeats 15 --shapes 512x512x40,128x128x200
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np


def make_series(folder: Path, shape: tuple[int, int, int], seed: int = 0, rle: bool = False) -> Path:
    from pydicom import dcmread
    from pydicom.uid import RLELossless

    from medssl.data.synth.dicom_writer import new_uid, write_series

    rng = np.random.default_rng(seed)
    tags = {
        "PatientID": "BENCH",
        "StudyInstanceUID": new_uid(rng),
        "SeriesInstanceUID": new_uid(rng),
        "FrameOfReferenceUID": new_uid(rng),
        "SeriesDescription": "t2_tse_tra",
    }
    volume = rng.integers(0, 3000, size=shape).astype(float) - 1024
    names = [folder / f"{int(v):012x}" for v in rng.integers(0, 2**40, size=shape[2])]
    files = write_series(
        volume,
        names,
        spacing=(0.9, 0.9, 2.5),
        row_cosine=(1.0, 0.0, 0.0),
        column_cosine=(0.0, 0.9848, -0.1736),  # 10 degrees oblique
        origin=(-115.0, -100.0, 40.0),
        tags=tags,
        rescale=(1.0, -1024.0),
        instance_numbers=list(rng.permutation(shape[2]) + 1),
        rng=rng,
    )
    if rle:
        for path in files:
            ds = dcmread(path)
            ds.compress(RLELossless)
            ds.save_as(path)
    return folder


def methods(workers: int | None = None) -> dict[str, Callable[[Path], object]]:
    import SimpleITK as sitk
    from monai.data import PydicomReader
    from monai.transforms import LoadImage

    from medssl.data.dicom import load_series

    def simpleitk(folder: Path):
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
        return sitk.GetArrayFromImage(reader.Execute())

    def simpleitk_layout(folder: Path):
        return np.ascontiguousarray(simpleitk(folder).transpose(2, 1, 0))

    monai_loader = LoadImage(image_only=True)

    def monai(folder: Path):
        return monai_loader(str(folder), reader=PydicomReader())

    return {
        "medssl": lambda folder: load_series(folder, workers=workers),
        "simpleitk": simpleitk,
        "simpleitk+layout": simpleitk_layout,
        "monai": monai,
    }


def time_series(folder: Path, repeats: int, workers: int | None = None) -> dict[str, float]:
    runners = methods(workers)
    medssl_array = np.asarray(runners["medssl"](folder))
    sitk_array = runners["simpleitk"](folder).transpose(2, 1, 0)
    if not np.allclose(medssl_array, sitk_array, atol=1e-3):  # the comparison only means something if both agree
        raise SystemExit(f"{folder}: medssl and SimpleITK disagree")
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            started = time.perf_counter()
            run(folder)
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256, help="rows and columns of the synthetic series")
    parser.add_argument("--slices", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--workers", type=int, default=None, help="medssl reading threads (default: up to 4)")
    parser.add_argument(
        "--shapes", default="", help="more uncompressed synthetic series, e.g. 512x512x40,128x128x200 (x, y, slices)"
    )
    parser.add_argument("--quick", action="store_true", help="5 repeats")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats = 5
    warnings.simplefilter("ignore")  # MONAI's optional-decoder warnings, GDCM's notes

    import SimpleITK as sitk
    from pydicom.data import get_testdata_file

    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        shape = (args.size, args.size, args.slices)
        series = {
            f"synthetic {args.size}x{args.size}x{args.slices}": make_series(Path(tmp) / "native", shape),
            f"synthetic {args.size}x{args.size}x{args.slices} RLE": make_series(Path(tmp) / "rle", shape, rle=True),
            **{
                f"synthetic {text}": make_series(Path(tmp) / text, tuple(int(v) for v in text.split("x")))
                for text in filter(None, args.shapes.split(","))
            },
            "pydicom CT5N 16x16x5 (real)": Path(get_testdata_file("MR_small.dcm")).parent
            / "dicomdirtests"
            / "98892001"
            / "CT5N",
        }
        header = ("series", "medssl", "SimpleITK", "+layout", "MONAI", "/SimpleITK", "/+layout", "/MONAI")
        print(f"{header[0]:34s}" + "".join(f"{h:>10s}" for h in header[1:]))
        for name, folder in series.items():
            t = time_series(folder, args.repeats, args.workers)
            results[name] = t
            times = [t[k] * 1e3 for k in ("medssl", "simpleitk", "simpleitk+layout", "monai")]
            ratios = [t["medssl"] / t[k] for k in ("simpleitk", "simpleitk+layout", "monai")]
            print(f"{name:34s}" + "".join(f"{v:8.1f}ms" for v in times) + "".join(f"{r:10.2f}" for r in ratios))
    print(f"median of {args.repeats} runs each, methods interleaved; ratios below 1 mean medssl is faster")
    return results


if __name__ == "__main__":
    main()
