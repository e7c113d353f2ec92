"""lstm_ext.StreamingLSTM: a stream fed in chunks gives the whole sequence's outputs and final
state, for every layout lstm_ext.LSTM takes; bidirectional LSTMs are refused."""

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_sequence

import lstm_ext

DTYPE = torch.float64
CHUNKS = (1, 4, 2, 7, 1, 5)  # chunk lengths, the whole sequence is their sum


def streaming_lstm(batch_first, **options):
    torch.manual_seed(0)
    return lstm_ext.LSTM(6, 9, num_layers=3, batch_first=batch_first, dtype=DTYPE, **options)


def run_in_chunks(lstm, sequence, time_dim, initial_state=None):
    stream = lstm_ext.StreamingLSTM(lstm)
    stream.state = initial_state
    outputs = [stream(chunk) for chunk in sequence.split(CHUNKS, dim=time_dim)]
    return torch.cat(outputs, dim=time_dim), stream.state


@pytest.mark.parametrize("batch_first", (False, True))
@pytest.mark.parametrize("proj_size", (0, 4))
def test_chunks_give_the_whole_sequence(batch_first, proj_size):
    lstm = streaming_lstm(batch_first, proj_size=proj_size)
    shape = (3, sum(CHUNKS), 6) if batch_first else (sum(CHUNKS), 3, 6)
    sequence = torch.randn(shape, dtype=DTYPE)
    with torch.no_grad():
        expected, (h_n, c_n) = lstm(sequence)
        output, (stream_h, stream_c) = run_in_chunks(lstm, sequence, 1 if batch_first else 0)
    torch.testing.assert_close(output, expected)
    torch.testing.assert_close(stream_h, h_n)
    torch.testing.assert_close(stream_c, c_n)


def test_stream_starts_from_a_given_state_and_resets_to_zeros():
    lstm = streaming_lstm(batch_first=True, proj_size=4)
    sequence = torch.randn(1, sum(CHUNKS), 6, dtype=DTYPE)
    state = (torch.randn(3, 1, 4, dtype=DTYPE), torch.randn(3, 1, 9, dtype=DTYPE))
    with torch.no_grad():
        expected, _ = lstm(sequence, state)
        output, _ = run_in_chunks(lstm, sequence, 1, initial_state=state)
        torch.testing.assert_close(output, expected)
        stream = lstm_ext.StreamingLSTM(lstm)
        stream(sequence[:, :3])
        stream.reset()
        assert stream.state is None
        torch.testing.assert_close(stream(sequence[:, :2]), lstm(sequence[:, :2])[0])


def test_unbatched_and_packed_chunks():
    lstm = streaming_lstm(batch_first=False)
    sequence = torch.randn(sum(CHUNKS), 6, dtype=DTYPE)
    with torch.no_grad():
        expected, (h_n, _) = lstm(sequence)
        output, (stream_h, _) = run_in_chunks(lstm, sequence, 0)
        torch.testing.assert_close(output, expected)
        torch.testing.assert_close(stream_h, h_n)
        # Two streams in one batch, the second ending two steps before the first.
        first, second = torch.randn(6, 6, dtype=DTYPE), torch.randn(4, 6, dtype=DTYPE)
        stream = lstm_ext.StreamingLSTM(lstm)
        stream(pack_sequence([first[:3], second[:3]]))
        stream(pack_sequence([first[3:], second[3:]]))
        _, (whole_h, _) = lstm(pack_sequence([first, second]))
    torch.testing.assert_close(stream.state[0], whole_h)


def test_gradients_flow_through_the_carried_state():
    lstm = streaming_lstm(batch_first=True)
    sequence = torch.randn(2, sum(CHUNKS), 6, dtype=DTYPE)
    output, _ = run_in_chunks(lstm, sequence, 1)
    chunked = torch.autograd.grad(output.square().sum(), lstm.weight_hh_l0)[0]
    expected = torch.autograd.grad(lstm(sequence)[0].square().sum(), lstm.weight_hh_l0)[0]
    torch.testing.assert_close(chunked, expected)


def test_streams_torch_lstm_too():
    torch.manual_seed(0)
    lstm = nn.LSTM(6, 9, num_layers=2, proj_size=4, dtype=DTYPE)
    sequence = torch.randn(sum(CHUNKS), 2, 6, dtype=DTYPE)
    with torch.no_grad():
        output, _ = run_in_chunks(lstm, sequence, 0)
        torch.testing.assert_close(output, lstm(sequence)[0])


@pytest.mark.parametrize("lstm_class", (lstm_ext.LSTM, nn.LSTM))
def test_bidirectional_lstm_is_refused(lstm_class):
    with pytest.raises(ValueError, match="bidirectional LSTM cannot run on a stream"):
        lstm_ext.StreamingLSTM(lstm_class(4, 5, bidirectional=True))
