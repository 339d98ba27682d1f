# Unit tests of the profile rules (domain/profile.c): device-name templates, tenant domains,
# group tags, assigned users, profile names and group-tag matching.
gb_test(unit test_profile gb_domain)
