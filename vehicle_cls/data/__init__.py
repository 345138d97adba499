"""Datasets: Stanford Cars devkit, class folders, Kaggle layout, CSV, COCO, S3; splits; crop cache.

Readers are sequences of ``Sample(path, label, box)`` with ``.classes`` and ``.problems``;
``open_dataset`` picks the reader for a folder, CSV or COCO .json file or ``s3://`` URI. The torch side
(``SampleDataset``, ``collate_skip_bad``) lives in ``vehicle_cls.data.torch_dataset`` so that
importing the readers does not import torch.
"""

from __future__ import annotations

from vehicle_cls.data.coco import CocoDataset
from vehicle_cls.data.crop_cache import CropCache, CropStats
from vehicle_cls.data.csv_images import CsvImages, seed_csv_dataset
from vehicle_cls.data.folders import ClassFolders, KaggleCars
from vehicle_cls.data.layouts import LAYOUTS, detect_layout, open_dataset
from vehicle_cls.data.sample import DatasetError, Problem, Sample, SampleList, pixel_box, relabel
from vehicle_cls.data.splits import split_by_photo, split_dataset, stratified_split
from vehicle_cls.data.stanford import StanfordCars, read_class_names

__all__ = [
    "LAYOUTS",
    "ClassFolders",
    "CocoDataset",
    "CropCache",
    "CropStats",
    "CsvImages",
    "DatasetError",
    "KaggleCars",
    "Problem",
    "Sample",
    "SampleList",
    "StanfordCars",
    "detect_layout",
    "open_dataset",
    "pixel_box",
    "read_class_names",
    "relabel",
    "seed_csv_dataset",
    "split_by_photo",
    "split_dataset",
    "stratified_split",
]
