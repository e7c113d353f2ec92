// Runs the AOTInductor package of the lstm_ext tagger from C++, without Python: reads an input
// tensor saved with torch.save, runs the package on it, writes the scores for torch.load.
//
//   aoti_tagger PACKAGE.pt2 LSTM_EXT_LIBRARY INPUT.pt OUTPUT.pt
//
// LSTM_EXT_LIBRARY is lstm_ext's operator library, lstm_ext/_C*.so of the installed package.
#include <dlfcn.h>

#include <chrono>
#include <fstream>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/csrc/jit/serialization/pickle.h>

namespace {

std::vector<char> read_file(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw std::runtime_error("cannot read " + path);
  return {std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
}

void write_file(const std::string& path, const std::vector<char>& bytes) {
  std::ofstream file(path, std::ios::binary);
  file.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!file) throw std::runtime_error("cannot write " + path);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5) {
    std::cerr << "usage: " << argv[0] << " PACKAGE.pt2 LSTM_EXT_LIBRARY INPUT.pt OUTPUT.pt\n";
    return 2;
  }
  // The package calls torch.ops.lstm_ext.* through its proxy executor, which looks them up in
  // the dispatcher: the library that registers them must be loaded first. RTLD_LAZY because its
  // one Python symbol (the module init's PyModule_Create2) is only called by a Python import.
  if (dlopen(argv[2], RTLD_LAZY | RTLD_GLOBAL) == nullptr) {
    std::cerr << "cannot load lstm_ext's operator library: " << dlerror() << "\n";
    return 1;
  }
  try {
    torch::inductor::AOTIModelPackageLoader loader(argv[1]);
    at::Tensor input = torch::jit::pickle_load(read_file(argv[3])).toTensor();
    c10::InferenceMode inference;
    const auto start = std::chrono::steady_clock::now();
    std::vector<at::Tensor> outputs = loader.run({input});
    const std::chrono::duration<double, std::milli> elapsed =
        std::chrono::steady_clock::now() - start;
    write_file(argv[4], torch::jit::pickle_save(outputs.at(0)));
    std::cout << "input " << input.sizes() << " -> scores " << outputs.at(0).sizes() << " in "
              << elapsed.count() << " ms\n";
  } catch (const std::exception& error) {
    std::cerr << error.what() << "\n";
    return 1;
  }
  return 0;
}
