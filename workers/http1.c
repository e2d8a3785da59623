/*
 * http1.c -- one HTTP/1.1 response, parsed as it arrives.  See http1.h.
 */
#include "http1.h"

#include <string.h>
#include <strings.h>

#define MAX_CHUNK_LINE 1024
#define MAX_LENGTH ((uint64_t)1 << 60) /* bigger Content-Length / chunk sizes are nonsense */

void wk_h1_reset(wk_h1 *r, bool no_body)
{
	r->state = H1_HEAD;
	r->no_body = no_body;
	r->status = 0;
	r->keep_alive = false;
	r->retry_after[0] = '\0';
	wk_buf_reset(&r->body);
	r->left = 0;
	r->error = NULL;
}

static size_t bad(wk_h1 *r, const char *why)
{
	r->state = H1_BAD;
	r->error = why;
	return 0;
}

static void keep(wk_h1 *r, const char *p, size_t n)
{
	if (r->body.len < r->body_max)
		wk_buf_add(&r->body, p, n < r->body_max - r->body.len ? n : r->body_max - r->body.len);
}

/* A header value without the blanks around it. */
static void trim(const char **v, size_t *k)
{
	while (*k && (**v == ' ' || **v == '\t'))
		(*v)++, (*k)--;
	while (*k && ((*v)[*k - 1] == ' ' || (*v)[*k - 1] == '\t'))
		(*k)--;
}

/* Does the comma-separated list v[0..k) hold token tok (any case)? */
static bool has_token(const char *v, size_t k, const char *tok, bool last_only)
{
	size_t tl = strlen(tok);
	bool found = false;
	while (k) {
		const char *comma = memchr(v, ',', k);
		size_t n = comma ? (size_t)(comma - v) : k;
		const char *t = v;
		size_t tn = n;
		trim(&t, &tn);
		found = tn == tl && strncasecmp(t, tok, tl) == 0;
		if (found && !last_only)
			return true;
		if (!comma)
			break;
		v = comma + 1;
		k -= n + 1;
	}
	return found;
}

/* The end of the header block in p[0..n): the offset after its empty line, 0 = not yet. */
static size_t head_end(const char *p, size_t n)
{
	size_t off = 0;
	while (off < n) {
		const char *nl = memchr(p + off, '\n', n - off);
		if (!nl)
			return 0;
		size_t k = (size_t)(nl - (p + off));
		if (off && (k == 0 || (k == 1 && p[off] == '\r')))
			return (size_t)(nl - p) + 1;
		off += k + 1;
	}
	return 0;
}

/* The status line and headers in p[0..end). */
static bool parse_head(wk_h1 *r, const char *p, size_t end, bool *chunked, bool *has_len, uint64_t *len)
{
	const char *nl = memchr(p, '\n', end);
	size_t k = (size_t)(nl - p);
	if (k && p[k - 1] == '\r')
		k--;
	/* "HTTP/1.x SSS[ reason]" */
	if (k < 12 || memcmp(p, "HTTP/1.", 7) != 0 || (p[7] != '0' && p[7] != '1') || p[8] != ' ' ||
	    p[9] < '1' || p[9] > '5' || p[10] < '0' || p[10] > '9' || p[11] < '0' || p[11] > '9' ||
	    (k > 12 && p[12] != ' ')) {
		bad(r, "not an HTTP/1.x status line");
		return false;
	}
	bool http10 = p[7] == '0';
	r->status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
	r->keep_alive = !http10;
	r->retry_after[0] = '\0';
	*chunked = *has_len = false;
	*len = 0;
	bool te = false;
	size_t off = (size_t)(nl - p) + 1;
	while (off < end) {
		const char *line = p + off;
		nl = memchr(line, '\n', end - off);
		k = (size_t)(nl - line);
		off += k + 1;
		if (k && line[k - 1] == '\r')
			k--;
		if (!k)
			break; /* the empty line */
		if (line[0] == ' ' || line[0] == '\t')
			continue; /* obsolete line folding: nothing we read is folded */
		const char *colon = memchr(line, ':', k);
		if (!colon || colon == line) {
			bad(r, "a header line without a name and colon");
			return false;
		}
		size_t nlen = (size_t)(colon - line);
		const char *v = colon + 1;
		size_t vk = k - nlen - 1;
		trim(&v, &vk);
		if (nlen == 14 && strncasecmp(line, "content-length", 14) == 0) {
			if (!vk || strspn(v, "0123456789") < vk || vk > 18) {
				bad(r, "a Content-Length that is not a number");
				return false;
			}
			uint64_t n = 0;
			for (size_t i = 0; i < vk; i++)
				n = n * 10 + (uint64_t)(v[i] - '0');
			if (*has_len && n != *len) {
				bad(r, "conflicting Content-Length headers");
				return false;
			}
			*has_len = true;
			*len = n;
		} else if (nlen == 17 && strncasecmp(line, "transfer-encoding", 17) == 0) {
			te = true;
			*chunked = has_token(v, vk, "chunked", true);
		} else if (nlen == 10 && strncasecmp(line, "connection", 10) == 0) {
			if (has_token(v, vk, "close", false))
				r->keep_alive = false;
			else if (http10 && has_token(v, vk, "keep-alive", false))
				r->keep_alive = true;
		} else if (nlen == 11 && strncasecmp(line, "retry-after", 11) == 0) {
			if (vk >= sizeof r->retry_after)
				vk = sizeof r->retry_after - 1;
			memcpy(r->retry_after, v, vk);
			r->retry_after[vk] = '\0';
		}
	}
	if (te) {
		/* Transfer-Encoding wins over Content-Length (RFC 9112 6.3); one
		 * that does not end in chunked is read until the server closes. */
		*has_len = false;
		if (!*chunked)
			r->keep_alive = false;
	}
	return true;
}

