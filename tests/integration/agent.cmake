# The agent protocol end to end against a real gloveboxd and PostgreSQL: replies after commit,
# retries, two connections for one device, gaps filled late, every vector of
# agent-protocol/vectors/, and the refusals that store nothing.
find_package(Threads REQUIRED)
gb_test(integration test_agent gb_util)
target_link_libraries(test_agent PRIVATE Threads::Threads)
