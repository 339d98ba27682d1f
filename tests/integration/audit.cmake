# The handover audit trail against a real gloveboxd, PostgreSQL and glovebox-sim: chains of a
# simulated fleet, tampering by a superuser, concurrent writers, CSV and HTML escaping, the
# NDJSON export, and the server's database role set up as docker/postgres-roles.sql says.
gb_test(integration test_audit gb_util)
find_package(Threads REQUIRED)
target_link_libraries(test_audit PRIVATE PkgConfig::JANSSON gb_csv Threads::Threads)
target_compile_definitions(test_audit PRIVATE GB_SIM="$<TARGET_FILE:glovebox-sim>")
add_dependencies(test_audit glovebox-sim)
