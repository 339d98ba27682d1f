# Integration test of the per-address limit on failed token checks (429 after a flood of 401s),
# against a real gloveboxd.
gb_test(integration test_ratelimit gb_util)
