"""RowPool: pieces of rows in order, torch single-threaded inside, thread count restored."""

from __future__ import annotations

import pytest
import torch

from posthoc_vq.quantize.latent.rowpool import RowPool


@pytest.mark.parametrize("threads", [1, 3])
def test_map_covers_the_rows_in_order_and_restores_threads(threads):
    before = torch.get_num_threads()
    seen = []
    with RowPool(threads) as pool:
        out = pool.map(lambda s, e: (s, e, torch.get_num_threads()), 10, 4)
        seen.append(torch.get_num_threads())
    assert out == [(0, 4, 1), (4, 8, 1), (8, 10, 1)]
    assert seen == [1]
    assert torch.get_num_threads() == before


def test_an_error_in_a_piece_propagates_and_threads_are_restored():
    before = torch.get_num_threads()

    def fail(s: int, e: int) -> None:
        raise ValueError(f"piece {s}:{e}")

    with pytest.raises(ValueError, match="piece 0:5"), RowPool(2) as pool:
        pool.map(fail, 5, 5)
    assert torch.get_num_threads() == before
