/*
 * test_openapi.c -- docs/openapi.yaml describes every route herald-api
 * registers (api_routes()), with the same methods, and nothing more.
 *
 * The document is read with libyaml: paths./v1/...: {get|post|put: ...}.
 */
#include <check.h>
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include <yaml.h>

#include "api.h"
#include "harness.h"

#define MAXOPS 128

static char ops[MAXOPS][160]; /* "GET /v1/contacts" */
static int nops;

/* Walk the mapping under the top-level `paths` key. */
static void load(void)
{
	FILE *f = fopen(OPENAPI_PATH, "r");
	ck_assert_msg(f != NULL, "cannot open %s", OPENAPI_PATH);
	yaml_parser_t p;
	yaml_document_t d;
	ck_assert(yaml_parser_initialize(&p));
	yaml_parser_set_input_file(&p, f);
	ck_assert_msg(yaml_parser_load(&p, &d), "%s is not YAML: %s", OPENAPI_PATH, p.problem);
	yaml_node_t *root = yaml_document_get_root_node(&d);
	ck_assert(root && root->type == YAML_MAPPING_NODE);
	for (yaml_node_pair_t *kv = root->data.mapping.pairs.start; kv < root->data.mapping.pairs.top; kv++) {
		yaml_node_t *k = yaml_document_get_node(&d, kv->key), *v = yaml_document_get_node(&d, kv->value);
		if (strcmp((char *)k->data.scalar.value, "paths") != 0)
			continue;
		ck_assert(v->type == YAML_MAPPING_NODE);
		for (yaml_node_pair_t *pp = v->data.mapping.pairs.start; pp < v->data.mapping.pairs.top; pp++) {
			yaml_node_t *path = yaml_document_get_node(&d, pp->key), *item = yaml_document_get_node(&d, pp->value);
			ck_assert(item->type == YAML_MAPPING_NODE);
			for (yaml_node_pair_t *m = item->data.mapping.pairs.start; m < item->data.mapping.pairs.top; m++) {
				const char *meth = (char *)yaml_document_get_node(&d, m->key)->data.scalar.value;
				if (strcmp(meth, "get") && strcmp(meth, "post") && strcmp(meth, "put") &&
				    strcmp(meth, "delete") && strcmp(meth, "patch"))
					continue;
				ck_assert(nops < MAXOPS);
				char up[8] = {0};
				for (int i = 0; meth[i] && i < 7; i++)
					up[i] = (char)toupper((unsigned char)meth[i]);
				snprintf(ops[nops++], sizeof ops[0], "%s %s", up, (char *)path->data.scalar.value);
			}
		}
	}
	yaml_document_delete(&d);
	yaml_parser_delete(&p);
	fclose(f);
}

static bool documented(const char *op)
{
	for (int i = 0; i < nops; i++)
		if (strcmp(ops[i], op) == 0)
			return true;
	return false;
}

START_TEST(every_route_is_documented_and_nothing_else)
{
	load();
	size_t n;
	const api_route *r = api_routes(&n);
	for (size_t i = 0; i < n; i++) {
		char op[160];
		snprintf(op, sizeof op, "%s %s", r[i].method, r[i].pattern);
		ck_assert_msg(documented(op), "route '%s' is missing from docs/openapi.yaml", op);
	}
	for (int k = 0; k < nops; k++) {
		bool found = false;
		for (size_t i = 0; i < n && !found; i++) {
			char op[160];
			snprintf(op, sizeof op, "%s %s", r[i].method, r[i].pattern);
			found = strcmp(op, ops[k]) == 0;
		}
		ck_assert_msg(found, "docs/openapi.yaml documents '%s', which the server does not register", ops[k]);
	}
}
END_TEST

int main(void)
{
	Suite *s = suite_create("openapi");
	TCase *tc = th_tcase("routes");
	tcase_add_test(tc, every_route_is_documented_and_nothing_else);
	suite_add_tcase(s, tc);
	return th_run(s);
}
