# Unit tests of domain/ and protocol/, table-driven from tests/data/domain/ (scenarios.tsv lists
# the scenario files; winevents.jsonl and invalid_requests.jsonl hold the other tables).
foreach(t test_stage test_status test_diagnosis test_winevent test_decode test_views test_property)
  gb_test(unit ${t} gb_protocol)
endforeach()
