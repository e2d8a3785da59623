/*
 * server.h -- the herald-api HTTP server (libmicrohttpd, fixed thread pool).
 *
 * api_server_start() opens one PostgreSQL connection per request thread,
 * binds api_bind:api_port and serves until api_server_stop(), which stops
 * accepting, lets requests in progress finish, and closes everything.  The
 * server borrows cfg and set; they must outlive it.
 */
#ifndef HERALD_API_SERVER_H
#define HERALD_API_SERVER_H

#include <stdbool.h>

#include "config.h"
#include "err.h"
#include "migrate.h"

typedef struct api_server api_server;

bool api_server_start(const hr_config *cfg, const char *dsn, const hr_migration_set *set,
		      api_server **out, hr_err *err) HR_MUST_CHECK;
/* The port actually bound (api_port 0 = a free one). */
int api_server_port(const api_server *s);
/* Request threads (and pooled PostgreSQL connections): api_threads, or 4 per core when 0. */
int api_server_threads(const api_server *s);
void api_server_stop(api_server *s);

#endif
