# The simulator against a real server: ground truth equals what the server derived and stored,
# with stage messages, with Windows events only, and across a PostgreSQL crash and a gloveboxd
# SIGKILL.
gb_test(integration test_fleet gb_util)
add_dependencies(test_fleet glovebox-sim)
target_compile_definitions(test_fleet PRIVATE GB_SIM="$<TARGET_FILE:glovebox-sim>")
target_link_libraries(test_fleet PRIVATE m)
