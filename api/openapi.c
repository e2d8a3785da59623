/*
 * openapi.c -- GET /v1/openapi.yaml: the OpenAPI 3.1 document, built into the
 * binary from docs/openapi.yaml (no auth: it describes, it reveals nothing).
 */
#include "alloc.h"
#include "api.h"

extern const char api_openapi_yaml[];
extern const size_t api_openapi_len;

void openapi_get(api_req *r)
{
	r->status = 200;
	r->resp = hr_strndup(api_openapi_yaml, api_openapi_len);
	r->ctype = "application/yaml";
}
