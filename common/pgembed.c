/*
 * pgembed.c -- see pgembed.h.
 */
#include "pgembed.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "alloc.h"
#include "crypto.h"
#include "log.h"

typedef struct owner {
	bool drop; /* running as root: children become uid/gid */
	uid_t uid;
	gid_t gid;
	const char *name;
} owner;

static bool resolve_owner(const char *os_user, owner *ow, hr_err *err)
{
	memset(ow, 0, sizeof *ow);
	if (geteuid() != 0) {
		ow->uid = geteuid();
		ow->gid = getegid();
		return true;
	}
	struct passwd *pw = getpwnam(os_user ? os_user : "postgres");
	if (!pw)
		return hr_fail(err, HR_ERR_IO, "pg_os_user",
			       "running as root, but OS user '%s' for PostgreSQL does not exist "
			       "(install postgresql-15, or set pg_os_user)",
			       os_user ? os_user : "postgres");
	ow->drop = true;
	ow->uid = pw->pw_uid;
	ow->gid = pw->pw_gid;
	ow->name = os_user;
	return true;
}

static bool make_dir(const char *path, mode_t mode, const owner *ow, hr_err *err)
{
	if (mkdir(path, mode) != 0 && errno != EEXIST)
		return hr_fail(err, HR_ERR_IO, "data_dir", "cannot create %s: %s", path, strerror(errno));
	if (ow && ow->drop && chown(path, ow->uid, ow->gid) != 0)
		return hr_fail(err, HR_ERR_IO, "data_dir", "cannot chown %s: %s", path, strerror(errno));
	if (chmod(path, mode) != 0)
		return hr_fail(err, HR_ERR_IO, "data_dir", "cannot chmod %s: %s", path, strerror(errno));
	return true;
}

/* Last non-empty line of a log file, for error messages. */
static void last_line(const char *path, char *out, size_t outlen)
{
	out[0] = '\0';
	FILE *f = fopen(path, "r");
	if (!f)
		return;
	char line[512];
	while (fgets(line, sizeof line, f)) {
		size_t n = strlen(line);
		while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
			line[--n] = '\0';
		if (n)
			snprintf(out, outlen, "%s", line);
	}
	fclose(f);
}

/*
 * Run argv (absolute path) as the owner, stdout+stderr appended to logpath.
 * Returns the exit status (-1 when it could not run).
 */
static int run_as(const owner *ow, char *const argv[], const char *logpath)
{
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		int fd = open(logpath, O_WRONLY | O_CREAT | O_APPEND, 0600);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
			close(fd);
		}
		int devnull = open("/dev/null", O_RDONLY);
		if (devnull >= 0) {
			dup2(devnull, 0);
			close(devnull);
		}
		if (ow->drop) {
			if (setgroups(0, NULL) != 0 || setgid(ow->gid) != 0 || setuid(ow->uid) != 0)
				_exit(126);
		}
		setenv("LC_ALL", "C", 1);
		unsetenv("PGDATA");
		unsetenv("PGPORT");
		/* The server must not die with the process that happened to start it. */
		setsid();
		execv(argv[0], argv);
		_exit(127);
	}
	int status;
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0)
		return -1;
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof sa;
	int port = -1;
	if (bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
	    getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
		port = ntohs(sa.sin_port);
	close(fd);
	return port;
}

static bool write_file(const char *path, const char *text, mode_t mode, const owner *ow, hr_err *err)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
	if (fd < 0)
		return hr_fail(err, HR_ERR_IO, "data_dir", "cannot write %s: %s", path, strerror(errno));
	size_t len = strlen(text);
	bool ok = write(fd, text, len) == (ssize_t)len;
	if (ow && ow->drop && fchown(fd, ow->uid, ow->gid) != 0)
		ok = false;
	close(fd);
	if (!ok)
		return hr_fail(err, HR_ERR_IO, "data_dir", "cannot write %s", path);
	return true;
}

