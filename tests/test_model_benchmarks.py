"""benchmarks/bench_models.py: a tiny run times both modules in both modes, in MODELS' order, and
prints its table and summary; a module that disagrees with nn.LSTM is not timed; unknown models
are refused; the models lie off the presets' grid."""

import pytest

from benchmarks import bench_models
from benchmarks.configs import PRESETS

pytestmark = pytest.mark.usefixtures("benchmark_in_this_process")

TINY = ["--models", "sensor-series,keyword-spotting", "--min-run-time", "0.01"]


def test_tiny_run_times_both_modules_in_both_modes(capsys):
    rows = bench_models.main(TINY)
    assert [row["model"].name for row in rows] == ["keyword-spotting", "sensor-series"]
    for row in rows:
        for mode in bench_models.MODES:
            assert row[mode]["lstm_ext"] > 0 and row[mode]["nn.LSTM"] > 0
    out = capsys.readouterr().out
    assert "sensor-series        B=1 T=1000 I=8 H=50" in out
    assert "forward: at least as fast at" in out and "training: at least as fast at" in out


def test_a_module_that_disagrees_is_not_timed(monkeypatch, capsys):
    make_pair = bench_models.make_pair

    def with_wrong_weights(model):
        reference, ours, x = make_pair(model)
        ours.weight_hh_l0.data.mul_(1.01)
        return reference, ours, x

    monkeypatch.setattr(bench_models, "make_pair", with_wrong_weights)
    with pytest.raises(SystemExit) as stopped:
        bench_models.main(TINY)
    assert stopped.value.code == 1
    assert "disagrees with nn.LSTM" in capsys.readouterr().err


def test_unknown_models_are_refused(capsys):
    with pytest.raises(SystemExit) as stopped:
        bench_models.parse_args(["--models", "tagger,no-such-model"])
    assert stopped.value.code == 2
    assert "unknown models: no-such-model" in capsys.readouterr().err


def test_the_models_lie_off_the_presets_grid():
    preset_sizes = {
        (size.batch, size.steps, size.input_size, size.hidden_size)
        for preset in PRESETS.values()
        for size in preset.sizes
    }
    for model in bench_models.MODELS:
        size = (model.batch, model.steps, model.input_size, model.hidden_size)
        assert size not in preset_sizes, model.name
