# Integration tests of gloveboxd under resource exhaustion: short of file descriptors (the cap
# fitted at start, EMFILE under a running server), ten thousand idle connections, slow and
# hostile clients, and the server's memory under a flood of bad requests.
gb_test(integration test_limits gb_util)
gb_test(integration test_hostile gb_util)
