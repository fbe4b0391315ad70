# -DDFKD_ENABLE_CUDA=ON: the engine against a CUDA LibTorch (a PyTorch
# install's, CMAKE_PREFIX_PATH=$(python3 -c "import torch;
# print(torch.utils.cmake_prefix_path)"); tests/gpu/run.sh does this).
# Defines DFKD_WITH_CUDA (runtime.device cuda) and DFKD_WITH_NCCL
# (dist.backend nccl, ProcessGroupNCCL, which needs nccl.h: set NCCL_ROOT or
# NCCL_INCLUDE_DIR when it is not on the default path).
# Debian's LibTorch is CPU-only: the default build (and CI) leaves this OFF;
# runtime.device cuda is then refused with a message that says how to build.
if(NOT DFKD_ENABLE_CUDA)
  return()
endif()
if(NOT TORCH_CUDA_LIBRARIES AND NOT CAFFE2_USE_CUDA)
  message(FATAL_ERROR
    "DFKD_ENABLE_CUDA=ON, but the LibTorch at ${Torch_DIR} was built without CUDA; "
    "point CMAKE_PREFIX_PATH at a CUDA PyTorch's torch.utils.cmake_prefix_path")
endif()
find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${NCCL_ROOT} ENV NCCL_ROOT ENV NCCL_INCLUDE_DIR
          PATH_SUFFIXES include)
if(NOT NCCL_INCLUDE_DIR)
  message(FATAL_ERROR "DFKD_ENABLE_CUDA=ON: nccl.h not found (set NCCL_ROOT or NCCL_INCLUDE_DIR)")
endif()
message(STATUS "CUDA engine: LibTorch ${Torch_VERSION} at ${Torch_DIR}, nccl.h in ${NCCL_INCLUDE_DIR}")
add_compile_definitions(DFKD_WITH_CUDA DFKD_WITH_NCCL USE_C10D_NCCL)
include_directories(SYSTEM ${NCCL_INCLUDE_DIR})
