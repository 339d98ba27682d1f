# The OpenAPI document (server/openapi.json) against the real api's routes and roles, the agent
# protocol's schema and the views' JSON; it reads the header generated beside gb_api.
gb_test(unit test_openapi gb_api)
target_include_directories(test_openapi PRIVATE $<TARGET_PROPERTY:gb_api,BINARY_DIR>)
