# The device resources (list, detail, events, actions) against a real gloveboxd and PostgreSQL.
gb_test(integration test_devices gb_util)
target_link_libraries(test_devices PRIVATE PkgConfig::JANSSON)
