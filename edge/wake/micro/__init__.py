"""microWakeWord models in numpy: a TFLite flatbuffer reader, the int8 kernels of the
streaming models, the TFLite-Micro front end and the engine that joins them."""

from edge import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "engine": ("MicroEngine", "MicroModel", "check_graph"),
    "graph": ("MicroGraph", "UnsupportedGraph"),
    "fused": ("FusedGraph", "NotFusable"),
    "tflite": ("read_tflite", "parse_tflite", "FlatbufferError"),
    "frontend": ("Frontend",),
})
