"""lstm_ext.StreamingLSTM: an LSTM run over a stream chunk by chunk, the state carried between.

The outputs of the chunks, concatenated, and the state after the last one are those of the whole
sequence in one call: a unidirectional LSTM's step t reads only steps up to t. A bidirectional
LSTM is not streamable (its reverse direction starts from the end of the sequence, so none of its
outputs is final before the stream ends) and is refused.
"""

from torch import nn


class StreamingLSTM:
    """Feeds chunks of a stream to `lstm` (an lstm_ext.LSTM or a torch.nn.LSTM), carrying
    (h, c) from one chunk to the next.

        stream = lstm_ext.StreamingLSTM(model.lstm)
        for chunk in chunks:              # (B, T_chunk, I) with batch_first, else (T_chunk, B, I)
            output = stream(chunk)        # the outputs of these T_chunk steps
        stream.reset()                    # the next stream starts from zeros again

    `state` is the carried (h, c), None before the first chunk; set it to start a stream from a
    given state. In training, detach it between chunks for truncated backpropagation through
    time: `stream.state = tuple(s.detach() for s in stream.state)`.
    """

    def __init__(self, lstm: nn.Module):
        if lstm.bidirectional:
            raise ValueError(
                "StreamingLSTM: a bidirectional LSTM cannot run on a stream: its reverse "
                "direction reads the sequence from the end, so no output is final before the "
                "stream ends. Run it on whole sequences, or stream a unidirectional LSTM."
            )
        self.lstm = lstm
        self.state = None

    def __call__(self, chunk):
        """The LSTM's output for `chunk` (padded, unbatched or a PackedSequence, as the LSTM
        takes it), run from the state the previous chunk left."""
        output, self.state = self.lstm(chunk, self.state)
        return output

    def reset(self):
        """Forget the carried state: the next chunk starts a new stream from zeros."""
        self.state = None
