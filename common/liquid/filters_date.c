/*
 * filters_date.c -- the `date` filter: Ruby's Time.parse (the common
 * shapes: ISO 8601, "June 15, 2020 14:30", "Fri Jul 16 01:00:00 2004",
 * m/d/y, unix seconds, now/today) and Ruby's strftime with its flags
 * (- _ 0 ^ #, width) and conversions.  Times without a zone are UTC (the
 * engine's time zone); "now" comes from the render options so tests and
 * previews can freeze it.  Calendar math is proleptic Gregorian on int64
 * days, so 1900 and 2100 work without libc's time_t quirks.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "filters.h"
#include "render.h"

typedef struct when {
	int64_t epoch;    /* seconds since 1970-01-01T00:00:00Z */
	int off;          /* UTC offset in seconds */
	char zone[8];     /* %Z text ("UTC", or "" for a bare offset) */
} when;

static int64_t days_from_civil(int64_t y, int m, int d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	int64_t yoe = y - era * 400;
	int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
	z += 719468;
	int64_t era = (z >= 0 ? z : z - 146096) / 146097;
	int64_t doe = z - era * 146097;
	int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	int64_t mp = (5 * doy + 2) / 153;
	*d = (int)(doy - (153 * mp + 2) / 5 + 1);
	*m = (int)(mp < 10 ? mp + 3 : mp - 9);
	*y = yoe + era * 400 + (*m <= 2);
}

/* Dates beyond about +-3 million years are not dates (and would overflow). */
#define MAX_EPOCH ((int64_t)100000000000000) /* 1e14 s */

