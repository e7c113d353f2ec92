// Operator schemas of torch.ops.lstm_ext and the Python module that loads them.
//
// The layer operators work on PyTorch's packed, time-major layout (see lstm_layer.h); the
// Python package turns batch-first, seq-first and PackedSequence inputs into it.
#include <Python.h>
#include <torch/library.h>

extern "C" {
// Importing lstm_ext._C runs the static registrations below; the module itself is empty.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(lstm_ext, m) {
  // Returns (output (N, R), h_n (B, R), c_n (B, H), gates (N, 4H), cells (N, H), hidden (N, H));
  // the last three are saved for backward, empty (0,) unless save_for_backward.
  m.def(
      "lstm_layer_forward(Tensor input, Tensor batch_sizes, Tensor h0, Tensor c0, Tensor w_ih, "
      "Tensor w_hh, Tensor? b_ih, Tensor? b_hh, Tensor? w_hr, bool reverse, "
      "bool save_for_backward) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  // Returns (grad_input, grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_bias, grad_w_hr);
  // grad_input is empty (0,) unless grad_input_mask, the weight gradients unless
  // grad_weights_mask.
  m.def(
      "lstm_layer_backward(Tensor grad_output, Tensor grad_h_n, Tensor grad_c_n, Tensor input, "
      "Tensor batch_sizes, Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh, Tensor? w_hr, "
      "Tensor output, Tensor gates, Tensor cells, Tensor hidden, bool reverse, "
      "bool grad_input_mask, bool grad_weights_mask) -> "
      "(Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
}
