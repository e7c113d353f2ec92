// The CUDA step kernels' launchers: one fused pointwise pass of a forward or backward step (see
// lstm_math.h for the params), enqueued on the current CUDA stream of the current device.
// Declared without torch types so that lstm_step_kernels.cu compiles against light headers only.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "core/lstm_math.h"

namespace lstm_ext {
namespace cuda {

void launch_forward_step(const ForwardStepParams<float>& params);
void launch_forward_step(const ForwardStepParams<double>& params);
void launch_forward_step(const ForwardStepParams<c10::Half>& params);
void launch_forward_step(const ForwardStepParams<c10::BFloat16>& params);

void launch_backward_step(const BackwardStepParams<float>& params);
void launch_backward_step(const BackwardStepParams<double>& params);
void launch_backward_step(const BackwardStepParams<c10::Half>& params);
void launch_backward_step(const BackwardStepParams<c10::BFloat16>& params);

}  // namespace cuda
}  // namespace lstm_ext
