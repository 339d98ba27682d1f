# The OpenAPI document as a real gloveboxd serves it: the file's bytes, ETag and 304, HEAD, and
# every documented operation answering with the documented authentication.
gb_test(integration test_openapi_served gb_util)
