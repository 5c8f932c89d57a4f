"""The blocked floor of tools/hbp_preprocess_floor.py does the conversion it claims to bound."""


import numpy as np
import pytest
import scipy.sparse as sp

from tests.tools import load_tool

floor = load_tool("hbp_preprocess_floor")


@pytest.mark.parametrize(("shape", "block"), [((300, 500), (64, 128)), ((1000, 70), (1000, 64)), ((5, 5), (2, 1))])
def test_blocked_floor_groups_nonzeros_by_block_rows_in_order(shape, block):
    matrix = sp.random(*shape, density=0.05, format="csr", random_state=7)
    cols, values = floor.blocked_floor(matrix, *block)
    coo = matrix.tocoo()
    height, width = block
    order = np.lexsort((coo.col, coo.row, coo.col // width, coo.row // height))
    np.testing.assert_array_equal(cols, coo.col[order] % width)
    np.testing.assert_array_equal(values, coo.data[order])


def test_blocked_floor_refuses_a_width_that_is_not_a_power_of_two():
    with pytest.raises(ValueError, match="power-of-two"):
        floor.blocked_floor(sp.eye(4, format="csr"), 2, 3)