static int64_t floordiv(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

static const char *const MONTHS[] = {"January", "February", "March", "April", "May", "June", "July",
				     "August", "September", "October", "November", "December"};
static const char *const DAYS[] = {"Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"};

static const struct { const char *n; int off; } ZONES[] = {
	{"utc", 0}, {"gmt", 0}, {"z", 0}, {"ut", 0},
	{"est", -5}, {"edt", -4}, {"cst", -6}, {"cdt", -5},
	{"mst", -7}, {"mdt", -6}, {"pst", -8}, {"pdt", -7},
};

/* Parse a date string; false when it is not a date. */
static bool parse_time(const char *s, size_t n, int64_t now, when *w)
{
	int64_t year = -1;
	int mon = -1, day = -1, hh = -1, mm = 0, ss = 0;
	bool pm = false, am = false, has_zone = false;
	int off = 0;
	char zone[8] = "UTC";
	size_t i = 0;
	char buf[256];
	if (n >= sizeof buf)
		return false;
	memcpy(buf, s, n);
	buf[n] = 0;
	const char *p = buf;
	while (p[i]) {
		char ch = p[i];
		if (isdigit((unsigned char)ch)) {
			size_t st = i;
			while (isdigit((unsigned char)p[i]))
				i++;
			size_t len = i - st;
			long v = strtol(p + st, NULL, 10);
			if (p[i] == '-' && isdigit((unsigned char)p[i + 1]) && len == 4 && year < 0) {
				/* YYYY-MM-DD */
				year = v;
				char *e;
				mon = (int)strtol(p + i + 1, &e, 10);
				i = (size_t)(e - p);
				if (p[i] == '-' && isdigit((unsigned char)p[i + 1])) {
					day = (int)strtol(p + i + 1, &e, 10);
					i = (size_t)(e - p);
				} else {
					day = 1;
				}
				if (p[i] == 'T' || p[i] == 't')
					i++;
				continue;
			}
			if (p[i] == ':' && isdigit((unsigned char)p[i + 1]) && hh < 0) {
				hh = (int)v;
				char *e;
				mm = (int)strtol(p + i + 1, &e, 10);
				i = (size_t)(e - p);
				if (p[i] == ':' && isdigit((unsigned char)p[i + 1])) {
					ss = (int)strtol(p + i + 1, &e, 10);
					i = (size_t)(e - p);
					if (p[i] == '.' || p[i] == ',')
						for (i++; isdigit((unsigned char)p[i]); i++)
							;
				}
				continue;
			}
			if (p[i] == '/' && isdigit((unsigned char)p[i + 1])) {
				char *e;
				long b = strtol(p + i + 1, &e, 10);
				i = (size_t)(e - p);
				if (len == 4) {
					year = v;
					mon = (int)b;
					day = 1;
					if (p[i] == '/' && isdigit((unsigned char)p[i + 1])) {
						day = (int)strtol(p + i + 1, &e, 10);
						i = (size_t)(e - p);
					}
				} else {
					mon = (int)v;
					day = (int)b;
					if (p[i] == '/' && isdigit((unsigned char)p[i + 1])) {
						size_t ys = i + 1;
						year = strtol(p + i + 1, &e, 10);
						i = (size_t)(e - p);
						if (i - ys == 2)
							year += year < 69 ? 2000 : 1900;
					}
				}
				continue;
			}
			if (len == 4 && year < 0) {
				year = v;
			} else if (len <= 2 && day < 0) {
				day = (int)v;
				/* ordinal suffix */
				if (isalpha((unsigned char)p[i]) && isalpha((unsigned char)p[i + 1]) && !isalpha((unsigned char)p[i + 2]))
					i += 2;
			} else if (len <= 2 && year < 0) {
				year = v + (v < 69 ? 2000 : 1900);
			} else {
				return false;
			}
			continue;
		}
		if ((ch == '+' || ch == '-') && isdigit((unsigned char)p[i + 1]) && hh >= 0) {
			int sign = ch == '-' ? -1 : 1;
			i++;
			int h = 0, m = 0, k = 0;
			while (isdigit((unsigned char)p[i]) && k < 2) {
				h = h * 10 + (p[i++] - '0');
				k++;
			}
			if (p[i] == ':')
				i++;
			k = 0;
			while (isdigit((unsigned char)p[i]) && k < 2) {
				m = m * 10 + (p[i++] - '0');
				k++;
			}
			off = sign * (h * 3600 + m * 60);
			has_zone = true;
			zone[0] = 0;
			continue;
		}
		if (isalpha((unsigned char)ch)) {
			size_t st = i;
			while (isalpha((unsigned char)p[i]))
				i++;
			size_t len = i - st;
			const char *wd = p + st;
			bool known = false;
			if (len >= 3) {
				for (int k = 0; k < 12; k++)
					if (strncasecmp(wd, MONTHS[k], 3) == 0 && (len == 3 || (len <= strlen(MONTHS[k]) && strncasecmp(wd, MONTHS[k], len) == 0))) {
						mon = k + 1;
						known = true;
						break;
					}
				if (!known)
					for (int k = 0; k < 7; k++)
						if (strncasecmp(wd, DAYS[k], 3) == 0 && (len == 3 || (len <= strlen(DAYS[k]) && strncasecmp(wd, DAYS[k], len) == 0)))
							known = true;
			}
			if (!known && len == 2 && (strncasecmp(wd, "am", 2) == 0 || strncasecmp(wd, "pm", 2) == 0)) {
				pm = tolower((unsigned char)wd[0]) == 'p';
				am = !pm;
				known = true;
			}
			if (!known) {
				for (size_t k = 0; k < sizeof ZONES / sizeof ZONES[0]; k++)
					if (strlen(ZONES[k].n) == len && strncasecmp(wd, ZONES[k].n, len) == 0) {
						off = ZONES[k].off * 3600;
						has_zone = true;
						if (ZONES[k].off == 0)
							snprintf(zone, sizeof zone, "UTC");
						else {
							snprintf(zone, sizeof zone, "%.*s", (int)len, wd);
							for (char *z = zone; *z; z++)
								*z = (char)toupper((unsigned char)*z);
						}
						known = true;
						break;
					}
			}
			if (!known && !(len == 1 && (*wd == 'T' || *wd == 't')))
				return false;
			continue;
		}
		i++;
	}
	int64_t nd = floordiv(now, 86400);
	int64_t ny;
	int nm, ndd;
	civil_from_days(nd, &ny, &nm, &ndd);
	if (year < 0 && mon < 0 && day < 0 && hh < 0)
		return false;
	if (year < 0)
		year = ny;
	if (mon < 0 && day < 0) {
		mon = nm;
		day = ndd;
	}
	if (mon < 0)
		mon = 1;
	if (day < 0)
		day = 1;
	if (mon < 1 || mon > 12 || day < 1 || day > 31)
		return false;
	if (hh < 0)
		hh = 0;
	if (pm && hh < 12)
		hh += 12;
	if (am && hh == 12)
		hh = 0;
	if (hh > 24 || mm > 59 || ss > 60 || year > 999999 || year < -999999)
		return false;
	int64_t days = days_from_civil(year, mon, day);
	w->epoch = days * 86400 + hh * 3600 + mm * 60 + ss - off;
	w->off = off;
	snprintf(w->zone, sizeof w->zone, "%s", has_zone ? zone : "UTC");
	return true;
}

static bool to_when(lq_ctx *c, lq_value v, when *w)
{
	memset(w, 0, sizeof *w);
	snprintf(w->zone, sizeof w->zone, "UTC");
	switch (v.kind) {
	case LV_INT:
		if (v.u.i > MAX_EPOCH || v.u.i < -MAX_EPOCH)
			return false;
		w->epoch = v.u.i;
		return true;
	case LV_FLOAT:
		/* !(in range) also rejects NaN */
		if (!(v.u.f <= (double)MAX_EPOCH && v.u.f >= -(double)MAX_EPOCH))
			return false;
		w->epoch = (int64_t)v.u.f;
		return true;
	case LV_STR: {
		const char *p = v.u.s.p;
		size_t n = v.u.s.n;
		if (n == 0)
			return false;
		if ((n == 3 && strncasecmp(p, "now", 3) == 0) || (n == 5 && strncasecmp(p, "today", 5) == 0)) {
			w->epoch = lq_ctx_now(c);
			return true;
		}
		bool digits = true;
		for (size_t i = 0; i < n; i++)
			digits &= isdigit((unsigned char)p[i]) != 0;
		if (digits && n < 19) {
			w->epoch = strtoll(p, NULL, 10);
			return w->epoch <= MAX_EPOCH;
		}
		return parse_time(p, n, lq_ctx_now(c), w);
	}
	default:
		return false;
	}
}

typedef struct tmx {
	int64_t year;
	int mon, mday, hour, min, sec, wday, yday;
	int64_t epoch;
	int off;
	const char *zone;
} tmx;

static void breakdown(const when *w, tmx *t)
{
	int64_t local = w->epoch + w->off;
	int64_t days = floordiv(local, 86400);
	int64_t secs = local - days * 86400;
	civil_from_days(days, &t->year, &t->mon, &t->mday);
	t->hour = (int)(secs / 3600);
	t->min = (int)(secs / 60 % 60);
	t->sec = (int)(secs % 60);
	t->wday = (int)(((days % 7) + 11) % 7); /* 1970-01-01 was a Thursday */
	t->yday = (int)(days - days_from_civil(t->year, 1, 1));
	t->epoch = w->epoch;
	t->off = w->off;
	t->zone = w->zone;
}

/* ISO 8601 week-based year and week number */
static void iso_week(const tmx *t, int64_t *gy, int *wk)
{
	int wd = (t->wday + 6) % 7; /* Monday = 0 */
	int64_t y = t->year;
	int w = (t->yday - wd + 10) / 7;
	if (w < 1) {
		y--;
		int64_t dec31 = days_from_civil(y, 12, 31);
		int64_t jan1 = days_from_civil(y, 1, 1);
		int yd = (int)(dec31 - jan1);
		int wdd = (int)(((dec31 % 7) + 11) % 7);
		wdd = (wdd + 6) % 7;
		w = (yd - wdd + 10) / 7;
	} else {
		int64_t jan1n = days_from_civil(y + 1, 1, 1);
		int64_t jan1 = days_from_civil(y, 1, 1);
		int ylen = (int)(jan1n - jan1);
		if (w == 53 && t->yday - wd + 3 >= ylen) {
			y++;
			w = 1;
		}
	}
	*gy = y;
	*wk = w;
}

static void put_num(lq_buf *b, int64_t v, int width, char pad, char flag)
{
	char tmp[32];
	if (flag == '-')
		width = 0;
	else if (flag == '_')
		pad = ' ';
	else if (flag == '0')
		pad = '0';
	bool neg = v < 0;
	uint64_t u = neg ? -(uint64_t)v : (uint64_t)v;
	int n = snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)u);
	int len = n + neg;
	if (neg && pad == '0')
		lq_buf_putc(b, '-');
	for (int i = len; i < width; i++)
		lq_buf_putc(b, pad);
	if (neg && pad != '0')
		lq_buf_putc(b, '-');
	lq_buf_put(b, tmp, (size_t)n);
}

