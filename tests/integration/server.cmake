# Integration tests of the whole gloveboxd process: HTTP behaviour, limits, auth, static files,
# the database going away, and the command line.
gb_test(integration test_server gb_util)
gb_test(integration test_cli gb_util)
gb_test(integration test_db_outage gb_util)
