"""The ``dtype`` fixture of the SpMV tests: every format and kernel is checked in each values dtype."""

import numpy as np
import pytest

from tests.methods.spmv.cases import VALUE_DTYPES


@pytest.fixture(params=VALUE_DTYPES, ids=lambda dtype: np.dtype(dtype).name)
def dtype(request):
    """The values dtype, ``np.float64`` then ``np.float32``; its error bound is ``cases.TOLERANCE[dtype]``."""
    return request.param
