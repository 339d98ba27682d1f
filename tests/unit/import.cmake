# Unit tests of the device import's pure part: the streaming Autopilot CSV reader.
gb_test(unit test_autopilot_csv gb_protocol)