static bool initdb(const hr_pgembed_opts *o, const owner *ow, hr_err *err)
{
	char pgdir[4096], pwfile[4096], logpath[4096], initdb_bin[4096], conf[4200];
	snprintf(pgdir, sizeof pgdir, "%s/pg", o->data_dir);
	snprintf(pwfile, sizeof pwfile, "%s/pg.password", o->data_dir);
	snprintf(logpath, sizeof logpath, "%s/log/initdb.log", o->data_dir);
	snprintf(initdb_bin, sizeof initdb_bin, "%s/initdb", o->bin_dir);
	if (access(initdb_bin, X_OK) != 0)
		return hr_fail(err, HR_ERR_IO, "pg_bin_dir",
			       "%s not found: install postgresql-15 or set pg_bin_dir", initdb_bin);
	char password[33];
	hr_random_token(password, 32);
	if (!write_file(pwfile, password, 0600, ow, err))
		return false;
	if (!make_dir(pgdir, 0700, ow, err))
		return false;
	char pwarg[4200];
	snprintf(pwarg, sizeof pwarg, "--pwfile=%s", pwfile);
	char *argv[16];
	int n = 0;
	argv[n++] = initdb_bin;
	argv[n++] = "-D";
	argv[n++] = pgdir;
	argv[n++] = "-U";
	argv[n++] = "herald";
	argv[n++] = "-E";
	argv[n++] = "UTF8";
	argv[n++] = "--locale=C";
	argv[n++] = "--auth-local=trust";
	argv[n++] = "--auth-host=scram-sha-256";
	argv[n++] = pwarg;
	if (o->throwaway)
		argv[n++] = "--no-sync";
	argv[n] = NULL;
	int rc = run_as(ow, argv, logpath);
	if (rc != 0) {
		char line[256];
		last_line(logpath, line, sizeof line);
		return hr_fail(err, HR_ERR_IO, "data_dir", "initdb failed (exit %d): %s (see %s)", rc,
			       line, logpath);
	}
	/* Settings herald relies on; appended so they win over initdb's defaults. */
	char settings[2048];
	snprintf(settings, sizeof settings,
		 "\n# --- added by herald (pgembed.c) ---\n"
		 "listen_addresses = '127.0.0.1'\n"
		 "unix_socket_directories = '%s/run'\n"
		 "max_connections = 300\n"
		 "shared_buffers = 256MB\n"
		 "max_wal_size = 2GB\n"
		 "max_locks_per_transaction = 256\n"
		 "log_min_messages = warning\n"
		 "log_min_error_statement = panic\n"
		 "%s",
		 o->data_dir,
		 o->throwaway ? "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n" : "");
	snprintf(conf, sizeof conf, "%s/postgresql.conf", pgdir);
	FILE *f = fopen(conf, "a");
	if (!f || fputs(settings, f) < 0) {
		if (f)
			fclose(f);
		return hr_fail(err, HR_ERR_IO, "data_dir", "cannot append to %s", conf);
	}
	fclose(f);
	return true;
}

/* Parse postmaster.pid: line 4 = port, line 5 = socket directory. */
static bool running_dsn(const char *data_dir, char **dsn)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/pg/postmaster.pid", data_dir);
	FILE *f = fopen(path, "r");
	if (!f)
		return false;
	char line[1024];
	int port = 0;
	char sockdir[1024] = "";
	for (int i = 1; fgets(line, sizeof line, f); i++) {
		line[strcspn(line, "\n")] = '\0';
		if (i == 4)
			port = atoi(line);
		else if (i == 5)
			snprintf(sockdir, sizeof sockdir, "%s", line);
	}
	fclose(f);
	if (port <= 0 || !sockdir[0])
		return false;
	*dsn = hr_sprintf("host=%s port=%d user=herald dbname=herald", sockdir, port);
	return true;
}

static bool ensure_database(const char *data_dir, hr_err *err)
{
	char *dsn;
	if (!running_dsn(data_dir, &dsn))
		return hr_fail(err, HR_ERR_DB, "data_dir", "cluster under %s is not running", data_dir);
	char *admin = hr_sprintf("%.*s dbname=postgres", (int)(strstr(dsn, " dbname=") - dsn), dsn);
	hr_free(dsn);
	PGconn *c = PQconnectdb(admin);
	hr_free(admin);
	bool ok = false;
	if (PQstatus(c) != CONNECTION_OK) {
		hr_fail(err, HR_ERR_DB, "data_dir", "cannot connect to embedded PostgreSQL: %s",
			PQerrorMessage(c));
		goto done;
	}
	PGresult *r = PQexec(c, "SELECT 1 FROM pg_database WHERE datname = 'herald'");
	bool exists = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
	PQclear(r);
	if (!exists) {
		r = PQexec(c, "CREATE DATABASE herald");
		ok = PQresultStatus(r) == PGRES_COMMAND_OK;
		if (!ok)
			hr_fail(err, HR_ERR_DB, NULL, "CREATE DATABASE herald: %s", PQerrorMessage(c));
		PQclear(r);
	} else {
		ok = true;
	}
done:
	PQfinish(c);
	return ok;
}

static int lock_dir(const char *data_dir, hr_err *err)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/.lock", data_dir);
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0) {
		hr_fail(err, HR_ERR_IO, "data_dir", "cannot open %s: %s", path, strerror(errno));
		return -1;
	}
	while (flock(fd, LOCK_EX) != 0)
		if (errno != EINTR) {
			hr_fail(err, HR_ERR_IO, "data_dir", "cannot lock %s: %s", path, strerror(errno));
			close(fd);
			return -1;
		}
	return fd;
}

