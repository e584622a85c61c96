# SPDX-License-Identifier: MIT
# Runs `MPIEXEC -np 2 PROGRAM MODE` with a time limit and requires that it stops by itself,
# non-zero, printing EXPECT (a regular expression) on stdout or stderr.
execute_process(COMMAND ${MPIEXEC} ${NUMPROC_FLAG} 2 ${PROGRAM} ${MODE}
                TIMEOUT ${LIMIT} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
set(all "${out}\n${err}")
if(rc MATCHES "timeout")
  message(FATAL_ERROR "the ranks were still running after ${LIMIT} s: a rank is waiting for one that failed\n${all}")
endif()
if(rc EQUAL 0)
  message(FATAL_ERROR "exit code 0 although rank 1 failed\n${all}")
endif()
if(NOT all MATCHES "${EXPECT}")
  message(FATAL_ERROR "exit code ${rc}, but the output does not match '${EXPECT}':\n${all}")
endif()
message(STATUS "stopped with exit code ${rc}, as required")
