/*
 * problem.c -- responses: JSON bodies and RFC 9457 problem details.
 *
 * Every 4xx/5xx herald-api sends is application/problem+json with `type`
 * (urn:herald:problem:<name>, listed in docs/api.md), `title`, `status`,
 * `detail` and, when input fields were at fault, `errors`: one
 * {"pointer": "/field", "detail": "..."} per bad field (RFC 6901 pointers
 * into the request body; query parameters use "parameter" instead).
 */
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "api.h"
#include "jsonout.h"
#include "log.h"

char *api_dump(const json_t *v)
{
	return hr_json_dump(v);
}

void api_json(api_req *r, int status, json_t *body)
{
	hr_free(r->resp);
	r->status = status;
	r->resp = api_dump(body);
	r->resp_len = 0;
	r->ctype = "application/json";
	json_decref(body);
}

void api_problem(api_req *r, int status, const char *type, const char *title, const char *detail,
		 json_t *errors)
{
	json_t *p = json_object();
	char *t = hr_sprintf("urn:herald:problem:%s", type);
	json_object_set_new(p, "type", json_string(t));
	hr_free(t);
	json_object_set_new(p, "title", json_string(title));
	json_object_set_new(p, "status", json_integer(status));
	/* detail may hold bytes from the request; json_string refuses invalid UTF-8. */
	json_t *d = detail ? json_string(detail) : NULL;
	json_object_set_new(p, "detail", d ? d : json_string(title));
	if (errors)
		json_object_set_new(p, "errors", errors);
	api_json(r, status, p);
	r->ctype = "application/problem+json";
}

void api_problem_invalid(api_req *r, json_t *errors)
{
	size_t n = json_array_size(errors);
	const char *first = n ? json_string_value(json_object_get(json_array_get(errors, 0), "detail")) : NULL;
	char *detail = n == 1 && first ? hr_strdup(first)
				       : hr_sprintf("%zu fields are invalid; see errors", n);
	api_problem(r, 422, "validation", "The request is not valid", detail, errors);
	hr_free(detail);
}

void api_problem_err(api_req *r, const hr_err *e)
{
	int status;
	const char *type, *title;
	switch (e->kind) {
	case HR_ERR_INVALID:
		status = 422, type = "validation", title = "The request is not valid";
		break;
	case HR_ERR_NOTFOUND:
		status = 404, type = "not-found", title = "Not found";
		break;
	case HR_ERR_CONFLICT:
		status = 409, type = "conflict", title = "Conflict";
		break;
	case HR_ERR_DB:
		status = 503, type = "unavailable", title = "The database is unavailable";
		break;
	default:
		status = 500, type = "internal", title = "Internal error";
		break;
	}
	if (status >= 500)
		hr_warn("api: %s %s: %s", r->method, r->path, e->msg);
	json_t *errors = NULL;
	if (status == 422 && e->field[0]) {
		errors = json_array();
		json_t *one = json_object();
		char *ptr = e->field[0] == '/' ? hr_strdup(e->field) : jv_ptr("", e->field);
		json_object_set_new(one, "pointer", json_string(ptr));
		json_t *d = json_string(e->msg);
		json_object_set_new(one, "detail", d ? d : json_string(title));
		hr_free(ptr);
		json_array_append_new(errors, one);
	}
	/* 5xx: the detail is in the log, not for the client. */
	api_problem(r, status, type, title, status >= 500 ? NULL : e->msg, errors);
}
