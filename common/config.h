/*
 * config.h -- all of herald's settings, in one declarative table.
 *
 * The table in config.c names every setting once: its name, type, default,
 * bounds, which roles read it, whether it may be reloaded and whether it is
 * secret.  The table drives parsing and validation, `--help`, the masked
 * "show config" output, and docs/operations.md's settings list.
 *
 * Sources, later ones win: built-in default < environment (HERALD_<NAME>,
 * upper-cased) < command line (--name=value).
 *
 * An hr_config is owned by main(); it is read-only after loading, so any
 * thread may read it.
 */
#ifndef HERALD_CONFIG_H
#define HERALD_CONFIG_H

#include <stdbool.h>
#include <stdio.h>

#include "err.h"

/* Roles, as a bit mask: which settings a binary accepts. */
enum {
	HR_ROLE_CTL = 1 << 0,
	HR_ROLE_API = 1 << 1,
	HR_ROLE_SCHEDULER = 1 << 2,
	HR_ROLE_WORKER = 1 << 3,
	HR_ROLE_ALL = 0xff,
};

typedef struct hr_config hr_config;

hr_config *hr_config_new(unsigned roles);
void hr_config_free(hr_config *cfg);

/* Read HERALD_* variables from the environment. */
bool hr_config_load_env(hr_config *cfg, hr_err *err) HR_MUST_CHECK;

/*
 * Consume --name=value and --name value arguments known to the table; other
 * arguments are left, compacted, in argv (argc updated).  Unknown --options
 * that look like settings are left for the caller to reject.
 */
bool hr_config_load_args(hr_config *cfg, int *argc, char **argv, hr_err *err) HR_MUST_CHECK;

/* Set one setting from text, with validation (type and bounds). */
bool hr_config_set(hr_config *cfg, const char *name, const char *value, hr_err *err) HR_MUST_CHECK;

/* Typed reads.  Asking for a name that is not in the table is a panic. */
const char *hr_config_str(const hr_config *cfg, const char *name);
long hr_config_int(const hr_config *cfg, const char *name);
bool hr_config_bool(const hr_config *cfg, const char *name);

/* Write every setting of the roles, secrets masked, one `name = value` a line. */
void hr_config_show(const hr_config *cfg, FILE *out);

/* Write the settings' help (name, type, default, bounds, description). */
void hr_config_help(unsigned roles, FILE *out);

/* Write the settings as a Markdown table (for docs). */
void hr_config_markdown(FILE *out);

#endif
