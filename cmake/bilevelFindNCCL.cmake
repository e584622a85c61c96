# SPDX-License-Identifier: MIT
# Finding NCCL, shared by this build (cmake/BilevelCuda.cmake) and the installed package's
# component "nccl" (cmake/bilevelComponent-nccl.cmake), so both look in the same places: NCCL
# comes with recent CUDA toolkits (lib/, next to lib64/), from the package index's nvidia-nccl
# wheel (point NCCL_HOME at its nvidia/nccl folder) or from a system package. Needs
# find_package(CUDAToolkit) first. Sets the cache variables BILEVEL_NCCL_INCLUDE_DIR and
# BILEVEL_NCCL_LIBRARY (…-NOTFOUND when missing; a user may set them by hand).
macro(bilevel_find_nccl)
  find_path(BILEVEL_NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS} ENV NCCL_HOME PATH_SUFFIXES include)
  find_library(BILEVEL_NCCL_LIBRARY nccl HINTS ${CUDAToolkit_LIBRARY_DIR} ${CUDAToolkit_LIBRARY_ROOT}/lib
               ${CUDAToolkit_LIBRARY_ROOT}/lib64 ENV NCCL_HOME PATH_SUFFIXES lib lib64)
endmacro()
