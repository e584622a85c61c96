# SPDX-License-Identifier: MIT
# Bad input: each example must stop before any training with one line on stderr saying what
# went wrong, and the exit status of examples/support/options.hpp (1: the run failed, 2: a bad
# command line). cmake/check_run.cmake runs the program and compares both.
function(bilevel_bad_input example test rc expect)
  string(REPLACE ";" "|" args "${ARGN}")
  add_test(NAME example.${example}.bad_input.${test}
           COMMAND ${CMAKE_COMMAND} -DPROGRAM=$<TARGET_FILE:${example}> "-DARGS=${args}" -DEXPECT_RC=${rc}
                   "-DEXPECT=${expect}" -DONE_LINE=ON -DSKIP_RC=77 -P ${PROJECT_SOURCE_DIR}/cmake/check_run.cmake)
  set_tests_properties(example.${example}.bad_input.${test} PROPERTIES TIMEOUT 60 SKIP_REGULAR_EXPRESSION "SKIPPED:")
endfunction()
set(noise 02_label_noise_fashion_mnist)
bilevel_bad_input(${noise} noise_above 2 "--noise: '1.5' is not a number in [0, 1)" --noise 1.5)
bilevel_bad_input(${noise} noise_below 2 "--noise: '-0.1' is not a number in [0, 1)" --noise -0.1)
bilevel_bad_input(${noise} unknown_noise_type 2 "--noise-type: 'bogus' is not one of symmetric|pair|next"
                  --noise-type bogus)
bilevel_bad_input(${noise} negative_epochs 2 "--epochs: '-1' is not a whole number in [1," --epochs -1)
bilevel_bad_input(${noise} seeds_not_numbers 2 "--seeds: 'abc' is not a whole number" --seeds abc)
# The output directory is made once the data set is found: without it, this one is Skipped.
bilevel_bad_input(${noise} unwritable_out 1 "--out '/proc/nope': cannot create the directory" --out /proc/nope
                  --skip-without-data)
bilevel_bad_input(${noise} missing_data 1 "--data '/nonexistent': no such directory" --data /nonexistent)
# A truncated train-images-idx3-ubyte.gz (cut from the real file, at test time): the
# library's idx_error, naming the file. Skipped where the data set is not installed.
set(truncated ${CMAKE_CURRENT_BINARY_DIR}/truncated_fashion_mnist)
add_test(NAME example.${noise}.bad_input.truncated_data
         COMMAND ${CMAKE_COMMAND} -DPROGRAM=$<TARGET_FILE:${noise}> "-DARGS=--data|${truncated}|--out|${truncated}/out"
                 -DEXPECT_RC=1 "-DEXPECT=train-images-idx3-ubyte.gz' is corrupt or truncated" -DONE_LINE=ON
                 -DFIXTURE=truncated_data -DWORK_DIR=${truncated} -P ${PROJECT_SOURCE_DIR}/cmake/check_run.cmake)
set_tests_properties(example.${noise}.bad_input.truncated_data PROPERTIES TIMEOUT 60 SKIP_REGULAR_EXPRESSION "SKIPPED:")
foreach(example 03_class_imbalance_fashion_mnist 04_architecture_search_fashion_mnist)
  bilevel_bad_input(${example} negative_epochs 2 "--epochs: '-1' is not a whole number in [1," --epochs -1)
  bilevel_bad_input(${example} missing_data 1 "--data '/nonexistent': no such directory" --data /nonexistent)
endforeach()
foreach(example ${noise} 03_class_imbalance_fashion_mnist)
  bilevel_bad_input(${example} unknown_network 2 "--network: 'nosuch' is not one of mlp|lenet|resnet20|resnet32|wrn"
                    --network nosuch)
endforeach()
bilevel_bad_input(03_class_imbalance_fashion_mnist imbalance_below_one 2 "--imbalance: '0.5' is not a number in [1,"
                  --imbalance 0.5)
bilevel_bad_input(04_architecture_search_fashion_mnist zero_retrain_epochs 2
                  "--retrain-epochs: '0' is not a whole number in [1," --retrain-epochs 0)
bilevel_bad_input(04_architecture_search_fashion_mnist unknown_space 2 "--space: 'nosuch' is not one of mlp|darts"
                  --space nosuch)
bilevel_bad_input(04_architecture_search_fashion_mnist zero_cells 2 "--cells: '0' is not a whole number in [1, 20]"
                  --space darts --cells 0)
bilevel_bad_input(04_architecture_search_fashion_mnist cells_without_darts 2
                  "--cells: sizes the DARTS space: give --space darts" --cells 3)
bilevel_bad_input(01_ridge_hyperparameters zero_epochs 2 "--epochs: '0' is not a whole number in [1," --epochs 0)
