"""Fixed pseudo-random inputs without numpy.random (edge/wake/noise.py)."""

from __future__ import annotations

import numpy as np

from edge.wake.noise import Draws, draw_warmup_noise, warmup_noise


def test_the_stored_warmup_noise_is_randomstates_draw() -> None:
    stored = warmup_noise(0)
    want = np.random.RandomState(0).randint(-1000, 1000, 16000 * 4)
    assert stored.dtype == np.int16 and stored.shape == want.shape
    assert (stored == want).all()
    assert (draw_warmup_noise(0) == stored).all()


def test_other_seeds_are_drawn_as_upstream_draws_them() -> None:
    want = np.random.RandomState(5).randint(-1000, 1000, 16000 * 4)
    assert (warmup_noise(5) == want).all()
    assert not (warmup_noise(5) == warmup_noise(0)).all()


def test_draws_follow_splitmix64() -> None:
    # SplitMix64's published outputs for state 0: the hash of counters 1, 2, 3
    got = Draws(0)._u64(4)
    assert [int(v) for v in got[1:]] == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4,
                                        0x06C45D188009454F]


def test_draws_are_fixed_per_seed_and_advance() -> None:
    a, b = Draws(1234), Draws(1234)
    first = a.uniform(-1.0, 4.0, (3, 5))
    assert (first == b.uniform(-1.0, 4.0, (3, 5))).all()
    assert not (first == a.uniform(-1.0, 4.0, (3, 5))).any()  # the stream moved on
    assert not (first == Draws(1235).uniform(-1.0, 4.0, (3, 5))).any()


def test_draws_stay_in_range_and_spread() -> None:
    d = Draws(9)
    u = d.uniform(-1.0, 4.0, (50000,))
    assert u.min() >= -1.0 and u.max() < 4.0 and abs(u.mean() - 1.5) < 0.03
    i = d.integers(-30, 30, (50000,))
    assert i.dtype == np.int64 and i.min() == -30 and i.max() == 29
    assert len(np.unique(i)) == 60
    n = d.unit_normalish((50000,))
    assert abs(n.mean()) < 0.02 and abs(n.std() - 1.0) < 0.02
