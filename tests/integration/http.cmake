# The http layer alone over real sockets: a server thread with test handlers, driven by the
# harness's blocking client (no gloveboxd, no database is used).
find_package(Threads REQUIRED)
gb_test(integration test_http_server gb_http gb_net)
target_link_libraries(test_http_server PRIVATE Threads::Threads)
