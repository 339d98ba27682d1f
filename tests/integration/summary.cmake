# GET /api/v1/summary and /api/v1/timings against a real gloveboxd fed by glovebox-sim: every
# figure equals the simulator's ground truth; the cache follows reports and the clock.
gb_test(integration test_summary gb_util)
add_dependencies(test_summary glovebox-sim)
target_compile_definitions(test_summary PRIVATE GB_SIM="$<TARGET_FILE:glovebox-sim>")
target_link_libraries(test_summary PRIVATE m)
set_tests_properties(integration.test_summary PROPERTIES TIMEOUT 90)
