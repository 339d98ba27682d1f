# Chaos under load: glovebox-sim drives a few thousand devices while PostgreSQL crashes twice and
# gloveboxd is SIGKILLed once; every acknowledged message is stored exactly once, and every
# device's JSON survives a restart and a rebuild from its stored messages unchanged. A private
# cluster keeps the crashes away from the other tests, and RUN_SERIAL its load: beside it, the
# other simulator-driven tests can outgrow their timeouts in a sanitizer build.
gb_test(integration test_chaos gb_util)
add_dependencies(test_chaos glovebox-sim)
target_compile_definitions(test_chaos PRIVATE GB_SIM="$<TARGET_FILE:glovebox-sim>")
target_link_libraries(test_chaos PRIVATE PkgConfig::JANSSON)
set_tests_properties(integration.test_chaos PROPERTIES TIMEOUT 600 RUN_SERIAL TRUE)
