# SPDX-License-Identifier: MIT
# Runs a program and checks its exit status and what it printed; run by ctest as
#   cmake -DPROGRAM=... [-DARGS=a|b|c] [-DEXPECT_RC=N] [-DEXPECT=text|text] [-DEXPECT_SHAPE=text]
#         [-DONE_LINE=ON] [-DFIXTURE=truncated_data -DWORK_DIR=...] -P check_run.cmake
#  ARGS          the program's arguments, separated by | (a ; would split them on the way here);
#  EXPECT_RC     the exit status it must return (default 0);
#  EXPECT        texts, separated by |, each of which its output (stdout and stderr) must contain;
#  EXPECT_SHAPE  a line its output must contain, every number in which may be any number: what a
#                program prints after round-off, its words and layout checked, not its digits;
#  ONE_LINE      its stderr must be exactly one line (what went wrong, said once);
#  SKIP_RC       an exit status that means the program could not run here (77 in the examples):
#                then print SKIPPED and its output, for the test's SKIP_REGULAR_EXPRESSION;
#  FIXTURE       truncated_data: first make WORK_DIR a copy of the Fashion-MNIST directory
#                ($BILEVEL_FASHION_MNIST_DIR, else the Debian package's) whose
#                train-images-idx3-ubyte.gz is cut to 4096 bytes; prints SKIPPED (which the test
#                reports as Skipped) where there is no such file to cut.
# Each check exits with FATAL_ERROR saying what was expected and what came.
cmake_minimum_required(VERSION 3.25)

if(FIXTURE STREQUAL "truncated_data")
  set(source "$ENV{BILEVEL_FASHION_MNIST_DIR}")
  if(source STREQUAL "")
    set(source /usr/share/datasets/fashion-mnist)
  endif()
  if(NOT EXISTS "${source}/train-images-idx3-ubyte.gz")
    message("SKIPPED: no ${source}/train-images-idx3-ubyte.gz to truncate")
    return()
  endif()
  file(REMOVE_RECURSE "${WORK_DIR}")
  file(MAKE_DIRECTORY "${WORK_DIR}")
  foreach(stem train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)
    foreach(name ${stem} ${stem}.gz)
      if(EXISTS "${source}/${name}")
        file(COPY "${source}/${name}" DESTINATION "${WORK_DIR}")
      endif()
    endforeach()
  endforeach()
  # CMake writes no binary files; head -c copies the first bytes as they are.
  execute_process(COMMAND head -c 4096 "${source}/train-images-idx3-ubyte.gz"
                  OUTPUT_FILE "${WORK_DIR}/train-images-idx3-ubyte.gz" RESULT_VARIABLE cut)
  if(NOT cut EQUAL 0)
    message(FATAL_ERROR "could not cut ${source}/train-images-idx3-ubyte.gz: ${cut}")
  endif()
elseif(DEFINED FIXTURE)
  message(FATAL_ERROR "unknown FIXTURE '${FIXTURE}'")
endif()

if(NOT DEFINED EXPECT_RC)
  set(EXPECT_RC 0)
endif()
string(REPLACE "|" ";" args "${ARGS}")
execute_process(COMMAND "${PROGRAM}" ${args} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
set(all "${out}${err}")
string(REPLACE ";" " " shown "${args}")
set(what "${PROGRAM} ${shown}\n--- stdout:\n${out}--- stderr:\n${err}---")

if(DEFINED SKIP_RC AND rc STREQUAL "${SKIP_RC}")
  message("SKIPPED: ${what}")
  return()
endif()
if(NOT rc STREQUAL "${EXPECT_RC}")
  message(FATAL_ERROR "exit status ${rc}, expected ${EXPECT_RC}: ${what}")
endif()
if(DEFINED EXPECT)
  string(REPLACE "|" ";" texts "${EXPECT}")
  foreach(text IN LISTS texts)
    string(FIND "${all}" "${text}" at)
    if(at EQUAL -1)
      message(FATAL_ERROR "output lacks '${text}': ${what}")
    endif()
  endforeach()
endif()
if(DEFINED EXPECT_SHAPE)
  # Numbers become a placeholder, the rest is escaped, then each placeholder matches any number.
  string(REGEX REPLACE "[-+]?[0-9]+(\\.[0-9]+)?([eE][-+]?[0-9]+)?" "<number>" shape "${EXPECT_SHAPE}")
  string(REGEX REPLACE "([][.*+?^$()|\\\\])" "\\\\\\1" shape "${shape}")
  # (No groups: CMake's regular expressions allow at most nine.)
  string(REPLACE "<number>" "[-+]?[0-9][-+0-9.eE]*" shape "${shape}")
  if(NOT all MATCHES "${shape}")
    message(FATAL_ERROR "output lacks a line shaped like '${EXPECT_SHAPE}' (numbers aside): ${what}")
  endif()
endif()
if(ONE_LINE)
  string(REGEX MATCHALL "\n" newlines "${err}")
  list(LENGTH newlines lines)
  if(NOT lines EQUAL 1 OR NOT err MATCHES "\n$")
    message(FATAL_ERROR "stderr is not one line: ${what}")
  endif()
endif()
message("${what}")
