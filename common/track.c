/*
 * track.c -- signed tracking tokens.  See track.h.
 */
#include "track.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "alloc.h"

#define HEAD_LEN (1 + 1 + 4 + 8 + 8)

static const char b64u[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

void hr_track_tenant_key(const uint8_t master[HR_KEY_LEN], uint32_t tenant_id, uint8_t out[HR_KEY_LEN])
{
	char label[48];
	int n = snprintf(label, sizeof label, "herald-track-v1:%u", tenant_id);
	hr_hmac_sha256(master, HR_KEY_LEN, label, (size_t)n, out);
}

bool hr_track_url_ok(const char *url, size_t len)
{
	if (!url || len > HR_TRACK_MAX_URL)
		return false;
	size_t skip = len >= 7 && !strncasecmp(url, "http://", 7) ? 7 : len >= 8 && !strncasecmp(url, "https://", 8) ? 8 : 0;
	if (!skip || len == skip)
		return false;
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)url[i] <= 0x20 || (unsigned char)url[i] >= 0x7f || url[i] == '"' || url[i] == '<' ||
		    url[i] == '>' || url[i] == '\\')
			return false;
	/* The host must follow the scheme: no "https:///path" or "https://?x". */
	return url[skip] != '/' && url[skip] != '?' && url[skip] != '#';
}

static void put_be(uint8_t *p, uint64_t v, int n)
{
	for (int i = n - 1; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}

static uint64_t get_be(const uint8_t *p, int n)
{
	uint64_t v = 0;
	for (int i = 0; i < n; i++)
		v = v << 8 | p[i];
	return v;
}

char *hr_track_encode(const uint8_t tenant_key[HR_KEY_LEN], const hr_track_token *t)
{
	size_t ulen = t->kind == HR_TRACK_CLICK ? t->url_len : 0;
	if (t->kind == HR_TRACK_CLICK && !hr_track_url_ok(t->url, t->url_len))
		return NULL;
	size_t n = HEAD_LEN + ulen + HR_TRACK_MAC_LEN;
	uint8_t *raw = hr_malloc(n);
	raw[0] = 1;
	raw[1] = (uint8_t)t->kind;
	put_be(raw + 2, t->tenant_id, 4);
	put_be(raw + 6, t->message_id, 8);
	put_be(raw + 14, t->contact_id, 8);
	if (ulen)
		memcpy(raw + HEAD_LEN, t->url, ulen);
	uint8_t mac[32];
	hr_hmac_sha256(tenant_key, HR_KEY_LEN, raw, HEAD_LEN + ulen, mac);
	memcpy(raw + HEAD_LEN + ulen, mac, HR_TRACK_MAC_LEN);
	char *out = hr_malloc(n * 4 / 3 + 4), *o = out;
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)raw[i] << 16 | (i + 1 < n ? (uint32_t)raw[i + 1] << 8 : 0) |
			     (i + 2 < n ? raw[i + 2] : 0);
		*o++ = b64u[v >> 18 & 63];
		*o++ = b64u[v >> 12 & 63];
		if (i + 1 < n)
			*o++ = b64u[v >> 6 & 63];
		if (i + 2 < n)
			*o++ = b64u[v & 63];
	}
	*o = '\0';
	hr_free(raw);
	return out;
}

static int b64u_val(char c)
{
	const char *p = c ? strchr(b64u, c) : NULL;
	return p ? (int)(p - b64u) : -1;
}

bool hr_track_decode(const uint8_t master[HR_KEY_LEN], const char *token, hr_track_token *out, char **buf)
{
	*buf = NULL;
	size_t len = strlen(token);
	size_t max = (HEAD_LEN + HR_TRACK_MAX_URL + HR_TRACK_MAC_LEN) * 4 / 3 + 4;
	/* base64 without padding never leaves one character over */
	if (len < 4 || len > max || len % 4 == 1)
		return false;
	uint8_t *raw = hr_malloc(len * 3 / 4 + 3);
	size_t n = 0;
	uint32_t acc = 0;
	int bits = 0;
	for (size_t i = 0; i < len; i++) {
		int v = b64u_val(token[i]);
		if (v < 0)
			goto bad;
		acc = acc << 6 | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			raw[n++] = (uint8_t)(acc >> bits);
			acc &= (1u << bits) - 1;
		}
	}
	/* Non-canonical encodings (stray low bits) are refused: one token, one spelling. */
	if (acc != 0)
		goto bad;
	if (n < HEAD_LEN + HR_TRACK_MAC_LEN || raw[0] != 1)
		goto bad;
	hr_track_kind kind = (hr_track_kind)raw[1];
	size_t ulen = n - HEAD_LEN - HR_TRACK_MAC_LEN;
	if (kind != HR_TRACK_OPEN && kind != HR_TRACK_CLICK && kind != HR_TRACK_UNSUBSCRIBE)
		goto bad;
	if ((kind == HR_TRACK_CLICK) != (ulen > 0))
		goto bad;
	uint32_t tenant = (uint32_t)get_be(raw + 2, 4);
	uint8_t key[HR_KEY_LEN], mac[32];
	hr_track_tenant_key(master, tenant, key);
	hr_hmac_sha256(key, HR_KEY_LEN, raw, HEAD_LEN + ulen, mac);
	if (!hr_ct_equal(mac, raw + HEAD_LEN + ulen, HR_TRACK_MAC_LEN))
		goto bad;
	if (kind == HR_TRACK_CLICK && !hr_track_url_ok((const char *)raw + HEAD_LEN, ulen))
		goto bad;
	out->kind = kind;
	out->tenant_id = tenant;
	out->message_id = get_be(raw + 6, 8);
	out->contact_id = get_be(raw + 14, 8);
	out->url = NULL;
	out->url_len = ulen;
	if (ulen) {
		*buf = hr_strndup((const char *)raw + HEAD_LEN, ulen);
		out->url = *buf;
	}
	hr_free(raw);
	return true;
bad:
	hr_free(raw);
	return false;
}
