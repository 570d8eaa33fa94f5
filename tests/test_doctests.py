"""The examples in docstrings are part of the documentation: they must stay true."""

import doctest

import pytest

import registry.shadow
import training.nab
import training.simulate
import udfs.parse
import udfs.records


@pytest.mark.parametrize("module", [udfs.parse, udfs.records, training.simulate, training.nab, registry.shadow])
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
