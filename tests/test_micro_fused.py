"""The fused microWakeWord graph against the generic interpreter: the same outputs and the
same streaming state, step by step and in passes of any length; and a fused form that
disagrees is not used."""

from __future__ import annotations

import numpy as np

from edge.wake.micro.engine import MicroModel, fuse, run_check
from edge.wake.micro.fused import MAX_STEPS, FusedGraph
from edge.wake.micro.graph import MicroGraph
from edge.wake.micro.tflite import read_tflite
from edge.wake.models import ModelStore


def micro_names(store: ModelStore) -> list[str]:
    names = [m.name for m in store.manifest.models if m.kind == "micro"]
    assert len(names) >= 4, names
    return names


def test_every_bundled_model_runs_fused_with_the_generic_outputs_and_state(store):
    for name in micro_names(store):
        spec = store.micro(*store.resolve(name))
        assert isinstance(MicroModel(spec).graph, FusedGraph), name
        generic = MicroGraph(read_tflite(spec.tflite))
        fused = FusedGraph(generic)
        steps = 2 * MAX_STEPS + 60
        x = np.random.RandomState(7).randint(-128, 80, (steps * 3, 40)).astype(np.int8)
        one = [int(generic.invoke(x[i * 3:(i + 1) * 3]).reshape(-1)[0]) for i in range(steps)]
        got: list[int] = []
        at = 0
        for n in [1, 2, 3, MAX_STEPS + 5, 3, 2] * 20:  # uneven passes, one over MAX_STEPS
            n = min(n, steps - at)
            if n == 0:
                break
            got += fused.invoke_steps(x[at * 3:(at + n) * 3].astype(np.float64)).tolist()
            at += n
        assert got == one, name
        expected = {k: v.astype(np.int64) for k, v in generic.state().items()}
        assert {k: v.astype(np.int64).tolist() for k, v in fused.state().items()} == {
            k: v.tolist() for k, v in expected.items()}, name


def test_a_fused_form_that_disagrees_with_the_generic_one_is_not_used(store):
    spec = store.micro(*store.resolve("okay_nabu"))
    generic = MicroGraph(read_tflite(spec.tflite))
    outputs, state = run_check(generic)
    assert isinstance(fuse(generic, (outputs, state)), FusedGraph)
    assert fuse(generic, ((outputs[0] + 1,) + outputs[1:], state)) is generic
    assert fuse(generic, (outputs, "0" * 64)) is generic


def test_wipe_overwrites_every_buffer_and_the_model_starts_anew(store):
    spec = store.micro(*store.resolve("okay_nabu"))
    fused = FusedGraph(MicroGraph(read_tflite(spec.tflite)))
    x = np.random.RandomState(3).randint(-128, 80, (30, 40)).astype(np.int8)
    first = fused.invoke_steps(x).tolist()
    buffers = [s.buf for s in fused._seqs]
    fused.wipe()
    assert not any(b.any() for b in buffers)
    assert fused.invoke_steps(x).tolist() == first
