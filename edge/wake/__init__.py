"""Wake-word detection: the engine (features and classifiers), the streamed embedding and its ONNX
reader, the detection policy, the VAD, the verifier and the model store."""

from edge import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "engine": ("WakeEngine", "StreamingEngine", "FeatureModels", "Classifier"),
    "upstream": ("UpstreamEngine",),
    "policy": ("ModelPolicy", "Detection", "DetectionPolicy", "detections_over"),
    "vad": ("Vad", "SileroVad"),
    "verifier": ("Verifier", "Candidate", "Verdict", "build_verifier"),
    "models": ("ModelStore",),
    "families": ("JoinedEngine",),
    "detector": ("Detector", "build_detector", "build_engine", "build_policy", "model_store"),
})
