# libFuzzer harness for the agent protocol decoder (needs clang: -DGB_FUZZ=ON). The test runs it
# for 30 s from the seed corpus; new inputs go to the build tree, never into the source tree.
if(GB_FUZZ)
  add_executable(fuzz_agent_json ${CMAKE_CURRENT_LIST_DIR}/fuzz_agent_json.c)
  target_link_libraries(fuzz_agent_json PRIVATE gb_protocol gb_warnings)
  target_link_options(fuzz_agent_json PRIVATE -fsanitize=fuzzer)
  set(GB_FUZZ_AGENT_WORK ${CMAKE_CURRENT_BINARY_DIR}/fuzz/agent_json)
  file(MAKE_DIRECTORY ${GB_FUZZ_AGENT_WORK}/corpus ${GB_FUZZ_AGENT_WORK}/artifacts)
  add_test(NAME fuzz.agent_json
           COMMAND fuzz_agent_json -max_total_time=30 -max_len=65536
                   -artifact_prefix=${GB_FUZZ_AGENT_WORK}/artifacts/
                   ${GB_FUZZ_AGENT_WORK}/corpus ${CMAKE_CURRENT_LIST_DIR}/corpus/agent_json)
  set_tests_properties(fuzz.agent_json PROPERTIES LABELS fuzz TIMEOUT 120)
endif()
