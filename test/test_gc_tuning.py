"""collector_paused: imports run with the cyclic garbage collector off and are frozen after."""

import gc
import subprocess
import sys

import pytest

from comflp_espnet.gc_tuning import collector_paused


@pytest.fixture
def fresh_module(tmp_path, monkeypatch):
    """The name of a module no one has imported yet."""
    (tmp_path / "gc_tuning_probe.py").write_text("VALUE = [1, 2, 3]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("gc_tuning_probe", None)
    yield "gc_tuning_probe"
    sys.modules.pop("gc_tuning_probe", None)
    gc.unfreeze()


def test_collector_off_inside_and_back_on_after(fresh_module):
    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
        __import__(fresh_module)
    assert gc.isenabled()


def test_objects_alive_after_an_import_are_frozen(fresh_module):
    gc.unfreeze()
    with collector_paused():
        module = __import__(fresh_module)
    assert gc.get_freeze_count() > 0
    assert module.VALUE == [1, 2, 3]


def test_a_block_that_imports_nothing_freezes_nothing():
    import json  # noqa: F401  (imported already: the block below imports nothing new)

    gc.unfreeze()
    with collector_paused():
        import json  # noqa: F401,F811
    assert gc.get_freeze_count() == 0
    assert gc.isenabled()


def test_collector_left_off_when_it_was_off(fresh_module):
    gc.disable()
    try:
        with collector_paused():
            __import__(fresh_module)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_nested_blocks_and_errors_restore_the_collector(fresh_module):
    with pytest.raises(ImportError):
        with collector_paused():
            with collector_paused():
                __import__(fresh_module)
            assert not gc.isenabled()
            __import__("gc_tuning_probe_that_does_not_exist")
    assert gc.isenabled()


def test_loading_a_model_file_imports_torch_paused():
    # The first import of torch in a job happens in a paused block: afterwards torch's
    # objects are frozen and the collector runs again.
    code = (
        "import gc, sys\n"
        "from comflp_espnet.model_io import load_state_dict_file\n"
        "assert 'torch' not in sys.modules\n"
        "try:\n"
        "    load_state_dict_file('no/such/model.pth')\n"
        "except FileNotFoundError:\n"
        "    pass\n"
        "print('torch' in sys.modules, gc.get_freeze_count() > 100000, gc.isenabled())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "True", "True"]
