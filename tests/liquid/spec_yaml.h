/*
 * spec_yaml.h -- load a YAML file into a jansson tree (test and bench helper).
 *
 * Used by the liquid-spec runner and the Liquid benchmark to read the
 * public liquid-spec suite.  Scalars are typed like Ruby's Psych (YAML 1.1
 * core): plain null/~ -> null, true/false/yes/no/on/off -> booleans,
 * integers and floats -> numbers, anything quoted or block -> string.
 * Anchors and aliases are supported (an alias shares the anchored node).
 *
 * Ownership: the caller owns the returned tree (json_decref).
 * Errors: false with a message in err (file, line).
 */
#ifndef HERALD_TESTS_SPEC_YAML_H
#define HERALD_TESTS_SPEC_YAML_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

bool spec_yaml_load(const char *path, json_t **out, char *err, size_t errcap)
	__attribute__((warn_unused_result));

#endif
