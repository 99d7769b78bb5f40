"""Labeled images on disk -> a checked, split dataset; and its pixels through the device's
preprocessing.

``load_dataset`` reads one of these layouts (hidden files, ``__MACOSX`` and files whose suffix
is not one of ``device.paths.IMAGE_SUFFIXES`` are ignored silently):

* **binary / multiclass** — a folder per class, ``root/<class>/**/*.jpg`` (images may sit in
  subfolders of a class folder, e.g. by date). Binary needs exactly two folders; the positive
  class is ``positive=`` or else the one *not* named like a negative (``no``, ``not_*``,
  ``no_*``, ``non_*``, ``none``, ``empty``, ``background``, ``negative``, ``nothing``,
  ``clear``, ``other``). Binary labels are ``[negative, positive]``; multiclass labels are the
  sorted folder names.
* **hierarchical** — nested folders, ``root/insect/aphid/*.jpg``: a folder with subfolders is
  an inner node of the taxonomy, a folder without subfolders is a leaf and holds the images
  (images directly in an inner folder are an error); a top-level folder with images is a
  top-level leaf. Folder names are the node names and must be unique in the tree. *Or* flat
  class folders (one per leaf) plus ``taxonomy_file``: a ``.json`` file ``{"node": "parent" |
  null}`` naming every node, or any other file as text, one path from a top-level node down
  per line (``animal/insect/aphid``; ``#`` starts a comment). Taxonomy nodes without images
  are left out, with a warning. Labels are the leaves in depth-first order, siblings sorted.
* **multilabel** — a CSV ``path,labels`` (``labels_csv``, else ``root/labels.csv``, else one
  ``labels.csv`` in each split folder): paths relative to the CSV's folder, labels separated by
  ``;``, header optional, an empty label list is a valid all-negative image. *Or* a folder per
  label where the same image may appear in several folders: identical file content is one
  image with the union of the labels; a folder named ``none``, ``nothing``, ``empty``,
  ``background``, ``negative`` or ``no_labels`` holds all-negative images. Labels are sorted.

Split: if the root holds only ``train/`` plus ``val/`` and/or ``test/`` folders (``training``,
``valid``, ``validation``, ``testing`` are accepted too), each holding the same layout, they
are used as given (a missing ``val/`` or ``test/`` is carved out of ``train/``, with a
warning). Otherwise the split is random, seeded and stratified: by class, and for multilabel
by each image's *rarest* label (images without labels form a stratum of their own) so that rare
labels reach every split. A class with at least 3 images gets at least one image in val and
test (2 images: train and val), and always at least one in train.

Checking: every file with an image extension is read and decoded once (in a thread pool: OpenCV
releases the GIL), with the same decoder flags as the device. Empty, unreadable, truncated or
non-image files are skipped and listed in ``Dataset.skipped`` with the reason; more than
``MAX_BAD_FRACTION`` of a class being unreadable is an error. Byte-identical files are one
image: duplicates within a class are dropped (and listed), the same image in two classes is an
error naming both paths, the same image in two given split folders is a warning. Too few images
per class and a single class are errors. All problems found are reported together in one
:class:`DataError`.

Modules: ``samples`` (Sample, Dataset, DataError), ``layouts`` (split and class folders, nested
folders), ``taxonomy_file``, ``multilabel`` (``labels.csv`` reader and writer, label folders),
``checks`` (decoding, duplicates, counts), ``labels`` (output order), ``splits``, ``pixels``
(targets and pixels) and ``load`` (``load_dataset``, phase by phase).
"""

from __future__ import annotations

from training.data.checks import IMBALANCE_RATIO, MAX_BAD_FRACTION
from training.data.labels import NEGATIVE_NAMES, NEGATIVE_PREFIXES
from training.data.layouts import IGNORED_FOLDERS, SPLIT_ALIASES, SPLITS
from training.data.load import load_dataset
from training.data.multilabel import (
    CSV_HEADER_NAMES,
    CSV_NAME,
    UNLABELED_FOLDERS,
    read_labels_csv,
    write_labels_csv,
)
from training.data.pixels import Pixels, batches, load_pixels, target_array
from training.data.samples import DataError, Dataset, Sample

__all__ = [
    "CSV_HEADER_NAMES",
    "CSV_NAME",
    "IGNORED_FOLDERS",
    "IMBALANCE_RATIO",
    "MAX_BAD_FRACTION",
    "NEGATIVE_NAMES",
    "NEGATIVE_PREFIXES",
    "SPLITS",
    "SPLIT_ALIASES",
    "UNLABELED_FOLDERS",
    "DataError",
    "Dataset",
    "Pixels",
    "Sample",
    "batches",
    "load_dataset",
    "load_pixels",
    "read_labels_csv",
    "target_array",
    "write_labels_csv",
]
