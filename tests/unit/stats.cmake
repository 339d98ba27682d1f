# Unit tests of the fleet statistics (domain/stats.c): percentiles, hourly counts, concurrency.
gb_test(unit test_stats gb_domain)
