# Profiles against a real gloveboxd and PostgreSQL: create and update, the list, validation,
# roles and methods, group-tag conflicts, a hybrid profile reaching its devices, a restart, and
# a write while the database refuses connections.
gb_test(integration test_profiles gb_util)
