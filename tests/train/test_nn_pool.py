"""The nearest-neighbour pool of RoCLIP and SafeCLIP: first in, first out; cosine neighbours; no gradient."""

import pytest
import torch
import torch.nn.functional as F

from mmsec.train.nn_pool import NearestNeighbourPool


def test_pool_keeps_the_newest_entries_in_order_of_arrival():
    pool = NearestNeighbourPool(3)
    pool.push(torch.eye(4)[:2])  # e0, e1
    pool.push(torch.eye(4)[2:])  # e2, e3: e3 replaces the oldest (e0)
    assert len(pool) == 3
    kept = {int(r.argmax()) for r in pool.bank}
    assert kept == {1, 2, 3}
    pool.push(torch.eye(4)[:1] * 5.0)  # e0 again (normalised) replaces e1, now the oldest
    assert {int(r.argmax()) for r in pool.bank} == {0, 2, 3}
    assert torch.allclose(pool.bank.norm(dim=1), torch.ones(3))


def test_nearest_is_the_most_cosine_similar_entry_and_carries_no_gradient():
    torch.manual_seed(0)
    bank = torch.randn(50, 8)
    pool = NearestNeighbourPool(64)
    pool.push(bank)
    query = (bank[[3, 17, 42]] * 2.0 + 0.01 * torch.randn(3, 8)).requires_grad_(True)
    got = pool.nearest(query)
    assert torch.allclose(got, F.normalize(bank[[3, 17, 42]], dim=-1))
    assert not got.requires_grad


def test_bad_use_is_named():
    with pytest.raises(ValueError, match="size"):
        NearestNeighbourPool(0)
    with pytest.raises(RuntimeError, match="empty"):
        NearestNeighbourPool(4).nearest(torch.randn(2, 3))
    pool = NearestNeighbourPool(4)
    pool.push(torch.randn(2, 3))
    with pytest.raises(ValueError, match="width"):
        pool.push(torch.randn(2, 5))
