"""``load_dataset``: arguments checked, files discovered, read and deduplicated, counts checked,
labels ordered, split; every problem found is raised together."""

from __future__ import annotations

from pathlib import Path

from device.inference.bundle import TASK_TYPES, TaskType
from device.paths import IMAGE_SUFFIXES
from training.data.checks import (
    check_counts,
    check_files,
    deduplicate,
    image_sizes,
    imbalance_warning,
)
from training.data.labels import output_labels
from training.data.layouts import (
    discover_class_folders,
    discover_nested,
    images_under,
    split_folders,
)
from training.data.multilabel import CSV_NAME, discover_multilabel
from training.data.samples import DataError, Dataset, Found, dataset_error
from training.data.splits import make_splits
from training.data.taxonomy_file import apply_taxonomy_file


def load_dataset(
    root: Path,
    task: TaskType,
    *,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
    min_images_per_class: int = 5,
    positive: str | None = None,
    taxonomy_file: Path | None = None,
    labels_csv: Path | None = None,
    progress: bool = True,
) -> Dataset:
    """Find, check and split a labeled image dataset (layouts: see :mod:`training.data`).

    Raises :class:`DataError` listing every problem found: wrong path, no images, bad layout,
    too few images in a class, a single class, the same image in two classes, too many
    unreadable files, an ambiguous binary positive class.
    """
    root = Path(root)
    _check_arguments(task, val_fraction, test_fraction, min_images_per_class)
    _check_options(task, positive, taxonomy_file, labels_csv)
    _check_root(root)

    found, bases = _discover(root, task, taxonomy_file, labels_csv)
    checked = check_files(sorted({e.path for e in found.entries}), progress)
    samples = deduplicate(found, checked, task)
    check_counts(found, samples, task, min_images_per_class)

    labels, taxonomy = output_labels(task, found, samples, positive)
    splits, split_source = make_splits(
        found, samples, task, val_fraction, test_fraction, seed, bases
    )
    if found.problems:
        raise dataset_error(root, task, found.problems)
    imbalance_warning(samples, labels, task, found)
    return Dataset(
        root=root,
        task=task,
        labels=labels,
        taxonomy=taxonomy,
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        skipped=sorted(found.skipped),
        warnings=found.warnings,
        split_source=split_source,
        image_sizes=image_sizes(samples, checked),
    )


def _check_arguments(
    task: str, val_fraction: float, test_fraction: float, min_images_per_class: int
) -> None:
    if task not in TASK_TYPES:
        raise DataError(f"unknown task {task!r}; expected one of {', '.join(TASK_TYPES)}")
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DataError(
            f"val_fraction={val_fraction} and test_fraction={test_fraction} must be in [0, 1) "
            "and leave something for training"
        )
    if min_images_per_class < 1:
        raise DataError(f"min_images_per_class must be at least 1, got {min_images_per_class}")


def _check_options(
    task: str, positive: str | None, taxonomy_file: Path | None, labels_csv: Path | None
) -> None:
    """Each layout option belongs to one task."""
    if task != "binary" and positive is not None:
        raise DataError(f"positive={positive!r} is only for --task binary (task is {task})")
    if task != "hierarchical" and taxonomy_file is not None:
        raise DataError(f"a taxonomy file is only for --task hierarchical (task is {task})")
    if task != "multilabel" and labels_csv is not None:
        raise DataError(f"a labels CSV is only for --task multilabel (task is {task})")


def _check_root(root: Path) -> None:
    if not root.exists():
        raise DataError(f"{root}: no such folder")
    if not root.is_dir():
        raise DataError(f"{root}: not a folder (give the folder that holds the class folders)")


def _discover(
    root: Path, task: str, taxonomy_file: Path | None, labels_csv: Path | None
) -> tuple[Found, dict[str | None, Path]]:
    """Every file and its labels per the task's layout, and the split folders (``{None: root}``
    when there are none)."""
    found = Found(root)
    bases = split_folders(root, found)
    if task == "multilabel":
        discover_multilabel(root, bases, labels_csv, found)
    elif task == "hierarchical" and taxonomy_file is None:
        discover_nested(root, bases, found)
    else:
        discover_class_folders(root, bases, found)
        if task == "hierarchical":
            assert taxonomy_file is not None
            apply_taxonomy_file(Path(taxonomy_file), found)
    if not found.entries and not found.problems:
        raise DataError(_no_images_message(root, task))
    return found, bases


def _no_images_message(root: Path, task: str) -> str:
    layouts = {
        "binary": "root/<positive>/*.jpg and root/<negative>/*.jpg (e.g. cat/ and no_cat/)",
        "multiclass": "a folder per class: root/<class>/*.jpg",
        "hierarchical": "nested folders root/insect/aphid/*.jpg, or class folders plus a "
        "taxonomy file",
        "multilabel": f"root/{CSV_NAME} with lines path,label1;label2, or a folder per label",
    }
    try:
        has_images = any(images_under(root))
    except OSError:
        has_images = False
    if has_images:
        return (
            f"{root}: images were found but not in the expected layout for --task {task}: "
            f"{layouts[task]}"
        )
    return (
        f"{root}: no images found (extensions: "
        f"{', '.join(sorted(IMAGE_SUFFIXES))}). Expected {layouts[task]}"
    )
