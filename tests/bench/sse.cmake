# bench_sse: the live stream's load client for tests/bench/api.sh (a program, not a test):
# SSE subscribers and a paced agent load on one libuv loop.
add_executable(bench_sse ${CMAKE_CURRENT_LIST_DIR}/sse.c)
target_link_libraries(bench_sse PRIVATE gb_util PkgConfig::UV llhttp gb_warnings)
