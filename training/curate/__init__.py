"""``kestrel curate``: what is in a folder of images, before it becomes a training set.

Quality flags per image (blurry, dark, bright, tiny, duplicate, outlier, and on labeled images
label_error), class balance, and unsupervised groups of the unlabeled images (k-means or a
Gaussian mixture on the shipped backbone's embeddings), written as ``curate.json`` and a
self-contained ``index.html``. Curate only reads the folder: nothing is moved or deleted.

Modules: ``discover`` (images, labels, sidecar guesses), ``quality`` (measurements, quality
flags), ``neighbours`` (duplicates, outliers), ``labels`` (label errors, balance), ``grouping``
(k-means / GMM, choosing k), ``run`` (``curate``), ``report`` (JSON), ``html`` (the page),
``cli`` (the command line).
"""

from __future__ import annotations

from typing import Any

__all__ = ["CurateError", "curate"]


def __getattr__(name: str) -> Any:
    # Lazy: the kestrel command line imports training.curate.cli on every call.
    if name in __all__:
        from training.curate import run

        return getattr(run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
