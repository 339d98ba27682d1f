# Unit tests of the http layer's pure parts: helpers (decoding, paths, queries, types, ETags,
# metrics text) and the router.
gb_test(unit test_http_helpers gb_http)
gb_test(unit test_http_router gb_http)
