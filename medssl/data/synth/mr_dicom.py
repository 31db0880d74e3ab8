r"""Synthetic PACS export: multi-sequence brain MR studies as real exports look, with a ground truth to test against.

``generate(out, n, seed)`` writes ``out/export/`` (what a user would point ``medssl index`` at) and
``out/ground_truth.json`` (what the export should index into). Each patient has one brain MR study, some a second one
(a later time point); each study samples one :class:`~medssl.data.synth.shapes.HeadPhantom` with every sequence of its
vendor's protocol:

=========  ==========================  =============================  ===========================
sequence   Siemens                     GE                             Philips
=========  ==========================  =============================  ===========================
OTHER      ``localizer`` (3 planes)    ``3-Plane Loc``                ``SURVEY``
T1         ``t1_mprage_sag_p2`` (3D)   ``SAG T1 BRAVO`` (3D)          ``sT1W_3D_TFE`` (3D, sag)
T2         ``t2_tse_tra_p2``           ``AX T2 FSE``                  ``T2W_TSE``
FLAIR      ``t2_tirm_tra_dark-fluid``  ``COR T2 FLAIR`` (coronal)     ``T2W_FLAIR`` (oblique)
           (oblique)
DWI        ``ep2d_diff_3scan_trace_p2``  ``AX DWI 1000b``             ``DWI_SENSE``
ADC        ``..._ADC`` (DERIVED)       ``Apparent Diffusion           ``dADC`` (DERIVED)
                                       Coefficient (mm2/s)``
T1C        ``t1_mprage_tra_p2_post``   ``AX T1 POST GAD`` (2D)        ``T1W_3D_TFE +C`` (axial)
=========  ==========================  =============================  ===========================

with the tags real scanners write (ScanningSequence, SequenceVariant, SequenceName, TR/TE/TI, flip angle, field
strength, ImageType with ``DERIVED\PRIMARY\...\ADC`` for ADC maps, ContrastBolusAgent after contrast, rescale
slope for Philips) and identity tags filled with fake PHI (PatientName, PatientID, PatientBirthDate, AccessionNumber,
StudyDate/Time, ReferringPhysicianName) so that tests can check none of it leaks downstream. Every sequence has its
own orientation, field of view, matrix and slice spacing, but the same anatomy at the same patient coordinates:
resampling onto one grid realigns them.

The export is messy on purpose:

- most studies in ``export/patient_NNN/study_N/series_NNN/`` folders, file names shuffled (random hexadecimal names
  with or without ``.dcm``, or ``IM-SSSS-IIII.dcm`` numbered out of slice order), instance numbers ascending or
  descending;
- one study (patient 1's first) as a flat folder ``export/incoming/`` mixing all its series;
- the last patient (when ``n >= 3``) as a DICOMDIR file-set under ``export/CD/`` (``DICOMDIR``, ``PT000000/...``);
- patient 1 (every 4th from 1) has no post-contrast T1 in the first study; patient 2 (every 4th from 2) has its T2
  repeated (two candidate T2 series);
- a 3-plane localizer in every study (one series, three orientations: not a volume);
- broken files: a truncated slice, two non-DICOM files, an empty file, a DICOM SR (no pixel data) and an MR slice in
  an unsupported transfer syntax (JPEG 2000 Part 2 multi-component, which no pydicom plugin decodes).

The ground truth lists every patient and study (with the phantom's position), every series (sequence, number of
slices, rows, columns, spacing, orientation, origin, affine, plane, files relative to ``export/``) and every broken
file with the reason code of :mod:`medssl.data.index`. It holds the fake PHI and raw UIDs: it describes synthetic
data, and is what tests compare keys and paths against; never produce such a file for real data.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from medssl.data.synth.shapes import HeadPhantom, grid_points

__all__ = [
    "LAYOUT",
    "HELP",
    "EXPORT_DIR",
    "GROUND_TRUTH",
    "Protocol",
    "VENDORS",
    "add_arguments",
    "generate",
    "read_ground_truth",
]

LAYOUT = "mr-dicom"
HELP = "a messy PACS-style DICOM export of multi-sequence brain MR studies, with its ground truth"
EXPORT_DIR = "export"
GROUND_TRUTH = "ground_truth.json"
REFERENCE_MATRIX = 64  # the protocols' matrix and slice counts below are for --matrix 64

_AXIAL = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0))
_SAGITTAL = ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0))
_CORONAL = ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0))


@dataclass(frozen=True)
class Protocol:
    """One series of a vendor's brain protocol.

    Attributes:
        sequence: intended sequence (``T1``, ``T1C``, ``T2``, ``FLAIR``, ``DWI``, ``ADC`` or ``OTHER``).
        description: SeriesDescription (and ProtocolName unless ``protocol_name`` is set).
        sequence_name: SequenceName.
        plane: ``axial``, ``sagittal``, ``coronal``, ``oblique`` (axial tilted about left-right) or ``localizer``.
        acquisition: MRAcquisitionType (``2D`` or ``3D``).
        fov: field of view (mm), square.
        matrix: in-plane matrix at ``--matrix 64``.
        slices: number of slices at ``--matrix 64``.
        slice_spacing: slice spacing (mm) at ``--matrix 64``.
        tr: RepetitionTime (ms).
        te: EchoTime (ms).
        ti: InversionTime (ms) or None.
        flip: FlipAngle (degrees).
        scanning_sequence: ScanningSequence values.
        sequence_variant: SequenceVariant values.
        image_type: ImageType values.
        contrast: acquired after contrast injection.
        b_value: DiffusionBValue or None.
        same_geometry_as: sequence whose geometry this derived series shares (the ADC map of a DWI).
        protocol_name: ProtocolName when it differs from the description.
    """

    sequence: str
    description: str
    sequence_name: str
    plane: str
    acquisition: str
    fov: float
    matrix: int
    slices: int
    slice_spacing: float
    tr: float
    te: float
    ti: float | None
    flip: float
    scanning_sequence: tuple[str, ...]
    sequence_variant: tuple[str, ...]
    image_type: tuple[str, ...]
    contrast: bool = False
    b_value: float | None = None
    same_geometry_as: str | None = None
    protocol_name: str | None = None


@dataclass(frozen=True)
class Vendor:
    """A scanner vendor: identity tags and its brain protocol (in acquisition order)."""

    manufacturer: str
    models: dict[float, str]
    software: str
    body_part: str
    study_description: str
    contrast_agent: str
    series_number_step: int
    rescale_slope: float | None
    protocols: tuple[Protocol, ...] = field(default_factory=tuple)


_SIEMENS_ORIGINAL = ("ORIGINAL", "PRIMARY", "M", "ND", "NORM")
_GE_ORIGINAL = ("ORIGINAL", "PRIMARY", "OTHER")
_PHILIPS_ORIGINAL = ("ORIGINAL", "PRIMARY", "M_SE", "M", "SE")

# fmt: off
# One row per series, in acquisition order: sequence, SeriesDescription, SequenceName, plane, MRAcquisitionType,
# FOV (mm), matrix and slices at --matrix 64, slice spacing (mm), TR, TE, TI (ms), flip angle, ScanningSequence,
# SequenceVariant, ImageType, then keyword extras.
VENDORS: dict[str, Vendor] = {
    "siemens": Vendor(
        manufacturer="SIEMENS", models={1.5: "Aera", 3.0: "Skyra"}, software="syngo MR E11", body_part="HEAD",
        study_description="Kopf^Routine", contrast_agent="Gadovist", series_number_step=1, rescale_slope=None,
        protocols=(
            Protocol("OTHER", "localizer", "*fl2d1", "localizer", "2D", 280, 48, 3, 8.0, 8.6, 4.0, None, 20,
                     ("GR",), ("SP", "OSP"), ("ORIGINAL", "PRIMARY", "M", "NORM", "DIS2D")),
            Protocol("T1", "t1_mprage_sag_p2", "*tfl3d1_16ns", "sagittal", "3D", 256, 64, 48, 4.0, 2300, 2.98, 900, 9,
                     ("GR", "IR"), ("SK", "SP", "MP"), _SIEMENS_ORIGINAL),
            Protocol("T2", "t2_tse_tra_p2", "*tse2d1_15", "axial", "2D", 230, 64, 28, 7.0, 5000, 96, None, 150,
                     ("SE",), ("SK", "SP", "OSP"), _SIEMENS_ORIGINAL),
            Protocol("FLAIR", "t2_tirm_tra_dark-fluid", "*tir2d1_16", "oblique", "2D", 230, 56, 28, 7.0, 9000, 81, 2500,
                     150, ("SE", "IR"), ("SK", "SP", "MP", "OSP"), _SIEMENS_ORIGINAL),
            Protocol("DWI", "ep2d_diff_3scan_trace_p2", "*ep_b1000t", "axial", "2D", 230, 48, 28, 7.0, 5200, 89, None,
                     90, ("EP",), ("SK", "SP"), ("DERIVED", "PRIMARY", "DIFFUSION", "TRACEW", "ND", "NORM"),
                     b_value=1000.0),
            Protocol("ADC", "ep2d_diff_3scan_trace_p2_ADC", "*ep_b0_1000", "axial", "2D", 230, 48, 28, 7.0, 5200, 89,
                     None, 90, ("EP",), ("SK", "SP"), ("DERIVED", "PRIMARY", "DIFFUSION", "ADC", "ND", "NORM"),
                     same_geometry_as="DWI", protocol_name="ep2d_diff_3scan_trace_p2"),
            Protocol("T1C", "t1_mprage_tra_p2_post", "*tfl3d1_16ns", "axial", "3D", 240, 64, 44, 4.4, 2300, 2.98, 900,
                     9, ("GR", "IR"), ("SK", "SP", "MP"), _SIEMENS_ORIGINAL, contrast=True),
        ),
    ),
    "ge": Vendor(
        manufacturer="GE MEDICAL SYSTEMS", models={1.5: "SIGNA HDxt", 3.0: "DISCOVERY MR750"}, software="DV26.0_R03",
        body_part="BRAIN", study_description="MR BRAIN W/WO CONTRAST", contrast_agent="DOTAREM",
        series_number_step=1, rescale_slope=None,
        protocols=(
            Protocol("OTHER", "3-Plane Loc", "fgre", "localizer", "2D", 280, 48, 3, 8.0, 5.1, 1.6, None, 30,
                     ("GR",), ("SS",), ("ORIGINAL", "PRIMARY", "LOCALIZER")),
            Protocol("T1", "SAG T1 BRAVO", "efgre3d", "sagittal", "3D", 256, 64, 48, 4.0, 8.2, 3.2, 450, 12,
                     ("GR", "IR"), ("SS", "SK"), _GE_ORIGINAL),
            Protocol("T2", "AX T2 FSE", "fse", "axial", "2D", 230, 64, 28, 7.0, 4800, 102, None, 111,
                     ("SE",), ("SK",), _GE_ORIGINAL),
            Protocol("FLAIR", "COR T2 FLAIR", "fse-ir", "coronal", "2D", 230, 56, 28, 7.0, 9500, 140, 2400, 160,
                     ("SE", "IR"), ("SK", "OSP"), _GE_ORIGINAL),
            Protocol("DWI", "AX DWI 1000b", "epi2", "axial", "2D", 230, 48, 28, 7.0, 6000, 80, None, 90,
                     ("EP",), ("SK",), _GE_ORIGINAL, b_value=1000.0),
            Protocol("ADC", "Apparent Diffusion Coefficient (mm2/s)", "epi2", "axial", "2D", 230, 48, 28, 7.0, 6000,
                     80, None, 90, ("EP",), ("SK",), ("DERIVED", "PRIMARY", "ADC"), same_geometry_as="DWI",
                     protocol_name="AX DWI 1000b"),
            Protocol("T1C", "AX T1 POST GAD", "fse", "axial", "2D", 240, 64, 32, 6.0, 550, 10, None, 90,
                     ("SE",), ("SK",), _GE_ORIGINAL, contrast=True),
        ),
    ),
    "philips": Vendor(
        manufacturer="Philips Medical Systems", models={1.5: "Achieva", 3.0: "Ingenia"}, software="5.4.1",
        body_part="BRAIN", study_description="MRI HERSENEN", contrast_agent="GADOVIST 7.5ML",
        series_number_step=100, rescale_slope=1.6,
        protocols=(
            Protocol("OTHER", "SURVEY", "", "localizer", "2D", 280, 48, 3, 8.0, 11, 4.6, None, 15,
                     ("GR",), ("SP",), ("ORIGINAL", "PRIMARY", "M_FFE", "M", "FFE")),
            Protocol("T1", "sT1W_3D_TFE", "", "sagittal", "3D", 256, 64, 48, 4.0, 8.1, 3.7, None, 8,
                     ("GR",), ("SP", "MP"), ("ORIGINAL", "PRIMARY", "M_FFE", "M", "FFE")),
            Protocol("T2", "T2W_TSE", "", "axial", "2D", 230, 64, 28, 7.0, 3000, 80, None, 90,
                     ("SE",), ("SK",), _PHILIPS_ORIGINAL),
            Protocol("FLAIR", "T2W_FLAIR", "", "oblique", "2D", 230, 56, 28, 7.0, 11000, 125, 2800, 90,
                     ("SE", "IR"), ("SK", "MP"), ("ORIGINAL", "PRIMARY", "M_IR", "M", "IR")),
            Protocol("DWI", "DWI_SENSE", "", "axial", "2D", 230, 48, 28, 7.0, 3200, 72, None, 90,
                     ("EP",), ("SK",), ("ORIGINAL", "PRIMARY", "M_SE", "M", "SE"), b_value=1000.0),
            Protocol("ADC", "dADC", "", "axial", "2D", 230, 48, 28, 7.0, 3200, 72, None, 90,
                     ("EP",), ("SK",), ("DERIVED", "PRIMARY", "ADC", "ADC"), same_geometry_as="DWI",
                     protocol_name="DWI_SENSE"),
            Protocol("T1C", "T1W_3D_TFE +C", "", "axial", "3D", 240, 64, 44, 4.4, 8.1, 3.7, None, 8,
                     ("GR",), ("SP", "MP"), ("ORIGINAL", "PRIMARY", "M_FFE", "M", "FFE"), contrast=True),
        ),
    ),
}

_SURNAMES = ("MORGAN", "NAKAMURA", "OKAFOR", "LINDQVIST", "ROSSI", "KOWALSKI", "SILVA", "HUANG", "MURPHY", "PETROV",
             "GARCIA", "JENSEN", "MOREAU", "SCHMIDT", "TANAKA", "WILSON")
_GIVEN = ("ALICE", "BORIS", "CHIARA", "DMITRI", "ELENA", "FARID", "GRETA", "HUGO", "INGRID", "JONAS", "KEIKO", "LUIS",
          "MARTA", "NIKO", "OLGA", "PABLO")
# fmt: on
_PHYSICIANS = ("WHITFIELD^HELEN^^DR", "OYELARAN^SAMUEL^^DR", "BRANDT^KLAUS^^DR")
_HEAD_RADII = (70.0, 88.0, 75.0)  # mm: semi-axes left-right, anterior-posterior, superior-inferior


def _scaled(protocol: Protocol, matrix: int) -> tuple[int, float, int, float]:
    """(in-plane matrix, pixel spacing, slices, slice spacing) of a protocol at the requested matrix size."""
    factor = matrix / REFERENCE_MATRIX
    size = max(8, int(round(protocol.matrix * factor)))
    if protocol.plane == "localizer":
        return size, protocol.fov / size, protocol.slices, protocol.slice_spacing
    slices = max(4, int(round(protocol.slices * factor)))
    return size, protocol.fov / size, slices, protocol.slice_spacing * protocol.slices / slices


def _cosines(plane: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    if plane == "axial":
        row, column = _AXIAL
    elif plane == "sagittal":
        row, column = _SAGITTAL
    elif plane == "coronal":
        row, column = _CORONAL
    elif plane == "oblique":  # axial tilted about left-right (along the AC-PC line) and a little about the vertical
        from scipy.spatial.transform import Rotation

        tilt = Rotation.from_euler("xz", [rng.uniform(22, 32), rng.uniform(-6, 6)], degrees=True).as_matrix()
        row, column = tilt @ np.array(_AXIAL[0]), tilt @ np.array(_AXIAL[1])
    else:
        raise ValueError(f"unknown plane {plane!r}")
    return np.asarray(row, dtype=float), np.asarray(column, dtype=float)


def _affine(row: np.ndarray, column: np.ndarray, spacing: tuple[float, float, float], origin: np.ndarray) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, 0] = row * spacing[0]
    affine[:3, 1] = column * spacing[1]
    affine[:3, 2] = np.cross(row, column) * spacing[2]
    affine[:3, 3] = origin
    return affine


def _centred_origin(centre, row, column, spacing, shape) -> np.ndarray:
    normal = np.cross(row, column)
    half = (np.asarray(shape, dtype=float) - 1) / 2 * np.asarray(spacing)
    return np.asarray(centre) - half[0] * row - half[1] * column - half[2] * normal


def _date(days: int) -> str:
    return str(np.datetime64("2016-01-01") + np.timedelta64(int(days), "D")).replace("-", "")


def _time(seconds: float) -> str:
    seconds = int(seconds) % 86400
    return f"{seconds // 3600:02d}{seconds % 3600 // 60:02d}{seconds % 60:02d}"


def _hex_name(rng: np.random.Generator) -> str:
    return "".join(rng.choice(list("0123456789ABCDEF"), size=8))


def _window(values: np.ndarray) -> tuple[str, str]:
    low, high = np.percentile(values, [1, 99.5])
    return f"{(low + high) / 2:.0f}", f"{max(high - low, 1):.0f}"


def _pixel_volume(phantom: HeadPhantom, protocol: Protocol, affine: np.ndarray, shape, rng, noise) -> np.ndarray:
    points = grid_points(affine, shape)
    sequence = "T1" if protocol.sequence == "OTHER" else protocol.sequence
    signal = phantom.image(points, sequence, rng, noise=noise).reshape(shape)
    gain = 1000.0 if protocol.sequence == "ADC" else rng.uniform(600, 2500)  # ADC in 10^-6 mm^2/s
    return signal * gain


@dataclass
class _Study:
    """What the writer needs to know about one study while writing it."""

    patient: dict[str, Any]
    truth: dict[str, Any]
    vendor: Vendor
    layout: str
    tags: dict[str, Any]
    folder: str = ""


def _identity(rng: np.random.Generator, index: int) -> dict[str, Any]:
    birth_days = int(rng.integers(-27000, -8000))  # 1942 to 1994
    return {
        "patient_id": f"{int(rng.integers(10**7, 10**8))}",
        "patient_name": f"{_SURNAMES[int(rng.integers(len(_SURNAMES)))]}^{_GIVEN[int(rng.integers(len(_GIVEN)))]}",
        "birth_date": _date(birth_days),
        "sex": str(rng.choice(["F", "M"])),
        "index": index,
    }


def _study_tags(patient: dict[str, Any], study: dict[str, Any], vendor: Vendor, field_strength: float) -> dict:
    age = np.datetime64(
        f"{study['study_date'][:4]}-{study['study_date'][4:6]}-{study['study_date'][6:]}"
    ) - np.datetime64(f"{patient['birth_date'][:4]}-{patient['birth_date'][4:6]}-{patient['birth_date'][6:]}")
    return {
        "PatientName": patient["patient_name"],
        "PatientID": patient["patient_id"],
        "PatientBirthDate": patient["birth_date"],
        "PatientSex": patient["sex"],
        "PatientAge": f"{int(age.astype(int) // 365.25):03d}Y",
        "StudyInstanceUID": study["study_uid"],
        "StudyDate": study["study_date"],
        "StudyTime": study["study_time"],
        "StudyID": study["study_id"],
        "AccessionNumber": study["accession"],
        "StudyDescription": vendor.study_description,
        "ReferringPhysicianName": study["referring_physician"],
        "InstitutionName": "Synthetic University Hospital",
        "StationName": "MRC40123" if vendor.series_number_step == 1 else "PHILIPS-MR1",
        "Manufacturer": vendor.manufacturer,
        "ManufacturerModelName": vendor.models[field_strength],
        "SoftwareVersions": vendor.software,
        "MagneticFieldStrength": f"{field_strength:g}",
        "ImagingFrequency": f"{42.577 * field_strength:.6f}",
        "BodyPartExamined": vendor.body_part,
        "PatientPosition": "HFS",
        "FrameOfReferenceUID": study["frame_of_reference_uid"],
        "PositionReferenceIndicator": "",
    }


def _series_tags(study: _Study, protocol: Protocol, series_uid: str, number: int, seconds: float) -> dict[str, Any]:
    tags = dict(study.tags)
    tags.update(
        SeriesInstanceUID=series_uid,
        SeriesNumber=number,
        SeriesDescription=protocol.description,
        ProtocolName=protocol.protocol_name or protocol.description,
        SeriesDate=study.truth["study_date"],
        SeriesTime=_time(seconds),
        AcquisitionDate=study.truth["study_date"],
        AcquisitionTime=_time(seconds + 5),
        ContentDate=study.truth["study_date"],
        ContentTime=_time(seconds + 60),
        AcquisitionNumber=1,
        ImageType=list(protocol.image_type),
        ScanningSequence=list(protocol.scanning_sequence),
        SequenceVariant=list(protocol.sequence_variant),
        ScanOptions="IR" if protocol.ti else "",
        MRAcquisitionType=protocol.acquisition,
        RepetitionTime=f"{protocol.tr:g}",
        EchoTime=f"{protocol.te:g}",
        FlipAngle=f"{protocol.flip:g}",
        EchoTrainLength=1,
        NumberOfAverages="1",
    )
    if protocol.sequence_name:
        tags["SequenceName"] = protocol.sequence_name
    if protocol.ti:
        tags["InversionTime"] = f"{protocol.ti:g}"
    if protocol.b_value is not None:
        tags["DiffusionBValue"] = float(protocol.b_value)
    if protocol.contrast:
        tags["ContrastBolusAgent"] = study.vendor.contrast_agent
        tags["ContrastBolusVolume"] = "7.5"
    return tags


def _file_names(rng: np.random.Generator, n: int, series_number: int, style: str) -> list[str]:
    """File names for the slices of one series (slice order), deliberately not in slice order when sorted."""
    if style == "numbered":
        numbers = rng.permutation(n) + 1
        return [f"IM-{series_number:04d}-{int(k):04d}.dcm" for k in numbers]
    names: list[str] = []
    while len(names) < n:
        name = _hex_name(rng) + (".dcm" if style == "hex.dcm" else "")
        if name not in names:
            names.append(name)
    return names


def _write_series(
    study: _Study,
    protocol: Protocol,
    rng: np.random.Generator,
    *,
    export: Path,
    staging: Path,
    number: int,
    seconds: float,
    matrix: int,
    noise: float,
    geometry: dict[str, Any] | None,
    phantom: HeadPhantom,
) -> dict[str, Any]:
    """Write one series and return its ground-truth record (files relative to ``export``)."""
    from medssl.data.geometry import plane_of
    from medssl.data.synth.dicom_writer import new_uid, write_series

    series_uid = new_uid(rng)
    size, pixel, n_slices, slice_spacing = _scaled(protocol, matrix)
    tags = _series_tags(study, protocol, series_uid, number, seconds)
    centre = phantom.centre + rng.uniform(-6, 6, size=3)
    if study.layout == "folders":
        style = str(rng.choice(["numbered", "hex", "hex.dcm"]))
        folder = export / study.folder / f"series_{number:03d}"
    elif study.layout == "flat":
        style, folder = "hex.dcm" if rng.random() < 0.5 else "hex", export / study.folder
    else:  # dicomdir: written to a staging folder, then copied into the file-set with the file-set's names
        style, folder = "hex", staging / series_uid
    slope = study.vendor.rescale_slope
    rescale = (slope, 0.0) if slope and protocol.sequence != "ADC" else None

    if protocol.plane == "localizer":
        paths, stacks = [], []
        names = _file_names(rng, 3, number, style)
        for k, plane in enumerate(("sagittal", "coronal", "axial")):
            row, column = _cosines(plane, rng)
            spacing = (pixel, pixel, protocol.slice_spacing)
            origin = _centred_origin(centre, row, column, spacing, (size, size, 1))
            affine = _affine(row, column, spacing, origin)
            volume = _pixel_volume(phantom, protocol, affine, (size, size, 1), rng, noise)
            slice_tags = dict(tags, WindowCenter=_window(volume)[0], WindowWidth=_window(volume)[1])
            paths += write_series(
                volume if rescale else np.round(volume).astype(np.int16),
                [folder / names[k]],
                spacing=spacing,
                row_cosine=row,
                column_cosine=column,
                origin=origin,
                tags=slice_tags,
                rescale=rescale,
                instance_numbers=[k + 1],
                rng=rng,
            )
            stacks.append({"plane": plane, "orientation": [*row.tolist(), *column.tolist()]})
        record = {
            "n_slices": 3,
            "rows": size,
            "columns": size,
            "spacing": None,
            "orientation": None,
            "origin": None,
            "affine_lps": None,
            "plane": "mixed",
            "stackable": False,
            "stacks": stacks,
        }
    else:
        if geometry is not None:  # a derived map shares its source's geometry (same positions, new UIDs)
            row, column = np.asarray(geometry["row"]), np.asarray(geometry["column"])
            spacing, origin, shape = tuple(geometry["spacing"]), np.asarray(geometry["origin"]), geometry["shape"]
        else:
            row, column = _cosines(protocol.plane, rng)
            spacing = (pixel, pixel, slice_spacing)
            shape = (size, size, n_slices)
            origin = _centred_origin(centre, row, column, spacing, shape)
        affine = _affine(row, column, spacing, origin)
        volume = _pixel_volume(phantom, protocol, affine, shape, rng, noise)
        center, width = _window(volume)
        tags.update(WindowCenter=center, WindowWidth=width)
        n_slices = shape[2]
        order = np.arange(1, n_slices + 1) if rng.random() < 0.6 else np.arange(n_slices, 0, -1)
        names = _file_names(rng, n_slices, number, style)
        paths = write_series(
            volume if rescale else np.round(volume).astype(np.int16),
            [folder / nm for nm in names],
            spacing=spacing,
            row_cosine=row,
            column_cosine=column,
            origin=origin,
            tags=tags,
            rescale=rescale,
            instance_numbers=order.tolist(),
            rng=rng,
        )
        record = {
            "n_slices": n_slices,
            "rows": shape[1],
            "columns": shape[0],
            "spacing": [float(v) for v in spacing],
            "orientation": [round(float(v), 6) for v in np.concatenate([row, column])],
            "origin": [float(v) for v in origin],
            "affine_lps": affine.tolist(),
            "plane": plane_of(np.cross(row, column)),
            "stackable": True,
            "_geometry": {
                "row": row.tolist(),
                "column": column.tolist(),
                "spacing": list(spacing),
                "origin": origin.tolist(),
                "shape": list(shape),
            },
        }
    record.update(
        patient_id=study.patient["patient_id"],
        study_uid=study.truth["study_uid"],
        series_uid=series_uid,
        series_number=number,
        description=protocol.description,
        sequence=protocol.sequence,
        contrast=protocol.contrast,
        image_type="\\".join(protocol.image_type),
        manufacturer=study.vendor.manufacturer,
        layout=study.layout,
        files=[str(p) for p in paths],  # absolute for now; made relative (or file-set names) by the caller
        repeat=False,
    )
    return record


def _sr_dataset(study: _Study, rng: np.random.Generator, number: int):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

    from medssl.data.synth.dicom_writer import new_uid

    uid = new_uid(rng)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    ds.file_meta.MediaStorageSOPInstanceUID = uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    for keyword in (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "StudyDate",
        "StudyTime",
        "StudyID",
        "AccessionNumber",
        "ReferringPhysicianName",
        "Manufacturer",
    ):
        setattr(ds, keyword, study.tags[keyword])
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = uid
    ds.Modality = "SR"
    ds.SeriesInstanceUID = new_uid(rng)
    ds.SeriesNumber = number
    ds.SeriesDescription = "Radiology report"
    ds.InstanceNumber = 1
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    title = Dataset()
    title.CodeValue, title.CodingSchemeDesignator, title.CodeMeaning = "18748-4", "LN", "Diagnostic imaging report"
    ds.ConceptNameCodeSequence = Sequence([title])
    finding = Dataset()
    finding.RelationshipType, finding.ValueType = "CONTAINS", "TEXT"
    finding.TextValue = "Synthetic report: intra-axial mass with peritumoral edema."
    ds.ContentSequence = Sequence([finding])
    return ds


def _write_broken(studies: list[_Study], export: Path, rng: np.random.Generator, series: list[dict]) -> list[dict]:
    """Write the broken files into the export and return their ground truth (paths relative to ``export``)."""
    from pydicom import dcmread
    from pydicom.encaps import encapsulate

    from medssl.data.synth.dicom_writer import new_uid, write_dataset

    host = next(s for s in studies if s.layout == "folders")
    flat = next((s for s in studies if s.layout == "flat"), host)
    broken: list[dict[str, Any]] = []

    def add(path: Path, reason: str, detail: str) -> None:
        broken.append({"path": path.relative_to(export).as_posix(), "reason": reason, "detail": detail})

    t2 = next(r for r in series if r["study_uid"] == host.truth["study_uid"] and r["sequence"] == "T2")
    source = export / t2["files"][len(t2["files"]) // 2]

    # 1. a slice cut in the middle of its pixel data (an interrupted copy), as its own one-file series
    ds = dcmread(source)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = new_uid(rng)
    ds.SeriesInstanceUID = new_uid(rng)
    truncated = write_dataset(ds, source.parent / f"{_hex_name(rng)}.dcm")
    size = truncated.stat().st_size
    with truncated.open("r+b") as handle:
        handle.truncate(size - len(ds.PixelData) // 2)
    add(truncated, "truncated", "pixel data cut to half its declared length")

    # 2. an MR slice in a transfer syntax no installed decoder handles
    ds = dcmread(source)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = new_uid(rng)
    ds.SeriesInstanceUID = new_uid(rng)
    ds.PixelData = encapsulate([rng.integers(0, 256, size=256, dtype=np.uint8).tobytes()])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.92"  # JPEG 2000 Part 2 multi-component (lossless)
    path = export / flat.folder / _hex_name(rng)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=False, little_endian=True, implicit_vr=False)
    add(path, "unsupported_transfer_syntax", "JPEG 2000 Part 2 Multi-component Image Compression (Lossless Only)")

    # 3. a structured report: DICOM without an image
    sr = _sr_dataset(host, rng, 99)
    path = write_dataset(sr, export / host.folder / "series_099" / f"{_hex_name(rng)}.dcm")
    add(path, "no_pixel_data", "Basic Text SR Storage")

    # 4. files that are not DICOM at all, and an empty one
    path = export / flat.folder / "Thumbs.db"
    path.write_bytes(rng.integers(0, 256, size=1024, dtype=np.uint8).tobytes())
    add(path, "not_dicom", "random bytes")
    path = export / "README.TXT"
    path.write_text("Exported by SynthPACS 1.0. Open DICOMDIR with a DICOM viewer.\n")
    add(path, "not_dicom", "plain text")
    path = export / flat.folder / f"{_hex_name(rng)}.dcm"
    path.write_bytes(b"")
    add(path, "empty_file", "zero bytes")
    return broken


def _write_fileset(studies: list[_Study], series: list[dict], export: Path, staging: Path, rng) -> list[str]:
    """Move the staged series of the DICOMDIR studies into a file-set under ``export/CD`` (names by pydicom)."""
    from pydicom import dcmread
    from pydicom.fileset import FileSet

    from medssl.data.synth.dicom_writer import new_uid

    uids = {s.truth["study_uid"] for s in studies if s.layout == "dicomdir"}
    if not uids:
        return []
    fileset = FileSet()
    fileset.ID = "SYNTHCD"
    fileset.UID = new_uid(rng)
    sop_of: dict[str, str] = {}
    for record in series:
        if record["study_uid"] in uids:
            for path in record["files"]:
                ds = dcmread(path)
                sop_of[path] = str(ds.SOPInstanceUID)
                fileset.add(ds)
    root = export / "CD"
    fileset.write(root)
    written = {str(instance.SOPInstanceUID): Path(instance.path) for instance in FileSet(root / "DICOMDIR")}
    for record in series:
        if record["study_uid"] in uids:
            record["files"] = [str(written[sop_of[p]]) for p in record["files"]]
    shutil.rmtree(staging, ignore_errors=True)
    return [(root / "DICOMDIR").relative_to(export).as_posix()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``medssl synth mr-dicom``."""
    parser.add_argument(
        "--matrix", type=int, default=64, help="in-plane matrix of the largest series (default 64; slices scale too)"
    )
    parser.add_argument(
        "--followups", type=float, default=0.3, help="share of patients with a second study (default 0.3)"
    )
    parser.add_argument("--noise", type=float, default=0.03, help="noise relative to the brightest tissue")
    parser.add_argument(
        "--broken", action=argparse.BooleanOptionalAction, default=True, help="add broken files (default: yes)"
    )
    parser.add_argument(
        "--dicomdir",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="write the last patient as a DICOMDIR file-set when n >= 3 (default: yes)",
    )


