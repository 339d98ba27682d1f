# bench_domain: decode + apply throughput of the agent hot path (a program, not a test); run it
# through tests/bench/domain, which builds it in Release.
add_executable(bench_domain ${CMAKE_CURRENT_LIST_DIR}/domain.c)
target_link_libraries(bench_domain PRIVATE gb_protocol gb_warnings)
