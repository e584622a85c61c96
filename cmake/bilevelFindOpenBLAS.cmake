# SPDX-License-Identifier: MIT
# Shared by the components that need OpenBLAS (xtensor, eigen_blas): FindBLAS restricted to
# OpenBLAS, in a function, so the consumer's own BLA_VENDOR (and BLAS_* variables) are left as
# they were; BLAS::BLAS is an imported target, which belongs to the directory, not to the
# function's scope.
function(_bilevel_find_openblas)
  set(BLA_VENDOR OpenBLAS)
  set(_bilevel_openblas_found FALSE PARENT_SCOPE)
  find_dependency(BLAS)  # on failure: returns from this function before the lines below
  set(_bilevel_openblas_found TRUE PARENT_SCOPE)
endfunction()
# A macro, so that its return() leaves the component file that calls it (a macro is expanded
# in place): the component is then reported not found, with the reason set here.
macro(_bilevel_require_openblas component)
  _bilevel_find_openblas()
  if(NOT _bilevel_openblas_found)
    set(bilevel_${component}_NOT_FOUND_MESSAGE
        "bilevel's component \"${component}\" is not available because dependency BLAS (BLA_VENDOR OpenBLAS) could not be found")
    unset(_bilevel_openblas_found)
    return()
  endif()
  unset(_bilevel_openblas_found)
endmacro()
