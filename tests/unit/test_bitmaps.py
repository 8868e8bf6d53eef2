"""The numpy <-> Arrow boolean helpers equal pyarrow's own conversions, slices and nulls included."""

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlinfra_ray.bitmaps import boolean, bools, masked, valid

MAYBE_BOOLS = st.lists(st.one_of(st.none(), st.booleans()), max_size=80)


@settings(max_examples=200, deadline=None)
@given(MAYBE_BOOLS, st.integers(0, 20), st.integers(0, 80))
def test_bools_and_valid_read_slices_and_nulls_like_pyarrow(values, start, length):
    arr = pa.array(values, pa.bool_()).slice(min(start, len(values)), length)
    assert bools(arr).tolist() == pc.fill_null(arr, False).to_pylist()
    assert valid(arr).tolist() == pc.is_valid(arr).to_pylist()
    chunked = pa.chunked_array([arr, arr], pa.bool_())
    assert bools(chunked).tolist() == pc.fill_null(chunked, False).to_pylist()


@settings(max_examples=200, deadline=None)
@given(MAYBE_BOOLS)
def test_boolean_and_masked_build_what_pa_array_builds(values):
    ok = np.array([v is not None for v in values], np.bool_)
    flags = np.array([bool(v) for v in values], np.bool_)
    assert boolean(flags, ok).equals(pa.array(flags, mask=~ok))
    assert boolean(flags).equals(pa.array(flags))
    ints = np.arange(len(values), dtype=np.int64) * 3
    assert masked(ints, pa.int64(), ok).equals(pa.array(ints, mask=~ok))
    stamps = masked(ints, pa.timestamp("us"), ok)
    assert stamps.equals(pa.array(ints, pa.timestamp("us"), mask=~ok))


@pytest.mark.parametrize("arr", [
    pa.DictionaryArray.from_arrays(pa.array([0, None, 1, None], pa.int32()), pa.array(["a", "b"])),
    pa.nulls(3), pa.array([], pa.string()), pa.array(["x", None, "y"]).slice(1)])
def test_valid_of_any_array_is_its_index_or_value_validity(arr):
    assert valid(arr).tolist() == pc.is_valid(arr).to_pylist()
