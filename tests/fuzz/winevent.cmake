# libFuzzer harness for the Windows-event translator (GB_FUZZ=ON, clang). It runs for the same
# 30 s as the other harnesses; new inputs go to a corpus in the build tree, the seeds in
# corpus/winevent (one per event of the domain brief's tables) are read, never written.
if(GB_FUZZ)
  add_executable(fuzz_winevent ${CMAKE_CURRENT_LIST_DIR}/fuzz_winevent.c)
  target_link_libraries(fuzz_winevent PRIVATE gb_domain gb_util gb_warnings)
  target_link_options(fuzz_winevent PRIVATE -fsanitize=fuzzer)
  set(GB_FUZZ_WINEVENT_WORK ${CMAKE_CURRENT_BINARY_DIR}/fuzz-corpus/winevent)
  file(MAKE_DIRECTORY ${GB_FUZZ_WINEVENT_WORK}/corpus ${GB_FUZZ_WINEVENT_WORK}/artifacts)
  add_test(NAME fuzz.winevent
           COMMAND fuzz_winevent -max_total_time=30 -timeout=10 -max_len=4096
                   -artifact_prefix=${GB_FUZZ_WINEVENT_WORK}/artifacts/
                   ${GB_FUZZ_WINEVENT_WORK}/corpus ${CMAKE_CURRENT_LIST_DIR}/corpus/winevent)
  set_tests_properties(fuzz.winevent PROPERTIES LABELS fuzz TIMEOUT 120)
endif()
