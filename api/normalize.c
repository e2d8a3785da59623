/*
 * normalize.c -- one spelling per address, so contacts deduplicate.
 *
 * Email: surrounding white space trimmed, then the WHOLE address lower-cased.
 * RFC 5321 lets a server treat the local part case-sensitively, but no large
 * mailbox provider does, and "Ann@x.com" and "ann@x.com" being two contacts
 * is the worse failure for a CRM.  Syntax: dot-atom local part (no quoted
 * strings), a domain of LDH labels with at least one dot, 254 bytes at most;
 * internationalised domains must be sent as punycode (xn--...).
 *
 * Phone: E.164.  Spaces, dashes, parentheses, dots and slashes are removed;
 * a leading 00 becomes +; a national number (no + or 00) gets the tenant's
 * default_country_code after dropping one trunk-prefix 0 (and, for +7, the
 * Russian trunk 8 of an 11-digit number).  The result must match
 * +[1-9][0-9]{6,14}.
 */
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>

#include "api.h"

bool hr_email_normalize(const char *in, char out[256], hr_err *err)
{
	while (isspace((unsigned char)*in))
		in++;
	size_t n = strlen(in);
	while (n && isspace((unsigned char)in[n - 1]))
		n--;
	if (n == 0 || n > 254)
		return hr_fail(err, HR_ERR_INVALID, "email", "is not an email address (1 to 254 characters)");
	for (size_t i = 0; i < n; i++)
		out[i] = (char)tolower((unsigned char)in[i]);
	out[n] = '\0';
	char *at = strchr(out, '@');
	if (!at || strchr(at + 1, '@'))
		return hr_fail(err, HR_ERR_INVALID, "email", "must contain exactly one @");
	size_t local = (size_t)(at - out);
	if (local < 1 || local > 64 || out[0] == '.' || at[-1] == '.')
		return hr_fail(err, HR_ERR_INVALID, "email", "has an invalid local part");
	for (const char *p = out; p < at; p++) {
		unsigned char c = (unsigned char)*p;
		if (c == '.' && p[1] == '.')
			return hr_fail(err, HR_ERR_INVALID, "email", "has an invalid local part (..)");
		if (!(isalnum(c) || strchr(".!#$%&'*+/=?^_`{|}~-", c)) || c >= 0x80)
			return hr_fail(err, HR_ERR_INVALID, "email", "has an invalid character in the local part");
	}
	const char *dom = at + 1;
	if (!strchr(dom, '.'))
		return hr_fail(err, HR_ERR_INVALID, "email", "domain must contain a dot");
	const char *label = dom;
	for (const char *p = dom;; p++) {
		if (*p == '.' || *p == '\0') {
			size_t len = (size_t)(p - label);
			if (len < 1 || len > 63 || label[0] == '-' || p[-1] == '-')
				return hr_fail(err, HR_ERR_INVALID, "email", "has an invalid domain");
			if (*p == '\0')
				break;
			label = p + 1;
		} else if (!isalnum((unsigned char)*p) && *p != '-') {
			return hr_fail(err, HR_ERR_INVALID, "email", "has an invalid character in the domain");
		}
	}
	return true;
}

bool hr_phone_normalize(const char *in, const char *cc, char out[20], hr_err *err)
{
	char d[64];
	size_t n = 0;
	bool plus = false;
	for (const char *p = in; *p; p++) {
		unsigned char c = (unsigned char)*p;
		if (c == ' ' || c == '-' || c == '(' || c == ')' || c == '.' || c == '/' || c == '\t')
			continue;
		if (c == '+' && n == 0 && !plus) {
			plus = true;
			continue;
		}
		if (!isdigit(c) || n >= sizeof d - 1)
			return hr_fail(err, HR_ERR_INVALID, "phone", "is not a phone number");
		d[n++] = (char)c;
	}
	d[n] = '\0';
	const char *num = d;
	char buf[64];
	if (!plus && strncmp(d, "00", 2) == 0) {
		num = d + 2;
	} else if (!plus) {
		if (!cc || !*cc)
			return hr_fail(err, HR_ERR_INVALID, "phone",
				       "has no country code (start with + or 00; the tenant has no "
				       "default_country_code)");
		if (*cc == '+')
			cc++;
		const char *nat = d;
		if (strcmp(cc, "7") == 0 && n == 11 && d[0] == '8')
			nat = d + 1;
		else if (d[0] == '0')
			nat = d + 1;
		snprintf(buf, sizeof buf, "%.3s%.40s", cc, nat);
		num = buf;
	}
	size_t len = strlen(num);
	if (len < 7 || len > 15 || num[0] == '0')
		return hr_fail(err, HR_ERR_INVALID, "phone", "is not a valid E.164 number (+ and 7 to 15 digits)");
	for (size_t i = 0; i < len; i++)
		if (!isdigit((unsigned char)num[i]))
			return hr_fail(err, HR_ERR_INVALID, "phone", "is not a phone number");
	out[0] = '+';
	memcpy(out + 1, num, len + 1);
	return true;
}

bool hr_tz_valid(const char *tz)
{
	size_t n = strlen(tz);
	if (n == 0 || n > 64 || tz[0] == '/' || tz[0] == '.' || strstr(tz, ".."))
		return false;
	for (const char *p = tz; *p; p++)
		if (!isalnum((unsigned char)*p) && !strchr("/_+-", *p))
			return false;
	char path[128];
	snprintf(path, sizeof path, "/usr/share/zoneinfo/%s", tz);
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		/* Some zones are symlinks (e.g. Etc/UTC -> ../UCT): follow them, but only as files. */
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			return false;
	}
	struct stat st;
	char magic[4] = {0};
	bool ok = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && read(fd, magic, 4) == 4 &&
		  memcmp(magic, "TZif", 4) == 0;
	close(fd);
	return ok;
}

bool hr_locale_valid(const char *s)
{
	if (strlen(s) > 35)
		return false;
	size_t seg = 0;
	bool first = true; /* the language: 2 or 3 letters */
	for (const char *p = s;; p++) {
		if (*p == '-' || *p == '_' || *p == '\0') {
			if (seg == 0 || seg > 8 || (first && (seg < 2 || seg > 3)))
				return false;
			if (*p == '\0')
				return true;
			seg = 0;
			first = false;
		} else if (first ? isalpha((unsigned char)*p) : isalnum((unsigned char)*p)) {
			seg++;
		} else {
			return false;
		}
	}
}
