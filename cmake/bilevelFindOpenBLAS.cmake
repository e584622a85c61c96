# SPDX-License-Identifier: MIT
# Shared by the components that need OpenBLAS (xtensor, eigen_blas): FindBLAS restricted to
# OpenBLAS, in a function, so the consumer's own BLA_VENDOR (and BLAS_* variables) are left as
# they were; BLAS::BLAS is an imported target, which belongs to the directory, not to the
# function's scope. Sets bilevel_<component>_NOT_FOUND_MESSAGE and _bilevel_openblas_found
# FALSE in the caller when OpenBLAS is missing (the caller then returns).
function(_bilevel_find_openblas_for component)
  set(BLA_VENDOR OpenBLAS)
  set(_bilevel_openblas_found FALSE PARENT_SCOPE)
  find_dependency(BLAS)  # on failure: returns from this function before the lines below
  set(_bilevel_openblas_found TRUE PARENT_SCOPE)
endfunction()
macro(_bilevel_require_openblas component)
  _bilevel_find_openblas_for(${component})
  if(NOT _bilevel_openblas_found)
    set(bilevel_${component}_NOT_FOUND_MESSAGE
        "bilevel's component \"${component}\" is not available because dependency BLAS (BLA_VENDOR OpenBLAS) could not be found")
  endif()
endmacro()
