# SPDX-License-Identifier: MIT
# expect("<if() condition>"): stop configuring the consumer with a message unless it holds.
function(expect condition)
  cmake_language(EVAL CODE "if(NOT (${condition}))
  message(FATAL_ERROR [==[consumer: expected ${condition}]==])
endif()")
endfunction()