static size_t feed_head(wk_h1 *r, const char *p, size_t n)
{
	size_t end = head_end(p, n);
	if (!end)
		return n > WK_H1_MAX_HEAD ? bad(r, "a header block over 16 KiB") : 0;
	if (end > WK_H1_MAX_HEAD)
		return bad(r, "a header block over 16 KiB");
	bool chunked, has_len;
	uint64_t len;
	if (!parse_head(r, p, end, &chunked, &has_len, &len))
		return 0;
	if (r->status < 200) {
		if (r->status == 101)
			return bad(r, "101 Switching Protocols to a request that asked for none");
		return end; /* an interim answer (100 Continue, 103 Early Hints): the real one follows */
	}
	if (r->no_body || r->status == 204 || r->status == 304) {
		r->state = H1_DONE;
	} else if (chunked) {
		r->state = H1_CHUNK_SIZE;
	} else if (has_len) {
		if (len > MAX_LENGTH)
			return bad(r, "a Content-Length beyond reason");
		r->left = len;
		r->state = len ? H1_BODY_LEN : H1_DONE;
	} else {
		r->state = H1_BODY_EOF;
		r->keep_alive = false;
	}
	return end;
}

/* "<hex>[;ext]\r\n" */
static size_t feed_chunk_size(wk_h1 *r, const char *p, size_t n)
{
	size_t look = n < MAX_CHUNK_LINE ? n : MAX_CHUNK_LINE;
	const char *nl = memchr(p, '\n', look);
	if (!nl)
		return n >= MAX_CHUNK_LINE ? bad(r, "a chunk-size line over 1 KiB") : 0;
	size_t k = (size_t)(nl - p), i = 0;
	uint64_t size = 0;
	for (; i < k; i++) {
		char c = p[i];
		int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
		if (d < 0)
			break;
		size = size * 16 + (uint64_t)d;
		if (size > MAX_LENGTH)
			return bad(r, "a chunk size beyond reason");
	}
	if (i == 0)
		return bad(r, "a chunk-size line without a size");
	while (i < k && (p[i] == ' ' || p[i] == '\t'))
		i++;
	if (i < k && p[i] != ';' && !(p[i] == '\r' && i + 1 == k))
		return bad(r, "garbage after a chunk size");
	if (size == 0) {
		r->state = H1_TRAILER;
	} else {
		r->left = size;
		r->state = H1_CHUNK_DATA;
	}
	return k + 1;
}

static size_t feed_trailer(wk_h1 *r, const char *p, size_t n)
{
	size_t look = n < WK_H1_MAX_HEAD ? n : WK_H1_MAX_HEAD;
	const char *nl = memchr(p, '\n', look);
	if (!nl)
		return n >= WK_H1_MAX_HEAD ? bad(r, "a trailer line over 16 KiB") : 0;
	size_t k = (size_t)(nl - p);
	if (k == 0 || (k == 1 && p[0] == '\r'))
		r->state = H1_DONE;
	return k + 1;
}

size_t wk_h1_feed(wk_h1 *r, const char *p, size_t n)
{
	size_t used = 0;
	for (;;) {
		size_t avail = n - used, step = 0;
		const char *q = p + used;
		switch (r->state) {
		case H1_HEAD:
			step = feed_head(r, q, avail);
			break;
		case H1_BODY_LEN:
		case H1_CHUNK_DATA:
			step = avail < r->left ? avail : (size_t)r->left;
			keep(r, q, step);
			r->left -= step;
			if (!r->left)
				r->state = r->state == H1_BODY_LEN ? H1_DONE : H1_CHUNK_CRLF;
			break;
		case H1_BODY_EOF:
			keep(r, q, avail);
			step = avail;
			break;
		case H1_CHUNK_SIZE:
			step = feed_chunk_size(r, q, avail);
			break;
		case H1_CHUNK_CRLF:
			if (avail && q[0] == '\n') {
				step = 1;
			} else if (avail >= 2 && q[0] == '\r' && q[1] == '\n') {
				step = 2;
			} else if (avail && (q[0] != '\r' || avail >= 2)) {
				bad(r, "chunk data longer than its size");
				break;
			}
			if (step)
				r->state = H1_CHUNK_SIZE;
			break;
		case H1_TRAILER:
			step = feed_trailer(r, q, avail);
			break;
		case H1_DONE:
		case H1_BAD:
			return used;
		}
		used += step;
		if (!step && r->state != H1_DONE)
			return used; /* more bytes needed, or bad */
	}
}

bool wk_h1_eof(wk_h1 *r)
{
	if (r->state == H1_BODY_EOF) {
		r->state = H1_DONE;
		return true;
	}
	return r->state == H1_DONE;
}
