# The device import (POST /api/v1/devices/import) end to end against a real gloveboxd and
# PostgreSQL: the CSV as Intune takes it, re-imports, bad lines, refusals, 100,000 rows in one
# streamed request, clients that leave and a database that fails midway.
gb_test(integration test_import gb_util)
