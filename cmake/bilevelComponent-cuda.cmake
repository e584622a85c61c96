# SPDX-License-Identifier: MIT
# Component "cuda" of the installed bilevel package: declared, not yet provided. The CUDA
# policy has no exported target yet, so find_package(bilevel COMPONENTS cuda) reports the
# component as not found (bilevel_cuda_FOUND FALSE; bilevel_FOUND FALSE only when it was
# required). When the CUDA target lands, this file finds its dependencies (CUDAToolkit),
# includes its export file and sets bilevel_cuda_FOUND TRUE, like bilevelComponent-xtensor.cmake.
set(bilevel_cuda_NOT_FOUND_MESSAGE
    "bilevel's component \"cuda\" is not available: the CUDA back end is not packaged yet (no bilevel::cuda target)")
