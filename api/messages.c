#include "api.h"
void messages_post(api_req *r) { api_problem(r, 501, "not-implemented", "Not implemented", NULL, NULL); }
void messages_get(api_req *r) { api_problem(r, 501, "not-implemented", "Not implemented", NULL, NULL); }
