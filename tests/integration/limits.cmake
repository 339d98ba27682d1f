# Integration tests of gloveboxd under resource exhaustion: short of file descriptors (the cap
# fitted at start, EMFILE under a running server), ten thousand idle connections, slow and
# hostile clients, and the server's memory under a flood of bad requests.
gb_test(integration test_limits gb_util)
gb_test(integration test_hostile gb_util)
# They exhaust the machine on purpose (ten thousand sockets, a flood of hundreds of MB over
# loopback) and read the server's CPU time and memory: run alone, so neither they nor the tests
# beside them (some with deadlines of a few hundred ms) are disturbed.
set_tests_properties(integration.test_limits integration.test_hostile PROPERTIES RUN_SERIAL TRUE)
