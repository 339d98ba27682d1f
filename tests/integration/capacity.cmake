# GET /api/v1/capacity and gloveboxd plan against a real gloveboxd fed by glovebox-sim: the model
# fitted at 20 slots predicts the simulator's runs at 10 and 40 slots and at half the uplink
# (makespan within 10%, time per device within 15%); parameters, roles, too little data.
# Spelled out rather than through gb_test(): the unit test of the model already holds the target
# name test_capacity.
add_executable(test_capacity_api integration/test_capacity.c)
target_link_libraries(test_capacity_api PRIVATE gb_util gb_test_support gb_warnings m)
target_compile_definitions(test_capacity_api PRIVATE GB_SIM="$<TARGET_FILE:glovebox-sim>")
add_dependencies(test_capacity_api gloveboxd glovebox-sim)
add_test(NAME integration.test_capacity COMMAND test_capacity_api)
set_tests_properties(integration.test_capacity PROPERTIES LABELS integration TIMEOUT 240
                     FIXTURES_REQUIRED db)
