"""benchmarks/bench_streaming.py: a tiny run times both streams and prints its table; a stream
that disagrees with nn.LSTM's is not timed."""

import pytest

from benchmarks import bench_streaming

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
