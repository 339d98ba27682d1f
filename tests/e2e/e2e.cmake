# e2e: the web view in headless Chromium (node's test runner + playwright-core) against a real
# gloveboxd fed by glovebox-sim, in a database of the test cluster (fixture "db"). Label browser.
# tests/e2e/run reports "skipped" (exit 77) when Node.js, Chromium or the npm packages are
# missing, and fails instead under GB_E2E_REQUIRE=1. Screenshots and logs: <build>/e2e/.
add_custom_target(gb_e2e_programs ALL)
add_dependencies(gb_e2e_programs gloveboxd glovebox-sim)

add_test(NAME browser.web COMMAND ${CMAKE_CURRENT_LIST_DIR}/run)
set_tests_properties(browser.web PROPERTIES
  LABELS browser
  FIXTURES_REQUIRED db
  TIMEOUT 300
  SKIP_RETURN_CODE 77
  # Chromium, the server and the simulator fill both cores: run alone, and leave timing-sensitive
  # tests of the other labels undisturbed.
  RUN_SERIAL TRUE
  ENVIRONMENT "GB_GLOVEBOXD=$<TARGET_FILE:gloveboxd>;GB_SIM=$<TARGET_FILE:glovebox-sim>;GB_PG_CLUSTER=${GB_PG_CLUSTER};GB_PGDIR=${GB_PGDIR};GB_WEB_DIR=${PROJECT_SOURCE_DIR}/web;GB_E2E_OUT=${CMAKE_BINARY_DIR}/e2e")
