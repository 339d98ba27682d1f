# libFuzzer harness for the Autopilot CSV reader (GB_FUZZ=ON, clang). New inputs go to a corpus
# in the build tree; the seeds in corpus/autopilot_csv are read, never written.
if(GB_FUZZ)
  add_executable(fuzz_autopilot_csv fuzz/fuzz_autopilot_csv.c)
  target_link_libraries(fuzz_autopilot_csv PRIVATE gb_protocol gb_warnings)
  target_link_options(fuzz_autopilot_csv PRIVATE -fsanitize=fuzzer)
  set(GB_FUZZ_CSV_WORK ${CMAKE_CURRENT_BINARY_DIR}/fuzz-corpus/autopilot_csv)
  file(MAKE_DIRECTORY ${GB_FUZZ_CSV_WORK}/corpus ${GB_FUZZ_CSV_WORK}/artifacts)
  add_test(NAME fuzz.autopilot_csv
           COMMAND fuzz_autopilot_csv -max_total_time=30 -timeout=10 -max_len=16384
                   -artifact_prefix=${GB_FUZZ_CSV_WORK}/artifacts/
                   ${GB_FUZZ_CSV_WORK}/corpus ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/corpus/autopilot_csv)
  set_tests_properties(fuzz.autopilot_csv PROPERTIES LABELS fuzz TIMEOUT 120)
endif()
