# SPDX-License-Identifier: MIT
# Compile-fail tests: each source must fail to compile, and the compiler's output must contain
# the text on its "// expected-error:" line, so the message a user sees is itself under test.
#
# bilevel_compile_fail_tests(PREFIX <p> LINK <target> SOURCES <file>...)
#   For each file <name>.<ext>: an object library compile_fail_<p><name>, built only by its
#   test, and the ctest entry compile_fail.<p><name>, which builds it and passes when the
#   output matches.
function(bilevel_compile_fail_tests)
  cmake_parse_arguments(PARSE_ARGV 0 arg "" "PREFIX;LINK" "SOURCES")
  foreach(source IN LISTS arg_SOURCES)
    get_filename_component(name ${source} NAME_WE)
    set(target compile_fail_${arg_PREFIX}${name})
    file(STRINGS ${source} expected REGEX "// expected-error: ")
    string(REGEX REPLACE ".*// expected-error: " "" expected "${expected}")
    string(REGEX REPLACE "([][.*+?^$()|\\\\])" "\\\\\\1" expected "${expected}")
    add_library(${target} OBJECT EXCLUDE_FROM_ALL ${source})
    target_link_libraries(${target} PRIVATE ${arg_LINK})
    add_test(NAME compile_fail.${arg_PREFIX}${name}
             COMMAND ${CMAKE_COMMAND} --build ${CMAKE_BINARY_DIR} --target ${target} --config $<CONFIG>)
    set_tests_properties(compile_fail.${arg_PREFIX}${name} PROPERTIES PASS_REGULAR_EXPRESSION "${expected}"
                         RUN_SERIAL TRUE)
  endforeach()
endfunction()
