/*
 * routes.c -- THE route table of herald-api.  docs/openapi.yaml must describe
 * every row (tests/api/test_openapi.c fails otherwise).
 *
 * auth: who may call it; send_ok: a tenant `send` key may (messages, events,
 * one-time codes, issuing and redeeming codes); body: the route takes a JSON
 * object.  `read` keys may call every
 * GET of the tenant API; `full` keys and agency keys (with Herald-Tenant)
 * everything of the tenant API.  stream: the body goes to the handler piece
 * by piece as it arrives (api_stream; the contact import); scan: reads the
 * body before jansson may (the event batch, api/eventscan.h).
 */
#include "api.h"

/* The trailing members are optional: rows that do not stream or scan leave them out. */
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

static const api_route routes[] = {
	{"GET", "/v1/openapi.yaml", API_AUTH_NONE, false, false, openapi_get, NULL},
	/* agency API */
	{"GET", "/v1/tenants", API_AUTH_AGENCY, false, false, tenants_list, NULL},
	{"POST", "/v1/tenants", API_AUTH_AGENCY, false, true, tenants_create, NULL},
	{"POST", "/v1/tenants/{slug}/suspend", API_AUTH_AGENCY, false, false, tenants_suspend, NULL},
	{"POST", "/v1/tenants/{slug}/resume", API_AUTH_AGENCY, false, false, tenants_resume, NULL},
	{"POST", "/v1/tenants/{slug}/keys", API_AUTH_AGENCY, false, true, tenants_key_create, NULL},
	{"PUT", "/v1/tenants/{slug}/providers/{name}", API_AUTH_AGENCY, false, true, tenants_provider_put, NULL},
	{"GET", "/v1/tenants/{slug}/limits", API_AUTH_AGENCY, false, false, tenants_limits_get, NULL},
	{"PUT", "/v1/tenants/{slug}/limits", API_AUTH_AGENCY, false, true, tenants_limits_put, NULL},
	/* tenant API */
	{"GET", "/v1/contacts", API_AUTH_TENANT, false, false, contacts_list, NULL},
	{"PUT", "/v1/contacts", API_AUTH_TENANT, false, true, contacts_put, NULL},
	{"GET", "/v1/contacts/{id}", API_AUTH_TENANT, false, false, contacts_get, NULL},
	{"GET", "/v1/contacts/{id}/consents", API_AUTH_TENANT, false, false, consents_list, NULL},
	{"POST", "/v1/contacts/{id}/consents", API_AUTH_TENANT, false, true, consents_post, NULL},
	{"POST", "/v1/events", API_AUTH_TENANT, true, true, events_post, NULL, .scan = events_scan},
	{"POST", "/v1/messages", API_AUTH_TENANT, true, true, messages_post, messages_pre, NULL, true},
	{"GET", "/v1/messages/{id}", API_AUTH_TENANT, true, false, messages_get, cascade_prices_pre},
	{"GET", "/v1/imports", API_AUTH_TENANT, false, false, imports_list, NULL},
	{"POST", "/v1/imports", API_AUTH_TENANT, false, false, imports_post, NULL, &imports_stream},
	{"GET", "/v1/imports/{id}", API_AUTH_TENANT, false, false, imports_get, NULL},
	{"GET", "/v1/templates", API_AUTH_TENANT, false, false, templates_list, NULL},
	{"POST", "/v1/templates", API_AUTH_TENANT, false, true, templates_post, NULL},
	{"GET", "/v1/templates/{id}", API_AUTH_TENANT, false, false, templates_get, NULL},
	{"PUT", "/v1/templates/{id}", API_AUTH_TENANT, false, true, templates_put, NULL},
	{"GET", "/v1/templates/{id}/versions/{version}", API_AUTH_TENANT, false, false, templates_version_get, NULL},
	{"POST", "/v1/templates/{id}/preview", API_AUTH_TENANT, false, true, templates_preview, NULL},
	{"POST", "/v1/templates/{id}/test", API_AUTH_TENANT, false, true, templates_test, templates_test_pre},
	{"GET", "/v1/snippets", API_AUTH_TENANT, false, false, snippets_list, NULL},
	{"PUT", "/v1/snippets/{name}", API_AUTH_TENANT, false, true, snippets_put, NULL},
	{"GET", "/v1/snippets/{name}", API_AUTH_TENANT, false, false, snippets_get, NULL},
	{"DELETE", "/v1/snippets/{name}", API_AUTH_TENANT, false, false, snippets_delete, NULL},
	{"POST", "/v1/otp", API_AUTH_TENANT, true, true, otp_post, otp_pre},
	{"POST", "/v1/otp/verify", API_AUTH_TENANT, true, true, otp_verify, NULL},
	{"GET", "/v1/code-pools", API_AUTH_TENANT, false, false, code_pools_list, NULL},
	{"POST", "/v1/code-pools", API_AUTH_TENANT, false, true, code_pools_create, NULL},
	{"GET", "/v1/code-pools/{id}", API_AUTH_TENANT, false, false, code_pools_get, NULL},
	{"POST", "/v1/code-pools/{id}/codes", API_AUTH_TENANT, false, true, code_pools_upload, NULL},
	{"POST", "/v1/code-pools/{id}/generate", API_AUTH_TENANT, false, true, code_pools_generate, NULL},
	{"POST", "/v1/code-pools/{id}/issue", API_AUTH_TENANT, true, true, code_pools_issue, NULL},
	{"GET", "/v1/codes/{code}", API_AUTH_TENANT, true, false, codes_get, NULL},
	{"POST", "/v1/codes/redeem", API_AUTH_TENANT, true, true, codes_redeem, NULL},
	{"GET", "/v1/rules", API_AUTH_TENANT, false, false, rules_list, NULL},
	{"POST", "/v1/rules", API_AUTH_TENANT, false, true, rules_create, rules_pre},
	{"GET", "/v1/rules/{id}", API_AUTH_TENANT, false, false, rules_get, NULL},
	{"PUT", "/v1/rules/{id}", API_AUTH_TENANT, false, true, rules_put, rules_pre},
	{"DELETE", "/v1/rules/{id}", API_AUTH_TENANT, false, false, rules_delete, NULL},
	{"POST", "/v1/rules/{id}/enable", API_AUTH_TENANT, false, false, rules_enable, NULL},
	{"POST", "/v1/rules/{id}/disable", API_AUTH_TENANT, false, false, rules_disable, NULL},
	{"GET", "/v1/rules/{id}/instances", API_AUTH_TENANT, false, false, rules_instances, NULL},
	{"GET", "/v1/webhooks", API_AUTH_TENANT, false, false, webhooks_list, NULL},
	{"POST", "/v1/webhooks", API_AUTH_TENANT, false, true, webhooks_create, NULL},
	{"GET", "/v1/webhooks/{id}", API_AUTH_TENANT, false, false, webhooks_get, NULL},
	{"PATCH", "/v1/webhooks/{id}", API_AUTH_TENANT, false, true, webhooks_update, NULL},
	{"DELETE", "/v1/webhooks/{id}", API_AUTH_TENANT, false, false, webhooks_delete, NULL},
	{"GET", "/v1/webhooks/{id}/deliveries", API_AUTH_TENANT, false, false, webhooks_deliveries, NULL},
	/* signed endpoints: no API key (tracking tokens, provider callback secrets) */
	{"GET", "/v1/t/open/{token}", API_AUTH_SIGNED, false, false, track_open, NULL},
	{"GET", "/v1/t/click/{token}", API_AUTH_SIGNED, false, false, track_click, NULL},
	{"GET", "/v1/unsubscribe/{token}", API_AUTH_SIGNED, false, false, track_unsubscribe_page, NULL},
	{"POST", "/v1/unsubscribe/{token}", API_AUTH_SIGNED, false, false, track_unsubscribe_post, NULL},
	{"POST", "/v1/callbacks/{tenant}/{provider}", API_AUTH_SIGNED, false, true, callbacks_post, NULL},
	{"GET", "/v1/segments", API_AUTH_TENANT, false, false, segments_list, NULL},
	{"POST", "/v1/segments", API_AUTH_TENANT, false, true, segments_create, NULL},
	{"GET", "/v1/segments/{id}", API_AUTH_TENANT, false, false, segments_get, NULL},
	{"PUT", "/v1/segments/{id}", API_AUTH_TENANT, false, true, segments_put, NULL},
	{"DELETE", "/v1/segments/{id}", API_AUTH_TENANT, false, false, segments_delete, NULL},
	{"POST", "/v1/segments/{id}/preview", API_AUTH_TENANT, false, false, segments_preview, NULL},
	{"GET", "/v1/campaigns", API_AUTH_TENANT, false, false, campaigns_list, NULL},
	{"POST", "/v1/campaigns", API_AUTH_TENANT, false, true, campaigns_create, campaigns_pre},
	{"GET", "/v1/campaigns/{id}", API_AUTH_TENANT, false, false, campaigns_get, NULL},
	{"PUT", "/v1/campaigns/{id}", API_AUTH_TENANT, false, true, campaigns_put, campaigns_pre},
	{"DELETE", "/v1/campaigns/{id}", API_AUTH_TENANT, false, false, campaigns_delete, NULL},
	{"POST", "/v1/campaigns/{id}/pause", API_AUTH_TENANT, false, false, campaigns_pause, NULL},
	{"POST", "/v1/campaigns/{id}/resume", API_AUTH_TENANT, false, false, campaigns_resume, NULL},
	{"POST", "/v1/campaigns/{id}/cancel", API_AUTH_TENANT, false, false, campaigns_cancel, NULL},
	{"GET", "/v1/campaigns/{id}/runs", API_AUTH_TENANT, false, false, campaigns_runs, NULL},
	{"GET", "/v1/calendar", API_AUTH_TENANT, false, false, calendar_get, NULL},
	/* reports (api/reports.c, docs/reports.md) */
	{"GET", "/v1/reports/messages", API_AUTH_TENANT, false, false, reports_messages, NULL},
	{"GET", "/v1/reports/templates/{id}", API_AUTH_TENANT, false, false, reports_template, NULL},
	{"GET", "/v1/reports/campaigns/{id}", API_AUTH_TENANT, false, false, reports_campaign, cascade_prices_pre},
	{"GET", "/v1/reports/rules/{id}", API_AUTH_TENANT, false, false, reports_rule, cascade_prices_pre},
	{"GET", "/v1/reports/dimensions", API_AUTH_TENANT, false, false, reports_dimensions, NULL},
	{"GET", "/v1/reports/repeat-purchases", API_AUTH_TENANT, false, false, reports_repeat, NULL},
};

const api_route *api_routes(size_t *n)
{
	*n = sizeof routes / sizeof routes[0];
	return routes;
}