static bool pg_ctl(const hr_pgembed_opts *o, const owner *ow, const char *action, int port,
		   hr_err *err)
{
	char pgdir[4096], logpath[4096], ctl[4096], serverlog[4096], portopt[64];
	snprintf(pgdir, sizeof pgdir, "%s/pg", o->data_dir);
	snprintf(logpath, sizeof logpath, "%s/log/pg_ctl.log", o->data_dir);
	snprintf(serverlog, sizeof serverlog, "%s/log/postgres.log", o->data_dir);
	snprintf(ctl, sizeof ctl, "%s/pg_ctl", o->bin_dir);
	snprintf(portopt, sizeof portopt, "-p %d", port);
	char *argv[16];
	int n = 0;
	argv[n++] = ctl;
	argv[n++] = "-D";
	argv[n++] = pgdir;
	argv[n++] = "-w";
	argv[n++] = "-t";
	argv[n++] = "120";
	if (strcmp(action, "start") == 0) {
		argv[n++] = "-l";
		argv[n++] = serverlog;
		argv[n++] = "-o";
		argv[n++] = portopt;
	} else if (strcmp(action, "stop") == 0) {
		argv[n++] = "-m";
		argv[n++] = "fast";
	}
	argv[n++] = (char *)action;
	argv[n] = NULL;
	int rc = run_as(ow, argv, logpath);
	if (strcmp(action, "status") == 0)
		return rc == 0;
	if (rc != 0) {
		char line[256];
		last_line(strcmp(action, "start") == 0 ? serverlog : logpath, line, sizeof line);
		return hr_fail(err, HR_ERR_DB, "data_dir", "pg_ctl %s failed (exit %d): %s", action, rc,
			       line);
	}
	return true;
}

bool hr_pgembed_start(const hr_pgembed_opts *o, char **dsn, hr_err *err)
{
	owner ow;
	char path[4096];
	int lockfd = -1;
	bool ok = false;
	if (!resolve_owner(o->os_user, &ow, err))
		return false;
	/* data_dir itself stays ours (it holds master.key); subdirectories are the server's. */
	if (!make_dir(o->data_dir, 0711, NULL, err))
		return false;
	if ((lockfd = lock_dir(o->data_dir, err)) < 0)
		return false;
	snprintf(path, sizeof path, "%s/log", o->data_dir);
	if (!make_dir(path, 0700, &ow, err))
		goto done;
	snprintf(path, sizeof path, "%s/run", o->data_dir);
	if (!make_dir(path, 0700, &ow, err))
		goto done;
	snprintf(path, sizeof path, "%s/pg/PG_VERSION", o->data_dir);
	if (access(path, F_OK) != 0) {
		hr_info("pgembed: initialising PostgreSQL cluster in %s/pg", o->data_dir);
		if (!initdb(o, &ow, err))
			goto done;
	}
	if (!pg_ctl(o, &ow, "status", 0, NULL)) {
		/* A free port can be taken between our probe and the server's bind: retry. */
		for (int attempt = 0;; attempt++) {
			int port = o->port ? o->port : free_port();
			if (port <= 0) {
				hr_fail(err, HR_ERR_IO, "pg_port", "no free TCP port on 127.0.0.1");
				goto done;
			}
			if (pg_ctl(o, &ow, "start", port, err))
				break;
			if (o->port || attempt == 2)
				goto done;
		}
	}
	if (!ensure_database(o->data_dir, err))
		goto done;
	if (!running_dsn(o->data_dir, dsn)) {
		hr_fail(err, HR_ERR_DB, "data_dir", "cluster started but postmaster.pid is unreadable");
		goto done;
	}
	ok = true;
done:
	close(lockfd);
	return ok;
}

bool hr_pgembed_dsn(const char *data_dir, char **dsn, hr_err *err)
{
	if (!running_dsn(data_dir, dsn))
		return hr_fail(err, HR_ERR_DB, "data_dir",
			       "no embedded PostgreSQL is running under %s (start it with "
			       "`heraldctl local start`)",
			       data_dir);
	return true;
}

bool hr_pgembed_stop(const hr_pgembed_opts *o, hr_err *err)
{
	owner ow;
	char path[4096];
	if (!resolve_owner(o->os_user, &ow, err))
		return false;
	snprintf(path, sizeof path, "%s/pg/PG_VERSION", o->data_dir);
	if (access(path, F_OK) != 0)
		return true;
	int lockfd = lock_dir(o->data_dir, err);
	if (lockfd < 0)
		return false;
	bool ok = true;
	if (pg_ctl(o, &ow, "status", 0, NULL))
		ok = pg_ctl(o, &ow, "stop", 0, err);
	close(lockfd);
	return ok;
}

char *hr_pgembed_default_dir(void)
{
	if (geteuid() == 0)
		return hr_strdup("/var/lib/herald");
	const char *home = getenv("HOME");
	return hr_sprintf("%s/.local/share/herald", home && *home ? home : "/tmp");
}
