"""Benchmarks of lstm_ext against torch.nn.LSTM and the pure-PyTorch reference."""
