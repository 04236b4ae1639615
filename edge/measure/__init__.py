"""``edge measure``: accidental-wake and miss rates of the device's own detector.

Hours of recordings go through the live device's engine and detection policy,
faster than real time, and come out as a report researchers can publish.

* :mod:`edge.measure.batch`: per-frame scores of a stream, bit for bit the device's
  (``exact``) or whole spans at once within float32 rounding of it (``batched``);
* :mod:`edge.measure.corpus`: which files are negatives and which are positives;
* :mod:`edge.measure.chunks`: tasks (a file, or a chunk of a long one) and their audio;
* :mod:`edge.measure.pool`: tasks over all cores, with progress, stitched per file;
* :mod:`edge.measure.cluster`: the same tasks on a Dask distributed cluster;
* :mod:`edge.measure.snippets`: every detection at the device threshold, cut as a WAV;
* :mod:`edge.measure.sweep`: the detection policy applied once per threshold;
* :mod:`edge.measure.report` and :mod:`edge.measure.plots`: JSON, CSV, HTML and PNGs.

Nothing here is imported by the daemon; matplotlib, tqdm and Dask are imported lazily.
"""

from edge import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "batch": ("StreamScorer",),
    "corpus": ("Job",),
    "report": ("write_report",),
})
