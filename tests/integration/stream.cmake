# The live stream (GET /api/v1/stream, Server-Sent Events) against a real gloveboxd and
# PostgreSQL: events after acknowledged reports, auth, coalescing, heartbeats, slow
# subscribers dropped, the subscriber limit and shutdown with subscribers connected.
find_package(Threads REQUIRED)
gb_test(integration test_stream gb_util)
target_link_libraries(test_stream PRIVATE Threads::Threads)
set_tests_properties(integration.test_stream PROPERTIES TIMEOUT 90)
