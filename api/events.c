#include "api.h"
void events_post(api_req *r) { api_problem(r, 501, "not-implemented", "Not implemented", NULL, NULL); }
