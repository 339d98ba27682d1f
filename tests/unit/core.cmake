# Unit tests of util, config and auth's pure parts.
gb_test(unit test_util gb_util)
gb_test(unit test_config gb_config)
gb_test(unit test_auth gb_auth)
