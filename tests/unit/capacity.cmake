# Unit tests of the capacity model (domain/capacity.c): the fit on synthetic rooms with known
# parameters, predictions against closed forms, the recommendation, degenerate inputs, samples.
gb_test(unit test_capacity gb_domain)
