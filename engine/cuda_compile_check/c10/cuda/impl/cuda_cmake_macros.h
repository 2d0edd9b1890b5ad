// The one libtorch header that a CUDA build generates and Debian's CPU-only
// libtorch-dev does not ship (it ships every other c10/cuda and ATen/cuda
// header). Used only by the compile check of the CUDA paths in
// engine/CMakeLists.txt; a CUDA libtorch brings its own.
#pragma once
#define C10_CUDA_BUILD_SHARED_LIBS