def generate(
    out: str | os.PathLike,
    n: int,
    seed: int,
    *,
    matrix: int = 64,
    followups: float = 0.3,
    noise: float = 0.03,
    broken: bool = True,
    dicomdir: bool = True,
) -> dict[str, Any]:
    """Write a synthetic PACS export of ``n`` patients under ``out/export`` and its truth as ``out/ground_truth.json``.

    Args:
        out: output folder (created); the export goes to ``out/export``.
        n: number of patients.
        seed: random seed; the same seed writes the same bytes.
        matrix: in-plane matrix of the largest series; every series' matrix and slice count scale with it.
        followups: share of patients with a second study.
        noise: noise level relative to the brightest tissue.
        broken: add broken files.
        dicomdir: write the last patient as a DICOMDIR file-set (when ``n >= 3``).

    Returns:
        A summary (counts, the export folder, the ground-truth file); the full truth is in the JSON file
        (:func:`read_ground_truth`).

    Raises:
        ValueError: ``n < 1``, ``matrix < 8`` or a fraction outside [0, 1].
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if matrix < 8:
        raise ValueError(f"matrix must be at least 8, got {matrix}")
    if not 0.0 <= followups <= 1.0:
        raise ValueError(f"followups must be a fraction in [0, 1], got {followups}")
    from medssl.data.synth.dicom_writer import new_uid

    out = Path(out).resolve()  # pydicom's FileSet reports absolute, resolved paths
    export = out / EXPORT_DIR
    if export.exists():
        shutil.rmtree(export)
    staging = out / ".staging"
    export.mkdir(parents=True)

    plan = np.random.default_rng([seed, 0xD1C0])
    n_followups = int(round(n * followups))
    with_followup = set(plan.choice(n, size=n_followups, replace=False).tolist()) if n_followups else set()
    vendor_names = sorted(VENDORS)

    patients, studies_truth, series, studies = [], [], [], []
    for p in range(n):
        rng = np.random.default_rng([seed, p])
        patient = _identity(rng, p)
        vendor = VENDORS[vendor_names[int(rng.integers(len(vendor_names)))]]
        field_strength = float(rng.choice([1.5, 3.0]))
        phantom = HeadPhantom.random(rng, radii=_HEAD_RADII, centre=rng.uniform(-10, 10, size=3) + (0, 10, 20))
        first_day = int(rng.integers(0, 2500))
        n_studies = 2 if p in with_followup else 1
        patient["n_studies"] = n_studies
        patients.append(patient)
        for s in range(n_studies):
            srng = np.random.default_rng([seed, p, s])
            if s:
                phantom = phantom.moved(srng)
                if phantom.tumour is not None:
                    phantom = replace(phantom, tumour=phantom.tumour.grown(1.25))
            if dicomdir and n >= 3 and p == n - 1:
                layout = "dicomdir"
            elif p == 1 and s == 0:
                layout = "flat"
            else:
                layout = "folders"
            truth = {
                "patient_id": patient["patient_id"],
                "patient_index": p,
                "study_index": s,
                "study_uid": new_uid(srng),
                "frame_of_reference_uid": new_uid(srng),
                "study_date": _date(first_day + s * int(srng.integers(60, 240))),
                "study_time": _time(srng.uniform(7, 18) * 3600),
                "study_id": f"{int(srng.integers(1000, 99999))}",
                "accession": f"RAD{int(srng.integers(10**7, 10**8))}",
                "referring_physician": _PHYSICIANS[int(srng.integers(len(_PHYSICIANS)))],
                "manufacturer": vendor.manufacturer,
                "field_strength": field_strength,
                "layout": layout,
                "phantom": {
                    "centre_lps": phantom.centre.tolist(),
                    "rotation": phantom.rotation.tolist(),
                    "radii": phantom.radii.tolist(),
                    "tumour": phantom.tumour is not None,
                    "tumour_centre_lps": None if phantom.tumour is None else phantom.tumour_centre.tolist(),
                },
            }
            study = _Study(patient=patient, truth=truth, vendor=vendor, layout=layout, tags={})
            study.tags = _study_tags(patient, truth, vendor, field_strength)
            study.folder = {"folders": f"patient_{p:03d}/study_{s + 1}", "flat": "incoming", "dicomdir": ""}[layout]
            protocols = list(vendor.protocols)
            if s == 0 and p % 4 == 1:  # no contrast given
                protocols = [pr for pr in protocols if pr.sequence != "T1C"]
            if s == 0 and p % 4 == 2:  # the T2 is repeated (motion in the first)
                protocols.insert(
                    protocols.index(next(pr for pr in protocols if pr.sequence == "T2")) + 1,
                    next(pr for pr in protocols if pr.sequence == "T2"),
                )
            seconds = srng.uniform(7, 18) * 3600
            geometry_of: dict[str, dict] = {}
            study_series = []
            for k, protocol in enumerate(protocols):
                number = (k + 1) * vendor.series_number_step + (1 if vendor.series_number_step > 1 else 0)
                record = _write_series(
                    study,
                    protocol,
                    srng,
                    export=export,
                    staging=staging,
                    number=number,
                    seconds=seconds + 300 * k,
                    matrix=matrix,
                    noise=noise,
                    geometry=geometry_of.get(protocol.same_geometry_as) if protocol.same_geometry_as else None,
                    phantom=phantom,
                )
                if "_geometry" in record:
                    geometry_of.setdefault(protocol.sequence, record["_geometry"])
                record["repeat"] = any(r["sequence"] == protocol.sequence for r in study_series)
                study_series.append(record)
            truth["sequences"] = sorted({r["sequence"] for r in study_series} - {"OTHER"})
            truth["missing_sequences"] = [
                q for q in ("T1", "T1C", "T2", "FLAIR", "DWI", "ADC") if q not in truth["sequences"]
            ]
            series.extend(study_series)
            studies_truth.append(truth)
            studies.append(study)

    dicomdirs = _write_fileset(studies, series, export, staging, np.random.default_rng([seed, 0xCD]))
    for record in series:
        record.pop("_geometry", None)
        record["files"] = [Path(f).relative_to(export).as_posix() for f in record["files"]]
    broken_files = _write_broken(studies, export, np.random.default_rng([seed, 0xBAD]), series) if broken else []
    shutil.rmtree(staging, ignore_errors=True)

    truth = {
        "layout": LAYOUT,
        "seed": seed,
        "matrix": matrix,
        "export": EXPORT_DIR,
        "note": "Synthetic data. Holds fake patient names, IDs, dates and raw UIDs on purpose, to test that they do "
        "not leak; paths are relative to the export folder.",
        "patients": patients,
        "studies": studies_truth,
        "series": series,
        "broken": broken_files,
        "dicomdirs": dicomdirs,
    }
    truth_path = out / GROUND_TRUTH
    truth_path.write_text(json.dumps(truth, indent=1) + "\n")
    n_files = sum(len(r["files"]) for r in series)
    return {
        "layout": LAYOUT,
        "out": str(out),
        "export": str(export),
        "ground_truth": str(truth_path),
        "n_patients": n,
        "n_studies": len(studies_truth),
        "n_series": len(series),
        "n_image_files": n_files,
        "n_broken_files": len(broken_files),
        "series_by_sequence": {
            q: sum(r["sequence"] == q for r in series) for q in sorted({r["sequence"] for r in series})
        },
        "layouts": {k: sum(s["layout"] == k for s in studies_truth) for k in ("folders", "flat", "dicomdir")},
    }


def read_ground_truth(out: str | os.PathLike) -> dict[str, Any]:
    """Read the ground truth of a synthetic export.

    Args:
        out: the folder given to :func:`generate` (or the JSON file itself).

    Returns:
        The truth: ``patients``, ``studies``, ``series``, ``broken``, ``dicomdirs``.
    """
    path = Path(out)
    if path.is_dir():
        path = path / GROUND_TRUTH
    return json.loads(path.read_text())