static void put_str(lq_buf *b, const char *s, size_t n, int width, bool upper, bool swap)
{
	for (int i = (int)n; i < width; i++)
		lq_buf_putc(b, ' ');
	for (size_t i = 0; i < n; i++) {
		char ch = s[i];
		if (upper || swap)
			ch = (char)toupper((unsigned char)ch);
		lq_buf_putc(b, ch);
	}
}

static void strftime_rb(lq_buf *b, const char *f, size_t fn, const tmx *t)
{
	for (size_t i = 0; i < fn; i++) {
		if (f[i] != '%' || i + 1 >= fn) {
			lq_buf_putc(b, f[i]);
			continue;
		}
		size_t start = i;
		i++;
		char flag = 0;
		bool upper = false, swap = false;
		while (i < fn && strchr("-_0^#", f[i])) {
			if (f[i] == '^')
				upper = true;
			else if (f[i] == '#')
				swap = true;
			else
				flag = f[i];
			i++;
		}
		int width = -1;
		while (i < fn && isdigit((unsigned char)f[i])) {
			width = (width < 0 ? 0 : width) * 10 + (f[i] - '0');
			if (width > 1024)
				width = 1024; /* padding is not a way to allocate memory */
			i++;
		}
		bool colon = false;
		if (i < fn && f[i] == ':') {
			colon = true;
			i++;
		}
		if (i >= fn) {
			lq_buf_put(b, f + start, fn - start);
			break;
		}
		char cv = f[i];
		int w2 = width;
#define NUM(v, w, pad) put_num(b, (v), w2 >= 0 ? w2 : (w), (pad), flag)
#define STR(s) do { const char *s_ = (s); put_str(b, s_, strlen(s_), w2, upper, swap); } while (0)
		int h12 = t->hour % 12 == 0 ? 12 : t->hour % 12;
		char tmp[64];
		switch (cv) {
		case 'Y': NUM(t->year, 1, '0'); break;
		case 'C': NUM(floordiv(t->year, 100), 2, '0'); break;
		case 'y': NUM(((t->year % 100) + 100) % 100, 2, '0'); break;
		case 'm': NUM(t->mon, 2, '0'); break;
		case 'B': STR(MONTHS[t->mon - 1]); break;
		case 'b':
		case 'h':
			snprintf(tmp, sizeof tmp, "%.3s", MONTHS[t->mon - 1]);
			STR(tmp);
			break;
		case 'd': NUM(t->mday, 2, '0'); break;
		case 'e': NUM(t->mday, 2, ' '); break;
		case 'j': NUM(t->yday + 1, 3, '0'); break;
		case 'H': NUM(t->hour, 2, '0'); break;
		case 'k': NUM(t->hour, 2, ' '); break;
		case 'I': NUM(h12, 2, '0'); break;
		case 'l': NUM(h12, 2, ' '); break;
		case 'M': NUM(t->min, 2, '0'); break;
		case 'S': NUM(t->sec, 2, '0'); break;
		case 'L': NUM(0, 3, '0'); break;
		case 'N': NUM(0, 9, '0'); break;
		case 'p':
			if (swap)
				put_str(b, t->hour < 12 ? "am" : "pm", 2, w2, false, false);
			else
				put_str(b, t->hour < 12 ? "AM" : "PM", 2, w2, false, false);
			break;
		case 'P': put_str(b, t->hour < 12 ? "am" : "pm", 2, w2, upper, false); break;
		case 'A': STR(DAYS[t->wday]); break;
		case 'a':
			snprintf(tmp, sizeof tmp, "%.3s", DAYS[t->wday]);
			STR(tmp);
			break;
		case 'u': NUM(t->wday == 0 ? 7 : t->wday, 1, '0'); break;
		case 'w': NUM(t->wday, 1, '0'); break;
		case 'U': NUM((t->yday + 7 - t->wday) / 7, 2, '0'); break;
		case 'W': NUM((t->yday + 7 - (t->wday + 6) % 7) / 7, 2, '0'); break;
		case 'G':
		case 'g':
		case 'V': {
			int64_t gy;
			int wk;
			iso_week(t, &gy, &wk);
			if (cv == 'G')
				NUM(gy, 1, '0');
			else if (cv == 'g')
				NUM(((gy % 100) + 100) % 100, 2, '0');
			else
				NUM(wk, 2, '0');
			break;
		}
		case 's': NUM(t->epoch, 1, '0'); break;
		case 'z': {
			int o = t->off < 0 ? -t->off : t->off;
			lq_buf_putc(b, t->off < 0 ? '-' : '+');
			if (colon)
				lq_buf_printf(b, "%02d:%02d", o / 3600, o / 60 % 60);
			else
				lq_buf_printf(b, "%02d%02d", o / 3600, o / 60 % 60);
			break;
		}
		case 'Z': STR(t->zone); break;
		case '%': lq_buf_putc(b, '%'); break;
		case 'n': lq_buf_putc(b, '\n'); break;
		case 't': lq_buf_putc(b, '\t'); break;
		case 'c': strftime_rb(b, "%a %b %e %H:%M:%S %Y", 20, t); break;
		case 'x':
		case 'D': strftime_rb(b, "%m/%d/%y", 8, t); break;
		case 'X':
		case 'T': strftime_rb(b, "%H:%M:%S", 8, t); break;
		case 'F': strftime_rb(b, "%Y-%m-%d", 8, t); break;
		case 'R': strftime_rb(b, "%H:%M", 5, t); break;
		case 'r': strftime_rb(b, "%I:%M:%S %p", 11, t); break;
		case 'v': strftime_rb(b, "%e-%^b-%Y", 9, t); break;
		case '+': strftime_rb(b, "%a %b %e %H:%M:%S %Z %Y", 23, t); break;
		default:
			lq_buf_put(b, f + start, i + 1 - start);
		}
#undef NUM
#undef STR
	}
}

FILTER(f_date)
{
	const char *fmt;
	size_t fn;
	lq_to_str(lq_ctx_arena(c), ARG(0), &fmt, &fn);
	if (fn == 0)
		return true;
	when w;
	if (!to_when(c, *v, &w))
		return true;
	tmx t;
	breakdown(&w, &t);
	lq_buf b = {0};
	strftime_rb(&b, fmt, fn, &t);
	*v = lq_str(lq_arena_strndup(lq_ctx_arena(c), b.p ? b.p : "", b.n), b.n);
	lq_buf_free(&b);
	return true;
}

const lq_filter_def lq_filters_date[] = {
	{"date", f_date},
	{NULL, NULL},
};
