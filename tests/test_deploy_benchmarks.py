"""benchmarks/bench_streaming.py and bench_deploy.py: a tiny streaming run times both streams and
prints its table, a stream that disagrees with nn.LSTM's is not timed; a tiny run of the deploy
benchmark through ONNX (its AOTI path compiles a package: tests/test_aoti.py covers that); the
alternating timer of both."""

import pytest

from benchmarks import alternating, bench_deploy, bench_streaming

TINY = ["--sizes", "plain", "--chunks", "1,3", "--calls", "5"]


def test_tiny_run_times_both_streams(capsys):
    rows = bench_streaming.main(TINY)
    assert [(row["size"].name, row["chunk"]) for row in rows] == [("plain", 1), ("plain", 3)]
    assert all(row["lstm_ext"] > 0 and row["torch"] > 0 for row in rows)
    assert "plain I=256 H=256 P=0" in capsys.readouterr().out


def test_wrong_stream_stops_the_run(monkeypatch):
    make_streams = bench_streaming.make_streams

    def with_wrong_weights(*args):
        ours, reference, chunks = make_streams(*args)
        ours.lstm.weight_hh_l0.data.mul_(1.01)
        return ours, reference, chunks

    monkeypatch.setattr(bench_streaming, "make_streams", with_wrong_weights)
    with pytest.raises(SystemExit) as stopped:
        bench_streaming.main(TINY)
    assert stopped.value.code == 1


def test_deploy_options_parse():
    args = bench_deploy.parse_args(["--sizes", "speech", "--batch", "1,8", "--steps", "30"])
    assert (args.sizes, args.batch, args.steps) == (["speech"], [1, 8], 30)
    assert args.paths == ["aoti", "onnx"] and set(bench_deploy.TAGGERS) == {
        "small",
        "speech",
        "plain",
    }


def test_tiny_deploy_run_times_eager_and_onnxruntime(capsys):
    rows = bench_deploy.main(
        ["--sizes", "small", "--paths", "onnx", "--batch", "2", "--steps", "5", "--calls", "3"]
    )
    assert [(row["size"], row["batch"], row["steps"]) for row in rows] == [("small", 2, 5)]
    assert rows[0]["eager"] > 0 and rows[0]["onnx"] > 0
    assert "small       2     5" in capsys.readouterr().out


def test_alternating_timer_feeds_each_round_one_input_and_rotates_the_order():
    calls = []
    runs = {
        "a": lambda input: calls.append(("a", input)),
        "b": lambda input: calls.append(("b", input)),
    }
    medians = alternating.time_alternating(runs, [1, 2, 3], calls=4, warmup_calls=1)
    assert set(medians) == {"a", "b"} and all(median >= 0 for median in medians.values())
    assert calls == [
        ("a", 1),
        ("b", 1),
        ("a", 2),
        ("b", 2),
        ("b", 3),
        ("a", 3),
        ("a", 1),
        ("b", 1),
        ("b", 2),
        ("a", 2),
    ]
