/* capacity: the capacity plan outside the server, for `gloveboxd plan`. The same parameters,
 * fit and answer as GET /api/v1/capacity, computed from the devices as the server loads them
 * at start-up, with a blocking connection. */
#ifndef GB_API_CAPACITY_H
#define GB_API_CAPACITY_H

#include <stdbool.h>

#include "config/config.h"
#include "util/util.h"

/* Looks up a planning parameter by its query name ("uplink_mbps"); false when absent. */
typedef bool (*gb_api_capacity_param_cb)(void *ctx, const char *name, gb_str_t *value);

/* Connects to cfg's database, loads the profiles and devices, fits the model and plans with the
 * parameters get returns (the API's names and rules; "profile" narrows the fit to one
 * profile's devices). On success returns 0 with the answer in out: the API's JSON when json,
 * else a table for people. Otherwise returns GB_EINVAL with err set (400 invalid_query for a
 * bad parameter, 422 insufficient_data when the devices cannot support a fit), or GB_EDB with
 * err's message saying what failed with the database. */
int gb_api_capacity_cli(const gb_config_t *cfg, gb_api_capacity_param_cb get, void *ctx, bool json,
                        gb_buf_t *out, gb_error_t *err) GB_MUST_CHECK;

#endif
