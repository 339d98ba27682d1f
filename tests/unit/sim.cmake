# glovebox-sim: unit tests of the room model, the binary in dry-run mode, and the transport
# against a scripted fake server on loopback (labelled integration: it opens sockets, but needs
# no database).
gb_test(unit test_sim_model gb_sim_model)

gb_test(unit test_sim_cli gb_sim_model)
add_dependencies(test_sim_cli glovebox-sim)
target_compile_definitions(test_sim_cli PRIVATE GB_SIM_BIN="$<TARGET_FILE:glovebox-sim>")

add_executable(test_sim_transport unit/test_sim_transport.c)
target_link_libraries(test_sim_transport PRIVATE gb_sim_model gb_test_support gb_warnings)
add_dependencies(test_sim_transport glovebox-sim)
target_compile_definitions(test_sim_transport PRIVATE GB_SIM_BIN="$<TARGET_FILE:glovebox-sim>")
add_test(NAME integration.test_sim_transport COMMAND test_sim_transport)
set_tests_properties(integration.test_sim_transport PROPERTIES LABELS integration TIMEOUT 120)
