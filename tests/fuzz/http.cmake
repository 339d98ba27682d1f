# libFuzzer harness for the http layer (GB_FUZZ=ON, clang). New inputs go to a corpus in the
# build tree; the seeds in corpus/http_request are read, never written.
if(GB_FUZZ)
  add_executable(fuzz_http_request fuzz/fuzz_http_request.c)
  target_link_libraries(fuzz_http_request PRIVATE gb_http gb_warnings)
  target_link_options(fuzz_http_request PRIVATE -fsanitize=fuzzer)
  set(GB_FUZZ_HTTP_CORPUS ${CMAKE_CURRENT_BINARY_DIR}/fuzz-corpus/http_request)
  file(MAKE_DIRECTORY ${GB_FUZZ_HTTP_CORPUS})
  add_test(NAME fuzz.http_request
           COMMAND fuzz_http_request -max_total_time=30 -timeout=10 ${GB_FUZZ_HTTP_CORPUS}
                   ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/corpus/http_request)
  set_tests_properties(fuzz.http_request PROPERTIES LABELS fuzz TIMEOUT 120)
endif()
