"""``edge measure``: accidental-wake and miss rates of the device's own detector.

Hours of recordings go through the live device's engine and detection policy,
faster than real time, and come out as a report researchers can publish.

* :mod:`edge.measure.batch`: per-frame scores of a whole stream, bit for bit the
  device's, with the melspectrogram model batched;
* :mod:`edge.measure.corpus`: which files are negatives and which are positives;
* :mod:`edge.measure.pool`: files over all cores, with progress, snippets cut on the fly;
* :mod:`edge.measure.sweep`: the detection policy applied once per threshold;
* :mod:`edge.measure.report` and :mod:`edge.measure.plots`: JSON, CSV, HTML and PNGs.

Nothing here is imported by the daemon; matplotlib and tqdm are imported lazily.
"""

from edge import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "batch": ("StreamScorer",),
    "corpus": ("Job",),
    "report": ("write_report",),
})
