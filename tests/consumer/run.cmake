# SPDX-License-Identifier: MIT
# Drives one consumer test (tests/CMakeLists.txt, package.*): configures, builds and runs a
# small consumer project the way a user would, in a fresh directory. Invoked by ctest as
#   cmake -DNAME=<test> -DPROJECT_DIR=<consumer project> -DWORK_DIR=<scratch dir>
#         [-DINSTALL_FROM=<bilevel build dir>] [-DBILEVEL_SOURCE_DIR=<bilevel sources>]
#         [-DCXX_COMPILER=...] [-DGENERATOR=...] [-DLAUNCHER=<ccache>] [-DPREFIX_PATH=a|b]
#         [-DCUDA_COMPILER=<nvcc>] [-DCUDA_ARCHITECTURES=a|b]
#         -P run.cmake
# INSTALL_FROM: `cmake --install` that build tree into WORK_DIR/prefix first and put the
# prefix first on CMAKE_PREFIX_PATH (the find_package consumers). BILEVEL_SOURCE_DIR is
# passed on to the consumer (the add_subdirectory and FetchContent consumers). The consumer
# is built with the main build's compiler, generator and compiler launcher, in Release. Fails
# if any step fails, if the consumer program exits non-zero (its result was off), or if the
# consumer's build tree holds any of bilevel's own tests, examples or benchmarks (a project
# consuming bilevel must not build them).
cmake_minimum_required(VERSION 3.25)
foreach(var NAME PROJECT_DIR WORK_DIR)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "run.cmake: -D${var}=... is required")
  endif()
endforeach()
string(TIMESTAMP start "%s")
macro(step what)
  string(TIMESTAMP now "%s")
  math(EXPR seconds "${now} - ${start}")
  message(STATUS "${NAME}: ${what} (${seconds}s so far)")
endmacro()

file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR})
set(prefix_path "")
if(DEFINED PREFIX_PATH AND NOT PREFIX_PATH STREQUAL "")
  string(REPLACE "|" ";" prefix_path "${PREFIX_PATH}")
endif()
if(DEFINED INSTALL_FROM)
  step("installing ${INSTALL_FROM} into ${WORK_DIR}/prefix")
  execute_process(COMMAND ${CMAKE_COMMAND} --install ${INSTALL_FROM} --prefix ${WORK_DIR}/prefix
                  RESULT_VARIABLE rc OUTPUT_QUIET)
  if(rc)
    message(FATAL_ERROR "${NAME}: installing into ${WORK_DIR}/prefix failed")
  endif()
  list(PREPEND prefix_path ${WORK_DIR}/prefix)
endif()

# Settings go in an initial-cache file: no quoting trouble with lists or spaces.
set(init ${WORK_DIR}/init.cmake)
file(WRITE ${init} "set(CMAKE_BUILD_TYPE Release CACHE STRING \"\")\n")
function(cache var value)
  file(APPEND ${init} "set(${var} [==[${value}]==] CACHE STRING \"\")\n")
endfunction()
if(prefix_path)
  cache(CMAKE_PREFIX_PATH "${prefix_path}")
endif()
if(CXX_COMPILER)
  cache(CMAKE_CXX_COMPILER "${CXX_COMPILER}")
endif()
if(LAUNCHER)
  cache(CMAKE_CXX_COMPILER_LAUNCHER "${LAUNCHER}")
endif()
if(CUDA_COMPILER)  # a CUDA consumer: the same nvcc and architectures as the main build
  cache(CMAKE_CUDA_COMPILER "${CUDA_COMPILER}")
  if(CUDA_ARCHITECTURES)
    string(REPLACE "|" ";" archs "${CUDA_ARCHITECTURES}")
    cache(CMAKE_CUDA_ARCHITECTURES "${archs}")
  endif()
  if(LAUNCHER)
    cache(CMAKE_CUDA_COMPILER_LAUNCHER "${LAUNCHER}")
  endif()
endif()
if(BILEVEL_SOURCE_DIR)
  cache(BILEVEL_SOURCE_DIR "${BILEVEL_SOURCE_DIR}")
endif()
set(generator "")
if(GENERATOR)
  set(generator -G ${GENERATOR})
endif()

step("configuring ${PROJECT_DIR}")
execute_process(COMMAND ${CMAKE_COMMAND} -S ${PROJECT_DIR} -B ${WORK_DIR}/build ${generator} -C ${init}
                RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "${NAME}: configuring the consumer failed")
endif()
step("building")
execute_process(COMMAND ${CMAKE_COMMAND} --build ${WORK_DIR}/build RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "${NAME}: building the consumer failed")
endif()

# Nothing of bilevel's own test suite, examples or benchmarks may have been configured or
# built (a target leaves at least a CMakeFiles/<target>.dir behind).
file(GLOB_RECURSE own LIST_DIRECTORIES true RELATIVE ${WORK_DIR}/build ${WORK_DIR}/build/*)
list(FILTER own INCLUDE REGEX "(^|/)(bilevel_tests|compile_fail_|bench_|[0-9][0-9]_)[^/]*$")
if(own)
  list(JOIN own "\n  " own)
  message(FATAL_ERROR "${NAME}: the consumer's build tree holds bilevel's own tests/examples/benchmarks:\n  ${own}")
endif()

step("running the consumer")
execute_process(COMMAND ${WORK_DIR}/build/consumer RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "${NAME}: the consumer ran but its result was off (exit ${rc})")
endif()
step("passed")
