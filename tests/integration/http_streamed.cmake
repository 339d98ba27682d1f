# Streamed request bodies in the http layer alone, over real sockets: a server thread with a
# handler that reads bodies in pieces, driven by the harness's blocking client (no database).
find_package(Threads REQUIRED)
gb_test(integration test_http_streamed gb_http gb_net)
target_link_libraries(test_http_streamed PRIVATE Threads::Threads)
