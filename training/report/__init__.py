"""The evaluation report in a bundle folder: ``report.json``, ``report.md`` and ``confusion.png``.

The report is one JSON-able dict; every key is optional except ``task``, so the same writer
serves ``kestrel train`` (float vs int8, gate, baselines) and ``kestrel eval`` (one model):

- ``name``, ``task``, ``kind`` ("train" or "eval"), ``created_at``, ``bundle``, ``command``
- ``dataset``: :meth:`training.data.Dataset.summary` (split, images and counts per split ...)
- ``skipped``: files left out, ``[{"path", "reason"}]``; ``warnings``: strings
- ``thresholds``: the manifest's thresholds; ``calibration``: notes on how they were chosen
- ``float``, ``int8``: sections, each :func:`training.metrics.compute_metrics` output plus
  ``latency_ms`` (and ``scheme``, ``bundle``), see :func:`training.evaluate.evaluate_pixels`.
  ``int8`` is the model as shipped (its ``scheme`` says if it is not int8).
- ``gate``: :func:`training.gate.compare_float_int8`'s verdict
- ``baselines``: :func:`training.metrics.baselines`' results; ``baselines_note`` a sentence
- ``training``: free-form facts about the run (epochs, seconds, backbone ...), shown as a list

The modules: :mod:`.files` (:func:`write_report`), :mod:`.markdown` (:func:`render_markdown`,
with the results tables in :mod:`.results` and cell formatting in :mod:`.cells`),
:mod:`.plots` (:func:`plot_confusion`) and :mod:`.layout` (file names, the main section).
"""

from training.report.files import write_report
from training.report.layout import CONFUSION_PNG, COVERAGE_PNG, REPORT_JSON, REPORT_MD, SECTIONS
from training.report.markdown import render_markdown
from training.report.plots import plot_confusion

__all__ = [
    "CONFUSION_PNG",
    "COVERAGE_PNG",
    "REPORT_JSON",
    "REPORT_MD",
    "SECTIONS",
    "plot_confusion",
    "render_markdown",
    "write_report",
]
