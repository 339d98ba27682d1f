# db: the PostgreSQL pool (fixture cluster), its behaviour when the server stops, is killed or
# never answers (private clusters), and the migrations runner.
target_sources(gb_test_support PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/support/db_support.c)
target_link_libraries(gb_test_support PUBLIC PkgConfig::UV)

gb_test(integration test_pg_pool gb_db)
gb_test(integration test_pg_faults gb_db)
gb_test(integration test_migrations gb_db)

find_package(Threads REQUIRED)
target_link_libraries(test_migrations PRIVATE Threads::Threads)
