"""Loading transformers models quietly (recutils.quiet): the caller's logging settings come back."""

import pytest
from transformers.utils import logging as hf_logging

from recutils.quiet import quiet_transformers


@pytest.mark.parametrize("bars", [True, False])
def test_quiet_transformers_restores_the_callers_settings(bars):
    verbosity, enabled = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_info()
    (hf_logging.enable_progress_bar if bars else hf_logging.disable_progress_bar)()
    try:
        with pytest.raises(RuntimeError), quiet_transformers():
            assert hf_logging.get_verbosity() == hf_logging.ERROR
            assert not hf_logging.is_progress_bar_enabled()
            raise RuntimeError("a failed load")
        assert hf_logging.get_verbosity() == hf_logging.INFO and hf_logging.is_progress_bar_enabled() == bars
    finally:
        hf_logging.set_verbosity(verbosity)
        (hf_logging.enable_progress_bar if enabled else hf_logging.disable_progress_bar)()
